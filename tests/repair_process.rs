//! A shard copy whose database refuses writes it acknowledged (as Kuzu 0.11 can, see `storage`)
//! misses them. Injected with the fault point `apply-refused` (`TORUA_FAILPOINTS`) on one node:
//! - with a second copy, the broken copy leaves the in-sync set (handing over the primary role)
//!   and is rebuilt from a snapshot; afterwards every copy of every shard is the same, every
//!   entity reads back, no copy counts refused writes and the cluster is green;
//! - as a shard's only copy, it stays (it is all there is) and the cluster turns yellow, naming
//!   the node and the shard.
//!
//! A copy whose applier is stuck (fault point `apply-stall`: nothing applied while writes wait)
//! is taken out of the in-sync set once `TORUA_STUCK_AFTER` passes, and rebuilt the same way once
//! its applier lets the database close.
//!
//! A copy whose rounds grow longer than `TORUA_STUCK_AFTER` (fault point `apply-stall` sleeping
//! in every round), but by less than three times the longest round before, is slow, not stuck:
//! it stays in the in-sync set while a writer keeps writes waiting on it.
//!
//! A copy that silently lost a round of writes (fault point `apply-lost`: counted as applied,
//! never written) is found by anti-entropy when a majority of the shard's copies disagree with
//! it, and rebuilt the same way; with two copies, no majority can tell which is right: the cluster
//! turns yellow saying so, until the operator rebuilds the copy they distrust
//! (`POST /nodes/{id}/shards/{shard}/rebuild`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua_testkit::{wait, ClusterOptions, Failures, TestCluster};

const T: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(120);
/// The first round a copy applies fails, then the first of its writes applied one by one.
const REFUSE_ONE_WRITE: &str = "apply-refused=2*return";
/// The same on a node whose copies apply at the same time (two at once on 2 cores): each of the
/// first rounds to run fails and the next write applied alone is refused, so at least one copy
/// refuses a write whichever copies take the four refusals.
const REFUSE_WRITES: &str = "apply-refused=4*return";
/// The first round a copy applies vanishes.
const LOSE_ONE_ROUND: &str = "apply-lost=1*return";
/// The first round a copy applies waits 25 s first: a stuck applier.
const STALL_ONE_ROUND: &str = "apply-stall=1*sleep(25000)";

/// The first round a copy applies takes 1.5 s more, each later one 4 s more: rounds that grow
/// past `TORUA_STUCK_AFTER` (3 s in the test), as a bulk load's rounds grow with the copy.
const SLOWING_ROUNDS: &str = "apply-stall=1*sleep(1500)->sleep(4000)";

/// `n` entities in a chain, enough to put writes on every shard.
fn batch(n: usize) -> Value {
    json!({
        "entities": (0..n).map(|i| json!({
            "id": format!("rp-{i}"), "title": format!("ENTITY {i}"), "type": "THING",
            "description": format!("entity {i} of the repair test"),
        })).collect::<Vec<_>>(),
        "relations": (1..n).map(|i| json!({
            "id": format!("rp-r{i}"), "source": format!("rp-{}", i - 1), "target": format!("rp-{i}"),
            "description": "next", "weight": 1.0,
        })).collect::<Vec<_>>(),
    })
}

/// A cluster of `n` nodes whose node `broken` runs with the fault points `faults`.
fn start(n: usize, options: ClusterOptions, broken: usize, faults: &str) -> TestCluster {
    let mut cluster = TestCluster::new(n, options).unwrap();
    cluster
        .node_mut(broken)
        .env
        .insert("TORUA_FAILPOINTS".into(), faults.into());
    cluster.start_all().unwrap();
    cluster.wait_green(SETTLE).unwrap();
    cluster
}

