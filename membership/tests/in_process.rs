//! In-process clusters on chitchat's `ChannelTransport`: election, failover, restart with a new
//! generation, graceful leave and cut links, without sockets. Every wait has a deadline; nothing
//! sleeps a fixed time to "let things settle".

use std::net::SocketAddr;
use std::time::Duration;

use membership::{
    ChannelTransport, Cluster, MemberState, MembershipChange, MembershipConfig, NodeId,
};

const GOSSIP: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(10);

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

async fn start(transport: &ChannelTransport, id: &str, port: u16, seed: Option<u16>) -> Cluster {
    let mut config = MembershipConfig::new(NodeId::new(id).unwrap(), "test", addr(port));
    config.gossip_interval = GOSSIP;
    config.seeds = seed.map(|p| vec![addr(p).to_string()]).unwrap_or_default();
    let cluster = Cluster::join(config, transport.clone()).await.unwrap();
    cluster.mark_ready();
    cluster
}

/// Nodes n1, n2 and n3 on ports `base + 1`, `base + 2` and `base + 3`, n2 and n3 seeded with
/// n1, once all three agree that n1 coordinates; with the agreed term.
async fn three(t: &ChannelTransport, base: u16) -> ([Cluster; 3], u64) {
    let n1 = start(t, "n1", base + 1, None).await;
    let n2 = start(t, "n2", base + 2, Some(base + 1)).await;
    let n3 = start(t, "n3", base + 3, Some(base + 1)).await;
    let term = agree(&[&n1, &n2, &n3], "n1", 3).await;
    ([n1, n2, n3], term)
}

/// Waits until every node's view names `coordinator` with the same confirmed term and lists
/// `ready` ready members; returns that term. (Terms may still rise while views settle: two nodes
/// that claimed the same number before hearing of each other claim again.)
async fn agree(nodes: &[&Cluster], coordinator: &str, ready: usize) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let views: Vec<_> = nodes.iter().map(|n| n.view()).collect();
        let agreed = views.iter().all(|v| {
            v.coordinator.as_ref().map(NodeId::as_str) == Some(coordinator)
                && v.term.is_some()
                && v.term == views[0].term
                && v.ready_members().count() == ready
        });
        if agreed {
            return views[0].term.unwrap();
        }
        if tokio::time::Instant::now() > deadline {
            let summary: Vec<String> = views
                .iter()
                .map(|v| {
                    format!(
                        "{}: coordinator {:?} term {:?} ready {}",
                        v.self_id,
                        v.coordinator,
                        v.term,
                        v.ready_members().count()
                    )
                })
                .collect();
            panic!("no agreement on {coordinator} with {ready} ready: {summary:#?}");
        }
        tokio::time::sleep(GOSSIP / 2).await;
    }
}

#[tokio::test]
async fn lowest_node_id_in_natural_order_is_elected() {
    let t = ChannelTransport::default();
    let n10 = start(&t, "node-10", 1010, None).await;
    let n2 = start(&t, "node-2", 1002, Some(1010)).await;
    let n3 = start(&t, "node-3", 1003, Some(1010)).await;
    let term = agree(&[&n10, &n2, &n3], "node-2", 3).await;
    assert!(term >= 1);
    assert!(n2.view().is_coordinator());
    assert!(!n10.view().is_coordinator());
}

#[tokio::test]
async fn coordinator_failure_elects_the_next_lowest_with_a_higher_term() {
    let t = ChannelTransport::default();
    let ([n1, n2, n3], first) = three(&t, 2000).await;
    // Silent death: gossip stops, nobody is told.
    n1.shutdown().await;
    let second = agree(&[&n2, &n3], "n2", 2).await;
    assert!(second > first, "term must rise: {first} -> {second}");
    let view = n3.view();
    assert_eq!(
        view.member(&NodeId::new("n1").unwrap()).map(|m| m.state),
        Some(MemberState::Dead),
        "a silently dead node stays listed as dead"
    );
}

#[tokio::test]
async fn restarted_node_gets_a_new_generation_and_takes_over_again() {
    let t = ChannelTransport::default();
    let n1 = start(&t, "n1", 3001, Some(3002)).await;
    let n2 = start(&t, "n2", 3002, Some(3001)).await;
    let n3 = start(&t, "n3", 3003, Some(3001)).await;
    let t1 = agree(&[&n1, &n2, &n3], "n1", 3).await;
    let old_generation = n1.generation();
    n1.shutdown().await;
    let t2 = agree(&[&n2, &n3], "n2", 2).await;
    // Same id and address, new process: it must replace its old self, not appear twice.
    let n1 = start(&t, "n1", 3001, Some(3002)).await;
    assert!(n1.generation() > old_generation);
    let t3 = agree(&[&n1, &n2, &n3], "n1", 3).await;
    assert!(t1 < t2 && t2 < t3, "terms {t1} < {t2} < {t3}");
    for node in [&n1, &n2, &n3] {
        let view = node.view();
        let entries: Vec<_> = view
            .members
            .iter()
            .filter(|m| m.node_id.as_str() == "n1")
            .collect();
        assert_eq!(entries.len(), 1, "n1 listed once");
        assert_eq!(entries[0].generation, n1.generation());
    }
}

