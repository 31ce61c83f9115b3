//! What the parts of a running node share: membership, the peer endpoint, the coordinator's
//! registry, broadcast handlers, metrics and a few settings. HTTP handlers and the peer service
//! both get an `Arc<NodeContext>`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use membership::{Cluster, NodeId};
use transport::Endpoint;

use crate::broadcast::Handlers;
use crate::logging::FilterHandle;
use crate::metrics::Metrics;
use crate::peer::wire::Registration;
use crate::registry::Registry;
use crate::replication::ShardLocks;
use crate::shard_map::MapHolder;
use crate::storage::Storage;

pub struct NodeContext {
    pub cluster: Cluster,
    pub endpoint: Endpoint,
    pub registry: Registry,
    pub handlers: Handlers,
    pub metrics: Arc<Metrics>,
    pub log_filter: FilterHandle,
    pub settings: Settings,
    pub storage: Arc<Storage>,
    pub shard_map: MapHolder,
    /// Serialises the coordinator's map changes.
    pub map_changes: std::sync::Mutex<()>,
    pub shard_locks: ShardLocks,
    /// The coordinator's last `/cluster/health` answer, shared by concurrent requests.
    pub health_cache: tokio::sync::Mutex<Option<(Instant, crate::cluster_health::ClusterHealth)>>,
    /// The last time asking the coordinator (id, generation) failed, and why.
    #[allow(clippy::type_complexity)]
    pub coordinator_failure: std::sync::Mutex<Option<(Instant, (String, Option<u64>), String)>>,
    /// Bounds concurrent ingest requests on this node (backpressure).
    pub ingest_permits: Arc<tokio::sync::Semaphore>,
    /// Bounds concurrent distributed queries this node coordinates.
    pub query_permits: Arc<tokio::sync::Semaphore>,
    /// Rotates which copy of a shard answers a query (load spreading).
    pub read_turn: std::sync::atomic::AtomicUsize,
    /// Nodes that recently failed to answer a read, and when: tried last for a while, so that
    /// a node that died is not waited for again before gossip declares it dead.
    pub read_suspects: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

pub struct Settings {
    pub data_dir: PathBuf,
    pub started: Instant,
    pub http_addr: String,
    pub peer_addr: String,
    pub gossip_addr: String,
    pub report_interval: Duration,
    pub coordinator_timeout: Duration,
    pub shards: u32,
    pub replicas: u32,
    pub bootstrap_expect: usize,
    /// Default of queries' `allow_partial`.
    pub allow_partial: bool,
}

impl NodeContext {
    pub fn node_id(&self) -> &NodeId {
        self.cluster.self_id()
    }

    /// What this node registers with the coordinator.
    pub fn registration(&self, term: u64) -> Registration {
        Registration {
            node_id: self.node_id().as_str().to_string(),
            generation: self.cluster.generation(),
            http_addr: self.settings.http_addr.clone(),
            peer_addr: self.settings.peer_addr.clone(),
            gossip_addr: self.settings.gossip_addr.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            capacity: crate::node_stats::capacity(&self.settings.data_dir),
            holds: self
                .storage
                .on_disk()
                .iter()
                .map(|s| format!("shard-{s}"))
                .collect(),
            term,
        }
    }

    /// Whether the shard map assigns a copy of the request's shard to this node (reads must not
    /// create empty databases on nodes that hold nothing).
    pub fn holds_copy(&self, request: &crate::peer::wire::PeerRequest) -> bool {
        use crate::peer::wire::PeerRequest;
        let shard = match request {
            PeerRequest::GetEntity { shard, .. } | PeerRequest::GetChunk { shard, .. } => *shard,
            _ => return true,
        };
        let me = self.node_id().as_str();
        self.shard_map
            .get()
            .and_then(|m| m.assignment(shard).map(|a| a.copies().any(|c| c == me)))
            .unwrap_or(false)
    }

    /// Reports older than this count as missing in the aggregated health.
    pub fn report_stale_after(&self) -> Duration {
        self.settings.report_interval * 5
    }
}