/// Why the copies are not yet repaired, or `Ok` once no copy counts refused writes and the
/// copies of each shard have one checksum.
fn repaired(cluster: &TestCluster) -> anyhow::Result<()> {
    let copies = cluster.shard_copies_with_checksums(0, Duration::from_secs(30))?;
    let mut sums: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for c in &copies {
        anyhow::ensure!(
            c["failed_writes"].as_u64() == Some(0),
            "a copy counts refused writes: {c}"
        );
        let shard = c["shard"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("a copy without a shard: {c}"))?;
        sums.entry(shard)
            .or_default()
            .insert(c["checksum"].to_string());
    }
    match sums.iter().find(|(_, s)| s.len() != 1) {
        Some((shard, s)) => anyhow::bail!("shard {shard}'s copies differ: {s:?}"),
        None => Ok(()),
    }
}

fn entity_count(cluster: &TestCluster) -> Option<u64> {
    let (status, answer) = cluster
        .node(2)
        .post_json(
            "/query",
            &json!({"cypher": "MATCH (e:Entity) WHERE e.id STARTS WITH 'rp-' AND e.title <> '' RETURN count(*) AS n"}),
            T,
        )
        .ok()?;
    (status == 200).then(|| answer["rows"][0][0].as_u64())?
}

/// Ingests the test's `n` entities through node 0.
fn ingest(cluster: &TestCluster, n: usize) {
    let (status, answer) = cluster
        .node(0)
        .post_json("/graph/ingest", &batch(n), T)
        .unwrap();
    assert_eq!(status, 200, "ingest: {answer}");
}

/// Checks that the copies converge (see [`repaired`]), that all 300 entities read back and that
/// the cluster turns green.
fn converged(cluster: &mut TestCluster, f: &mut Failures) {
    let outcome = wait::poll(SETTLE, Duration::from_millis(500), || repaired(cluster));
    f.check(outcome.is_ok(), || {
        format!("the copies were not repaired: {outcome:?}")
    });
    let count = wait::poll(T, Duration::from_millis(200), || {
        entity_count(cluster).filter(|n| *n == 300).ok_or(())
    });
    f.check(count.is_ok(), || {
        format!(
            "not every entity reads back: {:?} of 300",
            entity_count(cluster)
        )
    });
    let green = cluster.wait_green(SETTLE);
    f.check(green.is_ok(), || {
        format!("not green after the repair: {green:?}")
    });
}

/// Checks that the copies converge (see [`converged`]), that the log of one of the nodes
/// `found_by` says `found` (the `fault` copy was noticed) and that node 2 rebuilt that copy from
/// a snapshot.
fn check_rebuilt(
    cluster: &mut TestCluster,
    f: &mut Failures,
    found_by: &[usize],
    found: &str,
    fault: &str,
) {
    converged(cluster, f);
    let logs: String = found_by.iter().map(|&i| log(cluster, i)).collect();
    f.check(logs.contains(found), || {
        format!("no log says {found:?}: the {fault} copy went unnoticed (did the fault fire?)")
    });
    f.check(
        log(cluster, 1).contains("installed a copy from a snapshot"),
        || format!("node 2 did not rebuild its {fault} copy from a snapshot"),
    );
}

/// Node `i`'s log.
fn log(cluster: &TestCluster, i: usize) -> String {
    std::fs::read_to_string(&cluster.node(i).log_path).unwrap_or_default()
}

