//! Node-to-node calls over the QUIC transport: the wire messages ([`wire`]), the service that
//! answers them ([`PeerService`]) and the client side ([`call`]) that reaches any member by id,
//! short-circuiting calls to this node itself.

pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use transport::{PeerInfo, Service};

use crate::cluster_health;
use crate::context::NodeContext;
use crate::registry::Refusal;
use wire::{PeerRequest, PeerResponse};

/// Answers peer requests. Holds a weak reference so the endpoint does not keep the node alive.
pub struct PeerService {
    pub ctx: std::sync::Weak<NodeContext>,
}

impl Service for PeerService {
    type Request = PeerRequest;
    type Response = PeerResponse;

    async fn call(&self, peer: PeerInfo, request: PeerRequest) -> PeerResponse {
        match self.ctx.upgrade() {
            Some(ctx) => handle(&ctx, &peer.node_id, request).await,
            None => PeerResponse::Failed("node is shutting down".into()),
        }
    }
}

/// Handles one request from `from` (the node id proven by its certificate, or this node's own).
pub async fn handle(ctx: &NodeContext, from: &str, request: PeerRequest) -> PeerResponse {
    let view = ctx.cluster.view();
    let not_coordinator = || PeerResponse::NotCoordinator {
        coordinator: view.coordinator.as_ref().map(|c| c.as_str().to_string()),
    };
    match request {
        PeerRequest::Register(reg) => {
            if reg.node_id != from {
                return PeerResponse::Failed(format!(
                    "registration for {:?} sent by {from:?}: a node registers only itself",
                    reg.node_id
                ));
            }
            let id = reg.node_id.clone();
            match ctx.registry.register(&view, reg) {
                Ok(term) => {
                    tracing::info!(node = %id, term, "registered node");
                    PeerResponse::Registered {
                        coordinator: ctx.node_id().as_str().to_string(),
                        term,
                    }
                }
                Err(_) => not_coordinator(),
            }
        }
        PeerRequest::Report(report) => {
            if report.node_id != from {
                return PeerResponse::Failed("a node reports only its own health".into());
            }
            match ctx.registry.report(&view, report) {
                Ok(()) => PeerResponse::ReportAccepted,
                Err(Refusal::NotRegistered) => PeerResponse::NotRegistered,
                Err(Refusal::NotCoordinator) => not_coordinator(),
            }
        }
        PeerRequest::ClusterHealth => match ctx.registry.entries(&view) {
            Ok(entries) => PeerResponse::ClusterHealth(cluster_health::aggregated(
                &view,
                &entries,
                ctx.report_stale_after(),
            )),
            Err(_) => not_coordinator(),
        },
        PeerRequest::Registry => match ctx.registry.entries(&view) {
            Ok(entries) => PeerResponse::Registry(entries),
            Err(_) => not_coordinator(),
        },
        PeerRequest::Broadcast(msg) => {
            match ctx.handlers.dispatch(ctx, &msg.path, &msg.payload_json) {
                Ok(()) => PeerResponse::Delivered,
                Err(e) => PeerResponse::Failed(e),
            }
        }
    }
}

/// Calls `node_id` at `peer_addr` (this node directly, others over QUIC) within `timeout`.
pub async fn call(
    ctx: &Arc<NodeContext>,
    node_id: &str,
    peer_addr: &str,
    request: &PeerRequest,
    timeout: Duration,
) -> Result<PeerResponse, String> {
    if node_id == ctx.node_id().as_str() {
        let local = handle(ctx, node_id, request.clone());
        return tokio::time::timeout(timeout, local)
            .await
            .map_err(|_| format!("no answer from this node within {} ms", timeout.as_millis()));
    }
    let addr = resolve(peer_addr)?;
    let started = Instant::now();
    // The transport bounds connect and request separately; bound the sum too.
    match tokio::time::timeout(
        timeout,
        ctx.endpoint
            .request::<_, PeerResponse>(addr, request, Some(timeout)),
    )
    .await
    {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(format!("{node_id} at {peer_addr}: {e}")),
        Err(_) => Err(format!(
            "{node_id} at {peer_addr}: no answer within {} ms",
            started.elapsed().as_millis()
        )),
    }
}

/// A peer address as published in gossip (`host:port`) to a socket address.
pub fn resolve(peer_addr: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    peer_addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve peer address {peer_addr:?}"))
}
