//! # membership — who is alive and who coordinates
//!
//! Owns gossip (chitchat over UDP), the live view of members and the coordinator election. Knows
//! nothing of graphs, shards or the peer transport; `torua` (the root package) wires it in.
//!
//! - [`node_id`]: node ids and the natural total order the election uses (`node-2` < `node-10`).
//! - [`member`]: a member and its lifecycle state (joining, ready, leaving, dead).
//! - [`keys`]: the gossip keys a node publishes about itself.
//! - [`view`]: chitchat's raw state → one member per node id → the coordinator and its term.
//! - [`change`]: membership changes as diffed events, with a replay for new subscribers.
//! - [`cluster`]: the [`Cluster`] handle (join, ready, leave, view, subscribe, metrics).
//! - [`config`]: settings and the failure-detector tuning.
//! - [`gossip_auth`]: UDP gossip whose datagrams carry a MAC keyed from the cluster secret.
//!
//! ## Coordinator and term
//! Every node computes the coordinator from its own view: the live member in state `ready` with
//! the lowest [`NodeId`]. The coordinator claims a *term* one higher than any term it has seen in
//! gossip (or persisted on disk) and publishes it; others report that term once it is at least as
//! high as every term they know. Terms only rise, so later stages can fence a stale coordinator.

pub mod change;
pub mod cluster;
pub mod config;
pub mod gossip_auth;
mod gossip_transport;
pub mod keys;
pub mod member;
pub mod node_id;
pub mod view;

pub use change::MembershipChange;
pub use chitchat::transport::{ChannelTransport, Transport, UdpTransport};
pub use cluster::{ChangeStream, Cluster, MembershipMetrics};
pub use config::MembershipConfig;
pub use gossip_auth::{AuthenticatedUdpTransport, DatagramSealer};
pub use member::{Member, MemberState};
pub use node_id::{InvalidNodeId, NodeId};
pub use view::ClusterView;
