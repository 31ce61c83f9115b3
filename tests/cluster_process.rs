//! Process-level cluster tests: real `torua serve` processes on loopback, real gossip, real HTTP.
//! Election, kill -9 failover, restart with a higher term, graceful leave, bad configuration.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use torua_testkit::{member_ids, torua_bin, wait, ClusterOptions, TestCluster};

const CONVERGE: Duration = Duration::from_secs(20);

/// Membership tests: few shards (each copy is a database to open), and a SIGTERM leaves at once
/// instead of first moving copies away (drains are tested in heal_process.rs).
fn options() -> ClusterOptions {
    let mut o = ClusterOptions::default();
    o.env.insert("TORUA_SHARDS".into(), "4".into());
    o.env.insert("TORUA_DRAIN_TIMEOUT".into(), "0s".into());
    o
}

#[test]
fn five_nodes_elect_fail_over_and_take_back_the_coordinator() {
    let mut cluster = TestCluster::start(5, options()).unwrap();
    let (coordinator, term1) = cluster.wait_converged(CONVERGE).unwrap();
    assert_eq!(coordinator, "node-1", "lowest id coordinates");

    // /nodes has the seed system's shape on every node.
    let nodes = cluster
        .node(3)
        .get_json("/nodes", Duration::from_secs(2))
        .unwrap();
    let listed = nodes["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 5, "{nodes}");
    assert!(
        listed
            .iter()
            .all(|n| n["id"].is_string() && n["addr"].is_string()),
        "{nodes}"
    );

    eprintln!("term before failover: {term1}");
    // kill -9 the coordinator: every survivor names node-2, with a higher term.
    cluster.node_mut(0).kill9();
    let (_, term2) = cluster
        .wait_health_agree(CONVERGE, |v| {
            v["coordinator"] == "node-2" && v["term"].as_u64().is_some_and(|t| t > term1)
        })
        .unwrap();
    // The killed node is seen as dead (failure detector), not silently forgotten.
    let seen = cluster
        .node(1)
        .get_json("/cluster/health", Duration::from_secs(2))
        .unwrap();
    let node1 = seen["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "node-1");
    assert_eq!(
        node1.map(|n| n["state"].clone()),
        Some(Value::from("dead")),
        "{seen}"
    );

    // Restart: a new generation replaces the dead one and, lowest again, takes back coordination.
    let old_generation = node1.unwrap()["generation"].as_u64().unwrap();
    cluster.node_mut(0).start().unwrap();
    cluster.wait_node_up(0, CONVERGE).unwrap();
    let (_, term3) = cluster
        .wait_health_agree(CONVERGE, |v| {
            v["coordinator"] == "node-1"
                && v["term"].as_u64().is_some_and(|t| t > term2)
                && v["status"] == "green"
        })
        .unwrap();
    eprintln!("terms: {term1} -> {term2} -> {term3}");
    for i in 0..5 {
        let v = cluster
            .node(i)
            .get_json("/cluster/health", Duration::from_secs(2))
            .unwrap();
        let entries: Vec<&Value> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["id"] == "node-1")
            .collect();
        assert_eq!(entries.len(), 1, "one entry per node id: {v}");
        assert!(
            entries[0]["generation"].as_u64().unwrap() > old_generation,
            "{v}"
        );
        assert_eq!(entries[0]["state"], "ready");
    }
}

#[test]
fn sigterm_leaves_every_view_without_failure_detection() {
    // A long failure-detection time makes the distinction visible: a graceful leave must not wait
    // for it. With phi 50 and a 1 s gossip interval a silent node would stay "ready" for minutes.
    let mut opts = options();
    opts.env.insert("TORUA_PHI_THRESHOLD".into(), "50".into());
    opts.env
        .insert("TORUA_GOSSIP_INTERVAL".into(), "300ms".into());
    let mut cluster = TestCluster::start(5, opts).unwrap();
    let (_, term1) = cluster.wait_converged(CONVERGE).unwrap();

    // A follower leaves: it disappears from every other view.
    cluster
        .node_mut(2)
        .terminate(Duration::from_secs(15))
        .unwrap();
    let leave_started = Instant::now();
    cluster
        .wait_all("/cluster/health", Duration::from_secs(10), |_, v| {
            !member_ids(v).contains(&"node-3".to_string())
        })
        .unwrap();
    let follower_gone = leave_started.elapsed();

    // The coordinator leaves: the successor is elected while nobody marks node-1 dead.
    cluster
        .node_mut(0)
        .terminate(Duration::from_secs(15))
        .unwrap();
    let answers = cluster
        .wait_all("/cluster/health", Duration::from_secs(10), |_, v| {
            v["coordinator"] == "node-2"
                && v["term"].as_u64().is_some_and(|t| t > term1)
                && !member_ids(v).contains(&"node-1".to_string())
        })
        .unwrap();
    for (_, v) in &answers {
        assert_eq!(v["number_of_nodes"], 3, "{v}");
        // The leavers' shard copies are gone (yellow or red), but nobody is marked dead.
        let reasons = v["reasons"].to_string();
        assert!(
            !reasons.contains("dead"),
            "a graceful leave leaves no dead member behind: {v}"
        );
    }
    eprintln!("follower gone from every view {follower_gone:?} after exit");
}

/// Runs `torua serve` with a bad environment; returns (exit code, stderr).
fn serve_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("torua-badcfg-{}", std::process::id()));
    let mut cmd = Command::new(torua_bin());
    cmd.arg("serve")
        .env_clear()
        .env("TORUA_DATA_DIR", &dir)
        .env("TORUA_HTTP_ADDR", "127.0.9.1:0")
        .env("TORUA_GOSSIP_ADDR", "127.0.9.1:0")
        .env("TORUA_PEER_ADDR", "127.0.9.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait::poll(Duration::from_secs(10), Duration::from_millis(20), || {
        child.try_wait().unwrap().ok_or(())
    })
    .unwrap_or_else(|()| {
        let _ = child.kill();
        panic!("torua serve with {env:?} did not stop on bad configuration");
    });
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (status.code(), stderr)
}

