//! Node-to-node calls over the QUIC transport.
//!
//! Each subsystem owns its messages and its handler: the map and the coordinator's duties
//! ([`crate::cluster::messages`]), replication ([`crate::replication::messages`]), snapshots
//! ([`crate::replication::snapshot`]) and reads ([`crate::query::read`]). This module holds the
//! envelope that carries them ([`wire`]), the service that hands an incoming request to its
//! subsystem ([`PeerService`]), and the one client path every caller uses ([`call`]): node id →
//! address in the membership view → call within a timeout → typed reply or typed
//! [`Error`]. A call to this node itself goes straight to the subsystem's handler.

pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use transport::{PeerInfo, Service};

use crate::error::Error;
use crate::node::context::NodeContext;
use wire::{PeerRequest, PeerResponse};

/// A boxed, sendable future. Handlers call other nodes (and so, maybe, this one) through
/// [`call`]; boxing the local handler's future breaks the recursive future type.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A request of one subsystem: how it travels in the envelope, how its reply is taken out of
/// the envelope's answer, and which handler answers it on this node.
pub trait Call: Send + Sync + Sized + 'static {
    type Reply: Send + 'static;
    fn into_request(self) -> PeerRequest;
    /// The subsystem's reply, or the error the peer answered with.
    fn reply(response: PeerResponse) -> Result<Self::Reply, Error>;
    /// Handles the request on this node (`from` is the asking node's id).
    fn serve_here(
        self,
        ctx: Arc<NodeContext>,
        from: String,
    ) -> BoxFuture<'static, Result<Self::Reply, Error>>;
}

/// Implements [`Call`] for a subsystem's request type: its envelope variant (the same name in
/// [`PeerRequest`] and [`PeerResponse`]) and its handler `async fn(&Arc<NodeContext>, &str, Req)
/// -> Result<Reply, Error>`.
#[macro_export]
macro_rules! peer_call {
    ($request:ty => $reply:ty, $variant:ident, $handler:path) => {
        impl $crate::peer::Call for $request {
            type Reply = $reply;
            fn into_request(self) -> $crate::peer::wire::PeerRequest {
                $crate::peer::wire::PeerRequest::$variant(self)
            }
            fn reply(
                response: $crate::peer::wire::PeerResponse,
            ) -> Result<$reply, $crate::error::Error> {
                match response {
                    $crate::peer::wire::PeerResponse::$variant(r) => Ok(r),
                    $crate::peer::wire::PeerResponse::Failed(e) => Err(e),
                    other => Err($crate::error::Error::Internal(format!(
                        "unexpected answer {other:?}"
                    ))),
                }
            }
            fn serve_here(
                self,
                ctx: std::sync::Arc<$crate::node::context::NodeContext>,
                from: String,
            ) -> $crate::peer::BoxFuture<'static, Result<$reply, $crate::error::Error>> {
                Box::pin(async move { $handler(&ctx, &from, self).await })
            }
        }
    };
}

/// Answers peer requests by handing each to its subsystem's handler. Holds a weak reference so
/// the endpoint does not keep the node alive.
pub struct PeerService {
    pub ctx: std::sync::Weak<NodeContext>,
}

impl Service for PeerService {
    type Request = PeerRequest;
    type Response = PeerResponse;

    async fn call(&self, peer: PeerInfo, request: PeerRequest) -> PeerResponse {
        let Some(ctx) = self.ctx.upgrade() else {
            return PeerResponse::Failed(Error::Unavailable("node is shutting down".into()));
        };
        let from = peer.node_id;
        match request {
            PeerRequest::Health(r) => answer(r.serve_here(ctx, from).await, PeerResponse::Health),
            PeerRequest::Map(r) => answer(r.serve_here(ctx, from).await, PeerResponse::Map),
            PeerRequest::Broadcast(r) => {
                answer(r.serve_here(ctx, from).await, PeerResponse::Broadcast)
            }
            PeerRequest::Replication(r) => {
                answer(r.serve_here(ctx, from).await, PeerResponse::Replication)
            }
            PeerRequest::Snapshot(r) => {
                answer(r.serve_here(ctx, from).await, PeerResponse::Snapshot)
            }
            PeerRequest::Read(r) => answer(r.serve_here(ctx, from).await, PeerResponse::Read),
        }
    }
}

fn answer<T>(result: Result<T, Error>, wrap: fn(T) -> PeerResponse) -> PeerResponse {
    match result {
        Ok(r) => wrap(r),
        Err(e) => PeerResponse::Failed(e),
    }
}

