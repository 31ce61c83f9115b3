//! Process-level tests of what travels over the QUIC peer transport: push registration,
//! aggregated health from any node, broadcast, and the cluster secret keeping strangers out.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua_testkit::{member_ids, summarize, wait, ClusterOptions, TestCluster};

/// Forming a cluster creates every shard copy (each builds its search indexes): seconds on an idle
/// machine, much longer on a loaded one.
const SETTLE: Duration = Duration::from_secs(60);
/// Client timeout of one status request.
const T: Duration = Duration::from_secs(10);

fn registry_ids(v: &Value) -> Vec<String> {
    v["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["registration"]["node_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn registration_health_from_any_node_and_coordinator_failover() {
    let mut cluster = TestCluster::start(5, ClusterOptions::default()).unwrap();
    cluster.wait_converged(SETTLE).unwrap();

    // Every node registers with node-1 within a few rounds; every node can list the registry.
    let all = ids(&["node-1", "node-2", "node-3", "node-4", "node-5"]);
    cluster
        .wait_all("/cluster/nodes", SETTLE, |_, v| registry_ids(v) == all)
        .unwrap();
    let entry = &cluster.node(2).get_json("/cluster/nodes", T).unwrap()["nodes"][2];
    assert_eq!(entry["registration"]["node_id"], "node-3");
    assert!(
        entry["registration"]["capacity"]["cpus"].as_u64().unwrap() >= 1,
        "{entry}"
    );
    assert!(entry["registered_at_ms"].as_u64().unwrap() > 0);

    // /cluster/health from every node is the coordinator's aggregated view, green.
    let answers = cluster
        .wait_all("/cluster/health", SETTLE, |_, v| {
            v["source"] == "coordinator"
                && v["answered_by"] == "node-1"
                && v["status"] == "green"
                && v["number_of_registered_nodes"] == 5
                && v["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|n| n["report"]["uptime_ms"].is_u64())
        })
        .unwrap();
    let statuses: Vec<(&Value, &Value, &Value)> = answers
        .iter()
        .map(|(_, v)| (&v["status"], &v["coordinator"], &v["term"]))
        .collect();
    assert!(statuses.windows(2).all(|w| w[0] == w[1]), "{statuses:?}");

    // kill -9 the coordinator: node-2 takes over and rebuilds the registry from re-registrations.
    cluster.node_mut(0).kill9();
    let survivors = ids(&["node-2", "node-3", "node-4", "node-5"]);
    cluster
        .wait_all("/cluster/nodes", SETTLE, |_, v| {
            v["coordinator"] == "node-2" && registry_ids(v) == survivors
        })
        .unwrap();
    cluster
        .wait_all("/cluster/health", SETTLE, |_, v| {
            v["source"] == "coordinator"
                && v["answered_by"] == "node-2"
                && v["number_of_registered_nodes"] == 4
        })
        .unwrap();
}

#[test]
fn broadcast_reaches_every_live_node_and_reports_the_dead_one() {
    let mut cluster = TestCluster::start(5, ClusterOptions::default()).unwrap();
    cluster.wait_converged(SETTLE).unwrap();
    cluster.node_mut(4).kill9();

    let body = json!({"path": "/control", "payload": {"log_filter": "info,torua=debug"}});
    let started = Instant::now();
    let (status, answer) = cluster
        .node(1)
        .post_json("/broadcast?timeout=1s", &body, Duration::from_secs(10))
        .unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["sent_to"], 5, "{answer}");
    let results = answer["results"].as_array().unwrap();
    for r in results {
        let dead = r["node_id"] == "node-5";
        assert_eq!(r["ok"], !dead, "{r}");
        if dead {
            assert!(r["err"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
        }
    }
    // One dead node costs at most the per-node timeout, not more.
    assert!(
        took < Duration::from_secs(3),
        "broadcast took {took:?} with a 1s per-node timeout"
    );
    for i in 0..4 {
        let h = cluster.node(i).get_json("/health", T).unwrap();
        assert_eq!(h["log_filter"], "info,torua=debug", "{h}");
    }

    // A handler error comes back per node; bad requests are refused with a reason.
    let bad_filter = json!({"path": "/control", "payload": {"log_filter": "info,[[["}});
    let (status, answer) = cluster
        .node(0)
        .post_json("/broadcast", &bad_filter, Duration::from_secs(10))
        .unwrap();
    assert_eq!(status, 200);
    let live: Vec<&Value> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["node_id"] != "node-5")
        .collect();
    assert!(
        live.iter()
            .all(|r| r["ok"] == false && r["err"].as_str().unwrap().contains("log_filter")),
        "{answer}"
    );
    for (body, why) in [
        (
            json!({"path": "/nope", "payload": {}}),
            "no broadcast handler",
        ),
        (json!({"payload": {}}), "path"),
        (json!("not an object"), "expected"),
    ] {
        let (status, answer) = cluster
            .node(0)
            .post_json("/broadcast", &body, Duration::from_secs(5))
            .unwrap();
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"]["reason"].as_str().unwrap().contains(why),
            "{answer}"
        );
    }
    let (status, _) = cluster
        .node(0)
        .post_json("/broadcast?timeout=5h", &body, Duration::from_secs(5))
        .unwrap();
    assert_eq!(status, 400);
}

#[test]
fn a_node_with_another_secret_is_never_admitted() {
    let mut opts = ClusterOptions {
        ids: Some(ids(&["node-1", "node-2", "node-3", "node-4", "a"])),
        ..ClusterOptions::default()
    };
    opts.env.insert(
        "TORUA_CLUSTER_SECRET".into(),
        "the-real-cluster-secret-0123456789".into(),
    );
    // This test is about the peers' secret; API keys are security_process's.
    opts.env.insert("TORUA_AUTH".into(), "off".into());
    opts.env.insert("TORUA_HTTP_TLS".into(), "off".into());
    // The intruder never joins: the shard map forms over the four legitimate nodes.
    opts.env.insert("TORUA_BOOTSTRAP_EXPECT".into(), "4".into());
    let mut cluster = TestCluster::new(5, opts).unwrap();
    // The intruder: lowest id, same cluster id, seeded with node-1, but another secret.
    cluster.node_mut(4).env.insert(
        "TORUA_CLUSTER_SECRET".into(),
        "some-other-secret-0123456789".into(),
    );
    cluster.start_all().unwrap();

    let members = ids(&["node-1", "node-2", "node-3", "node-4"]);
    let legit = [0usize, 1, 2, 3];
    // Err names a legitimate node that lists the intruder as a member.
    let intruder_seen = |cluster: &TestCluster| -> Result<(), String> {
        for &i in &legit {
            let h = cluster.node(i).get_json("/cluster/health", T).unwrap();
            if member_ids(&h).contains(&"a".to_string()) {
                return Err(format!("intruder in {}'s view: {h}", cluster.node(i).id));
            }
        }
        Ok(())
    };
    // Wait for the legitimate cluster while checking the intruder never shows up.
    wait::until("the legitimate cluster green", SETTLE, || {
        if let Err(e) = intruder_seen(&cluster) {
            panic!("{e}");
        }
        for &i in &legit {
            let h = cluster.node(i).get_json("/cluster/health", T)?;
            anyhow::ensure!(
                h["status"] == "green"
                    && h["coordinator"] == "node-1"
                    && h["source"] == "coordinator",
                "{}: {}",
                cluster.node(i).id,
                summarize(&h)
            );
        }
        Ok(())
    });
    // Keep watching for 2 s: many gossip rounds of the intruder trying to join.
    wait::throughout(Duration::from_secs(2), Duration::from_millis(100), || {
        intruder_seen(&cluster)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let registry = cluster.node(2).get_json("/cluster/nodes", T).unwrap();
    assert_eq!(registry_ids(&registry), members, "{registry}");
    // Green again if a stall on a loaded machine made a node look dead for a moment.
    wait::until("green with 4 nodes", SETTLE, || {
        let health = cluster.node(3).get_json("/cluster/health", T).unwrap();
        if health["status"] == "green" && health["number_of_nodes"] == 4 {
            Ok(())
        } else {
            Err(health)
        }
    });

    // A broadcast from the cluster never reaches the intruder; one from the intruder reaches only itself.
    let body = json!({"path": "/control", "payload": {"log_filter": "warn"}});
    let (_, answer) = cluster
        .node(0)
        .post_json("/broadcast", &body, Duration::from_secs(10))
        .unwrap();
    assert_eq!(answer["sent_to"], 4, "{answer}");
    let (_, answer) = cluster
        .node(4)
        .post_json("/broadcast", &body, Duration::from_secs(10))
        .unwrap();
    assert_eq!(answer["sent_to"], 1, "{answer}");
    let intruder_view = cluster.node(4).get_json("/cluster/health", T).unwrap();
    assert_eq!(member_ids(&intruder_view), ["a"], "{intruder_view}");

    // node-1 saw and dropped the intruder's gossip.
    let metrics = ureq::get(&cluster.node(0).url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let rejected: f64 = metrics
        .lines()
        .find(|l| l.starts_with("torua_gossip_packets_rejected_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        rejected > 0.0,
        "node-1 must have rejected the intruder's gossip"
    );
}

#[test]
fn without_a_secret_a_node_refuses_to_listen_beyond_loopback() {
    let out = std::process::Command::new(torua_testkit::torua_bin())
        .arg("serve")
        .env_clear()
        .env("TORUA_GOSSIP_ADDR", "0.0.0.0:0")
        .env("TORUA_PEER_ADDR", "0.0.0.0:0")
        .env("TORUA_HTTP_ADDR", "127.0.0.1:0")
        .env("TORUA_ADVERTISE_HOST", "127.0.0.1")
        .env(
            "TORUA_DATA_DIR",
            std::env::temp_dir().join(format!("torua-nosecret-{}", std::process::id())),
        )
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TORUA_CLUSTER_SECRET"), "{stderr}");
}

#[test]
fn health_falls_back_to_the_local_view_when_the_coordinator_is_silent() {
    // A slow failure detector (phi 50: a member is dead after ≈ 50 mean heartbeat intervals of
    // silence, ≈ 2 s with 3 nodes) keeps the paused coordinator a live member while the test asks:
    // the fallback under test is for a coordinator that gossip still believes in, not the failover
    // (tested above). On a loaded machine the default (20, ≈ 0.9 s) could declare it dead before
    // the question is asked.
    let mut options = ClusterOptions::default();
    options
        .env
        .insert("TORUA_PHI_THRESHOLD".into(), "50".into());
    let mut cluster = TestCluster::start(3, options).unwrap();
    cluster
        .wait_health_agree(SETTLE, |v| {
            v["source"] == "coordinator" && v["status"] == "green"
        })
        .unwrap();
    // SIGSTOP: the coordinator's sockets stay open but nothing answers (a hung process).
    cluster.node_mut(0).pause();
    // Make sure it has stopped: its own /health no longer answers.
    wait::until("node-1 silent after SIGSTOP", SETTLE, || {
        match cluster
            .node(0)
            .get_json("/health", Duration::from_millis(300))
        {
            Ok(h) => Err(h),
            Err(_) => Ok(()),
        }
    });
    let started = Instant::now();
    let h = cluster
        .node(2)
        .get_json("/cluster/health", Duration::from_secs(10))
        .unwrap();
    let took = started.elapsed();
    cluster.node_mut(0).resume();
    assert_eq!(h["source"], "local", "{h}");
    assert_eq!(h["answered_by"], "node-3", "{h}");
    assert!(
        h["coordinator_error"]
            .as_str()
            .is_some_and(|e| e.contains("node-1")),
        "{h}"
    );
    // The default TORUA_COORDINATOR_TIMEOUT is 500 ms; the answer must not wait much longer.
    assert!(took < Duration::from_secs(3), "fallback took {took:?}");
    // Once it runs again, answers come from the coordinator again.
    cluster
        .wait_health_agree(SETTLE, |v| {
            v["source"] == "coordinator" && v["answered_by"] == "node-1"
        })
        .unwrap();
}
