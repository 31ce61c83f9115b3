//! The measurement: every query against torua and embedded Kuzu alternately, latencies,
//! recall and overlap of the answers, and the embedded answers checked for consistency.

use super::*;
use torua_testkit::graphrag::WithEmbedding as _;

pub(crate) fn overlap(a: &[String], b: &[String]) -> f64 {
    if b.is_empty() {
        return f64::NAN;
    }
    let set: HashSet<&String> = a.iter().collect();
    b.iter().filter(|x| set.contains(x)).count() as f64 / b.len() as f64
}

pub(crate) fn ids_of(v: &Value, pred: impl Fn(&Value) -> bool) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|x| pred(x))
                .filter_map(|x| x["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The timed queries on one cluster, interleaved with the embedded baseline on `db`.
pub(crate) fn measure(
    a: &Args,
    cluster: &TestCluster,
    db: &Database,
    g: &Graph,
    queries: &Queries,
) -> Result<Value> {
    let conn = Connection::new(db)?;
    let mut emb = Embedded::new(&conn, a.top_k, a.embedded_efs)?;
    emb.reports = a
        .include
        .as_ref()
        .is_none_or(|i| i.iter().any(|x| x == "community_reports"));
    // Calibration sample: neighbours-sized sets of entity ids, a seed-sized set of chunk ids.
    let mut rng = Rng(a.graph.seed ^ 0xca1);
    let sample_e: Vec<String> = (0..200)
        .map(|_| {
            g.items.entities[rng.below(g.items.entities.len())]
                .id
                .clone()
        })
        .collect();
    let sample_c: Vec<String> = (0..25)
        .map(|_| g.items.chunks[rng.below(g.items.chunks.len())].id.clone())
        .collect();
    let calibration = emb.calibrate(&sample_e, &sample_c, &sample_e[..a.top_k.min(200)])?;
    let load_at_start = load_1m();
    log(format!("  embedded lookup costs: {calibration}"));
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url("/retrieve")).collect();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();

    let (mut h_torua, mut h_emb) = (histogram(), histogram());
    let mut server: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut emb_stages: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut client_minus_server = Vec::new();
    let (mut n_ent, mut n_rel, mut n_tu, mut n_rep, mut tokens, mut bytes) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut e_ent, mut e_rel, mut e_tu, mut e_rep) = (vec![], vec![], vec![], vec![]);
    let (mut seed_overlap, mut torua_hit, mut emb_hit) = (vec![], vec![], vec![]);
    let mut errors: Vec<String> = Vec::new();
    let mut partial = 0;
    let started = Instant::now();
    for (i, q) in queries.all.iter().enumerate() {
        let measured = i >= a.warmup;
        if i % 10 == 0 {
            memory_guard(a.min_available_mb, cluster)?;
        }
        let url = &urls[i % urls.len()];
        // Alternate which side runs first.
        let mut torua_answer = None;
        let mut emb_answer = None;
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                torua_answer = Some(post_timed(&agent, url, &q.body));
            } else {
                emb_answer = Some(emb.retrieve(q, a.top_k, a.hops)?);
            }
        }
        let ea = emb_answer.expect("embedded answer");
        let (lat, status, body) = torua_answer.expect("torua answer")?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 200 {
            errors.push(format!(
                "{status} {}",
                short(&String::from_utf8_lossy(&body), 300)
            ));
            if errors.len() <= 3 {
                log(format!(
                    "  retrieve failed: {}",
                    errors.last().expect("error")
                ));
            }
            continue;
        }
        if !measured {
            continue;
        }
        h_torua.record(lat.round().max(1.0) as u64)?;
        h_emb.record(ea.total_us.round().max(1.0) as u64)?;
        if let Some(t) = v["timings_ms"].as_object() {
            for (k, x) in t {
                if let Some(x) = x.as_f64() {
                    server.entry(k.clone()).or_default().push(x);
                }
            }
            if let Some(total) = t.get("total").and_then(Value::as_f64) {
                client_minus_server.push(lat / 1000.0 - total);
            }
        }
        for (name, x) in &ea.stages {
            emb_stages.entry(name).or_default().push(x / 1000.0);
        }
        emb_stages
            .entry("total")
            .or_default()
            .push(ea.total_us / 1000.0);
        if v["_shards"]["failed"].as_u64().unwrap_or(0) > 0 {
            partial += 1;
        }
        let len = |k: &str| v[k].as_array().map_or(0, Vec::len) as f64;
        n_ent.push(len("entities"));
        n_rel.push(len("relations"));
        n_tu.push(len("text_units"));
        n_rep.push(len("community_reports"));
        tokens.push(v["tokens"]["total"].as_f64().unwrap_or(f64::NAN));
        bytes.push(body.len() as f64);
        e_ent.push(ea.entities as f64);
        e_rel.push(ea.relations as f64);
        e_tu.push(ea.text_units as f64);
        e_rep.push(ea.reports as f64);
        let seeds = ids_of(&v["seeds"], |_| true);
        seed_overlap.push(overlap(&seeds, &ea.seeds));
        let src = &g.items.entities[q.source].id;
        torua_hit.push(f64::from(u8::from(seeds.contains(src))));
        emb_hit.push(f64::from(u8::from(ea.seeds.contains(src))));
        let done = i + 1 - a.warmup;
        if done.is_multiple_of(50) || done == a.queries {
            log(format!(
                "  {done}/{} queries in {:.0} s: torua p50 {:.1} ms, embedded p50 {:.1} ms",
                a.queries,
                started.elapsed().as_secs_f64(),
                h_torua.value_at_quantile(0.5) as f64 / 1000.0,
                h_emb.value_at_quantile(0.5) as f64 / 1000.0
            ));
        }
    }

    // Recall and isolated stages (not timed by the client): for each of the first
    // `--recall-queries` queries, a vector-only and a text-only request (hops 0: the seeds stage is
    // one kind of search), and requests that run one later stage alone (hops 0 with text units
    // only, hops 0 with reports only, hops 1 with entities and relations only), whose server
    // timings show each stage without the others running at the same time.
    let (mut r_torua, mut r_emb, mut bm25_agree) = (vec![], vec![], vec![]);
    let mut alone: BTreeMap<&str, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let probe = |query: Option<&str>, embedding: Option<&[f32]>, hops: u32, include: &[&str]| {
        let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
        serde_json::to_vec(&Request {
            query,
            embedding,
            mode: "local",
            top_k: a.top_k,
            hops,
            max_tokens: a.max_tokens,
            include: Some(&include),
            // A shard missing from a probe is an error, not a lower recall.
            allow_partial: Some(false),
        })
    };
    for (j, (q, exact)) in queries.recall().enumerate() {
        let url = &urls[j % urls.len()];
        let (text, emb_q) = (Some(q.text.as_str()), Some(q.embedding.as_slice()));
        let probes = [
            ("vector seeds only", probe(None, emb_q, 0, &["entities"])?),
            ("text seeds only", probe(text, None, 0, &["entities"])?),
            ("text_units only", probe(text, emb_q, 0, &["text_units"])?),
            (
                "community_reports only",
                probe(text, emb_q, 0, &["community_reports"])?,
            ),
            (
                "expand only",
                probe(text, emb_q, a.hops, &["entities", "relations"])?,
            ),
        ];
        for (name, body) in probes {
            let (_, status, body) = post_timed(&agent, url, &body)?;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status != 200 {
                errors.push(format!(
                    "{name} probe: {status} {}",
                    short(&v.to_string(), 300)
                ));
                continue;
            }
            if let Some(t) = v["timings_ms"].as_object() {
                for (k, x) in t {
                    if let Some(x) = x.as_f64() {
                        alone
                            .entry(name)
                            .or_default()
                            .entry(k.clone())
                            .or_default()
                            .push(x);
                    }
                }
            }
            match name {
                "vector seeds only" => {
                    let ids = ids_of(&v["seeds"], |s| s["vector_rank"].is_u64());
                    r_torua.push(overlap(&ids, exact));
                }
                "text seeds only" => {
                    let ids = ids_of(&v["seeds"], |s| s["bm25_rank"].is_u64());
                    bm25_agree.push(overlap(&ids, &emb.text_top(&q.text, false)?));
                }
                _ => {}
            }
        }
        r_emb.push(overlap(&emb.vector_top(&q.embedding)?, exact));
    }

    let ratio =
        |q: f64| h_torua.value_at_quantile(q) as f64 / h_emb.value_at_quantile(q).max(1) as f64;
    let medians = |m: &BTreeMap<String, Vec<f64>>| -> Value {
        m.iter()
            .map(|(k, v)| (k.clone(), json!((median(v) * 100.0).round() / 100.0)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let emb_medians: BTreeMap<String, Vec<f64>> = emb_stages
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "torua": summary(&h_torua), "embedded": summary(&h_emb),
        "ratio_p50": r2(ratio(0.5)), "ratio_p99": r2(ratio(0.99)),
        "server_timings_median_ms": medians(&server),
        "embedded_stages_median_ms": medians(&emb_medians),
        "client_minus_server_total_median_ms": r2(median(&client_minus_server)),
        "errors": errors.len(), "error_examples": errors.iter().take(5).collect::<Vec<_>>(),
        "partial_answers": partial,
        "torua_answer_mean": {"entities": r2(mean(&n_ent)), "relations": r2(mean(&n_rel)),
            "text_units": r2(mean(&n_tu)), "community_reports": r2(mean(&n_rep)),
            "tokens": r2(mean(&tokens)), "bytes": r2(mean(&bytes))},
        "embedded_found_mean": {"entities": r2(mean(&e_ent)), "relations": r2(mean(&e_rel)),
            "text_units": r2(mean(&e_tu)), "community_reports": r2(mean(&e_rep))},
        "seed_overlap_mean": r2(mean(&seed_overlap)),
        "source_entity_in_seeds": {"torua": r2(mean(&torua_hit)), "embedded": r2(mean(&emb_hit))},
        "recall_at_k_vs_exact": {"queries": r_emb.len(), "torua_vector_seeds": r2(mean(&r_torua)),
            "embedded_hnsw": r2(mean(&r_emb)), "embedded_efs": a.embedded_efs},
        "bm25_top_k_overlap_torua_vs_embedded": r2(mean(&bm25_agree)),
        "server_timings_median_ms_one_stage_alone": alone
            .iter()
            .map(|(k, m)| (k.to_string(), medians(m)))
            .collect::<serde_json::Map<_, _>>(),
        "embedded_calibration": calibration,
        "embedded_statements": {"per_id": emb.executed.0, "set": emb.executed.1},
        "wall_s": started.elapsed().as_secs_f64(),
        "load_1m_at_start": load_at_start, "load_1m_at_end": load_1m(),
    }))
}

