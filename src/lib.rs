//! # torua — what a node does
//!
//! The root package wires the layers into a node. `membership` knows who is alive and who
//! coordinates; `transport` knows how peers talk; this crate is the node itself.
//!
//! - [`config`]: `TORUA_*` settings / `torua serve` flags, strictly validated.
//! - [`cli`]: the command line (`serve`, `dev`).
//! - [`node`]: a node's life: data dir, ports, join, serve, graceful leave.
//! - [`data_dir`]: the data directory lock and the persisted node id.
//! - [`api`]: the HTTP API (axum).
//! - [`cluster_health`]: green / yellow / red and why.
//! - [`metrics`]: Prometheus metrics.
//! - [`security`]: TLS identity and gossip key from the cluster secret or operator files.
//! - [`cert_cmd`]: `torua cert`, operator certificates.
//! - [`context`]: what a running node's parts share.
//! - [`peer`]: node-to-node requests over QUIC (wire messages, service, client).
//! - [`registry`]: the coordinator's registry of nodes and their health reports.
//! - [`reporter`]: push registration and periodic health reports to the coordinator.
//! - [`node_stats`]: uptime, load, memory, disk of this node.
//! - [`broadcast`]: fan-out of control messages and their handlers.
//! - [`graph`]: the GraphRAG data model, placement of items on shards, the ingest API's parsing.
//! - [`storage`]: this node's shard copies (embedded Kuzu databases).
//! - [`shard_map`]: who holds which shard copy; [`shard_plan`]: how the coordinator changes it
//!   (failures, restarts, replacement, moves, drains, quorum); [`shard_coordinator`]: the map duties
//!   of the coordinator and of every node; [`snapshot`]: copying a whole shard copy to a new node.
//! - [`import_graphrag`]: `torua import graphrag`, loading a GraphRAG output folder.
//! - [`replication`]: the write path (primary, in-sync replicas, acknowledgement) and routed reads.
//! - [`logging`]: tracing output with the node id on every line.
//! - [`drain`]: moving every copy off a node before it leaves (API and SIGTERM).
//! - [`dev`]: `torua dev`, a local multi-process cluster.
//! - [`retrieve_cmd`]: `torua retrieve`, the command-line client of `/retrieve`.
//! - [`retrieve`]: GraphRAG retrieval (`POST /retrieve`): seeds, expansion, context in a token budget.

pub mod api;
pub mod broadcast;
pub mod cert_cmd;
pub mod cli;
pub mod cluster_health;
pub mod config;
pub mod context;
pub mod data_dir;
pub mod dev;
pub mod drain;
pub mod graph;
pub mod import_graphrag;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod node_stats;
pub mod peer;
pub mod query;
pub mod registry;
pub mod replication;
pub mod reporter;
pub mod retrieve;
pub mod retrieve_cmd;
pub mod security;
pub mod shard_coordinator;
pub mod shard_map;
pub mod shard_plan;
pub mod snapshot;
pub mod storage;
