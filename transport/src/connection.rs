//! A live, authenticated connection to one peer, and the request/response exchange on it:
//! one bidirectional stream per request (no head-of-line blocking between requests), every
//! phase under the request deadline, and reset-on-cancel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::{timeout_at, Instant};

use crate::config::TransportConfig;
use crate::error::TransportError;
use crate::frame::{decode_message, encode_message, parse_reply, FrameError, Reply, KIND_REQUEST};
use crate::guard::SendGuard;
use crate::service::PeerInfo;
use crate::tls::describe;

/// A connection to a peer whose certificate has been verified. Cheap to clone; obtained from
/// [`crate::Endpoint::connect`].
#[derive(Clone)]
pub struct PeerConnection {
    pub(crate) conn: quinn::Connection,
    pub(crate) peer: PeerInfo,
    pub(crate) config: Arc<TransportConfig>,
}

impl std::fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl PeerConnection {
    /// Address and certified node id of the peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Smoothed round-trip time measured by QUIC.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// True once the connection has closed (the endpoint will dial a new one on next use).
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// The underlying quinn connection, for tests and tools that need raw streams. Anything
    /// written on it must follow the wire format in [`crate::frame`].
    pub fn quinn_connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Sends one request and waits for its response. `timeout` (default: the config's
    /// request timeout) covers opening the stream, writing and reading. Dropping the returned
    /// future resets the stream so the peer stops working on it.
    pub async fn request<Req, Resp>(
        &self,
        request: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, TransportError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let limit = self.config.max_message_size;
        let wire = encode_message(KIND_REQUEST, request, limit).map_err(local_frame_error)?;
        let after = timeout.unwrap_or(self.config.request_timeout);
        let deadline = Instant::now() + after;
        let peer = self.peer.addr;

        let (mut send, mut recv) = self.open_stream(deadline, after).await?;
        match timeout_at(deadline, send.write_all(&wire)).await {
            Err(_) => return Err(TransportError::WriteTimeout { peer, after }),
            Ok(Err(e)) => return Err(write_failed(peer, e, &mut recv, deadline, limit).await),
            Ok(Ok(())) => {}
        }
        // Only fails if the stream is already closed; the read below reports why.
        let _ = send.finish();
        let bytes = read_reply_bytes(peer, &mut recv, deadline, after, limit).await?;
        decode_reply(peer, &bytes)
    }

    /// Opens a bidirectional stream, waiting until `deadline` at most (`after` is that wait, as
    /// the timeout error reports it). Dropping the send half unfinished resets the stream.
    pub(crate) async fn open_stream(
        &self,
        deadline: Instant,
        after: Duration,
    ) -> Result<(SendGuard, quinn::RecvStream), TransportError> {
        let peer = self.peer.addr;
        let (send, recv) = timeout_at(deadline, self.conn.open_bi())
            .await
            .map_err(|_| TransportError::OpenTimeout { peer, after })?
            .map_err(|e| lost(peer, &e))?;
        Ok((SendGuard::new(send), recv))
    }
}

/// Reads a whole reply (status byte + at most `limit` body bytes) before `deadline`.
pub(crate) async fn read_reply_bytes(
    peer: SocketAddr,
    recv: &mut quinn::RecvStream,
    deadline: Instant,
    after: Duration,
    limit: usize,
) -> Result<Vec<u8>, TransportError> {
    match timeout_at(deadline, recv.read_to_end(limit.saturating_add(1))).await {
        Err(_) => Err(TransportError::ReadTimeout { peer, after }),
        Ok(Err(quinn::ReadToEndError::TooLong)) => {
            Err(TransportError::IncomingTooLarge { peer, limit })
        }
        Ok(Err(quinn::ReadToEndError::Read(e))) => Err(read_failed(peer, e)),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// Turns reply bytes into the response or the remote's refusal.
pub(crate) fn decode_reply<Resp: DeserializeOwned>(
    peer: SocketAddr,
    bytes: &[u8],
) -> Result<Resp, TransportError> {
    match parse_reply(bytes) {
        Ok(Reply::Ok(body)) => decode_message(body).map_err(|e| TransportError::Decode {
            peer,
            reason: e.to_string(),
        }),
        Ok(Reply::Err(message)) => Err(TransportError::Remote { peer, message }),
        Err(FrameError::EmptyReply) => Err(TransportError::Protocol {
            peer,
            reason: "the peer closed the stream without a reply (its handler may have failed)"
                .into(),
        }),
        Err(e) => Err(TransportError::Protocol {
            peer,
            reason: e.to_string(),
        }),
    }
}

/// A write failed. If the peer stopped our stream on purpose (too large, bad request) it
/// also sent a reply saying why: prefer that over a bare "stopped".
pub(crate) async fn write_failed(
    peer: SocketAddr,
    e: quinn::WriteError,
    recv: &mut quinn::RecvStream,
    deadline: Instant,
    limit: usize,
) -> TransportError {
    match e {
        quinn::WriteError::Stopped(code) => {
            let after = deadline.saturating_duration_since(Instant::now());
            match read_reply_bytes(peer, recv, deadline, after, limit).await {
                Ok(bytes) => match parse_reply(&bytes) {
                    Ok(Reply::Err(message)) => TransportError::Remote { peer, message },
                    _ => aborted(peer, code),
                },
                Err(_) => aborted(peer, code),
            }
        }
        quinn::WriteError::ConnectionLost(e) => lost(peer, &e),
        other => lost_for(peer, other),
    }
}

pub(crate) fn read_failed(peer: SocketAddr, e: quinn::ReadError) -> TransportError {
    match e {
        quinn::ReadError::Reset(code) => aborted(peer, code),
        quinn::ReadError::ConnectionLost(e) => lost(peer, &e),
        other => lost_for(peer, other),
    }
}

/// The peer reset or stopped the stream with `code`.
fn aborted(peer: SocketAddr, code: quinn::VarInt) -> TransportError {
    TransportError::StreamAborted {
        peer,
        code: code.into_inner(),
    }
}

/// The stream broke for a reason other than the peer's reset or the connection's loss.
fn lost_for(peer: SocketAddr, e: impl std::fmt::Display) -> TransportError {
    TransportError::ConnectionLost {
        peer,
        reason: e.to_string(),
    }
}

pub(crate) fn lost(peer: SocketAddr, e: &quinn::ConnectionError) -> TransportError {
    match e {
        quinn::ConnectionError::LocallyClosed => TransportError::Shutdown,
        _ => TransportError::ConnectionLost {
            peer,
            reason: describe(e),
        },
    }
}

pub(crate) fn local_frame_error(e: FrameError) -> TransportError {
    match e {
        FrameError::TooLarge { size, limit } => TransportError::MessageTooLarge { size, limit },
        other => TransportError::Encode(other.to_string()),
    }
}
