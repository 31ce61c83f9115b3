//! Authenticated gossip on real UDP sockets: members sharing a key form a cluster; a process with
//! another key (and the lowest id) never appears in anyone's view; garbage datagrams change nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use membership::{AuthenticatedUdpTransport, Cluster, DatagramSealer, MembershipConfig, NodeId};

const GOSSIP: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(10);

/// A toy keyed tag, enough to tell keys apart (the real HMAC lives in `transport::GossipKey`).
struct ToySealer(u8);

impl DatagramSealer for ToySealer {
    fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let tag = payload
            .iter()
            .fold(self.0, |acc, b| acc.wrapping_mul(31).wrapping_add(*b));
        let mut out = payload.to_vec();
        out.extend_from_slice(&[self.0, tag]);
        out
    }
    fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let (payload, tail) = datagram.split_at(datagram.len().checked_sub(2)?);
        (*tail == self.seal(payload)[payload.len()..]).then_some(payload)
    }
}

fn addr(last: u8) -> SocketAddr {
    ([127, 0, 77, last], 7946).into()
}

async fn start(id: &str, last: u8, key: u8) -> (Cluster, Arc<std::sync::atomic::AtomicU64>) {
    let mut config = MembershipConfig::new(NodeId::new(id).unwrap(), "auth-test", addr(last));
    config.gossip_interval = GOSSIP;
    config.seeds = vec![addr(1).to_string()];
    let transport = AuthenticatedUdpTransport::new(Arc::new(ToySealer(key)));
    let rejected = transport.rejected_counter();
    let cluster = Cluster::join(config, transport).await.unwrap();
    cluster.mark_ready();
    (cluster, rejected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_with_the_key_are_admitted() {
    let (n1, n1_rejected) = start("node-1", 1, 7).await;
    let (n2, n2_rejected) = start("node-2", 2, 7).await;
    let (n3, _) = start("node-3", 3, 7).await;
    // An intruder with another key and an id that sorts first, seeded with node-1.
    let (intruder, _) = start("a", 9, 8).await;

    for node in [&n1, &n2, &n3] {
        let view = node
            .wait_for(DEADLINE, |v| {
                v.ready_members().count() == 3 && v.term.is_some()
            })
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{} never saw 3 ready members: {:#?}",
                    node.self_id(),
                    node.view()
                )
            });
        assert_eq!(
            view.coordinator.as_ref().map(NodeId::as_str),
            Some("node-1")
        );
    }

    // Garbage on the gossip port is dropped without effect.
    let garbage = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for size in [0usize, 1, 3, 100, 1400] {
        garbage.send_to(&vec![0xAB; size], addr(2)).await.unwrap();
    }

    // Give the intruder many gossip rounds to try.
    tokio::time::sleep(GOSSIP * 20).await;
    for node in [&n1, &n2, &n3] {
        let view = node.view();
        assert!(
            view.members.iter().all(|m| m.node_id.as_str() != "a"),
            "intruder admitted into {}'s view: {view:#?}",
            node.self_id()
        );
        assert_eq!(
            view.coordinator.as_ref().map(NodeId::as_str),
            Some("node-1")
        );
        assert_eq!(view.ready_members().count(), 3);
    }
    // The intruder hears nothing it can accept, so it only knows itself.
    assert_eq!(intruder.view().members.len(), 1, "{:#?}", intruder.view());
    use std::sync::atomic::Ordering::Relaxed;
    assert!(
        n1_rejected.load(Relaxed) > 0,
        "node-1 must have dropped the intruder's packets"
    );
    assert!(
        n2_rejected.load(Relaxed) >= 5,
        "node-2 must have dropped the garbage"
    );
    for node in [n1, n2, n3, intruder] {
        node.shutdown().await;
    }
}