/// The baseline `db` holds the vectors it was given (a few read back); its HNSW index's recall of
/// the recall queries against the exact top k, and the search's latency (the first queries warm
/// up).
pub(crate) fn check_embedded(
    a: &Args,
    db: &Database,
    g: &Graph,
    queries: &Queries,
) -> Result<Value> {
    let conn = Connection::new(db)?;
    let mut read = conn.prepare("MATCH (v:EntityVec {id: $id}) RETURN v.embedding")?;
    for i in [0, g.items.entities.len() / 2, g.items.entities.len() - 1] {
        let e = &g.items.entities[i];
        let rows: Vec<Vec<KValue>> = conn
            .execute(&mut read, vec![("id", string(&e.id))])?
            .collect();
        let stored: Vec<f32> = match rows.first().and_then(|r| r.first()) {
            Some(KValue::Array(_, v)) | Some(KValue::List(_, v)) => v
                .iter()
                .map(|x| match x {
                    KValue::Float(f) => *f,
                    _ => f32::NAN,
                })
                .collect(),
            other => bail!("embedded: no vector for {}: {other:?}", e.id),
        };
        if stored != e.vector() {
            bail!(
                "embedded: the stored vector of {} differs from the generated one (first values {:?} vs {:?})",
                e.id,
                &stored[..4.min(stored.len())],
                &e.vector()[..4]
            );
        }
    }
    // The baseline's HNSW recall and latency at its efs, 64 and Kuzu's default (200).
    let mut by_efs = serde_json::Map::new();
    let mut list = vec![a.embedded_efs, 64, 200];
    list.sort_unstable();
    list.dedup();
    for efs in list {
        let mut emb = Embedded::new(&conn, a.top_k, efs)?;
        let (mut recall, mut ms) = (vec![], vec![]);
        for (q, x) in queries.recall() {
            let t = Instant::now();
            let found = emb.vector_top(&q.embedding)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            recall.push(overlap(&found, x));
        }
        log(format!(
            "embedded: HNSW efs {efs}: recall@{} {:.3}, median {:.2} ms over {} queries",
            a.top_k,
            mean(&recall),
            median(&ms),
            recall.len()
        ));
        by_efs.insert(
            format!("efs {efs}"),
            json!({"recall": mean(&recall), "median_ms": median(&ms), "queries": recall.len()}),
        );
    }
    // torua's shard statement reads the hits' properties in the same statement (a join of the
    // index's answer with Entity by id); its cost on this database, against the bare search.
    let forms = [
        ("bare search", format!("CALL QUERY_VECTOR_INDEX('EntityVec', 'entity_vec', $q, {k}, efs := {efs}) RETURN node.id, distance", k = a.top_k, efs = a.embedded_efs)),
        ("search + MATCH Entity by id", format!("CALL QUERY_VECTOR_INDEX('EntityVec', 'entity_vec', $q, {k}, efs := {efs}) WITH node AS v, distance \
             MATCH (i:Entity {{id: v.id}}) RETURN i.id, i.title, i.type, i.description, i.degree, i.text_unit_ids, distance", k = a.top_k, efs = a.embedded_efs)),
    ];
    let mut join = serde_json::Map::new();
    for (name, q) in forms {
        let mut stmt = conn.prepare(&q)?;
        let mut ms = vec![];
        for (q, _) in queries.recall() {
            let t = Instant::now();
            let _: Vec<Vec<KValue>> = conn
                .execute(&mut stmt, vec![("q", float_list(&q.embedding))])?
                .collect();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        log(format!(
            "embedded: vector statement, {name}: median {:.2} ms",
            median(&ms)
        ));
        join.insert(name.into(), json!(median(&ms)));
    }
    Ok(json!({"vectors_match": true, "hnsw": by_efs, "vector_statement_median_ms": join}))
}
