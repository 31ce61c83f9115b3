//! Process-level tests of the graph store: real nodes, real Kuzu files, real QUIC replication.
//! GraphRAG import readable from every node and across restarts; kill -9 during ingest loses no
//! acknowledged write; bad input changes nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use torua_testkit::{dulce_dir, import_graphrag, wait, ClusterOptions, TestCluster};

const SETTLE: Duration = Duration::from_secs(60);
const T: Duration = Duration::from_secs(10);

/// Storage tests: a SIGTERM stops the node at once (drains before leaving are tested in
/// heal_process.rs; here restarts must find the data where it was).
fn graph_options(nodes: usize) -> ClusterOptions {
    let mut o = ClusterOptions::graph(nodes);
    o.env.insert("TORUA_DRAIN_TIMEOUT".into(), "0s".into());
    o
}

fn wait_green(cluster: &mut TestCluster) {
    cluster.wait_green(SETTLE).unwrap();
}

/// Every entity readable from every running node, with its relations.
fn check_dulce_everywhere(cluster: &mut TestCluster, expected: &torua::graph::model::Batch) {
    let mut rel_count: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &expected.relations {
        *rel_count.entry(r.source.as_str()).or_default() += 1;
        if r.target != r.source {
            *rel_count.entry(r.target.as_str()).or_default() += 1;
        }
    }
    for i in cluster.running() {
        let node = cluster.node(i);
        let get = |path: String| node.get_json(&path, T).unwrap();
        let same = |got: &Value, want: &str, what: String| {
            assert_eq!(got, want, "{what} on {}", node.id);
        };
        for e in &expected.entities {
            let got = get(format!("/graph/entities/{}", e.id));
            same(
                &got["entity"]["title"],
                &e.title,
                format!("{}: {got}", e.id),
            );
            let rels = got["relations"].as_array().map(Vec::len).unwrap_or(0);
            assert_eq!(
                rels,
                rel_count.get(e.id.as_str()).copied().unwrap_or(0),
                "relations of {} on {}",
                e.id,
                node.id
            );
        }
        for c in &expected.chunks {
            let got = get(format!("/graph/chunks/{}", c.id));
            same(&got["chunk"]["text"], &c.text, format!("chunk {}", c.id));
        }
    }
    // Per-shard entity counts add up, and every copy of a shard agrees.
    let shards = cluster.wait_applied(0, T).unwrap();
    let mut per_shard: BTreeMap<u64, HashSet<u64>> = BTreeMap::new();
    for c in shards["copies"].as_array().unwrap() {
        if c["in_sync"] == true {
            per_shard
                .entry(c["shard"].as_u64().unwrap())
                .or_default()
                .insert(c["entities"].as_u64().unwrap_or(u64::MAX));
        }
    }
    let mut total = 0;
    for (shard, counts) in &per_shard {
        assert_eq!(
            counts.len(),
            1,
            "copies of shard {shard} disagree: {shards}"
        );
        total += counts.iter().next().unwrap();
    }
    assert_eq!(total as usize, expected.entities.len(), "{shards}");
}

/// SIGTERM to node `i`, which stops at once (no drain with these options).
fn stop(cluster: &mut TestCluster, i: usize) {
    cluster
        .node_mut(i)
        .terminate(Duration::from_secs(20))
        .unwrap();
}

fn import(url: &str) {
    let stdout = import_graphrag(&dulce_dir(), url);
    assert!(
        stdout.contains("39 entities") && stdout.contains("107 relations"),
        "{stdout}"
    );
}

