//! A member of the cluster as torua sees it: one entry per node id, whatever its generation.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::NodeId;

/// Where a member is in its life. A node publishes `Joining`, `Ready` or `Leaving`/`Left` itself;
/// `Dead` is what the local failure detector concludes when its heartbeats stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Started, not yet connected to the cluster (no seed answered yet) or not yet serving.
    Joining,
    /// Serving and eligible to coordinate.
    Ready,
    /// Shutting down gracefully: still reachable, no longer eligible to coordinate.
    Leaving,
    /// Failure detector verdict: no heartbeat for longer than the phi threshold allows.
    Dead,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Ready => "ready",
            MemberState::Leaving => "leaving",
            MemberState::Dead => "dead",
        }
    }

    /// Parses the value of the `state` gossip key. `left` is not a member state: a member that
    /// published it is dropped from the view.
    pub(crate) fn parse_published(value: &str) -> Option<PublishedState> {
        match value {
            "joining" => Some(PublishedState::Member(MemberState::Joining)),
            "ready" => Some(PublishedState::Member(MemberState::Ready)),
            "leaving" => Some(PublishedState::Member(MemberState::Leaving)),
            "left" => Some(PublishedState::Left),
            _ => None,
        }
    }
}

/// What a node says about itself in its `state` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishedState {
    Member(MemberState),
    Left,
}

/// One member of the live view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub node_id: NodeId,
    /// Start time of this incarnation (unix nanos); a restart always has a higher one.
    pub generation: u64,
    pub state: MemberState,
    pub gossip_addr: SocketAddr,
    pub http_addr: Option<String>,
    pub peer_addr: Option<String>,
    pub version: Option<String>,
    /// Unix milliseconds when this generation started.
    pub started_at_ms: Option<u64>,
    /// Highest coordinator term this member has published.
    pub term: u64,
    /// Set while this member believes it is the coordinator.
    pub leader_term: Option<u64>,
    /// Who claimed `term` (see `keys::TERM_BY`).
    pub term_by: Option<String>,
    /// Time since this node last saw the member's heartbeat advance (zero for itself).
    #[serde(skip)]
    pub heartbeat_age: Duration,
    pub is_self: bool,
}

impl Member {
    pub fn is_live(&self) -> bool {
        self.state != MemberState::Dead
    }

    /// The same member, ignoring fields that change on every heartbeat.
    pub(crate) fn same_as(&self, other: &Member) -> bool {
        let mut a = self.clone();
        a.heartbeat_age = other.heartbeat_age;
        &a == other
    }
}
