//! What a node answers to the cluster subsystem's peer messages ([`super::messages`]): the
//! coordinator's registry, reports and aggregated health; copy statistics; the shard map.

use std::sync::Arc;

use super::messages::*;
use crate::cluster::registry::Refusal;
use crate::cluster::{coordinator, health};
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::node::wire::Serve;

/// Answers a [`HealthRequest`] from `from` (the node id proven by its certificate, or this
/// node's own).
impl Serve for HealthRequest {
    type Reply = HealthResponse;

    async fn serve(self, ctx: &Arc<NodeContext>, from: &str) -> Result<HealthResponse, Error> {
        let view = ctx.cluster.view();
        let not_coordinator = |_| Error::NotCoordinator {
            coordinator: view.coordinator.as_ref().map(|c| c.as_str().to_string()),
        };
        match self {
            HealthRequest::Register(reg) => {
                if reg.node_id != from {
                    return Err(Error::Invalid(format!(
                        "registration for {:?} sent by {from:?}: a node registers only itself",
                        reg.node_id
                    )));
                }
                let id = reg.node_id.clone();
                let term = ctx.registry.register(&view, reg).map_err(not_coordinator)?;
                tracing::info!(node = %id, term, "registered node");
                Ok(HealthResponse::Registered {
                    coordinator: ctx.node_id().as_str().to_string(),
                    term,
                })
            }
            HealthRequest::Report(report) => {
                if report.node_id != from {
                    return Err(Error::Invalid("a node reports only its own health".into()));
                }
                match ctx.registry.report(&view, report) {
                    Ok(()) => Ok(HealthResponse::ReportAccepted),
                    Err(Refusal::NotRegistered) => Err(Error::NotRegistered),
                    Err(r @ Refusal::NotCoordinator) => Err(not_coordinator(r)),
                }
            }
            HealthRequest::ClusterHealth => {
                let entries = ctx.registry.entries(&view).map_err(not_coordinator)?;
                Ok(HealthResponse::ClusterHealth(Box::new(
                    health::with_shards(
                        health::aggregated(&view, &entries, ctx.report_stale_after()),
                        &view,
                        ctx.shard_map.get().as_ref(),
                    ),
                )))
            }
            HealthRequest::Registry => Ok(HealthResponse::Registry(
                ctx.registry.entries(&view).map_err(not_coordinator)?,
            )),
            HealthRequest::ShardStats => {
                let mut out = Vec::new();
                for (shard, stats) in
                    on_every_copy(ctx, |store| async move { store.stats().await }).await
                {
                    match stats {
                        Ok(s) => out.push((shard, s)),
                        // Being removed or rebuilt right now: reported by the next call.
                        Err(crate::storage::Error::Closing(_)) => {}
                        Err(e) => return Err(Error::from(e).context(format!("shard {shard}"))),
                    }
                }
                Ok(HealthResponse::Stats(out))
            }
            HealthRequest::ShardChecksums => {
                let sums = on_every_copy(ctx, |store| async move { store.checksum().await }).await;
                Ok(HealthResponse::Checksums(
                    sums.into_iter()
                        .map(|(shard, sum)| (shard, sum.map_err(Error::from)))
                        .collect(),
                ))
            }
        }
    }
}

/// `read` on this node's copy of each shard it has on disk, one after the other, in shard order.
async fn on_every_copy<T, Fut>(
    ctx: &NodeContext,
    read: impl Fn(Arc<crate::storage::KuzuShard>) -> Fut,
) -> Vec<(u32, Result<T, crate::storage::Error>)>
where
    Fut: std::future::Future<Output = Result<T, crate::storage::Error>>,
{
    let mut out = Vec::new();
    for shard in ctx.storage.on_disk() {
        // A copy being removed or rebuilt is left out (the next call reports it): opening it
        // would wait for that, which can take as long as its applier needs to stop.
        if ctx.storage.is_busy(shard) {
            continue;
        }
        let result = match ctx.storage.open(shard).await {
            Ok(store) => read(store).await,
            Err(e) => Err(e),
        };
        out.push((shard, result));
    }
    out
}

/// Answers a [`MapRequest`] from `from`.
impl Serve for MapRequest {
    type Reply = MapResponse;

    async fn serve(self, ctx: &Arc<NodeContext>, from: &str) -> Result<MapResponse, Error> {
        match self {
            MapRequest::Install(map) => Ok(MapResponse::Installed {
                accepted: coordinator::install(ctx, map, from),
            }),
            MapRequest::Get => Ok(MapResponse::Map(ctx.shard_map.get())),
            MapRequest::Collect { term, generation } => {
                let promised = ctx.shard_map.promise(term, from, generation);
                Ok(MapResponse::Collected {
                    map: ctx.shard_map.get(),
                    promised,
                    forgot: ctx.shard_map.forgot(),
                })
            }
            MapRequest::MarkStale { shard, node } => {
                let map = coordinator::change_in_sync(ctx, shard, &node, from, false)?;
                // Answered once a majority holds the change (the asker acknowledges a write on
                // it); the new map goes back to the asker too, which installs it before going
                // on: a push that timed out must not leave it writing with the old in-sync set.
                coordinator::commit(ctx, map.clone(), Some(&node)).await?;
                Ok(MapResponse::Map(Some(map)))
            }
            MapRequest::AddInSync { shard, node } => {
                let map = coordinator::change_in_sync(ctx, shard, &node, from, true)?;
                coordinator::commit(ctx, map.clone(), None).await?;
                Ok(MapResponse::Map(Some(map)))
            }
            MapRequest::SetDraining {
                node,
                draining,
                until_restart,
            } => {
                let map = coordinator::set_draining(ctx, &node, draining, until_restart)?;
                coordinator::commit(ctx, map.clone(), None).await?;
                Ok(MapResponse::Map(Some(map)))
            }
            MapRequest::PutKey(record) => {
                let map = coordinator::put_key(ctx, record)?;
                coordinator::commit(ctx, map.clone(), None).await?;
                Ok(MapResponse::Map(Some(map)))
            }
            MapRequest::RevokeKey { id } => {
                let map = coordinator::revoke_key(ctx, &id)?;
                coordinator::commit(ctx, map.clone(), None).await?;
                Ok(MapResponse::Map(Some(map)))
            }
            MapRequest::Decide { write, publish } => {
                let map = coordinator::decide(ctx, &write, publish)?;
                coordinator::commit(ctx, map.clone(), None).await?;
                Ok(MapResponse::Map(Some(map)))
            }
        }
    }
}
