//! The per-peer connection cache. One connection per peer address, re-dialled when it dies;
//! concurrent callers share one dial (they queue on the peer's slot); a peer that failed to
//! dial is not dialled again until an exponential backoff (short: a restarted node must be
//! reachable again quickly) has passed, and callers get a fast `PeerBackoff` meanwhile.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::TransportConfig;
use crate::connection::PeerConnection;
use crate::error::TransportError;
use crate::identity::PEER_SERVER_NAME;
use crate::service::PeerInfo;
use crate::tls::{describe, is_tls_rejection, peer_node_id};

#[derive(Default)]
struct Slot {
    conn: Option<PeerConnection>,
    /// The incarnation of the peer the caller named when the connection was dialled (see
    /// [`Pool::get`]).
    incarnation: Option<u64>,
    failures: u32,
    retry_at: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct Pool {
    slots: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl Pool {
    fn slot(&self, peer: SocketAddr) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(peer).or_default().clone()
    }

    /// A live connection to `peer`, dialling if needed. `incarnation`, when the caller knows
    /// it, names the peer process it wants (a restart's is new): a connection dialled for
    /// another one is dropped and the backoff forgotten, since a peer restarted on the same
    /// address leaves the old connection looking alive until its idle timeout.
    pub(crate) async fn get(
        &self,
        endpoint: &quinn::Endpoint,
        config: &Arc<TransportConfig>,
        peer: SocketAddr,
        incarnation: Option<u64>,
    ) -> Result<PeerConnection, TransportError> {
        let slot = self.slot(peer);
        // Held across the dial so concurrent callers wait for it instead of dialling too;
        // the dial is bounded by the connect timeout.
        let mut slot = slot.lock().await;
        if incarnation.is_some() && slot.incarnation != incarnation {
            if let Some(old) = slot.conn.take() {
                tracing::debug!(%peer, "the peer restarted; dropping the connection to its old process");
                old.conn.close(0u32.into(), b"peer restarted");
            }
            slot.failures = 0;
            slot.retry_at = None;
            slot.incarnation = incarnation;
        }
        if let Some(conn) = &slot.conn {
            match conn.conn.close_reason() {
                None => return Ok(conn.clone()),
                Some(reason) => {
                    tracing::debug!(%peer, reason = %describe(&reason), "cached connection closed");
                    // A TLS rejection will repeat on redial: back off as for a failed dial.
                    if is_tls_rejection(&reason) {
                        record_failure(&mut slot, config);
                    }
                    slot.conn = None;
                }
            }
        }
        let now = Instant::now();
        if let Some(at) = slot.retry_at {
            if now < at {
                return Err(TransportError::PeerBackoff {
                    peer,
                    retry_in: at - now,
                });
            }
        }
        match dial(endpoint, config, peer).await {
            Ok(conn) => {
                slot.failures = 0;
                slot.retry_at = None;
                slot.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                if !matches!(e, TransportError::Shutdown) {
                    record_failure(&mut slot, config);
                }
                Err(e)
            }
        }
    }

    /// Closes and forgets the connection to `peer` (e.g. it left the cluster).
    pub(crate) fn remove(&self, peer: SocketAddr) {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.remove(&peer)
        };
        if let Some(slot) = slot {
            if let Ok(slot) = slot.try_lock() {
                if let Some(c) = &slot.conn {
                    c.conn.close(0u32.into(), b"forgotten");
                }
            }
        }
    }

    pub(crate) fn clear(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.clear();
    }
}

fn record_failure(slot: &mut Slot, config: &TransportConfig) {
    slot.failures = slot.failures.saturating_add(1);
    slot.retry_at = Some(Instant::now() + backoff(config, slot.failures));
}

/// initial * 2^(failures-1), capped.
pub(crate) fn backoff(config: &TransportConfig, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    config
        .backoff_initial
        .saturating_mul(1u32 << exp)
        .min(config.backoff_max)
}

async fn dial(
    endpoint: &quinn::Endpoint,
    config: &Arc<TransportConfig>,
    peer: SocketAddr,
) -> Result<PeerConnection, TransportError> {
    let connecting = endpoint
        .connect(peer, PEER_SERVER_NAME)
        .map_err(|e| match e {
            quinn::ConnectError::EndpointStopping => TransportError::Shutdown,
            other => TransportError::ConnectFailed {
                peer,
                reason: other.to_string(),
            },
        })?;
    let conn = tokio::time::timeout(config.connect_timeout, connecting)
        .await
        .map_err(|_| TransportError::ConnectTimeout {
            peer,
            after: config.connect_timeout,
        })?
        .map_err(|e| TransportError::ConnectFailed {
            peer,
            reason: describe(&e),
        })?;
    let node_id = peer_node_id(&conn).unwrap_or_default();
    tracing::debug!(%peer, %node_id, "connected");
    Ok(PeerConnection {
        peer: PeerInfo {
            addr: peer,
            node_id,
        },
        conn,
        config: config.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let c = TransportConfig::default();
        assert_eq!(backoff(&c, 1), Duration::from_millis(100));
        assert_eq!(backoff(&c, 2), Duration::from_millis(200));
        assert_eq!(backoff(&c, 4), Duration::from_millis(800));
        assert_eq!(backoff(&c, 6), Duration::from_secs(2));
        assert_eq!(backoff(&c, u32::MAX), Duration::from_secs(2));
    }
}
