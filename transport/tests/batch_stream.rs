//! Batch streams over real UDP sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use transport::{
    BatchReceiver, BatchSender, ClusterCa, Endpoint, PeerInfo, StreamService, TransportConfig,
    TransportError,
};

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    name: String,
    delay_us: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Ack {
    batches: u64,
    sum: u64,
    error: Option<String>,
}

#[derive(Default)]
struct Progress {
    received: AtomicU64,
    streams_done: AtomicU64,
    errors: AtomicU64,
}

struct Sink(Arc<Progress>);

impl StreamService for Sink {
    type Header = Header;
    type Batch = Vec<u64>;
    type Ack = Ack;

    async fn on_stream(
        &self,
        _peer: PeerInfo,
        header: Header,
        mut batches: BatchReceiver<Vec<u64>>,
    ) -> Ack {
        assert!(header.name.starts_with("load"));
        let mut sum = 0u64;
        let mut error = None;
        while let Some(batch) = batches.next().await {
            match batch {
                Ok(b) => {
                    sum = b.iter().fold(sum, |acc, x| acc.wrapping_add(*x));
                    self.0.received.fetch_add(1, Ordering::SeqCst);
                    if header.delay_us > 0 {
                        tokio::time::sleep(Duration::from_micros(header.delay_us)).await;
                    }
                }
                Err(e) => {
                    self.0.errors.fetch_add(1, Ordering::SeqCst);
                    error = Some(e.to_string());
                }
            }
        }
        self.0.streams_done.fetch_add(1, Ordering::SeqCst);
        Ack {
            batches: batches.received(),
            sum,
            error,
        }
    }
}

/// The sending side of a test stream.
type Stream = BatchSender<Vec<u64>, Ack>;

/// Opens a stream from `from` to `to` whose header is named `name`; the receiver pauses
/// `delay_us` after each batch.
async fn open(
    from: &Endpoint,
    to: &Endpoint,
    name: &str,
    delay_us: u64,
) -> Result<Stream, TransportError> {
    let header = Header {
        name: name.into(),
        delay_us,
    };
    from.open_batch_stream(to.local_addr(), &header).await
}

/// An endpoint on a free port of 127.0.0.1 with a certificate for `name` from the test's CA.
fn endpoint(name: &str, config: TransportConfig) -> Endpoint {
    let ca = ClusterCa::derive("s3cret", "streams").unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Endpoint::bind(any, ca.issue_node_identity(name).unwrap(), config).unwrap()
}

fn pair(receiver_config: TransportConfig) -> (Endpoint, Endpoint, Arc<Progress>) {
    let a = endpoint("sender", TransportConfig::default());
    let b = endpoint("receiver", receiver_config);
    let progress = Arc::new(Progress::default());
    b.serve_streams(Sink(progress.clone()));
    (a, b, progress)
}

/// The default configuration with frames limited to `bytes`.
fn max_message(bytes: usize) -> TransportConfig {
    TransportConfig {
        max_message_size: bytes,
        ..TransportConfig::default()
    }
}

/// A sender and a receiver (see [`pair`]) and an open stream between them (see [`open`]).
async fn streaming(
    receiver_config: TransportConfig,
    name: &str,
    delay_us: u64,
) -> (Endpoint, Endpoint, Arc<Progress>, Stream) {
    let (a, b, progress) = pair(receiver_config);
    let tx = open(&a, &b, name, delay_us).await.unwrap();
    (a, b, progress, tx)
}

#[tokio::test]
async fn ten_thousand_batches_arrive_in_order_and_are_acked() {
    let (_a, _b, progress, mut tx) = streaming(TransportConfig::default(), "load-10k", 0).await;
    let mut expected = 0u64;
    for i in 0..10_000u64 {
        let batch: Vec<u64> = (i..i + 16).collect();
        expected += batch.iter().sum::<u64>();
        tx.send(&batch).await.unwrap();
    }
    assert_eq!(tx.batches_sent(), 10_000);
    let ack = tx.finish().await.unwrap();
    assert_eq!(
        ack,
        Ack {
            batches: 10_000,
            sum: expected,
            error: None
        }
    );
    assert_eq!(progress.received.load(Ordering::SeqCst), 10_000);
}

