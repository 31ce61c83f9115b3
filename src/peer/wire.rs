//! The messages nodes exchange over the QUIC transport (postcard-encoded).
//!
//! Versioning: the transport's ALPN (`torua/1`) is the wire version; peers with another version
//! fail the TLS handshake instead of misreading each other. Within a version, only append new
//! enum variants at the end (postcard encodes variants by index) and never change a field.
//! postcard is not self-describing: no `serde(skip_serializing_if)` or `flatten` here, and JSON
//! payloads travel as strings.

use serde::{Deserialize, Serialize};

use crate::cluster_health::ClusterHealth;

/// Every request a node answers on its peer address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A node announces itself to the coordinator.
    Register(Registration),
    /// A node's periodic health report to the coordinator.
    Report(HealthReport),
    /// The coordinator's aggregated cluster health.
    ClusterHealth,
    /// The coordinator's registry.
    Registry,
    /// A broadcast payload for this node's handler of `path`.
    Broadcast(BroadcastMessage),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerResponse {
    Registered { coordinator: String, term: u64 },
    ReportAccepted,
    /// Sent to a node that reports before registering (e.g. to a coordinator that just took
    /// over): it registers again.
    NotRegistered,
    /// This node is not the coordinator in its own view; `coordinator` is who it thinks is.
    NotCoordinator { coordinator: Option<String> },
    ClusterHealth(ClusterHealth),
    Registry(Vec<RegistryEntry>),
    Delivered,
    /// The request was understood but refused or failed; the text says why.
    Failed(String),
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastMessage {
    pub path: String,
    /// The payload as JSON text.
    pub payload_json: String,
    pub from: String,
}
