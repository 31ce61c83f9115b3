//! Ingest into torua: the graph POSTed in batches by parallel clients to the cluster started for
//! the run, and the placement `/cluster/shards` reports checked against the data.

use super::*;

/// What /cluster/shards says after the ingest, checked against the data (an end with a routing
/// key is placed by the key, else by its id).
pub(crate) fn verify_shards(cluster: &TestCluster, g: &Graph, shards: u32) -> Result<Value> {
    let expected_relations: u64 = g
        .relations
        .iter()
        .map(|r| {
            let source = r.source_routing.as_deref().unwrap_or(&r.source);
            let target = r.target_routing.as_deref().unwrap_or(&r.target);
            if shard_of(source, shards) == shard_of(target, shards) {
                1
            } else {
                2
            }
        })
        .sum();
    let copies = cluster.shard_copies(0, Duration::from_secs(120))?;
    let (mut entities, mut relations) = (0u64, 0u64);
    let in_sync = copies.iter().filter(|c| c["in_sync"] == true).count();
    let mut per_shard: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    // A copy being rebuilt (after an apply stall) has no counts yet: listed, not counted.
    let mut uncounted = Vec::new();
    for c in &copies {
        let (Some(e), Some(r)) = (c["entities"].as_u64(), c["relations"].as_u64()) else {
            uncounted.push(json!({"shard": c["shard"], "node": c["node"], "state": c["state"], "primary": c["primary"]}));
            continue;
        };
        if c["primary"] == true {
            entities += e;
            relations += r;
        }
        if c["in_sync"] == true {
            per_shard
                .entry(c["shard"].as_u64().unwrap_or(0))
                .or_default()
                .push((e, r));
        }
    }
    let disagreeing: Vec<u64> = per_shard
        .iter()
        .filter(|(_, v)| v.iter().any(|x| *x != v[0]))
        .map(|(s, _)| *s)
        .collect();
    let ok = entities == g.entities.len() as u64
        && relations == expected_relations
        && disagreeing.is_empty();
    let size: u64 = copies.iter().filter_map(|c| c["size_bytes"].as_u64()).sum();
    let health = cluster
        .node(0)
        .get_json("/cluster/health", Duration::from_secs(10))?;
    let result = json!({
        "health": health["status"], "health_reasons": health["reasons"], "in_sync_copies": in_sync,
        "ok": ok, "primary_entities": entities, "expected_entities": g.entities.len(),
        "primary_relation_copies": relations, "expected_relation_copies": expected_relations,
        "in_sync_copies_disagree_on_shards": disagreeing, "copies": copies.len(), "size_bytes_all_copies": size,
        "copies_without_counts": uncounted,
    });
    if !ok {
        log(format!("VERIFICATION FAILED: {result}"));
    }
    Ok(result)
}

/// Timeout of one ingest request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// (retries, items acknowledged, the failure if any): the deadline passing stops the load
/// without failing it (the rate is then of what was acknowledged).
fn loaded(l: Loaded) -> (usize, usize, Option<String>) {
    (
        l.retries,
        l.acknowledged,
        l.failure.map(|e| format!("{e:#}")),
    )
}

pub(crate) fn ingest_torua(
    args: &Args,
    cluster: &TestCluster,
    g: &Graph,
    nodes: usize,
    replicas: usize,
) -> Result<(IngestResult, Value)> {
    let ebodies = bodies(&g.entities, "entities", args.batch)?;
    let rbodies = bodies(&g.relations, "relations", args.batch)?;
    let body_bytes: usize = ebodies.iter().chain(&rbodies).map(|b| b.1.len()).sum();
    let urls: Vec<String> = (0..nodes)
        .map(|i| cluster.node(i).url("/graph/ingest"))
        .collect();
    log(format!(
        "torua {nodes} node(s): POST {} + {} batches ({:.0} MB of JSON)",
        ebodies.len(),
        rbodies.len(),
        body_bytes as f64 / 1e6
    ));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(args.max_minutes * 60.0);
    let (mut retries, entities_done, mut failure) = loaded(post_all(
        "entities",
        &urls,
        &ebodies,
        args.clients,
        deadline,
        CLIENT_TIMEOUT,
    ));
    let entities_s = t0.elapsed().as_secs_f64();
    log(format!("  entities done in {entities_s:.1} s"));
    let t1 = Instant::now();
    let mut relations_done = 0;
    if failure.is_none() {
        let (r, done, f) = loaded(post_all(
            "relations",
            &urls,
            &rbodies,
            args.clients,
            deadline,
            CLIENT_TIMEOUT,
        ));
        (retries, relations_done, failure) = (retries + r, done, f);
    }
    let relations_s = t1.elapsed().as_secs_f64();
    let acked = t0.elapsed();
    // Acknowledged = durable in every in-sync copy's log; the rate counts until it is all
    // applied (visible to reads), so the comparison with embedded Kuzu is like for like.
    if failure.is_none() {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(60);
        if let Err(e) = cluster.wait_applied(0, left) {
            failure = Some(format!("{e:#}"));
        }
    }
    let wall = t0.elapsed();
    log(format!(
        "  acknowledged after {:.1} s, applied after {:.1} s",
        acked.as_secs_f64(),
        wall.as_secs_f64()
    ));
    log(format!("  relations done in {relations_s:.1} s"));
    let mut r = IngestResult::new(
        target_name(nodes, replicas),
        g,
        wall,
        (entities_s, relations_s),
        (entities_done, relations_done),
    );
    r.retries = retries;
    let verify = if r.complete {
        verify_shards(cluster, g, args.sizing.shards)?
    } else {
        let why = match &failure {
            Some(e) => format!(
                "a batch failed for good: {}",
                e.chars().take(400).collect::<String>()
            ),
            None => format!("stopped at --max-minutes {}", args.max_minutes),
        };
        log(format!("  INCOMPLETE ({why}): {entities_done} entities, {relations_done} relations acknowledged"));
        let health = cluster
            .node(0)
            .get_json("/cluster/health", Duration::from_secs(30))
            .ok();
        json!({"ok": null, "incomplete": why,
               "health": health.as_ref().map(|h| h["status"].clone()),
               "health_reasons": health.as_ref().map(|h| h["reasons"].clone())})
    };
    r.extra = json!({"nodes": nodes, "replicas": replicas, "json_bytes": body_bytes,
                     "acknowledged_s": acked.as_secs_f64(), "verify": verify.clone()});
    Ok((r, verify))
}
