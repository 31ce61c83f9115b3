//! A restart is cheap. On SIGTERM a node hands its places in the shards' in-sync sets over (its
//! primary roles pass to other in-sync copies) and leaves, moving no data: every copy stays
//! assigned where it was, and writes go on without it. Back within `TORUA_REPLACE_AFTER`, it
//! catches up from the primaries' logs: its copies rejoin the in-sync sets, level with the
//! others, and every acknowledged entity reads back through it. A client writes without pause
//! through another node the whole time; none of its writes fails.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use torua_testkit::{wait, ClusterOptions, TestCluster, Writer};

const T: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(120);

/// `n` entities `rs-<from>..`, chained by relations so that writes reach every shard.
fn batch(from: usize, n: usize) -> Value {
    json!({
        "entities": (from..from + n).map(|i| json!({
            "id": format!("rs-{i}"), "title": format!("ENTITY {i}"), "type": "THING",
            "description": format!("entity {i} of the restart test"),
        })).collect::<Vec<_>>(),
        "relations": (from + 1..from + n).map(|i| json!({
            "id": format!("rs-r{i}"), "source": format!("rs-{}", i - 1), "target": format!("rs-{i}"),
            "description": "next", "weight": 1.0,
        })).collect::<Vec<_>>(),
    })
}

/// Ingests through node `i`; every item must be written.
fn ingest(cluster: &TestCluster, i: usize, body: &Value) {
    let (status, answer) = cluster.node(i).post_json("/graph/ingest", body, T).unwrap();
    assert_eq!(status, 200, "ingest: {answer}");
    assert_eq!(answer["errors"], false, "ingest: {answer}");
}

/// The copies' places: (shard, node).
fn places(copies: &[Value]) -> BTreeSet<(u64, String)> {
    copies
        .iter()
        .map(|c| {
            (
                c["shard"].as_u64().unwrap_or(u64::MAX),
                c["node"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Entities of this test that node `i` reads.
fn entity_count(cluster: &TestCluster, i: usize) -> Option<u64> {
    let query = json!({"cypher": "MATCH (e:Entity) WHERE e.id STARTS WITH 'rs-' AND e.title <> '' RETURN count(*) AS n"});
    let (status, answer) = cluster.node(i).post_json("/query", &query, T).ok()?;
    (status == 200).then(|| answer["rows"][0][0].as_u64())?
}

#[test]
fn sigterm_hands_over_without_moving_data_and_the_node_catches_up_on_return() {
    // Nothing is replaced while the node is away: its return is what is tested.
    let options = ClusterOptions::graph(3).set("TORUA_REPLACE_AFTER", "10m");
    let mut cluster = TestCluster::start(3, options).unwrap();
    cluster.wait_green(SETTLE).unwrap();
    ingest(&cluster, 0, &batch(0, 300));
    cluster.wait_applied(0, SETTLE).unwrap();

    let before = cluster.shard_copies(0, T).unwrap();
    // The node that is primary of the most shards stops.
    let primaries = |node: &str| {
        before
            .iter()
            .filter(|c| c["node"] == node && c["primary"] == true)
            .count()
    };
    let victim = (0..3)
        .max_by_key(|i| primaries(&cluster.node(*i).id))
        .unwrap();
    let victim_id = cluster.node(victim).id.clone();
    assert!(
        primaries(&victim_id) > 0,
        "{victim_id} is primary of nothing: {before:?}"
    );

    // A client writes through another node from now on.
    let other = (victim + 1) % 3;
    let writer = Writer::start(&cluster.node(other).url(""), "rw", T);
    writer.wait_for(5, SETTLE).unwrap();

    cluster
        .node_mut(victim)
        .terminate_timed(Duration::from_secs(30));
    writer.wait_for(5, SETTLE).unwrap();
    // After it left: its copies are still assigned to it (nothing moved), none is a primary or
    // in the in-sync set, and every shard has a primary elsewhere.
    let after = cluster.shard_copies(other, T).unwrap();
    assert_eq!(places(&after), places(&before), "copies moved: {after:?}");
    for c in after.iter().filter(|c| c["node"] == victim_id.as_str()) {
        assert_eq!(c["primary"], false, "still a primary after SIGTERM: {c}");
        assert_eq!(c["in_sync"], false, "still in sync after SIGTERM: {c}");
    }
    let led: BTreeSet<u64> = after
        .iter()
        .filter(|c| c["primary"] == true)
        .filter_map(|c| c["shard"].as_u64())
        .collect();
    assert_eq!(
        led.len(),
        8,
        "shards without a primary after SIGTERM: {after:?}"
    );

    // Writes go on without it.
    ingest(&cluster, other, &batch(300, 300));

    // Back: it catches up from the logs, nothing having moved.
    cluster.node_mut(victim).start().unwrap();
    cluster.wait_node_up(victim, SETTLE).unwrap();
    writer.wait_for(5, SETTLE).unwrap();
    let written = writer.stop();
    eprintln!("the client's writes: {written}");
    assert!(
        written.failed.is_empty(),
        "writes failed: {:?}",
        written.failed
    );
    let caught_up = wait::poll(SETTLE, Duration::from_millis(500), || {
        cluster.copies_agree(0)
    });
    assert!(
        caught_up.is_ok(),
        "{victim_id} did not catch up: {caught_up:?}"
    );
    let last = cluster.shard_copies(victim, T).unwrap();
    assert_eq!(places(&last), places(&before), "copies moved: {last:?}");
    let count = wait::poll(T, Duration::from_millis(200), || {
        entity_count(&cluster, victim)
            .filter(|n| *n == 600)
            .ok_or(())
    });
    assert!(
        count.is_ok(),
        "{victim_id} reads {:?} of 600 entities",
        entity_count(&cluster, victim)
    );
    let acknowledged = written.acknowledged.len() as u64;
    let read = wait::poll(T, Duration::from_millis(200), || {
        cluster
            .entities_read(victim, &written.acknowledged, T)
            .filter(|n| *n == acknowledged)
            .ok_or(())
    });
    assert!(
        read.is_ok(),
        "{victim_id} reads {:?} of the {acknowledged} entities acknowledged during the restart",
        cluster.entities_read(victim, &written.acknowledged, T)
    );
    cluster.wait_green(SETTLE).unwrap();
}