#[tokio::test]
async fn graceful_leave_hands_over_without_failure_detection() {
    let t = ChannelTransport::default();
    let ([n1, n2, n3], _) = three(&t, 4000).await;
    let mut changes = n3.subscribe();
    let leaving = tokio::spawn({
        let n1 = n1.clone();
        async move { n1.leave(4).await }
    });
    // A graceful leave is visible as soon as the `leaving` key spreads: the successor is elected
    // while n1 is still gossiping, i.e. before failure detection could even start.
    agree(&[&n2, &n3], "n2", 2).await;
    assert!(
        !leaving.is_finished(),
        "successor elected only after n1 went silent"
    );
    let started = tokio::time::Instant::now();
    leaving.await.unwrap();
    for node in [&n2, &n3] {
        node.wait_for(DEADLINE, |v| {
            v.member(&NodeId::new("n1").unwrap()).is_none()
        })
        .await
        .expect("a node that left is gone from the view");
    }
    assert!(started.elapsed() < DEADLINE);
    // The subscriber saw the replay, then n1 leave.
    let mut removed = false;
    while let Ok(Some(change)) =
        tokio::time::timeout(Duration::from_millis(500), changes.next()).await
    {
        if let MembershipChange::Removed(m) = change {
            removed |= m.node_id.as_str() == "n1";
        }
    }
    assert!(removed, "subscriber was told n1 was removed");
    // n1 was never seen dead: it left.
    assert!(n2.view().count_in(MemberState::Dead) == 0);
}

#[tokio::test]
async fn one_cut_link_kills_nobody_but_isolation_does() {
    let t = ChannelTransport::default();
    let ([n1, n2, n3], _) = three(&t, 5000).await;
    // n1 <-/-> n2: heartbeats still travel through n3, so nobody may be declared dead.
    t.remove_link(addr(5001), addr(5002)).await;
    let mut watch = n2.view_watcher();
    let stable = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            watch.changed().await.unwrap();
            if watch.borrow().count_in(MemberState::Dead) > 0 {
                return;
            }
        }
    })
    .await;
    assert!(
        stable.is_err(),
        "a single cut link made a node look dead: {:#?}",
        n2.view()
    );
    // Cut n1 off from everyone: the majority elects n2; n1, alone, sees the others dead.
    t.remove_link(addr(5001), addr(5003)).await;
    agree(&[&n2, &n3], "n2", 2).await;
    n1.wait_for(DEADLINE, |v| v.count_in(MemberState::Dead) == 2)
        .await
        .expect("isolated n1 sees both peers dead");
    // Heal: n1 is lowest again and takes over with a term above everything seen.
    t.add_link(addr(5001), addr(5002)).await;
    t.add_link(addr(5001), addr(5003)).await;
    agree(&[&n1, &n2, &n3], "n1", 3).await;
}

#[tokio::test]
async fn a_stale_persisted_term_never_lets_two_coordinators_share_a_term() {
    let t = ChannelTransport::default();
    let dir = std::env::temp_dir().join(format!("membership-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n2 = start(&t, "n2", 5002, None).await;
    let n3 = start(&t, "n3", 5003, Some(5002)).await;
    let t2 = agree(&[&n2, &n3], "n2", 2).await;
    // n1 comes back remembering the term just below n2's: its first claim (t2) ties with n2's.
    std::fs::write(dir.join("coordinator_term"), (t2 - 1).to_string()).unwrap();
    let mut config = MembershipConfig::new(NodeId::new("n1").unwrap(), "test", addr(5001));
    config.gossip_interval = GOSSIP;
    config.seeds = vec![addr(5002).to_string()];
    config.state_dir = Some(dir.clone());
    let n1 = Cluster::join(config, t.clone()).await.unwrap();
    n1.mark_ready();
    let t3 = agree(&[&n1, &n2, &n3], "n1", 3).await;
    assert!(t3 > t2, "n1 must claim past n2's term {t2}, got {t3}");
    let _ = std::fs::remove_dir_all(&dir);
}
