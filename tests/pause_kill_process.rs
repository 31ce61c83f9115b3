//! A fixed fault schedule under writes, the one that once left a copy stuck for good: 5 nodes,
//! R=2, 8 shards, one client writing batches of 20 entities without pause through a node the
//! faults spare. The coordinator is paused (SIGSTOP) for 6 s and resumed; 4 s later another node
//! is killed (kill -9) and restarted 3 s after. Then the client stops, every copy comes back in
//! sync with the others, and every acknowledged entity reads back from every node within the
//! normal read timeout.

use std::time::{Duration, Instant};

use torua_testkit::{wait, ClusterOptions, Failures, TestCluster, Writer};

const T: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(180);

#[test]
fn coordinator_pause_then_kill_and_restart_under_writes_loses_nothing() {
    let started = Instant::now();
    let mut f = Failures::default();
    let mut cluster = TestCluster::start(5, ClusterOptions::graph(5)).unwrap();
    cluster.wait_green(SETTLE).unwrap();
    let health = cluster.node(0).get_json("/cluster/health", T).unwrap();
    let coordinator = health["coordinator"]
        .as_str()
        .and_then(|c| cluster.index_of(c))
        .unwrap_or_else(|| panic!("no coordinator: {health}"));
    let others: Vec<usize> = (0..5).filter(|i| *i != coordinator).collect();
    let (through, killed) = (others[0], others[1]);

    let writer = Writer::start(&cluster.node(through).url(""), "pk", T);
    writer.wait_for(5, SETTLE).unwrap();
    // The schedule: its waits are the faults' durations, not conditions.
    cluster.node_mut(coordinator).pause();
    std::thread::sleep(Duration::from_secs(6));
    cluster.node_mut(coordinator).resume();
    std::thread::sleep(Duration::from_secs(4));
    cluster.node_mut(killed).kill9();
    std::thread::sleep(Duration::from_secs(3));
    cluster.node_mut(killed).start().unwrap();
    cluster.wait_node_up(killed, SETTLE).unwrap();
    writer.wait_for(10, SETTLE).unwrap();
    let written = writer.stop();
    eprintln!("the client's writes: {written}");

    let agree = wait::poll(SETTLE, Duration::from_millis(500), || {
        cluster.copies_agree(0)
    });
    f.check(agree.is_ok(), || {
        format!("the copies did not come back in sync: {agree:?}")
    });
    let acknowledged = written.acknowledged.len() as u64;
    for i in 0..5 {
        let read = wait::poll(T, Duration::from_millis(200), || {
            cluster
                .entities_read(i, &written.acknowledged, T)
                .filter(|n| *n == acknowledged)
                .ok_or(())
        });
        f.check(read.is_ok(), || {
            format!(
                "{} reads {:?} of the {acknowledged} acknowledged entities",
                cluster.node(i).id,
                cluster.entities_read(i, &written.acknowledged, T)
            )
        });
    }
    let green = cluster.wait_green(SETTLE);
    f.check(green.is_ok(), || format!("not green again: {green:?}"));
    f.finish(
        "coordinator pause, then kill -9 and restart, under writes",
        started,
    );
}
