//! A node's own life and the plumbing every part shares: its settings, its data directory, the
//! context handed to HTTP and peer handlers, logging, metrics, TLS identity and host statistics,
//! and the envelope of the peer messages each part answers ([`wire`]). Nothing here knows how
//! shards or queries work; it only starts the parts that do.

pub mod access;
pub mod config;
pub mod context;
pub mod data_dir;
pub mod failpoints;
pub mod http_server;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod security;
pub mod stats;
pub mod wire;

pub use context::NodeContext;
pub use lifecycle::serve;
