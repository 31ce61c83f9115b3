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
//! - [`logging`]: tracing output with the node id on every line.
//! - [`dev`]: `torua dev`, a local multi-process cluster.

pub mod api;
pub mod cli;
pub mod cluster_health;
pub mod config;
pub mod data_dir;
pub mod dev;
pub mod logging;
pub mod metrics;
pub mod node;
