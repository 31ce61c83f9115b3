//! Loading torua: the cluster started for the run, the corpus POSTed in batches, waiting
//! until it is applied and searchable, and the placement checked.

use super::*;

pub(crate) fn start_cluster(a: &Args, nodes: usize, replicas: usize) -> Result<TestCluster> {
    let extra = [("TORUA_EMBEDDING_DIM", a.dim.to_string())];
    start_green(nodes, replicas, a.sizing, &a.common, &extra)
}

pub(crate) fn cluster_rss(cluster: &TestCluster) -> Vec<Option<f64>> {
    cluster
        .nodes
        .iter()
        .map(|n| n.pid().and_then(rss_mb))
        .collect()
}

/// Waits until no write is pending anywhere, logging progress.
pub(crate) fn wait_applied(a: &Args, cluster: &TestCluster, deadline: Instant) -> Result<()> {
    torua_bench::cluster::wait_applied(
        cluster,
        0,
        Duration::from_secs(60),
        a.min_available_mb,
        deadline,
        "at --max-minutes",
    )
}

/// Waits until a retrieve that may not be partial succeeds on every node (search indexes that a
/// bulk load dropped are back).
pub(crate) fn wait_searchable(cluster: &TestCluster, q: &Query, deadline: Instant) -> Result<()> {
    let include = ["entities".to_string()];
    let body: Value = serde_json::from_slice(&serde_json::to_vec(&Request {
        query: Some(&q.text),
        embedding: Some(&q.embedding),
        mode: "local",
        top_k: 10,
        hops: 0,
        include: Some(&include),
        allow_partial: Some(false),
        ..Request::default()
    })?)?;
    let mut last_log = Instant::now();
    for node in &cluster.nodes {
        loop {
            let (status, answer) = node.post_json("/retrieve", &body, Duration::from_secs(60))?;
            if status == 200 && answer["_shards"]["failed"] == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "retrieve on {} still fails: {status} {}",
                    node.id,
                    short(&answer.to_string(), 400)
                );
            }
            if last_log.elapsed() > Duration::from_secs(20) {
                log(format!(
                    "  not searchable yet ({}: {status} {})",
                    node.id,
                    short(&answer.to_string(), 200)
                ));
                last_log = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

/// Loads the graph into the cluster; returns the load record.
pub(crate) fn load_torua(
    a: &Args,
    cluster: &TestCluster,
    g: &Graph,
    probe: &Query,
) -> Result<Value> {
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.url("/graph/ingest"))
        .collect();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(a.max_minutes * 60.0);
    let mut phases = serde_json::Map::new();
    let mut retries = 0;
    let mut json_bytes = 0;
    for kind in ["entities", "chunks", "communities", "relations"] {
        let b = match kind {
            "entities" => bodies(&g.items.entities, kind, a.batch)?,
            "chunks" => bodies(&g.items.chunks, kind, a.batch)?,
            "communities" => bodies(&g.items.communities, kind, 20)?,
            _ => bodies(&g.items.relations, kind, a.relation_batch)?,
        };
        let bytes: usize = b.iter().map(|x| x.1.len()).sum();
        json_bytes += bytes;
        log(format!(
            "  {kind}: {} bodies, {:.0} MB of JSON",
            b.len(),
            bytes as f64 / 1e6
        ));
        let t = Instant::now();
        retries += post_all(
            kind,
            &urls,
            &b,
            a.clients,
            deadline,
            Duration::from_secs(120),
        )
        .into_result(kind)?;
        let s = t.elapsed().as_secs_f64();
        log(format!("  {kind} acknowledged in {s:.1} s"));
        phases.insert(format!("{kind}_acknowledged_s"), json!(s));
    }
    let acknowledged = t0.elapsed().as_secs_f64();
    // The request bodies are gone: give their memory back (the machine is tight during the load).
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    wait_applied(a, cluster, deadline)?;
    let applied = t0.elapsed().as_secs_f64();
    log(format!(
        "  acknowledged after {acknowledged:.1} s, applied after {applied:.1} s"
    ));
    wait_searchable(cluster, probe, deadline)?;
    let searchable = t0.elapsed().as_secs_f64();
    log(format!("  searchable after {searchable:.1} s"));
    let verify = verify_shards(cluster, g, a.sizing.shards)?;
    let rss = cluster_rss(cluster);
    log(format!(
        "  node RSS MB after the load {rss:?}; available MB {:?}",
        mem_available_mb()
    ));
    Ok(json!({
        "acknowledged_s": acknowledged, "applied_s": applied, "searchable_s": searchable,
        "phases": phases, "retries": retries, "json_bytes": json_bytes,
        "items_per_s": (g.items.entities.len() + g.items.chunks.len() + g.items.communities.len() + g.items.relations.len()) as f64 / searchable,
        "rss_mb_after_load": rss, "verify": verify,
    }))
}

/// Checks /cluster/shards against the data: each item once among the primaries, each relation
/// once per endpoint shard, in-sync copies agreeing.
pub(crate) fn verify_shards(cluster: &TestCluster, g: &Graph, shards: u32) -> Result<Value> {
    let expected_relations: u64 = g
        .items
        .relations
        .iter()
        .map(|r| 1 + u64::from(shard_of(&r.source, shards) != shard_of(&r.target, shards)))
        .sum();
    let copies = cluster.shard_copies(0, Duration::from_secs(120))?;
    let keys = ["entities", "relations", "chunks", "communities"];
    let mut sums = [0u64; 4];
    let mut per_shard: BTreeMap<u64, Vec<Vec<u64>>> = BTreeMap::new();
    for c in &copies {
        let v: Vec<u64> = keys
            .iter()
            .map(|k| c[k].as_u64().unwrap_or(u64::MAX))
            .collect();
        if c["primary"] == true {
            for (s, x) in sums.iter_mut().zip(&v) {
                *s = s.saturating_add(*x);
            }
        }
        if c["in_sync"] == true {
            per_shard
                .entry(c["shard"].as_u64().unwrap_or(0))
                .or_default()
                .push(v);
        }
    }
    let disagree: Vec<u64> = per_shard
        .iter()
        .filter(|(_, v)| v.iter().any(|x| *x != v[0]))
        .map(|(s, _)| *s)
        .collect();
    let expected = [
        g.items.entities.len() as u64,
        expected_relations,
        g.items.chunks.len() as u64,
        g.items.communities.len() as u64,
    ];
    let ok = sums == expected && disagree.is_empty();
    let size: u64 = copies.iter().filter_map(|c| c["size_bytes"].as_u64()).sum();
    let result = json!({"ok": ok, "primaries": sums, "expected": expected,
                        "in_sync_copies_disagree_on_shards": disagree, "copies": copies.len(),
                        "size_bytes_all_copies": size});
    if !ok {
        log(format!("VERIFICATION FAILED: {result}"));
    }
    Ok(result)
}
