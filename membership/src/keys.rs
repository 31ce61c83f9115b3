//! Every gossip key torua publishes, in one place, with the parsing of their values.
//!
//! Values stay tiny (chitchat replicates every key to every node each time it changes); bulk state
//! travels over the peer transport instead. Keys are only ever added, never renamed, so that nodes
//! of different versions can read each other.

use chitchat::NodeState;

/// Lifecycle state of the node: see [`crate::MemberState`].
pub const STATE: &str = "state";
/// HTTP API address others (and clients) can reach, `host:port`.
pub const HTTP_ADDR: &str = "addr.http";
/// QUIC peer transport address, `host:port`.
pub const PEER_ADDR: &str = "addr.peer";
/// Version of the torua binary.
pub const VERSION: &str = "version";
/// Start time of this generation, unix milliseconds.
pub const STARTED_AT: &str = "started_at";
/// Highest coordinator term this node knows of (adopted from others or claimed).
pub const TERM: &str = "term";
/// The node that claimed the term in [`TERM`]: two coordinators may claim the same number
/// without having heard of each other, and the owner tells a tie from an adoption.
pub const TERM_BY: &str = "term_by";
/// Set only while this node is coordinator: the term of its leadership.
pub const LEADER_TERM: &str = "leader_term";

/// Typed reads of torua's keys from a chitchat node state.
pub trait NodeStateExt {
    fn get_u64(&self, key: &str) -> Option<u64>;
    fn get_string(&self, key: &str) -> Option<String>;
}

impl NodeStateExt for NodeState {
    fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    fn get_string(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_string)
    }
}
