//! The cluster subsystem's peer messages and their handlers: registration and health reports
//! to the coordinator, its aggregated views, statistics of a node's copies ([`HealthRequest`]),
//! and the shard map: installing it, asking for it, and the coordinator's changes to it
//! ([`MapRequest`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cluster::registry::Refusal;
use crate::cluster::shard_map::ShardMap;
use crate::cluster::{coordinator, health};
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::storage::ShardStats;

/// Requests about nodes and their health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HealthRequest {
    /// A node announces itself to the coordinator.
    Register(Registration),
    /// A node's periodic health report to the coordinator.
    Report(HealthReport),
    /// The coordinator's aggregated cluster health.
    ClusterHealth,
    /// The coordinator's registry.
    Registry,
    /// Counts and sizes of this node's shard copies.
    ShardStats,
    /// The checksum of every shard copy this node holds (after applying what it logged).
    ShardChecksums,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HealthResponse {
    Registered {
        coordinator: String,
        term: u64,
    },
    ReportAccepted,
    ClusterHealth(Box<health::ClusterHealth>),
    Registry(Vec<RegistryEntry>),
    Stats(Vec<(u32, ShardStats)>),
    /// Per shard copy: the sequence number and checksum, or why not.
    Checksums(Vec<(u32, CopyChecksum)>),
}

/// A copy's checksum with the sequence number it was taken at, or why it could not be taken.
pub type CopyChecksum = Result<(u64, String), Error>;

/// Requests about the shard map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MapRequest {
    /// The coordinator's current shard map (installed if newer).
    Install(ShardMap),
    /// This node's shard map (a new coordinator collects them to adopt the newest).
    Get,
    /// To the coordinator, from a primary: `node` failed a write of `shard`; drop it from in-sync.
    MarkStale { shard: u32, node: String },
    /// To the coordinator, from a primary that verified the copy is level with it.
    AddInSync { shard: u32, node: String },
    /// To the coordinator: start (or stop) moving every copy off `node`.
    SetDraining {
        node: String,
        draining: bool,
        until_restart: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MapResponse {
    Installed {
        accepted: bool,
    },
    /// The map (after the change asked for, for the coordinator's changes).
    Map(Option<ShardMap>),
}

/// What a node tells the coordinator about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub node_id: String,
    pub generation: u64,
    pub http_addr: String,
    pub peer_addr: String,
    pub gossip_addr: String,
    pub version: String,
    pub capacity: Capacity,
    /// Shard copies this node holds (filled from the storage issue on).
    pub holds: Vec<String>,
    /// The coordinator term the node registered under (for logs and fencing).
    pub term: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    pub cpus: u32,
    pub memory_total_mb: u64,
    pub disk_total_mb: u64,
}

/// A node's periodic health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub node_id: String,
    pub generation: u64,
    pub uptime_ms: u64,
    pub load_1m: f64,
    pub memory_rss_mb: u64,
    pub memory_available_mb: u64,
    pub disk_free_mb: u64,
    pub disk_total_mb: u64,
    /// Error-level log events since start.
    pub errors_total: u64,
    /// Shard states (filled from the storage issue on).
    pub shards: Vec<String>,
}

/// One registry row on the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEntry {
    pub registration: Registration,
    /// Coordinator clock, unix milliseconds.
    pub registered_at_ms: u64,
    pub last_report: Option<HealthReport>,
    /// Milliseconds since the last report reached the coordinator.
    pub last_report_ms_ago: Option<u64>,
}

crate::peer_call!(HealthRequest => HealthResponse, Health, serve_health);
crate::peer_call!(MapRequest => MapResponse, Map, serve_map);

/// Answers a [`HealthRequest`] from `from` (the node id proven by its certificate, or this
/// node's own).
pub async fn serve_health(
    ctx: &Arc<NodeContext>,
    from: &str,
    request: HealthRequest,
) -> Result<HealthResponse, Error> {
    let view = ctx.cluster.view();
    let not_coordinator = |_| Error::NotCoordinator {
        coordinator: view.coordinator.as_ref().map(|c| c.as_str().to_string()),
    };
    match request {
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
            for shard in ctx.storage.on_disk() {
                let stats = match ctx.storage.open(shard).await {
                    Ok(store) => store.stats().await,
                    Err(e) => Err(e),
                };
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
            let mut out = Vec::new();
            for shard in ctx.storage.on_disk() {
                let sum = match ctx.storage.open(shard).await {
                    Ok(store) => store.checksum().await,
                    Err(e) => Err(e),
                };
                out.push((shard, sum.map_err(Error::from)));
            }
            Ok(HealthResponse::Checksums(out))
        }
    }
}

/// Answers a [`MapRequest`] from `from`.
pub async fn serve_map(
    ctx: &Arc<NodeContext>,
    from: &str,
    request: MapRequest,
) -> Result<MapResponse, Error> {
    match request {
        MapRequest::Install(map) => Ok(MapResponse::Installed {
            accepted: coordinator::install(ctx, map),
        }),
        MapRequest::Get => Ok(MapResponse::Map(ctx.shard_map.get())),
        MapRequest::MarkStale { shard, node } => {
            let map = coordinator::change_in_sync(ctx, shard, &node, from, false)?;
            // The new map goes back to the asker too, which installs it before going on: a push
            // that timed out must not leave it writing with the old in-sync set.
            coordinator::push_also_to(ctx, map.clone(), &node).await;
            Ok(MapResponse::Map(Some(map)))
        }
        MapRequest::AddInSync { shard, node } => {
            let map = coordinator::change_in_sync(ctx, shard, &node, from, true)?;
            coordinator::push(ctx, map.clone()).await;
            Ok(MapResponse::Map(Some(map)))
        }
        MapRequest::SetDraining {
            node,
            draining,
            until_restart,
        } => {
            let map = coordinator::set_draining(ctx, &node, draining, until_restart)?;
            coordinator::push(ctx, map.clone()).await;
            Ok(MapResponse::Map(Some(map)))
        }
    }
}
