//! What the application plugs into an endpoint: a typed request [`Service`] (one wire enum per
//! subsystem, one dispatch `match` in the caller) and a [`StreamService`] for batch streams.
//! The endpoint only sees type-erased versions that turn bytes into reply bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::{decode_message, encode_err, encode_ok, FrameError};
use crate::stream::BatchReceiver;

/// The authenticated peer of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// The peer's UDP address as seen by us (for an incoming connection: its endpoint's
    /// address, which is also its listen address since one socket serves and dials).
    pub addr: SocketAddr,
    /// The node id from the peer's verified certificate (subject common name).
    pub node_id: String,
}

/// Answers typed requests. Implement it with `async fn call(...)`.
///
/// A request that fails to decode never reaches `call`: the caller gets
/// [`crate::TransportError::Remote`]. Put application errors in `Response`.
pub trait Service: Send + Sync + 'static {
    type Request: DeserializeOwned + Send + 'static;
    type Response: Serialize + Send + 'static;

    fn call(
        &self,
        peer: PeerInfo,
        request: Self::Request,
    ) -> impl Future<Output = Self::Response> + Send;
}

/// Consumes batch streams opened with [`crate::Endpoint::open_batch_stream`].
///
/// `on_stream` should drain `batches` (call `next()` until `None`); returning earlier stops the
/// sender, whose next `send` fails. The returned ack is what the sender's `finish` yields.
pub trait StreamService: Send + Sync + 'static {
    type Header: DeserializeOwned + Send + 'static;
    type Batch: DeserializeOwned + Send + 'static;
    type Ack: Serialize + Send + 'static;

    fn on_stream(
        &self,
        peer: PeerInfo,
        header: Self::Header,
        batches: BatchReceiver<Self::Batch>,
    ) -> impl Future<Output = Self::Ack> + Send;
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A [`Service`] behind bytes: request body in, reply (status + body) out.
pub(crate) trait ErasedService: Send + Sync {
    fn call(&self, peer: PeerInfo, body: Vec<u8>, limit: usize) -> BoxFuture<Vec<u8>>;
}

pub(crate) struct TypedService<S>(pub Arc<S>);

impl<S: Service> ErasedService for TypedService<S> {
    fn call(&self, peer: PeerInfo, body: Vec<u8>, limit: usize) -> BoxFuture<Vec<u8>> {
        let service = self.0.clone();
        Box::pin(async move {
            let request = match decode_message::<S::Request>(&body) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(peer = %peer.addr, error = %e, "undecodable request");
                    return encode_err(&format!(
                        "cannot decode request ({e}); are both nodes running the same version?"
                    ));
                }
            };
            let response = service.call(peer, request).await;
            encode_reply(&response, limit)
        })
    }
}

/// Encodes a handler's answer, or an error reply if it is over the limit (the caller would
/// refuse it anyway, and a clear message beats a truncated stream).
pub(crate) fn encode_reply<T: Serialize>(value: &T, limit: usize) -> Vec<u8> {
    match encode_ok(value, limit) {
        Ok(bytes) => bytes,
        Err(FrameError::TooLarge { size, limit }) => encode_err(&format!(
            "response of {size} bytes exceeds the limit of {limit} bytes; page the result or use a batch stream"
        )),
        Err(e) => encode_err(&format!("cannot encode response: {e}")),
    }
}
