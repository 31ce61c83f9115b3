//! What can go wrong in a node's shard copies, by kind: callers branch on the variant (a busy
//! copy is retried, a closing one is asked again later, a trimmed log means a rebuild).

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The copy has more writes waiting to be applied than its budget: retry later.
    #[error("busy: {0}")]
    Busy(String),
    /// The copy is being removed or rebuilt on this node right now.
    #[error("{0}")]
    Closing(String),
    /// The log no longer holds the writes asked for: the reader needs a whole copy.
    #[error("{0}")]
    LogTrimmed(String),
    /// The operation's input is not acceptable (a bad parameter, an embedding of the wrong size).
    #[error("{0}")]
    Invalid(String),
    /// The embedded database failed (its message is in the text).
    #[error("{0}")]
    Engine(String),
    /// The embedded database's buffer pool (this copy's share of `TORUA_MEMORY_MB`) could not
    /// hold what the statement needed.
    #[error("{0}")]
    OutOfMemory(String),
    /// A file could not be read, written or synced.
    #[error("{0}")]
    Io(String),
}
