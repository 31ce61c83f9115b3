//! The queries phase: each query shape sampled against embedded Kuzu and torua alternately,
//! answers compared, latencies and mismatches reported.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(crate) enum QuerySpec {
    Hood {
        hops: u32,
        seeds: usize,
    },
    Count {
        name: &'static str,
        cypher: &'static str,
    },
}

impl QuerySpec {
    pub(crate) fn name(&self) -> String {
        match self {
            QuerySpec::Hood { hops, seeds } => format!(
                "neighborhood {hops} hop{}, {seeds} seed{}",
                if *hops == 1 { "" } else { "s" },
                if *seeds == 1 { "" } else { "s" }
            ),
            QuerySpec::Count { name, .. } => format!("query: {name}"),
        }
    }
}

pub(crate) struct QueryCase {
    spec: QuerySpec,
    torua: Vec<f64>,
    embedded: Vec<f64>,
    /// Sizes of the embedded answers of the measured samples (entities, relations), or the count.
    sizes: Vec<(usize, usize)>,
    /// Measured samples whose answer is cut by the caps (embedded, with the same caps).
    truncated: usize,
    torua_bytes: usize,
    mismatches: usize,
    errors: usize,
    /// Answers not in the contract's order (not counted as mismatches).
    unordered: usize,
    notes: Vec<String>,
    stopped_by_time: bool,
    wall_s: f64,
    /// Embedded statements per sample: (per-id, set).
    embedded_statements: (f64, f64),
}

impl QueryCase {
    pub(crate) fn note(&mut self, msg: String) {
        if self.notes.len() < 3 {
            log(format!("  {}: {msg}", self.spec.name()));
            self.notes.push(msg);
        }
    }
}

pub(crate) fn query_specs(args: &Args) -> Vec<QuerySpec> {
    let mut v = Vec::new();
    for &hops in &args.query_hops {
        for &seeds in &args.query_seeds {
            v.push(QuerySpec::Hood { hops, seeds });
        }
    }
    for (name, cypher) in COUNT_QUERIES {
        v.push(QuerySpec::Count { name, cypher });
    }
    v
}

