//! Schema-driven fuzzing of a live cluster: schemathesis (`scripts/fuzz_api.sh`) sends requests
//! generated from the checked-in OpenAPI contract to a 3-node cluster with a secret (HTTPS, API
//! keys): first with no key, then with a `read` key, then with an admin key. Every answer must be
//! a non-5xx that matches the contract. After the keyless and read-only passes the data is
//! exactly what it was (every refused request left it alone); after all passes the cluster is
//! green and every node still runs.
//!
//! `make test` runs it bounded (`TORUA_FUZZ_EXAMPLES` requests per operation and mode, default 10;
//! `TORUA_FUZZ_MAX_TIME` seconds per pass, default 35); `make fuzz` runs it longer.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua_testkit::{wait, ClusterOptions, Failures, TestCluster};

const T: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(120);
const BOOTSTRAP: &str = "bootstrap-admin-key-of-the-fuzz-test";
const SECRET: &str = "fuzz-test-cluster-secret-0123456789";

/// Each copy's (entities, checksum), by "shard/node".
fn checksums(cluster: &TestCluster) -> anyhow::Result<BTreeMap<String, (u64, String)>> {
    let copies = cluster.shard_copies_with_checksums(0, Duration::from_secs(30))?;
    let mut out = BTreeMap::new();
    for c in &copies {
        let checksum = c["checksum"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("a copy without a checksum: {c}"))?;
        out.insert(
            format!("{}/{}", c["shard"], c["node"].as_str().unwrap_or("?")),
            (c["entities"].as_u64().unwrap_or(0), checksum.to_string()),
        );
    }
    Ok(out)
}

/// Runs the fuzzer against `url` with `key`; returns whether it passed, printing its report. A
/// run that only crashed inside schemathesis itself (a Python "Runtime Error" while generating,
/// no failed check) is run again, up to three times in all: it says nothing about the API.
fn fuzz(url: &str, ca: &std::path::Path, key: Option<&str>, extra: &[&str]) -> bool {
    for _ in 0..3 {
        match fuzz_once(url, ca, key, extra) {
            Ok(passed) => return passed,
            Err(()) => println!("--- schemathesis crashed while generating; running it again"),
        }
    }
    false
}

/// One fuzzer run: whether it passed, or `Err` when it crashed without any failed check.
fn fuzz_once(
    url: &str,
    ca: &std::path::Path,
    key: Option<&str>,
    extra: &[&str],
) -> Result<bool, ()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fuzz_api.sh");
    let mut cmd = Command::new(script);
    cmd.arg(url).env("TORUA_CA", ca);
    for (name, bounded) in [("TORUA_FUZZ_EXAMPLES", "10"), ("TORUA_FUZZ_MAX_TIME", "35")] {
        if std::env::var_os(name).is_none() {
            cmd.env(name, bounded);
        }
    }
    if let Some(key) = key {
        cmd.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    cmd.args(extra);
    let started = Instant::now();
    let out = cmd.output().expect("cannot run scripts/fuzz_api.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = stdout.lines().rev().take(200).collect();
    println!(
        "--- schemathesis ({}, {:.0} s): {}\n{}\n{}",
        key.map_or("no key", |_| "with a key"),
        started.elapsed().as_secs_f64(),
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    let tool_crash = stdout.contains("Runtime Error") && !stdout.contains("= FAILURES =");
    match out.status.success() {
        false if tool_crash => Err(()),
        passed => Ok(passed),
    }
}

#[test]
fn generated_requests_get_the_answers_the_contract_states() {
    let started = Instant::now();
    let mut f = Failures::default();
    let o = ClusterOptions::graph(3).with_secret(SECRET, Some(BOOTSTRAP));
    let mut cluster = TestCluster::start_green(3, o, SETTLE).unwrap();
    let url = cluster.node(0).url("");

    // Some data for the generated reads to find, and a read key.
    let batch = json!({
        "entities": (0..40).map(|i| json!({
            "id": format!("fz-{i}"), "title": format!("ENTITY {i}"), "type": "PERSON",
            "description": format!("entity number {i} of the fuzz test"),
        })).collect::<Vec<_>>(),
        "relations": (0..39).map(|i| json!({
            "id": format!("fz-r{i}"), "source": format!("fz-{i}"), "target": format!("fz-{}", i + 1),
            "description": "next", "weight": 1.0,
        })).collect::<Vec<_>>(),
        "chunks": [{"id": "fz-c1", "text": "the fuzz test's only text unit", "n_tokens": 6}],
    });
    let (status, answer) = cluster
        .node(0)
        .post_json("/graph/ingest", &batch, T)
        .unwrap();
    assert_eq!(status, 200, "ingest: {answer}");
    let (status, answer) = cluster
        .node(0)
        .post_json("/keys", &json!({"role": "read", "name": "fuzz"}), T)
        .unwrap();
    assert_eq!(status, 201, "POST /keys: {answer}");
    let read_key = answer["key"].as_str().unwrap().to_string();
    // Every copy applied the batch before the "before" picture is taken.
    cluster.wait_applied(0, SETTLE).unwrap();
    let before = wait::poll(Duration::from_secs(60), Duration::from_millis(500), || {
        checksums(&cluster)
    })
    .unwrap();

    let ca = cluster.data_dir().join("ca.pem");
    std::fs::write(
        &ca,
        transport::ClusterCa::derive(SECRET, "torua")
            .unwrap()
            .cert_pem(),
    )
    .unwrap();

    // Without a key and with a read key, nothing may change.
    f.check(fuzz(&url, &ca, None, &[]), || {
        "schemathesis without a key found problems (above)".into()
    });
    f.check(fuzz(&url, &ca, Some(&read_key), &[]), || {
        "schemathesis with a read key found problems (above)".into()
    });
    let after = cluster.wait_applied(0, SETTLE).and_then(|_| {
        wait::poll(Duration::from_secs(60), Duration::from_millis(500), || {
            checksums(&cluster)
        })
    });
    f.check(after.as_ref().is_ok_and(|a| *a == before), || {
        format!("the refused requests changed the data: before {before:?}, after {after:?}")
    });

    // With an admin key: everything but drains and rebuilds (operator actions that keep the
    // cluster from being green for a while, which a generator has no reason to do).
    f.check(
        fuzz(
            &url,
            &ca,
            Some(BOOTSTRAP),
            &["--exclude-path-regex", "/(drain|rebuild)$"],
        ),
        || "schemathesis with an admin key found problems (above)".into(),
    );
    for i in 0..3 {
        let status = cluster.node_mut(i).exit_status();
        f.check(status.is_none(), || format!("node {i} exited: {status:?}"));
    }
    let green = cluster.wait_green(SETTLE);
    f.check(green.is_ok(), || {
        format!("not green after fuzzing: {green:?}")
    });
    let health: Value = cluster
        .node(1)
        .get_json("/cluster/health", T)
        .unwrap_or_default();
    println!("health after fuzzing: {}", health["status"]);
    f.finish("API fuzzing", started);
}
