//! The envelope of every message between nodes (postcard-encoded over the QUIC transport), which
//! of the node's services answers each, and the transport service that hands an incoming request
//! to it ([`PeerService`]).
//!
//! One variant per subsystem, carrying that subsystem's own request or response type; an error
//! answer is a typed [`Error`]. Versioning: the transport's ALPN
//! ([`transport::WIRE_VERSION`], `torua/8`) is the wire version; peers with another version fail
//! the TLS handshake instead of misreading each other. Within a version, only append new enum
//! variants at the end (postcard encodes variants by index) and never change a field. postcard is
//! not self-describing: no `serde(skip_serializing_if)` or `flatten` here, and JSON payloads
//! travel as strings.

use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};
use transport::{PeerInfo, Service};

use crate::cluster::broadcast::BroadcastMessage;
use crate::cluster::messages::{HealthRequest, HealthResponse, MapRequest, MapResponse};
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::peer::{BoxFuture, Call};
use crate::query::algorithms::{AlgoRequest, AlgoResponse};
use crate::query::read::{ReadCall, ReadReply};
use crate::replication::messages::{ReplicationRequest, ReplicationResponse};
use crate::replication::snapshot::{SnapshotRequest, SnapshotResponse};

/// Every request a node answers on its peer address, by subsystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Registration, health reports and the coordinator's views of them; copy statistics.
    Health(HealthRequest),
    /// The shard map and the coordinator's changes to it.
    Map(MapRequest),
    /// A control message for this node's handler of its path.
    Broadcast(BroadcastMessage),
    /// Writes to shard copies and catching copies up.
    Replication(ReplicationRequest),
    /// Whole-copy transfers.
    Snapshot(SnapshotRequest),
    /// Reads of this node's copies: point reads, traversal steps, Cypher.
    Read(ReadCall),
    /// Graph algorithm tasks: loading parts, supersteps, values between workers, results.
    Algo(AlgoRequest),
}

/// The answer to a [`PeerRequest`]: the same subsystem's response, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerResponse {
    Health(HealthResponse),
    Map(MapResponse),
    Broadcast(()),
    Replication(ReplicationResponse),
    Snapshot(SnapshotResponse),
    Read(ReadReply),
    Failed(Error),
    Algo(AlgoResponse),
}

/// How a subsystem answers its requests on this node: `from` is the asking node's id (proven by
/// its certificate, or this node's own for a local call).
pub(crate) trait Serve {
    type Reply;
    async fn serve(self, ctx: &Arc<NodeContext>, from: &str) -> Result<Self::Reply, Error>;
}

/// Makes a subsystem's request a [`Call`]: its envelope variant (the same name in
/// [`PeerRequest`] and [`PeerResponse`]), answered by its [`Serve`] implementation.
macro_rules! peer_call {
    ($request:ty => $reply:ty, $variant:ident) => {
        impl Call for $request {
            type Reply = $reply;
            type Host = NodeContext;
            type Request = PeerRequest;
            type Response = PeerResponse;
            fn into_request(self) -> PeerRequest {
                PeerRequest::$variant(self)
            }
            fn reply(response: PeerResponse) -> Result<$reply, Error> {
                match response {
                    PeerResponse::$variant(r) => Ok(r),
                    PeerResponse::Failed(e) => Err(e),
                    other => Err(Error::Internal(format!("unexpected answer {other:?}"))),
                }
            }
            fn serve_here(
                self,
                ctx: Arc<NodeContext>,
                from: String,
            ) -> BoxFuture<'static, Result<$reply, Error>> {
                Box::pin(async move { Serve::serve(self, &ctx, &from).await })
            }
        }
    };
}

peer_call!(HealthRequest => HealthResponse, Health);
peer_call!(MapRequest => MapResponse, Map);
peer_call!(BroadcastMessage => (), Broadcast);
peer_call!(ReplicationRequest => ReplicationResponse, Replication);
peer_call!(SnapshotRequest => SnapshotResponse, Snapshot);
peer_call!(ReadCall => ReadReply, Read);
peer_call!(AlgoRequest => AlgoResponse, Algo);

/// Answers peer requests by handing each to its subsystem's handler. Holds a weak reference so
/// the endpoint does not keep the node alive.
pub struct PeerService {
    pub ctx: Weak<NodeContext>,
}

impl Service for PeerService {
    type Request = PeerRequest;
    type Response = PeerResponse;

    async fn call(&self, peer: PeerInfo, request: PeerRequest) -> PeerResponse {
        let Some(ctx) = self.ctx.upgrade() else {
            return PeerResponse::Failed(Error::Unavailable("node is shutting down".into()));
        };
        let from = peer.node_id;
        match request {
            PeerRequest::Health(r) => answer(r.serve_here(ctx, from).await, PeerResponse::Health),
            PeerRequest::Map(r) => answer(r.serve_here(ctx, from).await, PeerResponse::Map),
            PeerRequest::Broadcast(r) => {
                answer(r.serve_here(ctx, from).await, PeerResponse::Broadcast)
            }
            PeerRequest::Replication(r) => {
                answer(r.serve_here(ctx, from).await, PeerResponse::Replication)
            }
            PeerRequest::Snapshot(r) => {
                answer(r.serve_here(ctx, from).await, PeerResponse::Snapshot)
            }
            PeerRequest::Read(r) => answer(r.serve_here(ctx, from).await, PeerResponse::Read),
            PeerRequest::Algo(r) => answer(r.serve_here(ctx, from).await, PeerResponse::Algo),
        }
    }
}

