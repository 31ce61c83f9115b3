//! Batch streams: a long sequence of messages on one QUIC stream instead of one giant message.
//! Each frame is length-prefixed postcard, bounded by `max_message_size`; QUIC flow control
//! (the stream receive window) blocks the sender while the receiver is behind, so a slow
//! receiver holds at most a window's worth of data in memory. The receiver's ack comes back
//! as a reply when the sender finishes.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::{timeout, Instant};

use crate::config::TransportConfig;
use crate::connection::{
    decode_reply, local_frame_error, read_failed, read_reply_bytes, write_failed,
};
use crate::error::TransportError;
use crate::frame::{decode_message, encode_err, encode_frame, frame_len, LEN_PREFIX};
use crate::guard::SendGuard;
use crate::service::{encode_reply, BoxFuture, PeerInfo, StreamService};

/// Sending half of a batch stream, from [`crate::Endpoint::open_batch_stream`]. Dropping it
/// without [`finish`](Self::finish) resets the stream: the receiver sees an error, never a
/// silently truncated sequence.
pub struct BatchSender<B: ?Sized, A> {
    send: SendGuard,
    recv: quinn::RecvStream,
    peer: SocketAddr,
    config: Arc<TransportConfig>,
    sent: u64,
    _types: PhantomData<fn(&B) -> A>,
}

impl<B: Serialize + ?Sized, A: DeserializeOwned> BatchSender<B, A> {
    pub(crate) fn new(
        send: SendGuard,
        recv: quinn::RecvStream,
        peer: SocketAddr,
        config: Arc<TransportConfig>,
    ) -> Self {
        BatchSender {
            send,
            recv,
            peer,
            config,
            sent: 0,
            _types: PhantomData,
        }
    }

    /// Sends one batch. Waits (up to `stream_frame_timeout`) while the receiver is behind.
    pub async fn send(&mut self, batch: &B) -> Result<(), TransportError> {
        let limit = self.config.max_message_size;
        let frame = encode_frame(batch, limit).map_err(local_frame_error)?;
        self.write(&frame).await?;
        self.sent += 1;
        Ok(())
    }

    /// Batches sent so far.
    pub fn batches_sent(&self) -> u64 {
        self.sent
    }

    /// Ends the sequence and waits (up to `stream_frame_timeout`) for the receiver's ack.
    pub async fn finish(mut self) -> Result<A, TransportError> {
        let after = self.config.stream_frame_timeout;
        let _ = self.send.finish();
        let bytes = read_reply_bytes(
            self.peer,
            &mut self.recv,
            Instant::now() + after,
            after,
            self.config.max_message_size,
        )
        .await?;
        decode_reply(self.peer, &bytes)
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        let after = self.config.stream_frame_timeout;
        let deadline = Instant::now() + after;
        match tokio::time::timeout_at(deadline, self.send.write_all(bytes)).await {
            Err(_) => Err(TransportError::WriteTimeout {
                peer: self.peer,
                after,
            }),
            Ok(Err(e)) => Err(write_failed(
                self.peer,
                e,
                &mut self.recv,
                deadline,
                self.config.max_message_size,
            )
            .await),
            Ok(Ok(())) => Ok(()),
        }
    }
}

/// Receiving half of a batch stream, handed to [`StreamService::on_stream`].
pub struct BatchReceiver<B> {
    recv: quinn::RecvStream,
    peer: SocketAddr,
    limit: usize,
    frame_timeout: Duration,
    received: u64,
    ended: bool,
    /// The first transport error seen, shared with the server task: if set when the handler
    /// returns, the sender gets this error instead of the handler's ack.
    failure: Arc<std::sync::Mutex<Option<String>>>,
    _types: PhantomData<fn() -> B>,
}

