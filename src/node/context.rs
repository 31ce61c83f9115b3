//! What the parts of a running node share: membership, the peer endpoint, the coordinator's
//! registry, metrics and a few settings. HTTP handlers and the peer service
//! both get an `Arc<NodeContext>`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use membership::{Cluster, NodeId};
use transport::Endpoint;

use crate::cluster::messages::Registration;
use crate::cluster::registry::Registry;
use crate::cluster::shard_map::MapHolder;
use crate::error::Error;
use crate::node::logging::FilterHandle;
use crate::node::metrics::Metrics;
use crate::replication::state::{ShardLocks, Snapshots};
use crate::storage::Storage;

pub struct NodeContext {
    pub cluster: Cluster,
    pub endpoint: Endpoint,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub log_filter: FilterHandle,
    pub settings: Settings,
    pub storage: Arc<Storage>,
    pub shard_map: MapHolder,
    /// Serialises the coordinator's map changes.
    pub map_changes: std::sync::Mutex<()>,
    pub shard_locks: ShardLocks,
    /// The cluster health this node answers with.
    pub health: crate::cluster::health::HealthCache,
    /// Bounds concurrent ingest requests on this node (backpressure).
    pub ingest_permits: Arc<tokio::sync::Semaphore>,
    /// The read side's slots, turns and suspects.
    pub reads: crate::query::state::Reads,
    /// Snapshots this node serves to nodes rebuilding a copy.
    pub snapshots: Snapshots,
    /// Set once the node is shutting down (its shutdown drain must not be lifted).
    pub leaving: std::sync::atomic::AtomicBool,
    /// API key checking for the HTTP API.
    pub access: crate::node::access::Access,
    /// Graph algorithm tasks this node drives or works on.
    pub algorithms: crate::query::algorithms::Algorithms,
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
    /// Whether traversals let answering nodes read ahead over their own copies.
    pub traverse_locally: bool,
    /// A copy whose node is dead this long is re-created elsewhere.
    pub replace_after: Duration,
    /// Copies being filled at the same time, cluster-wide.
    pub max_concurrent_moves: usize,
    /// Between two anti-entropy checks (zero: none).
    pub anti_entropy_interval: Duration,
    /// A copy that applies nothing for this long while writes wait is stuck (rebuilt).
    pub stuck_after: Duration,
    /// How long a `bounded` read waits for acknowledged writes to be applied.
    pub read_wait: Duration,
    /// A primary whose oldest unapplied write waited longer refuses new writes (zero: never).
    pub max_apply_lag: Duration,
}

/// See [`NodeContext::fresh_quorum`].
pub const FRESH_QUORUM_ROUNDS: u32 = 5;

impl crate::peer::Host for NodeContext {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }
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
            capacity: crate::node::stats::capacity(&self.settings.data_dir),
            holds: self
                .storage
                .on_disk()
                .iter()
                .map(|s| format!("shard-{s}"))
                .collect(),
            term,
        }
    }

    /// `Err` unless this node may answer the request from its copy: the shard map lists the copy
    /// in sync, under this process's generation (reads must not create empty databases on nodes
    /// that hold nothing, nor answer from a copy that is still catching up).
    pub fn holds_copy(&self, shard: u32) -> Result<(), Error> {
        crate::cluster::shard_map::in_sync_here(
            self.shard_map.get().as_ref(),
            shard,
            self.node_id().as_str(),
            self.cluster.generation(),
        )
    }

    /// `Err` unless `map` trusts this process's copies: it records this node's current
    /// generation. After a restart (maybe with a wiped disk) the node neither acts as primary nor
    /// answers for its copies until the coordinator has taken note and the copies have rejoined.
    pub fn trusted(&self, map: &crate::cluster::shard_map::ShardMap) -> Result<(), Error> {
        let me = self.node_id().as_str();
        match map.generations.get(me) {
            Some(g) if *g == self.cluster.generation() => Ok(()),
            _ => Err(Error::Unavailable(format!(
                "{me} restarted and the coordinator has not confirmed its copies yet (map version {}); retry",
                map.version
            ))),
        }
    }

    /// [`Error::NoQuorum`] unless this node sees a majority of the voting membership (the
    /// nodes holding copies in its shard map) alive: on the minority side of a partition writes
    /// are refused.
    pub fn quorum(&self) -> Result<(), Error> {
        let Some(map) = self.shard_map.get() else {
            return Ok(());
        };
        let view = self.cluster.view();
        map.quorum(|n| view.member_by_str(n).is_some_and(|m| m.is_live()))
            .map_err(|b| Error::NoQuorum(format!("{b}; this node may be on the minority side of a partition, retry later or on another node")))
    }

    /// [`Error::NoQuorum`] unless a majority of `map`'s voting membership was heard from within
    /// [`FRESH_QUORUM_ROUNDS`] gossip rounds. Map changes (promotions, in-sync removals, moves)
    /// need this on top of the failure detector's verdict: after a split the old coordinator keeps
    /// believing the other side is alive until its detector gives up (~1-2 s), and a change made
    /// in that window can conflict with the new side's promotions. The other side cannot promote
    /// before its own detector gives up, which takes longer than this window.
    pub fn fresh_quorum(&self, map: &crate::cluster::shard_map::ShardMap) -> Result<(), Error> {
        let within = self.cluster.config().gossip_interval * FRESH_QUORUM_ROUNDS;
        let heard = self.cluster.heard_within(within);
        map.quorum(|n| heard.contains(n)).map_err(|b| {
            Error::NoQuorum(format!("{b} heard from within {within:?}; the map is not changed until a majority is heard again"))
        })
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Reports older than this count as missing in the aggregated health.
    pub fn report_stale_after(&self) -> Duration {
        self.settings.report_interval * 5
    }
}