#[tokio::test]
async fn slow_receiver_applies_backpressure() {
    // A 64 KiB stream window and 8 KiB batches: the sender can never be more than a window
    // (plus what the receiver has buffered) ahead of the receiver.
    let config = TransportConfig {
        stream_receive_window: 64 * 1024,
        ..TransportConfig::default()
    };
    let (_a, _b, progress, mut tx) = streaming(config, "load-slow", 2_000).await;
    let batch: Vec<u64> = vec![u64::MAX; 1024]; // 1024 * 10 bytes of varints ≈ 10 KiB
    let max_lag = AtomicI64::new(0);
    for _ in 0..200 {
        tx.send(&batch).await.unwrap();
        let lag = tx.batches_sent() as i64 - progress.received.load(Ordering::SeqCst) as i64;
        max_lag.fetch_max(lag, Ordering::SeqCst);
    }
    let ack = tx.finish().await.unwrap();
    assert_eq!(ack.batches, 200);
    let max_lag = max_lag.load(Ordering::SeqCst);
    // 64 KiB / ~10 KiB ≈ 6 batches in the window, +2 for the one being handled and rounding.
    assert!(
        max_lag <= 9,
        "sender ran {max_lag} batches ahead: no backpressure"
    );
    assert!(
        max_lag >= 2,
        "lag {max_lag}: the receiver was not slower, the test proves nothing"
    );
}

#[tokio::test]
async fn dropped_sender_is_an_error_not_a_clean_end() {
    let (a, b, progress, mut tx) = streaming(TransportConfig::default(), "load-drop", 0).await;
    tx.send(&vec![1, 2, 3]).await.unwrap();
    // Wait until the handler is running (a reset before that never reaches a handler).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while progress.received.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(tx);
    while progress.streams_done.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(progress.streams_done.load(Ordering::SeqCst), 1);
    assert_eq!(
        progress.errors.load(Ordering::SeqCst),
        1,
        "a reset must not look like a finish"
    );
    // The receiver still takes new streams.
    let mut tx = open(&a, &b, "load-drop", 0).await.unwrap();
    tx.send(&vec![5]).await.unwrap();
    assert_eq!(tx.finish().await.unwrap().sum, 5);
}

#[tokio::test]
async fn oversize_frames_are_refused_on_both_sides() {
    let (_a, b, _, mut tx) = streaming(max_message(4 * 1024), "load-big", 0).await;
    tx.send(&vec![1; 10]).await.unwrap();
    // Over the receiver's limit: the receiver refuses and the sender learns why.
    let big = vec![u64::MAX; 4096];
    let mut outcome = tx.send(&big).await;
    if outcome.is_ok() {
        // The frame may fit in flow-control credit before the receiver reacts: the refusal
        // then arrives with the ack.
        outcome = tx.finish().await.map(|_| ());
    }
    let e = outcome.unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");

    // Over the sender's own limit: refused locally.
    let sender_small = endpoint("s", max_message(1024));
    let mut tx = open(&sender_small, &b, "load-big", 0).await.unwrap();
    let e = tx.send(&big).await.unwrap_err();
    assert!(matches!(e, TransportError::MessageTooLarge { .. }), "{e}");
}

#[tokio::test]
async fn no_stream_service_is_a_remote_error() {
    let a = endpoint("a", TransportConfig::default());
    let b = endpoint("b", TransportConfig::default());
    let result = async {
        let mut tx = open(&a, &b, "load", 0).await?;
        tx.send(&vec![1]).await?;
        tx.finish().await
    }
    .await;
    let e = result.unwrap_err();
    assert!(
        e.to_string().contains("does not accept batch streams"),
        "{e}"
    );
}
