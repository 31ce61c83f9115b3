//! Settings of the membership layer and the failure-detector tuning behind them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chitchat::FailureDetectorConfig;

use crate::NodeId;

/// Default gossip round length. Each round a node exchanges state with up to three peers.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(100);
/// Default phi threshold. chitchat's phi is `silence / mean interval between heartbeat rises`
/// (no log term). A member's heartbeat rises each time it gossips *and* each time it answers a
/// peer, so the mean interval is shorter than a round (~45 ms with 100 ms rounds and 3 nodes on
/// loopback). At 20 a member is dead after ~0.9 s of silence with 3 nodes: long enough to ride
/// out a whole-machine stall of 0.3-0.7 s under disk load, which lower thresholds turned into
/// false deaths (each one re-elects a coordinator and can cost a replica its in-sync place).
/// Failover and false-death figures per threshold: `bench/RESULTS.md` (membership).
pub const DEFAULT_PHI_THRESHOLD: f64 = 20.0;
/// How long a dead member stays listed (as `dead`) before it is forgotten.
pub const DEFAULT_DEAD_NODE_GRACE: Duration = Duration::from_secs(3600);

/// Everything [`crate::Cluster::join`] needs.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub node_id: NodeId,
    /// Nodes only gossip with nodes of the same cluster id.
    pub cluster_id: String,
    /// UDP address the gossip socket binds.
    pub gossip_listen_addr: SocketAddr,
    /// UDP address others use to reach this node's gossip socket.
    pub gossip_advertise_addr: SocketAddr,
    /// Gossip addresses (`host:port`) of existing members; empty for the first node. This node's own
    /// address may be listed (all nodes can share one seed list): it is ignored.
    pub seeds: Vec<String>,
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
    pub dead_node_grace: Duration,
    /// Published as gossip keys so peers and clients can reach this node.
    pub http_addr: Option<String>,
    pub peer_addr: Option<String>,
    pub version: String,
    /// Where the highest known coordinator term is persisted, so terms keep rising across
    /// whole-cluster restarts. `None` keeps it in memory only (tests).
    pub state_dir: Option<PathBuf>,
}

impl MembershipConfig {
    /// A config with torua's defaults for the given node and gossip address.
    pub fn new(node_id: NodeId, cluster_id: impl Into<String>, gossip_addr: SocketAddr) -> Self {
        MembershipConfig {
            node_id,
            cluster_id: cluster_id.into(),
            gossip_listen_addr: gossip_addr,
            gossip_advertise_addr: gossip_addr,
            seeds: Vec::new(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            phi_threshold: DEFAULT_PHI_THRESHOLD,
            dead_node_grace: DEFAULT_DEAD_NODE_GRACE,
            http_addr: None,
            peer_addr: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
            state_dir: None,
        }
    }

    /// chitchat's failure detector, tuned for fast detection.
    ///
    /// The important change from chitchat's defaults is `initial_interval`: the mean heartbeat
    /// interval starts from a prior of 5 x `initial_interval` (default 5 s), which makes a fresh
    /// member's death take ~40 s to notice. Using the gossip interval as the prior makes detection
    /// take ~`phi_threshold` gossip rounds from the first round on.
    pub(crate) fn failure_detector(&self) -> FailureDetectorConfig {
        FailureDetectorConfig {
            phi_threshold: self.phi_threshold,
            sampling_window_size: 1000,
            // Longer gaps (a suspended laptop, a debugger) are not learned as "normal".
            max_interval: self.gossip_interval * 20,
            initial_interval: self.gossip_interval,
            dead_node_grace_period: self.dead_node_grace,
        }
    }

    /// Seeds without this node's own advertised or listen address.
    pub(crate) fn foreign_seeds(&self) -> Vec<String> {
        let own = [
            self.gossip_advertise_addr.to_string(),
            self.gossip_listen_addr.to_string(),
        ];
        self.seeds
            .iter()
            .filter(|s| !own.contains(s))
            .cloned()
            .collect()
    }
}
