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
pub async fn handle(ctx: &Arc<NodeContext>, from: &str, request: PeerRequest) -> PeerResponse {
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
            Ok(entries) => PeerResponse::ClusterHealth(cluster_health::with_shards(
                cluster_health::aggregated(&view, &entries, ctx.report_stale_after()),
                &view,
                ctx.shard_map.get().as_ref(),
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
        PeerRequest::InstallMap(map) => crate::shard_coordinator::install(ctx, map),
        PeerRequest::MarkStale { shard, node } => {
            match crate::shard_coordinator::mark_stale(ctx, shard, &node, from) {
                Ok(map) => {
                    // The new map goes back to the asker too, which installs it before going on:
                    // a push that timed out must not leave it writing with the old in-sync set.
                    crate::shard_coordinator::push_also_to(ctx, map.clone(), &node).await;
                    PeerResponse::Map(Some(map))
                }
                Err(e) => PeerResponse::Failed(e),
            }
        }
        PeerRequest::ShardWrite { shard, op } => {
            crate::replication::primary_write(ctx, shard, op).await
        }
        PeerRequest::Replicate { shard, seq, op } => {
            crate::replication::replica_write(ctx, shard, from, seq, op).await
        }
        PeerRequest::GetEntity { .. } | PeerRequest::GetChunk { .. }
            if ctx.holds_copy(&request).is_err() =>
        {
            PeerResponse::Failed(ctx.holds_copy(&request).unwrap_err())
        }
        PeerRequest::GetEntity { shard, id } => match ctx.storage.open(shard).await {
            Ok(store) => match store.get_entity(id).await {
                Ok(e) => PeerResponse::Entity(e),
                Err(e) => PeerResponse::Failed(e),
            },
            Err(e) => PeerResponse::Failed(e),
        },
        PeerRequest::GetChunk { shard, id } => match ctx.storage.open(shard).await {
            Ok(store) => match store.get_chunk(id).await {
                Ok(c) => PeerResponse::Chunk(c),
                Err(e) => PeerResponse::Failed(e),
            },
            Err(e) => PeerResponse::Failed(e),
        },
        PeerRequest::QueryShards { shards, query } => PeerResponse::QueryRowsPerShard(
            crate::query::scatter::run_on_shards(ctx, shards, query).await,
        ),
        PeerRequest::Traverse {
            parts,
            direction,
            filter,
            relations,
        } => PeerResponse::Traversed(
            crate::query::traverse::step_here(ctx, parts, direction, filter, relations).await,
        ),
        PeerRequest::GetMap => PeerResponse::Map(ctx.shard_map.get()),
        PeerRequest::RequestInSync {
            shard,
            applied_seq,
            last_crc,
        } => crate::replication::rejoin_in_sync(ctx, shard, from, applied_seq, last_crc).await,
        PeerRequest::AddInSync { shard, node } => {
            match crate::shard_coordinator::add_in_sync(ctx, shard, &node, from) {
                Ok(map) => {
                    crate::shard_coordinator::push(ctx, map.clone()).await;
                    PeerResponse::Map(Some(map))
                }
                Err(e) => PeerResponse::Failed(e),
            }
        }
        PeerRequest::PrepareSnapshot { shard } => crate::snapshot::prepare(ctx, shard, from).await,
        PeerRequest::SnapshotChunk { id, offset, len } => {
            crate::snapshot::piece(ctx, id, offset, len).await
        }
        PeerRequest::ReleaseSnapshot { id } => {
            crate::snapshot::release(ctx, id);
            PeerResponse::Delivered
        }
        PeerRequest::SetDraining {
            node,
            draining,
            until_restart,
        } => match crate::shard_coordinator::set_draining(ctx, &node, draining, until_restart) {
            Ok(map) => {
                crate::shard_coordinator::push(ctx, map.clone()).await;
                PeerResponse::Map(Some(map))
            }
            Err(e) => PeerResponse::Failed(e),
        },
        PeerRequest::ShardChecksums => {
            let mut out = Vec::new();
            for shard in ctx.storage.on_disk() {
                let sum = match ctx.storage.open(shard).await {
                    Ok(store) => store.checksum().await,
                    Err(e) => Err(e),
                };
                out.push((shard, sum));
            }
            PeerResponse::Checksums(out)
        }
        PeerRequest::ShardStats => {
            let mut out = Vec::new();
            for shard in ctx.storage.on_disk() {
                let stats = match ctx.storage.open(shard).await {
                    Ok(store) => store.stats().await,
                    Err(e) => Err(e),
                };
                match stats {
                    Ok(s) => out.push((shard, s)),
                    // Being removed or rebuilt right now: reported by the next call.
                    Err(e) if e.contains("being removed or rebuilt") => {}
                    Err(e) => return PeerResponse::Failed(format!("shard {shard}: {e}")),
                }
            }
            PeerResponse::Stats(out)
        }
    }
}

/// Calls `node_id` at `peer_addr` (this node directly, others over QUIC) within `timeout`.
/// A boxed, sendable future: `call` returns one because handlers call other nodes (and so, maybe,
/// this one) through it; the indirection breaks the recursive future type.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

pub fn call<'a>(
    ctx: &'a Arc<NodeContext>,
    node_id: &'a str,
    peer_addr: &'a str,
    request: &'a PeerRequest,
    timeout: Duration,
) -> BoxFuture<'a, Result<PeerResponse, String>> {
    Box::pin(async move {
        if node_id == ctx.node_id().as_str() {
            return tokio::time::timeout(timeout, handle(ctx, node_id, request.clone()))
                .await
                .map_err(|_| {
                    format!("no answer from this node within {} ms", timeout.as_millis())
                });
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
    })
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