/// Waits until node `i`'s `/cluster/health` is yellow with a reason containing `text`; returns
/// that reason.
fn yellow_for(cluster: &TestCluster, i: usize, text: &str) -> String {
    let started = Instant::now();
    let reason = wait::poll(SETTLE, Duration::from_millis(200), || {
        let h = cluster
            .node(i)
            .get_json("/cluster/health", T)
            .map_err(|e| e.to_string())?;
        let reason = h["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|r| r.contains(text));
        match reason {
            Some(r) if h["status"] == "yellow" => Ok(r.to_string()),
            _ => Err(h.to_string()),
        }
    });
    reason.unwrap_or_else(|h| {
        panic!(
            "the cluster did not turn yellow for {text:?}: {h} (after {:?})",
            started.elapsed()
        )
    })
}

/// A copy rebuilt after a fault: 3 nodes whose node 2 runs with the fault points `faults` take
/// 300 entities; `meanwhile` checks what holds before the repair (given the test's start), then
/// [`check_rebuilt`] checks the repair (`found_by`, `found` and `fault` as there). `what` names
/// the test in its failure tally.
fn rebuilt_after_fault(
    what: &str,
    options: ClusterOptions,
    faults: &str,
    (found_by, found, fault): (&[usize], &str, &str),
    meanwhile: impl FnOnce(&TestCluster, &mut Failures, Instant),
) {
    let started = Instant::now();
    let mut f = Failures::default();
    let mut cluster = start(3, options, 1, faults);
    ingest(&cluster, 300);
    meanwhile(&cluster, &mut f, started);
    check_rebuilt(&mut cluster, &mut f, found_by, found, fault);
    f.finish(what, started);
}

#[test]
fn a_copy_whose_database_refused_writes_is_rebuilt_from_another() {
    rebuilt_after_fault(
        "repair of a copy that refused writes",
        ClusterOptions::graph(3),
        REFUSE_WRITES,
        (&[1], "leaving the in-sync set", "broken"),
        |_, _, _| {},
    );
}

#[test]
fn a_stuck_copy_leaves_the_in_sync_set_and_is_rebuilt() {
    // Only the stall detector is at work here.
    let o = ClusterOptions::graph(3)
        .set("TORUA_STUCK_AFTER", "3s")
        .set("TORUA_ANTI_ENTROPY_INTERVAL", "0s");
    rebuilt_after_fault(
        "repair of a stuck copy",
        o,
        STALL_ONE_ROUND,
        (&[1], "applies nothing while writes wait", "stuck"),
        stuck_copy_left_the_in_sync_set,
    );
}

/// Checks that node 2's stuck copy of shard 0 is out of the in-sync set within 20 s (long before
/// its applier wakes); `started` is when the test started.
fn stuck_copy_left_the_in_sync_set(cluster: &TestCluster, f: &mut Failures, started: Instant) {
    let stuck = &cluster.node(1).id;
    let out = wait::poll(Duration::from_secs(20), Duration::from_millis(200), || {
        let copies = cluster
            .shard_copies(0, Duration::from_secs(30))
            .map_err(|e| format!("{e:#}"))?;
        match copies
            .iter()
            .find(|c| c["node"] == stuck.as_str() && c["in_sync"] == false)
        {
            Some(c) => Ok(c.clone()),
            None => Err(format!("{copies:?}")),
        }
    });
    f.check(out.is_ok(), || {
        format!(
            "{stuck}'s stuck copy stayed in the in-sync set 20 s after the ingest: {out:?} (after {:?})",
            started.elapsed()
        )
    });
}

#[test]
fn a_copy_whose_rounds_grow_past_stuck_after_is_slow_not_stuck() {
    let started = Instant::now();
    let mut f = Failures::default();
    // One shard on 2 nodes: node 2's rounds are all its one copy's (the fault point counts
    // evaluations across copies). Rounds are logged at the debug level, with their duration.
    let o = ClusterOptions::graph(2)
        .set("TORUA_SHARDS", "1")
        .set("TORUA_STUCK_AFTER", "3s")
        .set("TORUA_ANTI_ENTROPY_INTERVAL", "0s")
        .set("TORUA_LOG", "info,torua::storage::kuzu_shard=debug")
        .set("TORUA_LOG_FORMAT", "json");
    let mut cluster = start(2, o, 1, SLOWING_ROUNDS);
    // A writer that keeps writes waiting on node 2's copy through several 4 s rounds.
    let writing = Instant::now();
    let mut written = 0;
    while writing.elapsed() < Duration::from_secs(20) {
        let body = json!({"entities": [{
            "id": format!("rp-{written}"), "title": format!("ENTITY {written}"), "type": "THING",
        }]});
        let (status, answer) = cluster
            .node(0)
            .post_json("/graph/ingest", &body, Duration::from_secs(30))
            .unwrap();
        f.check(status == 200, || {
            format!("write {written}: {status} {answer}")
        });
        written += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let rounds: Vec<u64> = log(&cluster, 1)
        .lines()
        .filter(|l| l.contains("applied a round"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["ms"].as_u64())
        .collect();
    f.check(rounds.iter().filter(|ms| **ms >= 4000).count() >= 3, || {
        format!("node 2's copy did not apply three rounds of 4 s or more (the fault point did not fire?): {rounds:?}")
    });
    f.check(
        !log(&cluster, 1).contains("applies nothing while writes wait"),
        || "node 2's slow copy was taken for a stuck one".to_string(),
    );
    // Operators see the same in /metrics.
    let round_lag = cluster
        .node(1)
        .metric("torua_shard_copy_last_round_lag_seconds{shard=\"0\"}");
    f.check(round_lag.is_some_and(|s| s >= 4.0), || {
        format!("node 2's /metrics does not show a last round's lag of 4 s or more: {round_lag:?}")
    });
    let node = cluster.node(1).id.clone();
    let copies = cluster.shard_copies(0, Duration::from_secs(30)).unwrap();
    f.check(
        copies
            .iter()
            .any(|c| c["node"] == node.as_str() && c["in_sync"] == true),
        || format!("node 2's slow copy left the in-sync set: {copies:?}"),
    );
    let all = wait::poll(SETTLE, Duration::from_millis(500), || repaired(&cluster));
    f.check(all.is_ok(), || format!("the copies differ: {all:?}"));
    let green = cluster.wait_green(SETTLE);
    f.check(green.is_ok(), || format!("not green: {green:?}"));
    f.finish("a slow copy is not a stuck one", started);
}

#[test]
fn an_only_copy_that_refused_writes_turns_the_cluster_yellow() {
    // One shard: the fault point counts evaluations across copies, and two copies applying at
    // once could each take one of its two refusals (a failed round each, no refused write).
    let o = ClusterOptions::graph(1)
        .set("TORUA_REPLICAS", "1")
        .set("TORUA_SHARDS", "1");
    let cluster = start(1, o, 0, REFUSE_ONE_WRITE);
    ingest(&cluster, 50);
    let reason = yellow_for(&cluster, 0, "refused 1 acknowledged writes");
    let node = &cluster.node(0).id;
    assert!(
        reason.starts_with(&format!("{node}: shard ")),
        "the reason names no node and shard: {reason}"
    );
}

#[test]
fn a_copy_that_silently_lost_writes_is_found_by_anti_entropy_and_rebuilt() {
    let o = ClusterOptions::graph(3)
        .set("TORUA_REPLICAS", "3")
        .set("TORUA_ANTI_ENTROPY_INTERVAL", "1s");
    rebuilt_after_fault(
        "anti-entropy repair of a copy that lost writes",
        o,
        LOSE_ONE_ROUND,
        (&[0, 1, 2], "differs from the majority", "diverged"),
        |_, _, _| {},
    );
}

#[test]
fn two_copies_that_differ_turn_the_cluster_yellow_until_one_is_rebuilt() {
    let started = Instant::now();
    let mut f = Failures::default();
    let mut o = ClusterOptions::graph(3);
    o.env
        .insert("TORUA_ANTI_ENTROPY_INTERVAL".into(), "1s".into());
    let mut cluster = start(3, o, 1, LOSE_ONE_ROUND);
    ingest(&cluster, 300);
    let reason = yellow_for(&cluster, 2, "no majority tells which is right");

    // The operator rebuilds the copy that lost the round (node 2's) of the shard health names.
    let shard: u32 = reason
        .split("shard ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no shard named in {reason:?}"));
    let bad = cluster.node(1).id.clone();
    let path = format!("/nodes/{bad}/shards/{shard}/rebuild");
    let (status, answer) = cluster.node(0).post_json(&path, &json!({}), T).unwrap();
    assert_eq!(status, 202, "POST {path}: {answer}");
    let (status, answer) = cluster
        .node(0)
        .post_json("/nodes/no-such-node/shards/0/rebuild", &json!({}), T)
        .unwrap();
    f.check(status == 404, || {
        format!("a node with no copy: {status} {answer}")
    });
    converged(&mut cluster, &mut f);
    f.finish(
        "an operator's rebuild of one of two differing copies",
        started,
    );
}