#[test]
fn dulce_import_is_readable_from_every_node_and_survives_restarts() {
    let mut cluster = TestCluster::start_green(3, graph_options(3), SETTLE).unwrap();
    let expected = torua::cmd::import::read_folder(&dulce_dir()).unwrap();
    import(&cluster.node(1).url(""));
    // Importing again is harmless.
    import(&cluster.node(2).url(""));
    check_dulce_everywhere(&mut cluster, &expected);

    // Rolling restart, one node at a time.
    for i in 0..3 {
        stop(&mut cluster, i);
        cluster.node_mut(i).start().unwrap();
        cluster.wait_node_up(i, SETTLE).unwrap();
        wait_green(&mut cluster);
    }
    check_dulce_everywhere(&mut cluster, &expected);

    // Whole-cluster restart.
    for i in 0..3 {
        stop(&mut cluster, i);
    }
    cluster.start_all().unwrap();
    wait_green(&mut cluster);
    check_dulce_everywhere(&mut cluster, &expected);
}

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start_green(3, graph_options(3), SETTLE).unwrap();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let url = cluster.node(0).url("/graph/ingest");
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let ids: Vec<String> = (0..20).map(|k| format!("w-{n}-{k}")).collect();
                n += 1;
                let entities: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"id": id, "title": id, "type": "T"}))
                    .collect();
                let relations: Vec<Value> = ids.windows(2).map(|w| json!({"id": format!("{}>{}", w[0], w[1]), "source": w[0], "target": w[1]})).collect();
                if let Ok((200, answer)) = torua_testkit::post_json(
                    &url,
                    &json!({"entities": entities, "relations": relations}),
                    Duration::from_secs(30),
                ) {
                    if answer["errors"] == false {
                        acked.lock().unwrap().extend(ids);
                    }
                }
            }
        })
    };
    // Ok once at least `n` writes are acknowledged.
    let acked_at_least = |n: usize| {
        let got = acked.lock().unwrap().len();
        if got >= n {
            Ok(())
        } else {
            Err(format!("{got} acked"))
        }
    };
    wait::until("200 writes acknowledged", SETTLE, || acked_at_least(200));
    // Kill only once every copy is in sync (a copy that left the in-sync set during start-up
    // catches up from its primary's log within a few seconds), as the chaos suite does: killing the
    // last in-sync copy of a shard would rightly stop its writes.
    wait::until("green under ingest", SETTLE, || {
        let health = cluster.node(0).get_json("/cluster/health", T).unwrap();
        if health["status"] == "green" {
            Ok(())
        } else {
            Err(health)
        }
    });
    let before_kill = acked.lock().unwrap().len();
    cluster.node_mut(1).kill9();
    // Ingest continues once the dead node's copies leave the in-sync sets.
    wait::until("ingest continuing after kill -9", SETTLE, || {
        acked_at_least(before_kill + 200)
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    for i in [0usize, 2] {
        for id in &acked {
            let got = cluster
                .node(i)
                .get_json(&format!("/graph/entities/{id}"), T)
                .unwrap();
            assert_eq!(
                got["entity"]["id"],
                id.as_str(),
                "acknowledged {id} missing on {}: {got}",
                cluster.node(i).id
            );
        }
    }
    let health = cluster.node(2).get_json("/cluster/health", T).unwrap();
    assert_eq!(
        health["status"], "yellow",
        "a dead copy holder leaves the cluster yellow: {health}"
    );
}

#[test]
fn bad_input_gets_a_4xx_and_changes_nothing() {
    let mut opts = graph_options(1);
    opts.env.insert("TORUA_EMBEDDING_DIM".into(), "4".into());
    opts.env.insert("TORUA_REPLICAS".into(), "1".into());
    let cluster = TestCluster::start_green(1, opts, SETTLE).unwrap();
    let url = cluster.node(0).url("/graph/ingest");
    let raw = |body: &str, content_type: &str| -> (u16, String) {
        match ureq::post(&url)
            .set("content-type", content_type)
            .timeout(T)
            .send_string(body)
        {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        }
    };
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "malformed JSON",
            "{\"entities\": [".into(),
            "application/json",
            400,
            "malformed",
        ),
        (
            "unknown field",
            r#"{"entitys": []}"#.into(),
            "application/json",
            400,
            "entitys",
        ),
        ("empty batch", "{}".into(), "application/json", 400, "empty"),
        (
            "missing id",
            r#"{"entities": [{"id": "ok"}, {"title": "no id"}]}"#.into(),
            "application/json",
            400,
            "id",
        ),
        (
            "empty id",
            r#"{"entities": [{"id": "ok"}, {"id": ""}]}"#.into(),
            "application/json",
            400,
            "missing id",
        ),
        (
            "wrong embedding length",
            r#"{"entities": [{"id": "ok"}, {"id": "e", "embedding": [1, 2, 3]}]}"#.into(),
            "application/json",
            400,
            "TORUA_EMBEDDING_DIM=4",
        ),
        (
            "relation without target",
            r#"{"relations": [{"id": "r", "source": "a", "target": ""}]}"#.into(),
            "application/json",
            400,
            "target",
        ),
        (
            "bad ndjson line",
            "{\"entity\": {\"id\": \"ok\"}}\n{\"nope\": {}}\n".into(),
            "application/x-ndjson",
            400,
            "unknown kind",
        ),
        (
            "wrong type",
            r#"{"entities": [{"id": 5}]}"#.into(),
            "application/json",
            400,
            "malformed",
        ),
        (
            "oversized",
            format!(
                "{{\"entities\": [{{\"id\": \"big\", \"description\": \"{}\"}}]}}",
                "x".repeat(65 << 20)
            ),
            "application/json",
            413,
            "",
        ),
    ];
    for (name, body, ct, status, why) in cases {
        let (got, text) = raw(&body, ct);
        assert_eq!(got, status, "{name}: {text}");
        assert!(
            text.contains(why),
            "{name}: reason must mention {why:?}: {text}"
        );
    }
    // Nothing was written: not even the valid items of the refused batches.
    let got = cluster.node(0).get_json("/graph/entities/ok", T).unwrap();
    assert_eq!(got["error"]["status"], 404, "{got}");
    let shards = cluster.wait_applied(0, T).unwrap();
    let total = torua_testkit::answers::copies_total(&shards, "entities");
    assert_eq!(total, 0, "{shards}");
    // A good NDJSON body is accepted.
    let (status, text) = raw("{\"entity\": {\"id\": \"ok\", \"embedding\": [1,2,3,4]}}\n{\"relation\": {\"id\": \"r\", \"source\": \"ok\", \"target\": \"later\"}}\n", "application/x-ndjson");
    assert_eq!(status, 200, "{text}");
    let got = cluster.node(0).get_json("/graph/entities/ok", T).unwrap();
    assert_eq!(
        got["relations"][0]["target"], "later",
        "a relation to a missing entity is kept (stub): {got}"
    );
    let (code, _) = torua_testkit::post_json(
        &url,
        &json!({"entities": [{"id": "later", "title": "arrived"}]}),
        T,
    )
    .unwrap();
    assert_eq!(code, 200);
    let got = cluster
        .node(0)
        .get_json("/graph/entities/later", T)
        .unwrap();
    assert_eq!(
        got["entity"]["title"], "arrived",
        "the stub is filled in: {got}"
    );
    assert_eq!(got["relations"][0]["source"], "ok");
    // Deleting an entity removes its relations everywhere.
    let resp = ureq::delete(&cluster.node(0).url("/graph/entities/ok"))
        .timeout(T)
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = cluster
        .node(0)
        .get_json("/graph/entities/later", T)
        .unwrap();
    assert_eq!(got["relations"].as_array().map(Vec::len), Some(0), "{got}");
    assert_eq!(
        cluster.node(0).get_json("/graph/entities/ok", T).unwrap()["error"]["status"],
        404
    );
}