/// Calls `node` within `timeout`: this node directly, another at the peer address its gossip
/// publishes. Fails with [`Error::Unavailable`] when the view has no address for it, and
/// [`Error::Timeout`] when no answer comes in time.
pub async fn call<C: Call>(
    ctx: &Arc<NodeContext>,
    node: &str,
    request: C,
    timeout: Duration,
) -> Result<C::Reply, Error> {
    let me = ctx.node_id().as_str();
    if node == me {
        return tokio::time::timeout(timeout, request.serve_here(ctx.clone(), me.to_string()))
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "no answer from this node within {} ms",
                    timeout.as_millis()
                ))
            })?;
    }
    let addr = peer_addr(ctx, node)?;
    call_at(ctx, node, &addr, request, timeout).await
}

/// Like [`call`], to the node only if gossip calls it live ([`Error::Unavailable`] otherwise).
pub async fn call_live<C: Call>(
    ctx: &Arc<NodeContext>,
    node: &str,
    request: C,
    timeout: Duration,
) -> Result<C::Reply, Error> {
    if !is_live(ctx, node) {
        return Err(Error::Unreachable(format!("{node} is not live")));
    }
    call(ctx, node, request, timeout).await
}

/// Calls the coordinator of this node's view.
pub async fn call_coordinator<C: Call>(
    ctx: &Arc<NodeContext>,
    request: C,
    timeout: Duration,
) -> Result<C::Reply, Error> {
    let coordinator = ctx
        .cluster
        .view()
        .coordinator
        .clone()
        .ok_or_else(|| Error::Unavailable("no coordinator in this node's view".into()))?;
    call(ctx, coordinator.as_str(), request, timeout).await
}

/// Asks `nodes` in order, each within `timeout`, skipping those gossip does not call live, until
/// one answers; an error answer moves on to the next. Returns the first reply with the node that
/// gave it, or an error that lists why each node failed (of the last node's kind).
pub async fn call_first<C: Call + Clone>(
    ctx: &Arc<NodeContext>,
    nodes: impl IntoIterator<Item = String>,
    request: &C,
    timeout: Duration,
) -> Result<(String, C::Reply), Error> {
    let mut errors = Vec::new();
    let mut last = None;
    for node in nodes {
        match call_live(ctx, &node, request.clone(), timeout).await {
            Ok(reply) => return Ok((node, reply)),
            Err(e) => {
                errors.push(format!("{node}: {e}"));
                last = Some(e);
            }
        }
    }
    let all = errors.join("; ");
    Err(match last {
        None => Error::Unavailable("no node to ask".into()),
        Some(e) => match e {
            Error::Timeout(_) => Error::Timeout(all),
            Error::Busy(_) => Error::Busy(all),
            Error::NotFound(_) => Error::NotFound(all),
            Error::Invalid(_) => Error::Invalid(all),
            Error::Internal(_) => Error::Internal(all),
            _ => Error::Unavailable(all),
        },
    })
}

/// Whether gossip calls `node` live.
pub fn is_live(ctx: &NodeContext, node: &str) -> bool {
    ctx.cluster
        .view()
        .member_by_str(node)
        .is_some_and(|m| m.is_live())
}

/// The peer address `node` publishes in gossip.
fn peer_addr(ctx: &NodeContext, node: &str) -> Result<String, Error> {
    ctx.cluster
        .view()
        .member_by_str(node)
        .and_then(|m| m.peer_addr.clone())
        .ok_or_else(|| {
            Error::Unreachable(format!(
                "{node} is not in this node's membership view or publishes no peer address"
            ))
        })
}

/// Calls `node` at `addr` over QUIC within `timeout`.
async fn call_at<C: Call>(
    ctx: &Arc<NodeContext>,
    node: &str,
    addr: &str,
    request: C,
    timeout: Duration,
) -> Result<C::Reply, Error> {
    let socket = resolve(addr)?;
    let request = request.into_request();
    let started = Instant::now();
    // The transport bounds connect and request separately; bound the sum too.
    match tokio::time::timeout(
        timeout,
        ctx.endpoint
            .request::<_, PeerResponse>(socket, &request, Some(timeout)),
    )
    .await
    {
        Ok(Ok(response)) => C::reply(response),
        Ok(Err(e)) => Err(Error::Unreachable(format!("{node} at {addr}: {e}"))),
        Err(_) => Err(Error::Timeout(format!(
            "{node} at {addr}: no answer within {} ms",
            started.elapsed().as_millis()
        ))),
    }
}

/// A peer address as published in gossip (`host:port`) to a socket address.
pub fn resolve(peer_addr: &str) -> Result<std::net::SocketAddr, Error> {
    use std::net::ToSocketAddrs;
    peer_addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Unreachable(format!("cannot resolve peer address {peer_addr:?}")))
}
