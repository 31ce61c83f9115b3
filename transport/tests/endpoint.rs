//! Request/response over real UDP sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use transport::{
    ClusterCa, Endpoint, IdentityError, NodeIdentity, PeerInfo, Service, TransportConfig,
    TransportError,
};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Req {
    Echo(String),
    SleepMs(u64),
    Big(usize),
    Who,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Resp {
    Echo(String),
    Slept,
    Big(Vec<u8>),
    Who(PeerSeen),
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct PeerSeen {
    node_id: String,
    addr: String,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    sleeps_started: AtomicU64,
    sleeps_abandoned: AtomicU64,
}

struct Svc(Arc<Counters>);

/// Counts a handler future dropped before it completed (the caller cancelled).
struct AbandonGuard<'a>(&'a AtomicU64, bool);
impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Service for Svc {
    type Request = Req;
    type Response = Resp;

    async fn call(&self, peer: PeerInfo, request: Req) -> Resp {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        match request {
            Req::Echo(s) => Resp::Echo(s),
            Req::SleepMs(ms) => {
                self.0.sleeps_started.fetch_add(1, Ordering::SeqCst);
                let mut guard = AbandonGuard(&self.0.sleeps_abandoned, false);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                guard.1 = true;
                Resp::Slept
            }
            Req::Big(n) => Resp::Big(vec![7; n]),
            Req::Who => Resp::Who(PeerSeen {
                node_id: peer.node_id,
                addr: peer.addr.to_string(),
            }),
        }
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn node(ca: &ClusterCa, id: &str, config: TransportConfig) -> (Endpoint, Arc<Counters>) {
    let identity = ca.issue_node_identity(id).unwrap();
    serving(identity, any_port(), config)
}

fn serving(
    identity: NodeIdentity,
    addr: SocketAddr,
    config: TransportConfig,
) -> (Endpoint, Arc<Counters>) {
    let ep = Endpoint::bind(addr, identity, config).unwrap();
    let counters = Arc::new(Counters::default());
    ep.serve(Svc(counters.clone()));
    (ep, counters)
}

/// Nodes `a` and `b` of a CA derived from `s3cret`, both with the default configuration: the CA,
/// `a`, `b`, and `b`'s counters.
fn two_nodes() -> (ClusterCa, Endpoint, Endpoint, Arc<Counters>) {
    let c = ca("s3cret");
    let (a, _) = node(&c, "a", TransportConfig::default());
    let (b, counters) = node(&c, "b", TransportConfig::default());
    (c, a, b, counters)
}

fn ca(secret: &str) -> ClusterCa {
    ClusterCa::derive(secret, "test-cluster").unwrap()
}

async fn echo(from: &Endpoint, to: SocketAddr, text: &str) -> Result<Resp, TransportError> {
    from.request::<Req, Resp>(to, &Req::Echo(text.into()), None)
        .await
}

#[tokio::test]
async fn round_trip_carries_certified_node_ids() {
    // Two independently derived CAs (as on two machines) from the same secret.
    let (a, _) = node(&ca("s3cret"), "node-a", TransportConfig::default());
    let (b, counters) = node(&ca("s3cret"), "node-b", TransportConfig::default());

    assert_eq!(
        echo(&a, b.local_addr(), "hi").await.unwrap(),
        Resp::Echo("hi".into())
    );
    let who: Resp = a.request(b.local_addr(), &Req::Who, None).await.unwrap();
    assert_eq!(
        who,
        Resp::Who(PeerSeen {
            node_id: "node-a".into(),
            addr: a.local_addr().to_string()
        })
    );
    let conn = a.connect(b.local_addr()).await.unwrap();
    assert_eq!(conn.peer().node_id, "node-b");
    assert_eq!(counters.calls.load(Ordering::SeqCst), 2);
    // And the other way round, on b's own outgoing connection.
    assert_eq!(
        echo(&b, a.local_addr(), "back").await.unwrap(),
        Resp::Echo("back".into())
    );
    a.shutdown().await;
    b.shutdown().await;
}

// Multi-threaded like a real node: exercises the pool's shared dial and handler concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests() {
    let (_, a, b, counters) = two_nodes();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let a = a.clone();
        let to = b.local_addr();
        tasks.spawn(async move {
            let r = echo(&a, to, &format!("m{i}")).await;
            (i, r)
        });
    }
    let mut ok = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, r) = joined.unwrap();
        assert_eq!(r.unwrap(), Resp::Echo(format!("m{i}")));
        ok += 1;
    }
    assert_eq!(ok, 200);
    assert_eq!(counters.calls.load(Ordering::SeqCst), 200);
}