/// Runs every query case against `cluster` (None: the embedded database alone), requests to the
/// nodes round-robin.
pub(crate) fn query_phase(
    args: &Args,
    db: &Database,
    cluster: Option<&TestCluster>,
    g: &Graph,
) -> Result<QueryPhase> {
    let conn = Connection::new(db)?;
    let mut rng = Rng(args.graph.seed ^ 0xCA1B_0000);
    let mut bfs = Bfs::calibrated(&conn, args.query_embedded, &g.entities, &mut rng)?;
    log(format!(
        "  embedded statement costs (per-id µs per id / set µs): out {:.0}/{:.0}, in {:.0}/{:.0}, properties {:.0}/{:.0}; mode {:?}",
        bfs.costs[0].0, bfs.costs[0].1, bfs.costs[1].0, bfs.costs[1].1, bfs.costs[2].0, bfs.costs[2].1, bfs.mode
    ));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let nodes = cluster.map_or(0, |c| c.nodes.len());
    let hood_urls: Vec<String> = (0..nodes)
        .map(|i| cluster.expect("cluster").node(i).url("/graph/neighborhood"))
        .collect();
    let query_urls: Vec<String> = (0..nodes)
        .map(|i| cluster.expect("cluster").node(i).url("/query"))
        .collect();
    let mut next_node = 0usize;
    let cap = Duration::from_secs_f64(args.query_case_s);
    let mut cases = Vec::new();
    for spec in query_specs(args) {
        let (reps, mut rng, mut count_stmt) = match spec {
            QuerySpec::Hood { hops, seeds } => {
                let heavy = seeds >= 100 && hops >= 2;
                let reps = if heavy {
                    (args.query_reps / 5)
                        .max(QUERY_MIN_SAMPLES)
                        .min(args.query_reps)
                } else {
                    args.query_reps
                };
                // The same seed sets for every target of the run.
                let rng = Rng(args.graph.seed
                    ^ 0x6E16_4B0D_0000_0000
                    ^ (u64::from(hops) << 40)
                    ^ ((seeds as u64) << 8));
                (reps, rng, None)
            }
            QuerySpec::Count { cypher, .. } => {
                (args.query_reps, Rng(0), Some(conn.prepare(cypher)?))
            }
        };
        let mut c = QueryCase {
            spec,
            torua: vec![],
            embedded: vec![],
            sizes: vec![],
            truncated: 0,
            torua_bytes: 0,
            mismatches: 0,
            errors: 0,
            unordered: 0,
            notes: vec![],
            stopped_by_time: false,
            wall_s: 0.0,
            embedded_statements: (0.0, 0.0),
        };
        bfs.executed = (0, 0);
        log(format!(
            "  {} ({} samples + {} warm-up, at most ~{:.0} s)",
            spec.name(),
            reps,
            args.query_warmup,
            args.query_case_s
        ));
        let started = Instant::now();
        let mut torua_ok = 0usize;
        for i in 0..args.query_warmup + reps {
            let measured = i.saturating_sub(args.query_warmup);
            let elapsed = started.elapsed();
            if i >= args.query_warmup
                && ((elapsed >= cap && measured >= QUERY_MIN_SAMPLES.min(reps))
                    || elapsed >= 3 * cap)
            {
                c.stopped_by_time = true;
                break;
            }
            if nodes > 0 && c.errors >= 3 && torua_ok == 0 {
                c.note("giving up on this case: every request failed".into());
                break;
            }
            // Inputs, prepared before any clock starts.
            let (body, seeds): (Vec<u8>, Vec<&str>) = match spec {
                QuerySpec::Hood { hops, seeds: k } => {
                    let mut picked: Vec<usize> = Vec::with_capacity(k);
                    while picked.len() < k {
                        let x = rng.below(g.entities.len());
                        if !picked.contains(&x) {
                            picked.push(x);
                        }
                    }
                    let seeds: Vec<&str> =
                        picked.iter().map(|&x| g.entities[x].id.as_str()).collect();
                    let body = serde_json::to_vec(&json!({
                        "seeds": seeds, "hops": hops, "direction": "both",
                        "max_nodes": args.query_max_nodes, "max_relations": args.query_max_relations,
                        "timeout_ms": 60000, "allow_partial": false,
                    }))?;
                    (body, seeds)
                }
                QuerySpec::Count { cypher, .. } => (
                    serde_json::to_vec(
                        &json!({"cypher": cypher, "timeout_ms": 60000, "allow_partial": false}),
                    )?,
                    vec![],
                ),
            };
            let url = match spec {
                QuerySpec::Hood { .. } => hood_urls.get(next_node % nodes.max(1)),
                QuerySpec::Count { .. } => query_urls.get(next_node % nodes.max(1)),
            };
            next_node += 1;
            // Alternate which side goes first, so neither always runs on the other's warm caches.
            let mut embedded = |c: &mut QueryCase| -> Result<(f64, Hood, u64)> {
                let t = Instant::now();
                match spec {
                    QuerySpec::Hood { hops, .. } => {
                        let h =
                            bfs.run(&seeds, hops, args.query_max_nodes, args.query_max_relations)?;
                        Ok((us(t.elapsed()), h, 0))
                    }
                    QuerySpec::Count { .. } => {
                        let stmt = count_stmt.as_mut().expect("prepared");
                        let rows: Vec<Vec<KValue>> = conn.execute(stmt, vec![])?.collect();
                        let n = kcount(rows.first().and_then(|r| r.first()));
                        let took = us(t.elapsed());
                        let n = match n {
                            Some(n) => n,
                            None => {
                                c.note(format!("embedded count returned {rows:?}"));
                                u64::MAX
                            }
                        };
                        Ok((took, Hood::default(), n))
                    }
                }
            };
            let torua = |url: Option<&String>| url.map(|u| post_timed(&agent, u, &body));
            let (emb, answer) = if i % 2 == 0 {
                let e = embedded(&mut c)?;
                (e, torua(url))
            } else {
                let a = torua(url);
                (embedded(&mut c)?, a)
            };
            let (emb_us, want, want_n) = emb;
            let is_measured = i >= args.query_warmup;
            if is_measured {
                c.embedded.push(emb_us);
                c.truncated += usize::from(want.truncated);
                c.sizes.push(match spec {
                    QuerySpec::Hood { .. } => (want.entities.len(), want.relations.len()),
                    QuerySpec::Count { .. } => (want_n as usize, 0),
                });
            }
            let Some(answer) = answer else { continue };
            let what = format!("sample {i} via {}", url.map(|u| u.as_str()).unwrap_or("-"));
            let (t_us, status, bytes) = match answer {
                Ok(x) => x,
                Err(e) => {
                    c.errors += 1;
                    c.note(format!("{what}: {e}"));
                    continue;
                }
            };
            let text = || short(&String::from_utf8_lossy(&bytes), 400);
            let v: Value = match serde_json::from_slice(&bytes) {
                Ok(v) if status == 200 => v,
                _ => {
                    c.errors += 1;
                    c.note(format!(
                        "{what}: HTTP {status}: {}; request {}",
                        text(),
                        short(&String::from_utf8_lossy(&body), 300)
                    ));
                    continue;
                }
            };
            torua_ok += 1;
            if v["_shards"]["failed"].as_u64().unwrap_or(0) > 0 {
                c.errors += 1;
                c.note(format!("{what}: _shards {}", v["_shards"]));
                continue;
            }
            let ok = match spec {
                QuerySpec::Hood { .. } => match parse_hood(&v) {
                    Ok((got, ordered)) => {
                        c.unordered += usize::from(!ordered);
                        if v["missing_seeds"].as_array().is_some_and(|m| !m.is_empty()) {
                            c.note(format!(
                                "{what}: missing_seeds {} (every seed exists)",
                                short(&v["missing_seeds"].to_string(), 200)
                            ));
                        }
                        if got != want {
                            c.note(format!(
                                "{what}: seeds {:?}: {}",
                                short(&format!("{seeds:?}"), 120),
                                hood_diff(&want, &got)
                            ));
                            false
                        } else {
                            true
                        }
                    }
                    Err(e) => {
                        c.note(format!("{what}: unreadable answer ({e:#}): {}", text()));
                        false
                    }
                },
                QuerySpec::Count { .. } => {
                    let got = v["rows"][0][0].as_u64();
                    if got != Some(want_n) {
                        c.note(format!(
                            "{what}: embedded n = {want_n}, torua rows {} (columns {})",
                            short(&v["rows"].to_string(), 200),
                            v["columns"]
                        ));
                        false
                    } else {
                        true
                    }
                }
            };
            if !ok {
                c.mismatches += 1;
            }
            if is_measured {
                c.torua.push(t_us);
                c.torua_bytes += bytes.len();
            }
        }
        c.wall_s = started.elapsed().as_secs_f64();
        let p50 = |v: &[f64]| pct(v).map_or("-".to_string(), |p| format!("{:.2} ms", ms(p.p50)));
        log(format!(
            "    {} samples in {:.1} s: torua p50 {}, embedded p50 {}; {} mismatches, {} errors",
            c.embedded.len(),
            c.wall_s,
            p50(&c.torua),
            p50(&c.embedded),
            c.mismatches,
            c.errors
        ));
        let samples = (args.query_warmup + reps).max(1) as f64;
        c.embedded_statements = (
            bfs.executed.0 as f64 / samples,
            bfs.executed.1 as f64 / samples,
        );
        bfs.executed = (0, 0);
        cases.push(c);
    }
    Ok(QueryPhase {
        cases,
        mode: bfs.mode,
        costs: bfs.costs,
    })
}

