//! The algorithms phase (`graph_bench algorithms`): PageRank (20 updates, tolerance 0), weakly
//! connected components and degree over the whole generated graph, torua's
//! `POST /graph/algorithms/{name}` against embedded Kuzu on the `copy` database
//! (`page_rank`, `weakly_connected_components` over `project_graph('G', ['Entity'], ['RELATED'])`,
//! and a degree query), run by run alternately. Times: embedded statement with every row read;
//! torua's `running_ms` (the driver's) and the client's wall time. Values are compared in the
//! same run; a mismatch is reported loudly, not failed on.

use super::*;

pub(crate) const ALGORITHMS: [&str; 4] = ["pagerank", "wcc", "degree", "louvain"];
/// Also `degree-write`: degree written back to every entity (torua's `write: true`, staged in
/// every shard then published; embedded Kuzu `SET`s it in the same statement).
pub(crate) const KNOWN_ALGORITHMS: [&str; 5] =
    ["pagerank", "wcc", "degree", "louvain", "degree-write"];

/// Kuzu's `maxIterations := k` runs k − 1 updates, so torua's 20 iterations are Kuzu's 21.
const PAGERANK_ITERATIONS: u32 = 20;
/// PageRank values compared (torua's `top_k` in the check run).
const PAGERANK_CHECKED: u32 = 1000;
/// The degree query counts a relation at each end (a self-loop twice), as torua does.
const DEGREE_QUERY: &str =
    "MATCH (e:Entity) OPTIONAL MATCH (e)-[r:RELATED]->() WITH e, count(r) AS o \
     OPTIONAL MATCH (e)<-[s:RELATED]-() WITH e, o, count(s) AS i RETURN e.id, o + i";

fn embedded_cypher(name: &str) -> String {
    match name {
        "pagerank" => format!(
            "CALL page_rank('G', maxIterations := {}, tolerance := 0.0) RETURN node.id, rank",
            PAGERANK_ITERATIONS + 1
        ),
        "wcc" => {
            "CALL weakly_connected_components('G', maxIterations := 10000) RETURN node.id, group_id"
                .into()
        }
        "louvain" => "CALL louvain('G') RETURN node.id, louvain_id".into(),
        "degree-write" => DEGREE_QUERY.replace(" RETURN ", " SET e.degree = o + i RETURN "),
        _ => DEGREE_QUERY.into(),
    }
}

fn torua_body(name: &str, top_k: u32) -> Value {
    match name {
        "pagerank" => {
            json!({"iterations": PAGERANK_ITERATIONS, "tolerance": 0.0, "damping": 0.85, "top_k": top_k})
        }
        "degree" => json!({"top_k": top_k, "write": false}),
        "degree-write" => json!({"top_k": top_k, "write": true}),
        _ => json!({"top_k": top_k}),
    }
}

/// The route's algorithm for a measured `name`.
fn route(name: &str) -> &str {
    name.strip_suffix("-write").unwrap_or(name)
}

/// One embedded run: ms until every row was read, and id → value (rank, component, degree).
fn embedded_run(conn: &Connection, name: &str) -> Result<(f64, HashMap<String, f64>)> {
    let cypher = embedded_cypher(name);
    let t = Instant::now();
    let rows: Vec<Vec<KValue>> = conn
        .query(&cypher)
        .with_context(|| cypher.clone())?
        .collect();
    let took = t.elapsed().as_secs_f64() * 1000.0;
    let mut values = HashMap::with_capacity(rows.len());
    for row in rows {
        let value = match row.get(1) {
            Some(KValue::Double(v)) => *v,
            Some(KValue::Int64(v)) => *v as f64,
            Some(KValue::UInt64(v)) => *v as f64,
            other => bail!("{name}: unexpected value {other:?}"),
        };
        match row.first() {
            Some(KValue::String(id)) => values.insert(id.clone(), value),
            other => bail!("{name}: unexpected id {other:?}"),
        };
    }
    Ok((took, values))
}