#[test]
fn bad_configuration_stops_with_a_message_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("TORUA_GOSSIP_INTERVAL", "fast")],
            "TORUA_GOSSIP_INTERVAL",
        ),
        (&[("TORUA_GOSSIP_INTERVAL", "0ms")], "TORUA_GOSSIP_INTERVAL"),
        (&[("TORUA_NODE_ID", "no spaces please")], "TORUA_NODE_ID"),
        (&[("TORUA_SEEDS", "127.0.0.1")], "TORUA_SEEDS"),
        (&[("TORUA_HTTP_ADDR", "localhost:http")], "TORUA_HTTP_ADDR"),
        (&[("TORUA_PHI_THRESHOLD", "-1")], "TORUA_PHI_THRESHOLD"),
        (&[("TORUA_LOG_FORMAT", "xml")], "TORUA_LOG_FORMAT"),
        (&[("TORUA_LOG", "info,[[[")], "TORUA_LOG"),
        (
            &[("TORUA_GOSSIP_ADDR", "0.0.0.0:7946")],
            "TORUA_ADVERTISE_HOST",
        ),
    ];
    for (env, variable) in cases {
        let (code, stderr) = serve_with(env);
        assert!(
            code.is_some_and(|c| c != 0),
            "{env:?}: exit code {code:?}, stderr: {stderr}"
        );
        assert!(
            stderr.contains(variable),
            "{env:?}: message must name {variable}: {stderr}"
        );
    }
}

#[test]
fn node_id_is_generated_once_and_kept_in_the_data_dir() {
    let mut opts = options();
    opts.ids = Some(vec!["placeholder".into()]);
    let mut cluster = TestCluster::new(1, opts).unwrap();
    // No TORUA_NODE_ID: the harness sets one, so remove it through an empty override below.
    let node = cluster.node_mut(0);
    node.env = BTreeMap::from([("TORUA_SEEDS".to_string(), String::new())]);
    node.id = String::new();
    node.start().unwrap();
    cluster.wait_node_up(0, CONVERGE).unwrap();
    let first = cluster
        .node(0)
        .get_json("/health", Duration::from_secs(2))
        .unwrap();
    let id = first["node_id"].as_str().unwrap().to_string();
    assert!(!id.is_empty(), "{first}");
    cluster
        .node_mut(0)
        .terminate(Duration::from_secs(15))
        .unwrap();
    cluster.node_mut(0).start().unwrap();
    cluster.wait_node_up(0, CONVERGE).unwrap();
    let second = cluster
        .node(0)
        .get_json("/health", Duration::from_secs(2))
        .unwrap();
    assert_eq!(
        second["node_id"],
        id.as_str(),
        "the generated id survives a restart"
    );
    assert!(second["generation"].as_u64() > first["generation"].as_u64());
}