#[tokio::test]
async fn different_secret_is_refused_in_both_directions() {
    let (good, good_calls) = node(&ca("right"), "good", TransportConfig::default());
    let (bad, bad_calls) = node(&ca("wrong"), "bad", TransportConfig::default());

    let e = echo(&bad, good.local_addr(), "x").await.unwrap_err();
    assert!(
        e.to_string().contains("cluster secret"),
        "unclear error: {e}"
    );
    let e = echo(&good, bad.local_addr(), "x").await.unwrap_err();
    assert!(
        e.to_string().contains("cluster secret"),
        "unclear error: {e}"
    );
    assert_eq!(good_calls.calls.load(Ordering::SeqCst), 0);
    assert_eq!(bad_calls.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn server_rejects_client_certificate_from_another_ca() {
    // The intruder trusts the real CA (so it accepts the server) but its own certificate
    // comes from another secret: only the server's client verification stands in the way.
    let real = ca("right");
    let (server, calls) = node(&real, "server", TransportConfig::default());
    let intruder_id = ca("wrong")
        .issue_node_identity("intruder")
        .unwrap()
        .with_trusted_ca_for_tests(real.cert_der().clone());
    let intruder = Endpoint::bind(any_port(), intruder_id, TransportConfig::default()).unwrap();

    // TLS 1.3: the client's handshake may complete before the server judges its certificate,
    // so the refusal can surface on the first request rather than the dial.
    let e = echo(&intruder, server.local_addr(), "x").await.unwrap_err();
    assert!(
        e.to_string().contains("cluster secret"),
        "unclear error: {e}"
    );
    assert_eq!(calls.calls.load(Ordering::SeqCst), 0);
    // The server is fine for legitimate peers.
    let (friend, _) = node(&real, "friend", TransportConfig::default());
    assert!(echo(&friend, server.local_addr(), "ok").await.is_ok());
}

#[tokio::test]
async fn wire_version_mismatch_is_refused() {
    let c = ca("s3cret");
    let (old, _) = node(&c, "old", TransportConfig::default());
    let newer = TransportConfig {
        alpn: "torua/999".into(),
        ..TransportConfig::default()
    };
    let (new, _) = node(&c, "new", newer);
    let e = echo(&new, old.local_addr(), "x").await.unwrap_err();
    assert!(e.to_string().contains("wire version"), "unclear error: {e}");
    let e = echo(&old, new.local_addr(), "x").await.unwrap_err();
    assert!(e.to_string().contains("wire version"), "unclear error: {e}");
}

#[tokio::test]
async fn dead_address_fails_within_connect_timeout_then_backs_off() {
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let config = TransportConfig {
        connect_timeout: Duration::from_millis(700),
        ..TransportConfig::default()
    };
    let (a, _) = node(&ca("s3cret"), "a", config);
    let start = Instant::now();
    let e = echo(&a, dead, "x").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(e, TransportError::ConnectTimeout { .. }), "{e}");
    assert!(e.is_timeout() && e.is_unreachable());
    assert!(elapsed >= Duration::from_millis(650), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(700 + 500), "{elapsed:?}");
    assert!(e.to_string().contains(&dead.to_string()));

    // Right after a failure: a fast refusal instead of another dial.
    let start = Instant::now();
    let e = echo(&a, dead, "x").await.unwrap_err();
    assert!(matches!(e, TransportError::PeerBackoff { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_millis(50));
}

#[tokio::test]
async fn slow_handler_times_out_and_server_stays_healthy() {
    let (_, a, b, counters) = two_nodes();
    let start = Instant::now();
    let e = a
        .request::<Req, Resp>(
            b.local_addr(),
            &Req::SleepMs(3_000),
            Some(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::ReadTimeout { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_millis(1_000));
    assert!(e.to_string().contains("timed out"));
    assert_eq!(
        echo(&a, b.local_addr(), "next").await.unwrap(),
        Resp::Echo("next".into())
    );
    // The timed-out request's stream was reset, so the server dropped its handler.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counters.sleeps_abandoned.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cancelled_request_resets_stream_and_server_stays_healthy() {
    let (_, a, b, counters) = two_nodes();
    // Warm the connection so the cancellation hits mid-request, not mid-dial.
    echo(&a, b.local_addr(), "warm").await.unwrap();
    for _ in 0..5 {
        let fut = a.request::<Req, Resp>(b.local_addr(), &Req::SleepMs(5_000), None);
        assert!(tokio::time::timeout(Duration::from_millis(150), fut)
            .await
            .is_err());
    }
    assert_eq!(
        echo(&a, b.local_addr(), "next").await.unwrap(),
        Resp::Echo("next".into())
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while counters.sleeps_abandoned.load(Ordering::SeqCst) < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counters.sleeps_started.load(Ordering::SeqCst), 5);
    assert_eq!(
        counters.sleeps_abandoned.load(Ordering::SeqCst),
        5,
        "server kept working on cancelled requests"
    );
}

#[tokio::test]
async fn oversize_messages_are_refused_with_clear_errors() {
    let c = ca("s3cret");
    let small = TransportConfig {
        max_message_size: 64 * 1024,
        ..TransportConfig::default()
    };
    let (big_node, _) = node(&c, "big", TransportConfig::default());
    let (small_node, small_calls) = node(&c, "small", small.clone());
    let text = "x".repeat(100 * 1024);

    // Sender-side limit: refused before anything is sent.
    let e = echo(&small_node, big_node.local_addr(), &text)
        .await
        .unwrap_err();
    assert!(
        matches!(e, TransportError::MessageTooLarge { limit: 65536, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("exceeds the limit"));

    // Receiver-side limit on the request: the receiver stops reading and says why.
    let e = echo(&big_node, small_node.local_addr(), &text)
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Remote { .. }), "{e}");
    assert!(e.to_string().contains("exceeds the limit of 65536"), "{e}");
    assert_eq!(small_calls.calls.load(Ordering::SeqCst), 0);

    // A response over the receiving client's limit.
    let e = small_node
        .request::<Req, Resp>(big_node.local_addr(), &Req::Big(100 * 1024), None)
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::IncomingTooLarge { .. }), "{e}");

    // A response over the answering server's own limit becomes an error reply.
    let e = big_node
        .request::<Req, Resp>(small_node.local_addr(), &Req::Big(100 * 1024), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("response of"), "{e}");

    // Both still work.
    assert!(echo(&big_node, small_node.local_addr(), "ok").await.is_ok());
    assert!(echo(&small_node, big_node.local_addr(), "ok").await.is_ok());
}

async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    tokio::time::timeout(Duration::from_secs(3), recv.read_to_end(1 << 20))
        .await
        .map_err(|_| "server stalled".to_string())?
        .map_err(|e| e.to_string())
}

use transport::quinn;

#[tokio::test]
async fn garbage_on_raw_streams_gets_error_replies_not_crashes() {
    let (_, a, b, counters) = two_nodes();
    let conn = a.connect(b.local_addr()).await.unwrap();
    let raw = conn.quinn_connection();

    // A request whose body is junk: an error reply (status 1) naming the decode failure.
    let reply = raw_exchange(raw, &[1, 0xff, 0xfe, 0x13, 0x37])
        .await
        .unwrap();
    assert_eq!(reply[0], 1);
    assert!(String::from_utf8_lossy(&reply[1..]).contains("cannot decode request"));
    // Unknown stream kind.
    let reply = raw_exchange(raw, &[99, 1, 2, 3]).await;
    if let Ok(reply) = reply {
        assert_eq!(reply[0], 1);
        assert!(String::from_utf8_lossy(&reply[1..]).contains("unknown stream kind"));
    }
    // Empty stream, and a batch stream with an absurd frame length: reply or reset, no stall.
    let _ = raw_exchange(raw, &[]).await;
    let _ = raw_exchange(raw, &[2, 0xff, 0xff, 0xff, 0x7f, 0]).await;
    // Random junk of many shapes.
    for i in 0..50u32 {
        let junk: Vec<u8> = (0..(i * 37 % 300))
            .map(|j| (j * 31 + i * 7) as u8)
            .collect();
        let _ = raw_exchange(raw, &junk).await;
    }
    assert_eq!(counters.calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        echo(&a, b.local_addr(), "still up").await.unwrap(),
        Resp::Echo("still up".into())
    );
}

#[tokio::test]
async fn no_service_installed_is_a_remote_error() {
    let c = ca("s3cret");
    let (a, _) = node(&c, "a", TransportConfig::default());
    let bare = Endpoint::bind(
        any_port(),
        c.issue_node_identity("bare").unwrap(),
        TransportConfig::default(),
    )
    .unwrap();
    let e = echo(&a, bare.local_addr(), "x").await.unwrap_err();
    assert!(matches!(e, TransportError::Remote { .. }), "{e}");
    assert!(e.to_string().contains("does not serve requests"));
}

#[tokio::test]
async fn restarted_peer_on_same_port_is_reachable_again() {
    let (c, a, b, _) = two_nodes();
    let addr = b.local_addr();
    echo(&a, addr, "before").await.unwrap();
    b.shutdown().await;
    drop(b);

    let start = Instant::now();
    let b2 = loop {
        match Endpoint::bind(
            addr,
            c.issue_node_identity("b").unwrap(),
            TransportConfig::default(),
        ) {
            Ok(ep) => break ep,
            Err(e) if start.elapsed() < Duration::from_secs(3) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    };
    b2.serve(Svc(Arc::default()));
    let start = Instant::now();
    let mut errors = Vec::new();
    loop {
        match echo(&a, addr, "after").await {
            Ok(r) => {
                assert_eq!(r, Resp::Echo("after".into()));
                break;
            }
            Err(e) => errors.push(e.to_string()),
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "never recovered: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At most a short backoff (plus one connect) after the restart.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?} {errors:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn shutdown_is_bounded_and_final() {
    let (_, a, b, _) = two_nodes();
    echo(&a, b.local_addr(), "x").await.unwrap();
    // A request in flight towards b while b shuts down.
    let pending = {
        let a = a.clone();
        let to = b.local_addr();
        tokio::spawn(async move {
            a.request::<Req, Resp>(to, &Req::SleepMs(10_000), None)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    b.shutdown().await;
    assert!(start.elapsed() < Duration::from_millis(1_500));
    let e = pending.await.unwrap().unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    let start = Instant::now();
    a.shutdown().await;
    assert!(start.elapsed() < Duration::from_millis(1_500));
    assert!(matches!(
        echo(&a, b.local_addr(), "x").await,
        Err(TransportError::Shutdown)
    ));
}

#[tokio::test]
async fn operator_pki_files_work_and_bad_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    transport::generate_operator_pki(d, &["n1".to_string(), "n2".to_string()]).unwrap();
    for f in ["ca.pem", "ca.key", "n1.pem", "n1.key", "n2.pem", "n2.key"] {
        assert!(d.join(f).exists(), "{f} missing");
    }
    let n1 =
        NodeIdentity::from_pem_files(d.join("ca.pem"), d.join("n1.pem"), d.join("n1.key")).unwrap();
    let n2 =
        NodeIdentity::from_pem_files(d.join("ca.pem"), d.join("n2.pem"), d.join("n2.key")).unwrap();
    assert_eq!(n1.node_id(), "n1");
    let (e1, _) = serving(n1, any_port(), TransportConfig::default());
    let (e2, _) = serving(n2, any_port(), TransportConfig::default());
    let who: Resp = e1.request(e2.local_addr(), &Req::Who, None).await.unwrap();
    assert!(matches!(who, Resp::Who(PeerSeen { ref node_id, .. }) if node_id == "n1"));
    // An operator node and a secret-derived node do not trust each other.
    let (derived, _) = node(&ca("s3cret"), "d", TransportConfig::default());
    assert!(echo(&e1, derived.local_addr(), "x").await.is_err());

    let err = NodeIdentity::from_pem_files(d.join("nope.pem"), d.join("n1.pem"), d.join("n1.key"))
        .unwrap_err();
    assert!(matches!(err, IdentityError::Read { .. }), "{err}");
    assert!(err.to_string().contains("nope.pem"));
    std::fs::write(d.join("junk.pem"), "hello").unwrap();
    let err = NodeIdentity::from_pem_files(d.join("junk.pem"), d.join("n1.pem"), d.join("n1.key"))
        .unwrap_err();
    assert!(matches!(err, IdentityError::NotPem { .. }), "{err}");
    let err = NodeIdentity::from_pem_files(d.join("ca.pem"), d.join("n1.pem"), d.join("junk.pem"))
        .unwrap_err();
    assert!(matches!(err, IdentityError::NotPem { .. }), "{err}");
    let err = NodeIdentity::from_pem_files(d.join("ca.pem"), d.join("n1.pem"), d.join("n2.key"))
        .unwrap_err();
    assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("does not match"));
    let other = tempfile::tempdir().unwrap();
    transport::generate_operator_pki(other.path(), &["n1".to_string()]).unwrap();
    let err = NodeIdentity::from_pem_files(
        other.path().join("ca.pem"),
        d.join("n1.pem"),
        d.join("n1.key"),
    )
    .unwrap_err();
    assert!(matches!(err, IdentityError::NotSignedByCa { .. }), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("n1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private key readable by others");
    }
}
