//! The messages nodes exchange over the QUIC transport (postcard-encoded).
//!
//! Versioning: the transport's ALPN (`torua/1`) is the wire version; peers with another version
//! fail the TLS handshake instead of misreading each other. Within a version, only append new
//! enum variants at the end (postcard encodes variants by index) and never change a field.
//! postcard is not self-describing: no `serde(skip_serializing_if)` or `flatten` here, and JSON
//! payloads travel as strings.

use serde::{Deserialize, Serialize};

use crate::cluster_health::ClusterHealth;
use crate::shard_map::ShardMap;
use crate::storage::{
    Direction, EntityRecord, QueryFailure, RelationFilter, Rows, ShardQuery, ShardStats, Step,
    WriteOp,
};

/// A copy's checksum with the sequence number it was taken at, or why it could not be taken.
pub type CopyChecksum = Result<(u64, String), String>;

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
    /// The coordinator's current shard map (installed if newer).
    InstallMap(ShardMap),
    /// To the coordinator, from a primary: `node` failed a write of `shard`; drop it from in-sync.
    MarkStale { shard: u32, node: String },
    /// To a shard's primary: sequence, apply, replicate, acknowledge.
    ShardWrite { shard: u32, op: WriteOp },
    /// From a primary to an in-sync replica: apply write `seq`.
    Replicate { shard: u32, seq: u64, op: WriteOp },
    /// Read an entity and its relations from this node's copy of `shard`.
    GetEntity { shard: u32, id: String },
    /// Counts and sizes of this node's shard copies.
    ShardStats,
    /// Read a chunk (text unit) from this node's copy of `shard`.
    GetChunk { shard: u32, id: String },
    /// This node's shard map (a new coordinator collects them to adopt the newest).
    GetMap,
    /// To a primary, from a copy outside the in-sync set: "I have writes up to `applied_seq`, and
    /// the checksum of that write is `last_crc`" (when its log still has it). The primary sends
    /// what the copy misses from its log, then puts it back in sync.
    RequestInSync {
        shard: u32,
        applied_seq: u64,
        last_crc: Option<u32>,
    },
    /// To the coordinator, from a primary that verified the copy is level with it.
    AddInSync { shard: u32, node: String },
    /// One traversal step on several of this node's shard copies: for each `(shard, ids)`, the
    /// entities' properties and (when `relations`) their relations.
    Traverse {
        parts: Vec<(u32, Vec<String>)>,
        direction: Direction,
        filter: RelationFilter,
        relations: bool,
    },
    /// Run a read-only Cypher query (already checked) on this node's copies of `shards`
    /// (`names_cypher` on the first only).
    QueryShards { shards: Vec<u32>, query: ShardQuery },
    /// To a shard's primary, from a node whose copy must be rebuilt: copy the database file (at a
    /// round boundary) for transfer, and keep the log from there on.
    PrepareSnapshot { shard: u32 },
    /// A piece of a prepared snapshot.
    SnapshotChunk { id: u64, offset: u64, len: u32 },
    /// The snapshot was received (or abandoned): delete it, release the log.
    ReleaseSnapshot { id: u64 },
    /// To the coordinator: start (or stop) moving every copy off `node`.
    SetDraining {
        node: String,
        draining: bool,
        until_restart: bool,
    },
    /// The checksum of every shard copy this node holds (after applying what it logged).
    ShardChecksums,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerResponse {
    Registered {
        coordinator: String,
        term: u64,
    },
    ReportAccepted,
    /// Sent to a node that reports before registering (e.g. to a coordinator that just took
    /// over): it registers again.
    NotRegistered,
    /// This node is not the coordinator in its own view; `coordinator` is who it thinks is.
    NotCoordinator {
        coordinator: Option<String>,
    },
    ClusterHealth(ClusterHealth),
    Registry(Vec<RegistryEntry>),
    Delivered,
    /// The request was understood but refused or failed; the text says why.
    Failed(String),
    MapInstalled {
        accepted: bool,
    },
    Written {
        seq: u64,
    },
    /// The receiver is not the primary in its map (of this version): refresh and retry.
    NotPrimary {
        map_version: u64,
    },
    Replicated,
    Entity(Option<EntityRecord>),
    Stats(Vec<(u32, ShardStats)>),
    Chunk(Option<crate::graph::model::Chunk>),
    Map(Option<ShardMap>),
    /// Per shard of a `Traverse`, what it found or why it could not.
    Traversed(Vec<(u32, Result<Step, String>)>),
    /// Per shard of a `QueryShards`, in the order asked.
    QueryRowsPerShard(Vec<(u32, Result<Rows, QueryFailure>)>),
    /// A snapshot ready for transfer: the database file holds writes up to `seq`.
    Snapshot {
        id: u64,
        seq: u64,
        bytes: u64,
    },
    SnapshotBytes(Vec<u8>),
    /// The copy cannot be brought level from the log (diverged, or too far behind): it must be
    /// rebuilt from a snapshot.
    NeedsRebuild(String),
    /// Per shard copy: (shard, sequence number, checksum), or why not.
    Checksums(Vec<(u32, CopyChecksum)>),
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

#[cfg(test)]
mod tests {
    //! Property tests of the peer message decoders: arbitrary bytes never panic, and every
    //! message survives an encode/decode round trip.
    use proptest::prelude::*;

    use super::*;
    use crate::cluster_health::{NodeHealth, Status};
    use transport::frame::decode_message;

    fn text() -> impl Strategy<Value = String> {
        ".{0,24}"
    }

    fn report() -> impl Strategy<Value = HealthReport> {
        (
            text(),
            any::<u64>(),
            any::<u64>(),
            any::<f64>(),
            any::<[u64; 5]>(),
            proptest::collection::vec(text(), 0..3),
        )
            .prop_map(|(node_id, generation, uptime_ms, load_1m, n, shards)| {
                HealthReport {
                    node_id,
                    generation,
                    uptime_ms,
                    load_1m,
                    memory_rss_mb: n[0],
                    memory_available_mb: n[1],
                    disk_free_mb: n[2],
                    disk_total_mb: n[3],
                    errors_total: n[4],
                    shards,
                }
            })
    }

    fn registration() -> impl Strategy<Value = Registration> {
        (
            text(),
            any::<u64>(),
            [text(), text(), text(), text()],
            any::<(u32, u64, u64, u64)>(),
            proptest::collection::vec(text(), 0..3),
        )
            .prop_map(
                |(
                    node_id,
                    generation,
                    [http_addr, peer_addr, gossip_addr, version],
                    (cpus, m, d, term),
                    holds,
                )| Registration {
                    node_id,
                    generation,
                    http_addr,
                    peer_addr,
                    gossip_addr,
                    version,
                    capacity: Capacity {
                        cpus,
                        memory_total_mb: m,
                        disk_total_mb: d,
                    },
                    holds,
                    term,
                },
            )
    }

    fn health() -> impl Strategy<Value = ClusterHealth> {
        (
            text(),
            proptest::collection::vec(text(), 0..3),
            proptest::option::of(text()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(report()),
            any::<bool>(),
        )
            .prop_map(|(cluster_id, reasons, coordinator, term, report, flag)| {
                ClusterHealth {
                    cluster_id: cluster_id.clone(),
                    status: if flag { Status::Yellow } else { Status::Green },
                    reasons,
                    coordinator: coordinator.clone(),
                    term,
                    number_of_nodes: 3,
                    number_of_ready_nodes: 2,
                    number_of_registered_nodes: term.map(|t| t as usize % 7),
                    answered_by: cluster_id,
                    source: "coordinator".into(),
                    coordinator_error: coordinator,
                    shards: term.map(|t| crate::cluster_health::ShardCounts {
                        total_shards: t as u32,
                        ..Default::default()
                    }),
                    nodes: vec![NodeHealth {
                        id: "node-1".into(),
                        state: "ready".into(),
                        is_coordinator: flag,
                        generation: 7,
                        gossip_addr: "127.0.0.1:7200".into(),
                        http_addr: Some("127.0.0.1:7100".into()),
                        peer_addr: None,
                        version: Some("0.1.0".into()),
                        started_at_ms: term,
                        last_heartbeat_ms_ago: 3,
                        registered: Some(flag),
                        report,
                    }],
                }
            })
    }

    fn request() -> impl Strategy<Value = PeerRequest> {
        prop_oneof![
            registration().prop_map(PeerRequest::Register),
            report().prop_map(PeerRequest::Report),
            Just(PeerRequest::ClusterHealth),
            Just(PeerRequest::Registry),
            (text(), text(), text()).prop_map(|(path, payload_json, from)| PeerRequest::Broadcast(
                BroadcastMessage {
                    path,
                    payload_json,
                    from
                }
            )),
        ]
    }

    fn response() -> impl Strategy<Value = PeerResponse> {
        prop_oneof![
            (text(), any::<u64>())
                .prop_map(|(coordinator, term)| PeerResponse::Registered { coordinator, term }),
            Just(PeerResponse::ReportAccepted),
            Just(PeerResponse::NotRegistered),
            proptest::option::of(text())
                .prop_map(|coordinator| PeerResponse::NotCoordinator { coordinator }),
            health().prop_map(PeerResponse::ClusterHealth),
            (registration(), proptest::option::of(report()), any::<u64>()).prop_map(
                |(registration, last_report, at)| {
                    PeerResponse::Registry(vec![RegistryEntry {
                        registration,
                        registered_at_ms: at,
                        last_report,
                        last_report_ms_ago: Some(at % 1000),
                    }])
                }
            ),
            Just(PeerResponse::Delivered),
            text().prop_map(PeerResponse::Failed),
        ]
    }

    fn same_f64_bits<T: serde::Serialize>(a: &T, b: &T) -> bool {
        // NaN != NaN: compare the encodings instead of the values.
        postcard::to_allocvec(a).unwrap() == postcard::to_allocvec(b).unwrap()
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_message::<PeerRequest>(&bytes);
            let _ = decode_message::<PeerResponse>(&bytes);
        }

        #[test]
        fn requests_round_trip(req in request()) {
            let bytes = postcard::to_allocvec(&req).unwrap();
            let back: PeerRequest = decode_message(&bytes).unwrap();
            prop_assert!(same_f64_bits(&req, &back));
        }

        #[test]
        fn responses_round_trip(resp in response()) {
            let bytes = postcard::to_allocvec(&resp).unwrap();
            let back: PeerResponse = decode_message(&bytes).unwrap();
            prop_assert!(same_f64_bits(&resp, &back));
        }

        #[test]
        fn truncated_messages_are_errors_not_panics(resp in response(), cut in 0usize..64) {
            let bytes = postcard::to_allocvec(&resp).unwrap();
            let cut = cut.min(bytes.len());
            let _ = decode_message::<PeerResponse>(&bytes[..bytes.len() - cut]);
        }
    }
}
