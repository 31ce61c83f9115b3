//! The serving side: accept connections, accept streams, dispatch each stream to the
//! installed service in its own task. Every read is bounded in size and time, a bad stream
//! gets an error reply (or a reset) and never takes the server down, and every stream is
//! read to its end or stopped so the peer's stream credit is returned.

use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::config::TransportConfig;
use crate::frame::{encode_err, KIND_BATCH, KIND_REQUEST};
use crate::guard::{SendGuard, CODE_PROTOCOL, CODE_TOO_LARGE};
use crate::service::{ErasedService, PeerInfo};
use crate::stream::ErasedStreamService;
use crate::tls::{describe, peer_node_id};

/// What the accept loop needs; shared with the [`crate::Endpoint`].
pub(crate) struct Handlers {
    pub(crate) service: Slot<Arc<dyn ErasedService>>,
    pub(crate) streams: Slot<Arc<dyn ErasedStreamService>>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) config: Arc<TransportConfig>,
}

/// An installed handler that the endpoint may replace while streams are being served. A
/// poisoned lock is taken over: the slot holds a complete value either way.
pub(crate) struct Slot<T>(RwLock<Option<T>>);

impl<T: Clone> Slot<T> {
    pub(crate) fn empty() -> Self {
        Slot(RwLock::new(None))
    }

    /// The handler installed now, if any.
    fn get(&self) -> Option<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs `handler`, replacing what was there.
    pub(crate) fn set(&self, handler: T) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }
}

pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, handlers: Arc<Handlers>) {
    // `accept` returns None once the endpoint is closed.
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(serve_connection(incoming, handlers.clone()));
    }
}

async fn serve_connection(incoming: quinn::Incoming, handlers: Arc<Handlers>) {
    let remote = incoming.remote_address();
    let conn = match timeout(handlers.config.connect_timeout, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(peer = %remote, error = %describe(&e), "incoming handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %remote, "incoming handshake timed out");
            return;
        }
    };
    let peer = PeerInfo {
        addr: conn.remote_address(),
        node_id: peer_node_id(&conn).unwrap_or_default(),
    };
    tracing::debug!(peer = %peer.addr, node_id = %peer.node_id, "accepted connection");
    loop {
        // Dead peers are detected by the idle timeout, which ends this wait.
        let (send, recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                tracing::debug!(peer = %peer.addr, error = %describe(&e), "connection ended");
                return;
            }
        };
        // Waiting here stops accepting streams: the peer's open_bi blocks once its stream
        // credit is used up, which is the backpressure we want when handlers are saturated.
        let Ok(permit) = handlers.permits.clone().acquire_owned().await else {
            return;
        };
        let handlers = handlers.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            serve_stream(SendGuard::new(send), recv, peer, &handlers).await;
            drop(permit);
        });
    }
}

async fn serve_stream(
    send: SendGuard,
    mut recv: quinn::RecvStream,
    peer: PeerInfo,
    handlers: &Handlers,
) {
    let config = &handlers.config;
    let mut kind = [0u8; 1];
    match timeout(config.request_timeout, recv.read_exact(&mut kind)).await {
        Ok(Ok(())) => {}
        // Timed out, reset, empty or connection gone: dropping the guard resets our half,
        // dropping `recv` stops theirs.
        _ => return,
    }
    let reply = match kind[0] {
        KIND_REQUEST => {
            let body = match timeout(
                config.request_timeout,
                recv.read_to_end(config.max_message_size),
            )
            .await
            {
                Ok(Ok(body)) => body,
                Ok(Err(quinn::ReadToEndError::TooLong)) => {
                    let _ = recv.stop(CODE_TOO_LARGE.into());
                    let reply = encode_err(&format!(
                        "request exceeds the limit of {} bytes; raise max_message_size on both sides or use a batch stream",
                        config.max_message_size
                    ));
                    write_reply(send, &reply, config, &peer).await;
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => {
                    let reply = encode_err(&format!(
                        "request not received within {:?}",
                        config.request_timeout
                    ));
                    write_reply(send, &reply, config, &peer).await;
                    return;
                }
            };
            match handlers.service.get() {
                Some(service) => {
                    let call = service.call(peer.clone(), body, config.max_message_size);
                    // If the caller cancels (stops our send half) there is nobody to answer:
                    // drop the handler's future.
                    tokio::select! {
                        reply = call => reply,
                        _ = send.stopped() => {
                            tracing::debug!(peer = %peer.addr, "request cancelled by the caller");
                            return;
                        }
                    }
                }
                None => encode_err("this node does not serve requests (no service installed yet)"),
            }
        }
        KIND_BATCH => match handlers.streams.get() {
            // No cancellation select here: a sender that goes away resets its half, and the
            // handler sees that as an error from `next()`, so it can clean up a partial load.
            Some(streams) => streams.on_stream(peer.clone(), recv, config.clone()).await,
            None => {
                let _ = recv.stop(CODE_PROTOCOL.into());
                encode_err("this node does not accept batch streams (no stream service installed)")
            }
        },
        other => {
            let _ = recv.stop(CODE_PROTOCOL.into());
            encode_err(&format!(
                "unknown stream kind {other}; is the peer running a newer version?"
            ))
        }
    };
    write_reply(send, &reply, config, &peer).await;
}

async fn write_reply(mut send: SendGuard, reply: &[u8], config: &TransportConfig, peer: &PeerInfo) {
    match timeout(config.request_timeout, send.write_all(reply)).await {
        Ok(Ok(())) => {
            let _ = send.finish();
        }
        Ok(Err(e)) => tracing::debug!(peer = %peer.addr, error = %e, "reply not delivered"),
        Err(_) => tracing::debug!(peer = %peer.addr, "reply write timed out"),
    }
}
