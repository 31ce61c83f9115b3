//! How torua peers talk to each other.
//!
//! This crate owns:
//! - the QUIC endpoint ([`Endpoint`]): one UDP socket per node that serves and dials, a
//!   per-peer connection cache with backoff, typed request/response ([`Service`]) and batch
//!   streams for large transfers ([`StreamService`], [`BatchSender`], [`BatchReceiver`]);
//! - mutual TLS identities ([`ClusterCa`], [`NodeIdentity`]): a CA derived from the cluster
//!   secret or operator PEM files, and the peer's node id read from its certificate
//!   ([`PeerInfo`]); plus the HMAC key that authenticates gossip datagrams ([`GossipKey`]);
//! - framing ([`frame`]): kind byte, postcard messages, reply envelope, length-prefixed
//!   frames, all size-limited;
//! - timeouts and limits ([`TransportConfig`]): every network wait is bounded.
//!
//! It must not know about graphs, shards, queries or membership: callers define their wire
//! enums and pass addresses; which peer to call and what a message means is theirs.
//!
//! Files: `identity.rs` (CA, certificates, PEM), `gossip_key.rs` (gossip HMAC), `config.rs`,
//! `error.rs`, `frame.rs` (bytes on a stream), `tls.rs` (rustls/quinn configs), `pool.rs`
//! (connection cache), `connection.rs` (request on a connection), `server.rs` (accept and
//! dispatch), `stream.rs` (batch streams), `guard.rs` (reset-on-drop), `endpoint.rs`.

mod config;
mod connection;
mod endpoint;
mod error;
pub mod frame;
mod gossip_key;
mod guard;
mod identity;
mod pool;
mod server;
mod service;
mod stream;
mod tls;

pub use config::{TransportConfig, WIRE_VERSION};
pub use connection::PeerConnection;
pub use endpoint::{Endpoint, CODE_SHUTDOWN};
pub use error::{IdentityError, TransportError};
pub use gossip_key::{GossipKey, SEAL_OVERHEAD};
pub use guard::{CODE_CANCELLED, CODE_PROTOCOL, CODE_TOO_LARGE};
pub use identity::{
    generate_operator_pki, node_id_from_cert, ClusterCa, NodeIdentity, ServerCert,
    DEV_CLUSTER_SECRET, PEER_SERVER_NAME,
};
pub use service::{PeerInfo, Service, StreamService};
pub use stream::{BatchReceiver, BatchSender};

/// Re-exported so callers can name quinn types reached through [`PeerConnection`] without
/// depending on a matching quinn version themselves.
pub use quinn;
