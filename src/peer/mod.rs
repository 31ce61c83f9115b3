//! Node-to-node calls over the QUIC transport: the one client path every caller uses
//! ([`call`]): node id → address in the membership view → call within a timeout → typed reply
//! or typed [`Error`]. A call to this node itself goes straight to the local handler.
//!
//! This module knows neither the subsystems nor the node: a request type says how it travels
//! and who answers it by implementing [`Call`] (the node's envelope, `crate::node::wire`, does
//! that for every subsystem), and the node gives its endpoint and membership through [`Host`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use membership::Cluster;
use serde::de::DeserializeOwned;
use serde::Serialize;
use transport::Endpoint;

use crate::error::Error;

/// A boxed, sendable future. Handlers call other nodes (and so, maybe, this one) through
/// [`call`]; boxing the local handler's future breaks the recursive future type.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a node lends its calls: its QUIC endpoint and its membership view.
pub trait Host: Send + Sync + 'static {
    fn endpoint(&self) -> &Endpoint;
    fn cluster(&self) -> &Cluster;
}

impl<H: Host> Host for Arc<H> {
    fn endpoint(&self) -> &Endpoint {
        (**self).endpoint()
    }
    fn cluster(&self) -> &Cluster {
        (**self).cluster()
    }
}

/// A request of one subsystem: how it travels in the envelope, how its reply is taken out of
/// the envelope's answer, and which handler answers it on this node.
pub trait Call: Send + Sync + Sized + 'static {
    type Reply: Send + 'static;
    /// The node state the handler is given.
    type Host: Host;
    /// The envelope the request travels in, and the envelope of the answer.
    type Request: Serialize + Send + Sync;
    type Response: DeserializeOwned + Send + 'static;
    fn into_request(self) -> Self::Request;
    /// The subsystem's reply, or the error the peer answered with.
    fn reply(response: Self::Response) -> Result<Self::Reply, Error>;
    /// Handles the request on this node (`from` is the asking node's id).
    fn serve_here(
        self,
        host: Arc<Self::Host>,
        from: String,
    ) -> BoxFuture<'static, Result<Self::Reply, Error>>;
}

/// Calls `node` within `timeout`: this node directly, another at the peer address its gossip
/// publishes. Fails with [`Error::Unavailable`] when the view has no address for it, and
/// [`Error::Timeout`] when no answer comes in time.
pub async fn call<C: Call>(
    ctx: &Arc<C::Host>,
    node: &str,
    request: C,
    timeout: Duration,
) -> Result<C::Reply, Error> {
    let me = ctx.cluster().self_id().as_str();
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
    let (addr, generation) = peer_addr(ctx, node)?;
    call_at(ctx, node, &addr, generation, request, timeout).await
}

/// Calls the coordinator of this node's view.
pub async fn call_coordinator<C: Call>(
    ctx: &Arc<C::Host>,
    request: C,
    timeout: Duration,
) -> Result<C::Reply, Error> {
    let coordinator = ctx
        .cluster()
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
    ctx: &Arc<C::Host>,
    nodes: impl IntoIterator<Item = String>,
    request: &C,
    timeout: Duration,
) -> Result<(String, C::Reply), Error> {
    let mut errors = Vec::new();
    let mut last = None;
    for node in nodes {
        let answer = if is_live(ctx, &node) {
            call(ctx, &node, request.clone(), timeout).await
        } else {
            Err(Error::Unreachable(format!("{node} is not live")))
        };
        match answer {
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
pub fn is_live(ctx: &impl Host, node: &str) -> bool {
    ctx.cluster()
        .view()
        .member_by_str(node)
        .is_some_and(|m| m.is_live())
}

/// The peer address `node` publishes in gossip, with the generation (process start) it runs.
fn peer_addr(ctx: &impl Host, node: &str) -> Result<(String, u64), Error> {
    ctx.cluster()
        .view()
        .member_by_str(node)
        .and_then(|m| Some((m.peer_addr.clone()?, m.generation)))
        .ok_or_else(|| {
            Error::Unreachable(format!(
                "{node} is not in this node's membership view or publishes no peer address"
            ))
        })
}

/// Calls `node` (its process `generation`) at `addr` over QUIC within `timeout`. A connection
/// to an earlier process of the node (restarted on the same address) is not used.
async fn call_at<C: Call>(
    ctx: &Arc<C::Host>,
    node: &str,
    addr: &str,
    generation: u64,
    request: C,
    timeout: Duration,
) -> Result<C::Reply, Error> {
    let socket = resolve(addr)?;
    let request = request.into_request();
    let started = Instant::now();
    let endpoint = ctx.endpoint();
    // The transport bounds connect and request separately; bound the sum too.
    let call = async {
        endpoint
            .connect_to(socket, Some(generation))
            .await?
            .request::<_, C::Response>(&request, Some(timeout))
            .await
    };
    match tokio::time::timeout(timeout, call).await {
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