/// The cases of one target, with how the embedded side ran.
pub(crate) struct QueryPhase {
    cases: Vec<QueryCase>,
    mode: EmbeddedMode,
    /// [out, in, properties]: (µs per id of the per-id statement, µs of one `UNWIND $ids` statement).
    costs: [(f64, f64); 3],
}

pub(crate) fn ms(v: f64) -> f64 {
    v / 1000.0
}

/// Prints the table of one target and emits its JSON lines; returns the failures.
pub(crate) fn report_queries(
    out: &mut Out,
    args: &Args,
    target: &str,
    nodes: usize,
    phase: &QueryPhase,
    // Some(what /cluster/shards said) when the target's ingest did not verify.
    unverified: Option<String>,
) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let cases = &phase.cases;
    println!(
        "\ngraph queries: {target} vs one embedded Kuzu database (same seeds, interleaved sample by sample), \
         direction both, max_nodes {}, max_relations {}; times in ms; p99 is nearest-rank (the maximum below 100 samples)",
        args.query_max_nodes, args.query_max_relations
    );
    if let Some(v) = &unverified {
        println!(
            "!!! WARNING: the ingest of {target} did NOT verify, data is missing or copies disagree, so answers \
             can differ for that reason alone: {}",
            short(v, 600)
        );
    }
    let cost = |i: usize| {
        format!(
            "{:.2} ms per id / {:.1} ms",
            phase.costs[i].0 / 1000.0,
            phase.costs[i].1 / 1000.0
        )
    };
    println!(
        "embedded search: {:?} (relations out {}, in {}, properties {}: per-id statement vs one UNWIND $ids statement; \
         `embd stmts` = per-id + UNWIND statements per sample)",
        phase.mode, cost(0), cost(1), cost(2)
    );
    println!(
        "{:<34} {:>4} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>20} {:>10} {:>5} {:>5} {:>4}  targets",
        "",
        "n",
        "torua p50",
        "p99",
        "embd p50",
        "p99",
        "p50 x",
        "p99 x",
        "answer (mean)",
        "embd stmts",
        "trunc",
        "mism",
        "err"
    );
    for c in cases {
        let (t, e) = (pct(&c.torua), pct(&c.embedded));
        let ratio = |f: fn(&Pct) -> f64| -> Option<f64> { Some(f(&t?) / f(&e?)) };
        let (r50, r99) = (ratio(|p| p.p50), ratio(|p| p.p99));
        let n = c.embedded.len().max(1) as f64;
        let answer = match c.spec {
            QuerySpec::Hood { .. } => format!(
                "E {:.0} R {:.0}",
                c.sizes.iter().map(|x| x.0).sum::<usize>() as f64 / n,
                c.sizes.iter().map(|x| x.1).sum::<usize>() as f64 / n
            ),
            QuerySpec::Count { .. } => format!("n = {}", c.sizes.first().map_or(0, |x| x.0)),
        };
        let hood_target = matches!(c.spec, QuerySpec::Hood { hops: 1, seeds: 10 }) && nodes > 1;
        let ratio_met = r50.map(|x| x <= TARGET_QUERY_RATIO);
        let ms_met = hood_target.then(|| t.is_some_and(|p| ms(p.p50) <= TARGET_HOOD_MS));
        let mut targets = Vec::new();
        if nodes > 0 {
            targets.push(format!(
                "p50 <= {TARGET_QUERY_RATIO}x: {}",
                match ratio_met {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "no data",
                }
            ));
        }
        if let Some(m) = ms_met {
            targets.push(format!(
                "p50 <= {TARGET_HOOD_MS} ms: {}",
                if m { "met" } else { "NOT met" }
            ));
        }
        let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
        println!(
            "{:<34} {:>4} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>20} {:>10} {:>5} {:>5} {:>4}  {}{}",
            c.spec.name(),
            c.embedded.len(),
            f(t.map(|p| ms(p.p50))),
            f(t.map(|p| ms(p.p99))),
            f(e.map(|p| ms(p.p50))),
            f(e.map(|p| ms(p.p99))),
            f(r50),
            f(r99),
            answer,
            match c.spec {
                QuerySpec::Hood { .. } => format!("{:.0}+{:.0}", c.embedded_statements.0, c.embedded_statements.1),
                QuerySpec::Count { .. } => "1".into(),
            },
            c.truncated,
            if nodes > 0 { c.mismatches.to_string() } else { "-".into() },
            if nodes > 0 { c.errors.to_string() } else { "-".into() },
            targets.join(", "),
            if c.stopped_by_time { " (time cap)" } else { "" }
        );
        let (hops, seeds, cypher) = match c.spec {
            QuerySpec::Hood { hops, seeds } => (Some(hops), Some(seeds), None),
            QuerySpec::Count { cypher, .. } => (None, None, Some(cypher)),
        };
        out.emit(json!({
            "kind": "query", "target": target, "nodes": nodes, "case": c.spec.name(),
            "query": if hops.is_some() { "neighborhood" } else { "cypher" },
            "hops": hops, "seeds": seeds, "cypher": cypher, "direction": "both",
            "max_nodes": args.query_max_nodes, "max_relations": args.query_max_relations,
            "samples": c.embedded.len(), "warmup": args.query_warmup, "wall_s": r1(c.wall_s),
            "stopped_by_time": c.stopped_by_time,
            "torua": pct_json(t), "embedded": pct_json(e), "p50_ratio": r50, "p99_ratio": r99,
            "entities_mean": hops.map(|_| r1(c.sizes.iter().map(|x| x.0).sum::<usize>() as f64 / n)),
            "relations_mean": hops.map(|_| r1(c.sizes.iter().map(|x| x.1).sum::<usize>() as f64 / n)),
            "count": cypher.map(|_| c.sizes.first().map(|x| x.0)),
            "torua_bytes_mean": (c.torua_bytes as f64 / c.torua.len().max(1) as f64).round(),
            "truncated_samples": c.truncated, "mismatches": c.mismatches, "errors": c.errors,
            "unordered_answers": c.unordered, "notes": c.notes,
            "target_ratio_max": TARGET_QUERY_RATIO, "target_ratio_met": ratio_met,
            "target_p50_ms_max": hood_target.then_some(TARGET_HOOD_MS), "target_p50_ms_met": ms_met,
            "ingest_verified": unverified.is_none(),
            "embedded_mode": format!("{:?}", phase.mode),
            "embedded_costs_us": {"out": phase.costs[0], "in": phase.costs[1], "properties": phase.costs[2]},
            "embedded_statements_per_sample": {"per_id": r1(c.embedded_statements.0), "set": r1(c.embedded_statements.1)},
        }))?;
    }
    for c in cases {
        if c.truncated > 0 {
            println!(
                "note: {}: {} of {} samples truncated by max_nodes {} / max_relations {} (compared with the embedded answer cut the same way)",
                c.spec.name(), c.truncated, c.embedded.len(), args.query_max_nodes, args.query_max_relations
            );
        }
        if c.unordered > 0 {
            println!(
                "note: {}: {} answers not in the contract's order",
                c.spec.name(),
                c.unordered
            );
        }
        if nodes > 0 && (c.mismatches > 0 || c.errors > 0) {
            println!(
                "!!! {target}: {}: {} ANSWERS DIFFER FROM THE EMBEDDED DATABASE, {} FAILED",
                c.spec.name(),
                c.mismatches,
                c.errors
            );
            for n in &c.notes {
                println!("!!!   {n}");
            }
            failures.push(format!(
                "{target}: {}: {} mismatches, {} errors{}",
                c.spec.name(),
                c.mismatches,
                c.errors,
                if unverified.is_some() {
                    " (its ingest did not verify)"
                } else {
                    ""
                }
            ));
        }
    }
    if nodes > 0 && failures.is_empty() {
        println!("every answer of {target} equals the embedded database's (entities with their hop, relations, truncation; counts)");
    }
    Ok(failures)
}