impl<B: DeserializeOwned> BatchReceiver<B> {
    /// The next batch; `None` once the sender finished (or after an error was returned).
    /// Each frame must arrive within `stream_frame_timeout`.
    pub async fn next(&mut self) -> Option<Result<B, TransportError>> {
        if self.ended {
            return None;
        }
        let result =
            match read_frame(&mut self.recv, self.peer, self.limit, self.frame_timeout).await {
                Ok(None) => None,
                Ok(Some(body)) => {
                    Some(
                        decode_message::<B>(&body).map_err(|e| TransportError::Decode {
                            peer: self.peer,
                            reason: e.to_string(),
                        }),
                    )
                }
                Err(e) => Some(Err(e)),
            };
        match &result {
            Some(Ok(_)) => self.received += 1,
            None => self.ended = true,
            // After an error the stream position is unknown: stop.
            Some(Err(e)) => {
                self.ended = true;
                let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                failure.get_or_insert_with(|| {
                    format!("batch {} refused by the receiver: {e}", self.received + 1)
                });
            }
        }
        result
    }

    /// Batches received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The sending peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

/// Reads one frame: `Ok(None)` on a clean finish at a frame boundary.
pub(crate) async fn read_frame(
    recv: &mut quinn::RecvStream,
    peer: SocketAddr,
    limit: usize,
    after: Duration,
) -> Result<Option<Vec<u8>>, TransportError> {
    let timed_out = || TransportError::ReadTimeout { peer, after };
    let mut prefix = [0u8; LEN_PREFIX];
    match timeout(after, recv.read_exact(&mut prefix)).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(quinn::ReadExactError::FinishedEarly(0))) => return Ok(None),
        Ok(Err(quinn::ReadExactError::FinishedEarly(_))) => {
            return Err(TransportError::Protocol {
                peer,
                reason: "stream ended inside a frame header".into(),
            })
        }
        Ok(Err(quinn::ReadExactError::ReadError(e))) => return Err(read_failed(peer, e)),
        Ok(Ok(())) => {}
    }
    let len = frame_len(prefix, limit).map_err(|_| {
        let _ = recv.stop(crate::guard::CODE_TOO_LARGE.into());
        TransportError::IncomingTooLarge { peer, limit }
    })?;
    let mut body = vec![0u8; len];
    match timeout(after, recv.read_exact(&mut body)).await {
        Err(_) => Err(timed_out()),
        Ok(Err(quinn::ReadExactError::FinishedEarly(_))) => Err(TransportError::Protocol {
            peer,
            reason: "stream ended inside a frame".into(),
        }),
        Ok(Err(quinn::ReadExactError::ReadError(e))) => Err(read_failed(peer, e)),
        Ok(Ok(())) => Ok(Some(body)),
    }
}

/// A [`StreamService`] behind bytes: takes the stream after its kind byte, returns the reply.
pub(crate) trait ErasedStreamService: Send + Sync {
    fn on_stream(
        &self,
        peer: PeerInfo,
        recv: quinn::RecvStream,
        config: Arc<TransportConfig>,
    ) -> BoxFuture<Vec<u8>>;
}

pub(crate) struct TypedStreamService<S>(pub Arc<S>);

impl<S: StreamService> ErasedStreamService for TypedStreamService<S> {
    fn on_stream(
        &self,
        peer: PeerInfo,
        mut recv: quinn::RecvStream,
        config: Arc<TransportConfig>,
    ) -> BoxFuture<Vec<u8>> {
        let service = self.0.clone();
        Box::pin(async move {
            let limit = config.max_message_size;
            let after = config.stream_frame_timeout;
            let header = match read_frame(&mut recv, peer.addr, limit, after).await {
                Ok(Some(body)) => match decode_message::<S::Header>(&body) {
                    Ok(h) => h,
                    Err(e) => {
                        return encode_err(&format!(
                            "cannot decode batch stream header ({e}); are both nodes running the same version?"
                        ))
                    }
                },
                Ok(None) => return encode_err("batch stream ended before its header"),
                Err(e) => return encode_err(&format!("cannot read batch stream header: {e}")),
            };
            let failure = Arc::new(std::sync::Mutex::new(None));
            let receiver = BatchReceiver {
                recv,
                peer: peer.addr,
                limit,
                frame_timeout: after,
                received: 0,
                ended: false,
                failure: failure.clone(),
                _types: PhantomData,
            };
            let ack = service.on_stream(peer, header, receiver).await;
            let failure = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
            match failure {
                Some(message) => encode_err(&message),
                None => encode_reply(&ack, limit),
            }
        })
    }
}
