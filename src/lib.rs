//! # torua — what a node does
//!
//! Every node runs this same code. `membership` (a workspace crate) knows who is alive and who
//! coordinates; `transport` knows how peers talk; this crate is the node. Its folders, from the
//! bottom up:
//!
//! - [`graph`]: the GraphRAG data model (entities, relations, text units, communities, documents)
//!   and placement of items on shards (by id, or by an entity's routing key).
//! - [`storage`]: this node's shard copies: one embedded Kuzu database each, the write log that
//!   makes an acknowledged write durable, the applier, and typed reads.
//! - [`cluster`]: the shard map and how the coordinator changes it (failures, moves, drains), the
//!   registry of nodes, health, broadcast.
//! - [`peer`]: the envelope of node-to-node messages over QUIC, the service that hands each to
//!   its subsystem's handler, and the one client path (node id → address → call with timeout).
//! - [`error`]: the typed [`Error`] services answer with, here and across the wire.
//! - [`replication`]: the write path (a write waits for its in-sync replicas in
//!   [`replication::primary_write`]), catch-up from the primary's log, snapshots for rebuilds,
//!   anti-entropy (copies compared in the background; a diverged copy is rebuilt), and where a
//!   batch's routed entities are stored before it is written ([`replication::routing`]).
//! - [`query`]: distributed reads: read-only Cypher (plan, scatter to shards, merge of the
//!   shards' rows in [`query::merge`]), traversals (neighbourhoods, paths), and point reads
//!   routed to an in-sync copy ([`query::read`]).
//! - [`retrieve`]: GraphRAG retrieval (`POST /retrieve`): seeds, expansion, context in a token
//!   budget.
//! - [`api`]: the HTTP API (axum): parses, validates, calls a service, renders the answer; and
//!   the operator console (`/ui`), a web page compiled into the binary that uses that API.
//! - [`node`]: a node's life (`torua serve`), its settings, data directory, shared context,
//!   logging, metrics and TLS identity.
//! - [`cmd`]: the command line (`serve`, `dev`, `import`, `retrieve`, `cert`).

pub mod api;
pub mod cluster;
pub mod cmd;
pub mod error;
pub mod graph;
pub mod node;
pub mod peer;
pub mod query;
pub mod replication;
pub mod retrieve;
pub mod storage;

pub use error::Error;
