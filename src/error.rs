//! The error a node's services answer with, here and across the wire.
//!
//! Callers decide what to do by the variant (retry elsewhere, rebuild a copy, refresh the map),
//! never by the message; the message says what happened and what the user can do. The peer
//! protocol carries the variant ([`crate::node::wire::PeerResponse::Failed`]), and
//! [`crate::api::ApiError`] is the one place that maps variants to HTTP statuses.

use serde::{Deserialize, Serialize};

/// Why an operation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// Too much work in flight (a write backlog, a full permit pool): retry after a moment.
    #[error("busy: {0}")]
    Busy(String),
    /// Not possible right now (no shard map yet, a node not live, a copy being rebuilt, the node
    /// shutting down): retry, maybe on another node.
    #[error("{0}")]
    Unavailable(String),
    /// This node does not see a majority of the voting members (minority side of a partition).
    #[error("{0}")]
    NoQuorum(String),
    /// No answer within the time allowed.
    #[error("{0}")]
    Timeout(String),
    /// The node could not be reached (connection refused or lost, no address): the request may
    /// not have arrived.
    #[error("{0}")]
    Unreachable(String),
    /// The receiver is not the primary of `shard` in its map of `map_version`: refresh, retry.
    #[error("this node is not the primary of shard {shard} (map version {map_version})")]
    NotPrimary { shard: u32, map_version: u64 },
    /// The receiver is not the coordinator in its own view; `coordinator` is who it names.
    #[error("this node is not the coordinator (it names {coordinator:?})")]
    NotCoordinator { coordinator: Option<String> },
    /// A health report from a node the coordinator has not registered: register again.
    #[error("this node is not registered with the coordinator")]
    NotRegistered,
    /// A copy refused a write because its map names another primary: the write fails and the
    /// copy keeps its place in the in-sync set.
    #[error("{0}")]
    Fenced(String),
    /// A copy holds a write the primary does not hold under the same number: it must be rebuilt.
    #[error("{0}")]
    Diverged(String),
    /// A copy cannot be brought level from the primary's log: it must be rebuilt from a snapshot.
    #[error("{0}")]
    NeedsRebuild(String),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or not allowed.
    #[error("{0}")]
    Invalid(String),
    /// Anything else (a storage engine or disk failure): the message says what.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The same error, its message preceded by `what` ("shard 3", "node-2 at 10.0.0.2:7300").
    /// Variants without a message keep theirs.
    pub fn context(self, what: impl std::fmt::Display) -> Error {
        let prefix = |m: String| format!("{what}: {m}");
        match self {
            Error::Busy(m) => Error::Busy(prefix(m)),
            Error::Unavailable(m) => Error::Unavailable(prefix(m)),
            Error::NoQuorum(m) => Error::NoQuorum(prefix(m)),
            Error::Timeout(m) => Error::Timeout(prefix(m)),
            Error::Unreachable(m) => Error::Unreachable(prefix(m)),
            Error::Fenced(m) => Error::Fenced(prefix(m)),
            Error::Diverged(m) => Error::Diverged(prefix(m)),
            Error::NeedsRebuild(m) => Error::NeedsRebuild(prefix(m)),
            Error::NotFound(m) => Error::NotFound(prefix(m)),
            Error::Invalid(m) => Error::Invalid(prefix(m)),
            Error::Internal(m) => Error::Internal(prefix(m)),
            other @ (Error::NotPrimary { .. }
            | Error::NotCoordinator { .. }
            | Error::NotRegistered) => other,
        }
    }

    /// Whether the node gave no answer (unreachable, or silent past the timeout), as opposed to
    /// answering with an error.
    pub fn is_no_answer(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::Unreachable(_))
    }
}

impl From<crate::storage::Error> for Error {
    fn from(e: crate::storage::Error) -> Error {
        use crate::storage::Error as S;
        match e {
            S::Busy(m) => Error::Busy(m),
            S::Closing(m) => Error::Unavailable(m),
            S::LogTrimmed(m) => Error::NeedsRebuild(m),
            S::Invalid(m) => Error::Invalid(m),
            S::Engine(m) | S::OutOfMemory(m) | S::Io(m) => Error::Internal(m),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
