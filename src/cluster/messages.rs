//! The cluster subsystem's peer messages: registration and health reports to the coordinator,
//! its aggregated views, statistics of a node's copies ([`HealthRequest`]), and the shard map:
//! installing it, asking for it, and the coordinator's changes to it ([`MapRequest`]). Their
//! handlers are in [`super::handlers`].

use serde::{Deserialize, Serialize};

use crate::cluster::health;
use crate::cluster::shard_map::ShardMap;
use crate::error::Error;
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
    /// To the coordinator: add an API key (its record; the key itself never leaves the node that
    /// made it).
    PutKey(crate::node::access::KeyRecord),
    /// To the coordinator: revoke the API key `id`.
    RevokeKey { id: String },
    /// To the coordinator: decide a graph algorithm write-back (publish or discard what `write`
    /// staged). The first decision stands; the answer's map holds it.
    Decide { write: String, publish: bool },
    /// From a new coordinator of `term` (in its process `generation`): this node's shard map,
    /// and its promise to install no map pushed under a lower term from now on (see
    /// `cluster::shard_map::MapHolder`).
    Collect { term: u64, generation: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MapResponse {
    /// The answer to [`MapRequest::Install`]: whether this node now holds the pushed map or a
    /// later one of the same term (not so when it promised a higher term).
    Installed { accepted: bool },
    /// The map (after the change asked for, for the coordinator's changes).
    Map(Option<ShardMap>),
    /// The answer to [`MapRequest::Collect`]: this node's map and the term it has promised
    /// (higher than the one asked for when another coordinator collected since).
    Collected {
        map: Option<ShardMap>,
        promised: crate::cluster::shard_map::Promise,
        /// The node started without a map and has not held one of its coordinator's since: it
        /// may have forgotten maps it held, and is not counted.
        forgot: bool,
    },
}

/// What a node tells the coordinator about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capacity {
    pub cpus: u32,
    pub memory_total_mb: u64,
    pub disk_total_mb: u64,
}

/// A node's periodic health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// What is wrong with the node's shard copies, a sentence each (empty when nothing is).
    pub shards: Vec<String>,
}

/// One registry row on the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistryEntry {
    pub registration: Registration,
    /// Coordinator clock, unix milliseconds.
    pub registered_at_ms: u64,
    #[schema(required = true)]
    pub last_report: Option<HealthReport>,
    /// Milliseconds since the last report reached the coordinator.
    #[schema(required = true)]
    pub last_report_ms_ago: Option<u64>,
}