/// Runs `name` on `node` until it ends: (client wall ms, the final task). With `trace`, it is
/// started without waiting and polled every 20 ms, noting when the phase or superstep changes
/// (`running_ms`, phase, supersteps): where the time goes.
fn torua_run(
    cluster: &TestCluster,
    node: usize,
    name: &str,
    body: &Value,
    trace: Option<&mut Vec<Value>>,
) -> Result<(f64, Value)> {
    let n = cluster.node(node);
    let wait = "wait_for_completion=true&timeout=60s";
    let t = Instant::now();
    let path = match trace {
        Some(_) => format!("/graph/algorithms/{}", route(name)),
        None => format!("/graph/algorithms/{}?{wait}", route(name)),
    };
    let (status, mut task) = n.post_json(&path, body, Duration::from_secs(90))?;
    if status != 200 && status != 202 {
        bail!(
            "{name}: POST answered {status}: {}",
            short(&task.to_string(), 400)
        );
    }
    let id = task["id"]
        .as_str()
        .context("a task without an id")?
        .to_string();
    let mut seen = String::new();
    let mut trace = trace;
    while task["state"] == "running" {
        if t.elapsed() > Duration::from_secs(1800) {
            bail!("{name}: task {id} still running after 30 min: {task}");
        }
        task = match trace.as_mut() {
            Some(steps) => {
                let p = &task["progress"];
                let now = format!("{} {}", p["phase"], p["supersteps"]);
                if now != seen {
                    steps.push(json!([task["running_ms"], p["phase"], p["supersteps"]]));
                    seen = now;
                }
                std::thread::sleep(Duration::from_millis(20));
                n.get_json(&format!("/tasks/{id}"), Duration::from_secs(30))?
            }
            None => n.get_json(&format!("/tasks/{id}?{wait}"), Duration::from_secs(90))?,
        };
    }
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    if let Some(steps) = trace {
        steps.push(json!([
            task["running_ms"],
            task["progress"]["phase"],
            task["progress"]["supersteps"]
        ]));
    }
    if task["state"] != "completed" {
        bail!(
            "{name}: task {id} ended {}: {}",
            task["state"],
            task["error"]
        );
    }
    Ok((wall, task))
}