fn answer<T>(result: Result<T, Error>, wrap: fn(T) -> PeerResponse) -> PeerResponse {
    match result {
        Ok(r) => wrap(r),
        Err(e) => PeerResponse::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    //! Property tests of the peer message decoders: arbitrary bytes never panic, and every
    //! message survives an encode/decode round trip.
    use proptest::prelude::*;

    use super::*;
    use crate::cluster::health::{ClusterHealth, NodeHealth, Status};
    use crate::cluster::messages::{Capacity, HealthReport, Registration, RegistryEntry};
    use crate::query::read::{ReadRequest, ReadResponse};
    use crate::query::traverse::Traversed;
    use crate::storage::{Freshness, Lag};
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
                    shards: term.map(|t| crate::cluster::health::ShardCounts {
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

    fn error() -> impl Strategy<Value = Error> {
        prop_oneof![
            text().prop_map(Error::Busy),
            text().prop_map(Error::Unavailable),
            text().prop_map(Error::Diverged),
            text().prop_map(Error::NeedsRebuild),
            (any::<u32>(), any::<u64>())
                .prop_map(|(shard, map_version)| Error::NotPrimary { shard, map_version }),
            proptest::option::of(text())
                .prop_map(|coordinator| Error::NotCoordinator { coordinator }),
            Just(Error::NotRegistered),
        ]
    }

    fn request() -> impl Strategy<Value = PeerRequest> {
        prop_oneof![
            registration().prop_map(|r| PeerRequest::Health(HealthRequest::Register(r))),
            report().prop_map(|r| PeerRequest::Health(HealthRequest::Report(r))),
            Just(PeerRequest::Health(HealthRequest::ClusterHealth)),
            Just(PeerRequest::Health(HealthRequest::Registry)),
            Just(PeerRequest::Map(MapRequest::Get)),
            (any::<u64>(), any::<u64>()).prop_map(|(term, generation)| PeerRequest::Map(
                MapRequest::Collect { term, generation }
            )),
            (any::<u32>(), text())
                .prop_map(|(shard, node)| PeerRequest::Map(MapRequest::MarkStale { shard, node })),
            (text(), text(), text()).prop_map(|(path, payload_json, from)| {
                PeerRequest::Broadcast(BroadcastMessage {
                    path,
                    payload_json,
                    from,
                })
            }),
            (
                any::<u32>(),
                any::<u64>(),
                proptest::option::of(any::<u32>())
            )
                .prop_map(|(shard, applied_seq, last_crc)| PeerRequest::Replication(
                    ReplicationRequest::RequestInSync {
                        shard,
                        applied_seq,
                        last_crc
                    }
                )),
            any::<u32>()
                .prop_map(|shard| PeerRequest::Replication(ReplicationRequest::Checksum { shard })),
            (any::<u32>(), any::<u64>()).prop_map(|(shard, seq)| PeerRequest::Replication(
                ReplicationRequest::Diverged { shard, seq }
            )),
            any::<u32>()
                .prop_map(|shard| PeerRequest::Replication(ReplicationRequest::Rebuild { shard })),
            (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(id, offset, len)| {
                PeerRequest::Snapshot(SnapshotRequest::Piece { id, offset, len })
            }),
            (any::<u32>(), text(), proptest::option::of(any::<u32>())).prop_map(
                |(shard, id, wait)| PeerRequest::Read(ReadCall {
                    request: ReadRequest::GetEntity { shard, id },
                    freshness: wait
                        .map_or(Freshness::Strict, |wait_ms| Freshness::Bounded { wait_ms }),
                })
            ),
        ]
    }

    fn response() -> impl Strategy<Value = PeerResponse> {
        prop_oneof![
            (text(), any::<u64>()).prop_map(|(coordinator, term)| PeerResponse::Health(
                HealthResponse::Registered { coordinator, term }
            )),
            Just(PeerResponse::Health(HealthResponse::ReportAccepted)),
            health().prop_map(|h| PeerResponse::Health(HealthResponse::ClusterHealth(Box::new(h)))),
            (registration(), proptest::option::of(report()), any::<u64>()).prop_map(
                |(registration, last_report, at)| {
                    PeerResponse::Health(HealthResponse::Registry(vec![RegistryEntry {
                        registration,
                        registered_at_ms: at,
                        last_report,
                        last_report_ms_ago: Some(at % 1000),
                    }]))
                }
            ),
            any::<bool>()
                .prop_map(|accepted| PeerResponse::Map(MapResponse::Installed { accepted })),
            (any::<u64>(), text()).prop_map(|(term, to)| PeerResponse::Map(
                MapResponse::Collected {
                    map: None,
                    promised: crate::cluster::shard_map::Promise {
                        term,
                        to,
                        generation: term / 3
                    },
                    forgot: term % 2 == 0,
                }
            )),
            Just(PeerResponse::Broadcast(())),
            any::<u64>()
                .prop_map(|seq| PeerResponse::Replication(ReplicationResponse::Written { seq })),
            (any::<u64>(), text()).prop_map(|(seq, sum)| PeerResponse::Replication(
                ReplicationResponse::Checksum { seq, sum }
            )),
            Just(PeerResponse::Replication(ReplicationResponse::WillRebuild)),
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| PeerResponse::Snapshot(SnapshotResponse::Bytes(b))),
            (any::<u32>(), error(), any::<u64>()).prop_map(|(shard, e, seq)| PeerResponse::Read(
                ReadReply {
                    response: ReadResponse::Traversed(Traversed {
                        parts: vec![(shard, Err(e))],
                        ahead: Vec::new(),
                    }),
                    behind: vec![Lag {
                        shard,
                        node: None,
                        applied_seq: seq / 2,
                        logged_seq: seq,
                    }],
                }
            )),
            error().prop_map(PeerResponse::Failed),
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