/// Torua's answer of the check run against the embedded values: a JSON summary and whether they agree.
fn check(name: &str, task: &Value, kuzu: &HashMap<String, f64>, g: &Graph) -> (Value, bool) {
    let result = &task["result"];
    let top: Vec<(String, f64)> = result["top"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|s| {
                    (
                        s["id"].as_str().unwrap_or("").to_string(),
                        s["value"].as_f64().unwrap_or(f64::NAN),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    match name {
        "pagerank" => {
            let missing = top.iter().filter(|(id, _)| !kuzu.contains_key(id)).count();
            let worst = top
                .iter()
                .filter_map(|(id, v)| kuzu.get(id).map(|k| (v - k).abs()))
                .fold(0.0, f64::max);
            let mut ranks: Vec<f64> = kuzu.values().copied().collect();
            ranks.sort_by(|a, b| b.total_cmp(a));
            let ok = top.len() == (PAGERANK_CHECKED as usize).min(kuzu.len())
                && missing == 0
                && worst < 1e-6;
            (
                json!({"compared": top.len(), "max_abs_diff": worst, "unknown_ids": missing,
                       "torua_top1": top.first().map(|t| t.1), "kuzu_top1": ranks.first(),
                       "supersteps": task["progress"]["supersteps"], "ok": ok}),
                ok,
            )
        }
        "louvain" => {
            let kuzu_q = modularity(g, kuzu);
            let torua_q = result["modularity"].as_f64();
            let ok = torua_q.is_some_and(|q| q >= kuzu_q - 0.02 * kuzu_q.abs());
            (
                json!({"torua_modularity": torua_q, "kuzu_modularity": kuzu_q,
                       "torua_communities": result["components"], "ok": ok}),
                ok,
            )
        }
        "wcc" => {
            let mut sizes: HashMap<u64, usize> = HashMap::new();
            for v in kuzu.values() {
                *sizes.entry(v.to_bits()).or_default() += 1;
            }
            let kuzu_largest = sizes.values().copied().max().unwrap_or(0);
            let torua_largest = result["largest"][0]["size"].as_u64();
            let ok = result["components"].as_u64() == Some(sizes.len() as u64)
                && torua_largest == Some(kuzu_largest as u64);
            (
                json!({"torua_components": result["components"], "kuzu_components": sizes.len(),
                       "torua_largest": torua_largest, "kuzu_largest": kuzu_largest, "ok": ok}),
                ok,
            )
        }
        _ => {
            let mut kuzu_top: Vec<f64> = kuzu.values().copied().collect();
            kuzu_top.sort_by(|a, b| b.total_cmp(a));
            kuzu_top.truncate(top.len());
            let torua_top: Vec<f64> = top.iter().map(|t| t.1).collect();
            let wrong_ids = top.iter().filter(|(id, v)| kuzu.get(id) != Some(v)).count();
            // The baseline query itself, against the generator's counts.
            let baseline_off = g
                .entities
                .iter()
                .filter(|e| kuzu.get(&e.id) != Some(&(e.degree as f64)))
                .count();
            let ok = torua_top == kuzu_top && wrong_ids == 0 && baseline_off == 0;
            (
                json!({"torua_top": torua_top, "kuzu_top": kuzu_top, "top_ids_off": wrong_ids,
                       "kuzu_vs_generator_off": baseline_off, "ok": ok}),
                ok,
            )
        }
    }
}

/// Modularity of a partition (entity → community label) with every relation an undirected
/// edge of weight 1, as Kuzu's `louvain` and torua's count it.
fn modularity(g: &Graph, community: &HashMap<String, f64>) -> f64 {
    let m2 = 2.0 * g.relations.len() as f64;
    let mut inside: HashMap<u64, f64> = HashMap::new();
    let mut tot: HashMap<u64, f64> = HashMap::new();
    for r in &g.relations {
        let (Some(a), Some(b)) = (community.get(&r.source), community.get(&r.target)) else {
            continue;
        };
        *tot.entry(a.to_bits()).or_default() += 1.0;
        *tot.entry(b.to_bits()).or_default() += 1.0;
        if a == b {
            *inside.entry(a.to_bits()).or_default() += 2.0;
        }
    }
    tot.iter()
        .map(|(c, t)| inside.get(c).copied().unwrap_or(0.0) / m2 - (t / m2) * (t / m2))
        .sum()
}

/// What one algorithm measured: medians in ms, the check's summary, the last run's supersteps.
struct Row {
    name: String,
    embedded: Option<f64>,
    running: Option<f64>,
    wall: Option<f64>,
    check: Value,
    steps: Option<f64>,
}

/// One algorithm: a check run of each side (not timed; torua's polled for its phases), then
/// `--algo-reps` runs of each, alternating which side goes first; one JSON record.
fn measure(
    args: &Args,
    conn: &Connection,
    cluster: Option<&TestCluster>,
    name: &str,
    g: &Graph,
    record: &mut Value,
) -> Result<Row> {
    let nodes = cluster.map_or(0, |c| c.nodes.len());
    let (_, kuzu) = embedded_run(conn, name)?;
    let (mut emb, mut running, mut wall) = (vec![], vec![], vec![]);
    let (mut checked, mut trace, mut last) = (json!(null), vec![], json!(null));
    if let Some(c) = cluster {
        let top_k = if name == "pagerank" {
            PAGERANK_CHECKED
        } else {
            10
        };
        let (_, task) = torua_run(c, 0, name, &torua_body(name, top_k), Some(&mut trace))?;
        let (summary, ok) = check(name, &task, &kuzu, g);
        if !ok {
            log(format!(
                "  !!! MISMATCH {name}: torua disagrees with embedded Kuzu: {summary}"
            ));
        }
        checked = summary;
        record["check_run_trace"] = json!(trace);
    }
    for rep in 0..args.algo_reps {
        let mut torua = |cluster: &TestCluster| -> Result<()> {
            let (w, task) = torua_run(cluster, rep % nodes, name, &torua_body(name, 10), None)?;
            running.push(task["running_ms"].as_f64().unwrap_or(f64::NAN));
            wall.push(w);
            last = task;
            Ok(())
        };
        if let (Some(c), true) = (cluster, rep % 2 == 1) {
            torua(c)?;
        }
        emb.push(embedded_run(conn, name)?.0);
        if let (Some(c), true) = (cluster, rep % 2 == 0) {
            torua(c)?;
        }
    }
    let p50 = |v: &[f64]| pct(v).map(|p| p.median);
    let (e50, r50, w50) = (p50(&emb), p50(&running), p50(&wall));
    let ratio = r50.zip(e50).map(|(r, e)| r / e);
    let fields = json!({
        "embedded_ms": emb, "embedded_median_ms": e50,
        "torua_running_ms": running, "torua_running_median_ms": r50,
        "torua_wall_ms": wall, "torua_wall_median_ms": w50,
        "ratio_running_vs_embedded": ratio, "ratio_wall_vs_embedded": w50.zip(e50).map(|(w, e)| w / e),
        "goal_ratio_max": 2.0, "goal_met": ratio.map(|r| r <= 2.0),
        "progress": last["progress"], "check": checked,
    });
    if let (Some(r), Value::Object(f)) = (record.as_object_mut(), fields) {
        r.extend(f);
    }
    Ok(Row {
        name: name.to_string(),
        embedded: e50,
        running: r50,
        wall: w50,
        check: checked,
        steps: last["progress"]["supersteps"].as_f64(),
    })
}

/// The phase on `cluster` (None: the embedded side alone), algorithm by algorithm ([`measure`]),
/// reported as it goes; an algorithm that fails is reported and the others still run. Returns
/// the mismatches and failures.
pub(crate) fn algorithm_phase(
    args: &Args,
    db: &Database,
    cluster: Option<&TestCluster>,
    target: &str,
    g: &Graph,
    out: &mut Out,
) -> Result<Vec<String>> {
    let conn = Connection::new(db)?;
    let t = Instant::now();
    let _ = conn.query("CALL drop_projected_graph('G')");
    conn.query("CALL project_graph('G', ['Entity'], ['RELATED'])")?;
    let project_ms = t.elapsed().as_secs_f64() * 1000.0;
    let nodes = cluster.map_or(0, |c| c.nodes.len());
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for name in &args.algorithms {
        log(format!(
            "  {name}: check run, then {} runs each",
            args.algo_reps
        ));
        let mut record = json!({
            "kind": "algorithm", "target": target, "algorithm": name, "nodes": nodes,
            "project_graph_ms": project_ms, "check_run_trace_columns": ["running_ms", "phase", "supersteps"],
        });
        match measure(args, &conn, cluster, name, g, &mut record) {
            Ok(row) => {
                if row.check["ok"] == false {
                    problems.push(format!("{name}: {}", row.check));
                }
                rows.push(row);
            }
            Err(e) => {
                log(format!("  !!! {name} FAILED: {e:#}"));
                record["error"] = json!(format!("{e:#}"));
                problems.push(format!("{name} failed: {e:#}"));
            }
        }
        out.emit(record)?;
    }
    let _ = conn.query("CALL drop_projected_graph('G')");
    println!(
        "\ngraph algorithms: {target} vs one embedded Kuzu database ({} entities, {} relations; \
         Kuzu buffer pool {} MB, {} threads, project_graph {:.0} ms not counted); medians of {} runs, ms",
        g.entities.len(),
        g.relations.len(),
        args.sizing.memory_mb,
        torua_bench::kuzu::kuzu_threads(),
        project_ms,
        args.algo_reps
    );
    println!(
        "{:<10} {:>12} {:>14} {:>12} {:>9} {:>6}  check",
        "", "embedded", "torua running", "torua wall", "ratio", "steps"
    );
    let f = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.1}"));
    for r in rows {
        let ratio = r.running.zip(r.embedded).map(|(t, e)| t / e);
        println!(
            "{:<10} {:>12} {:>14} {:>12} {:>8}x {:>6}  {}",
            r.name,
            f(r.embedded),
            f(r.running),
            f(r.wall),
            ratio.map_or("-".into(), |x| format!("{x:.2}")),
            r.steps.map_or("-".into(), |s| s.to_string()),
            match r.check["ok"].as_bool() {
                Some(true) => format!("ok {}", r.check),
                Some(false) => format!("!!! MISMATCH {}", r.check),
                None => "-".into(),
            }
        );
    }
    Ok(problems)
}
