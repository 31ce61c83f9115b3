//! Errors of the transport crate. Every message is lowercase and says what to check or do next,
//! because these strings end up in operators' logs and in CLI output.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while binding, dialling, requesting or serving.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be bound.
    #[error(
        "cannot bind quic endpoint on {addr}: {source}; pick a free port or check permissions"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// The TLS / QUIC configuration could not be built (bad identity, bad limits).
    #[error("invalid transport configuration: {0}")]
    Config(String),

    /// No handshake completed within the connect timeout.
    #[error("connecting to peer {peer} timed out after {after:?}; is the node running and is the udp port reachable?")]
    ConnectTimeout { peer: SocketAddr, after: Duration },

    /// The handshake failed (TLS rejected, version mismatch, unreachable).
    #[error("connecting to peer {peer} failed: {reason}")]
    ConnectFailed { peer: SocketAddr, reason: String },

    /// A recent dial to this peer failed; we do not retry until the backoff expires.
    #[error("peer {peer} failed recently; not retrying for another {retry_in:?}")]
    PeerBackoff {
        peer: SocketAddr,
        retry_in: Duration,
    },

    /// Opening a stream blocked (peer's stream limit reached) past the deadline.
    #[error("opening a stream to peer {peer} timed out after {after:?}; the peer is overloaded or stalled")]
    OpenTimeout { peer: SocketAddr, after: Duration },

    /// Writing the request did not complete (flow control) before the deadline.
    #[error("sending to peer {peer} timed out after {after:?}; the peer is not reading (overloaded or stalled)")]
    WriteTimeout { peer: SocketAddr, after: Duration },

    /// The response did not arrive before the deadline.
    #[error("waiting for the response of peer {peer} timed out after {after:?}; the handler is slow or stuck, raise the request timeout if this is expected")]
    ReadTimeout { peer: SocketAddr, after: Duration },

    /// The connection went away while the request was in flight.
    #[error("connection to peer {peer} lost: {reason}")]
    ConnectionLost { peer: SocketAddr, reason: String },

    /// The peer reset or stopped the stream (it cancelled, or refused the message).
    #[error("peer {peer} aborted the stream (code {code}); check the peer's log")]
    StreamAborted { peer: SocketAddr, code: u64 },

    /// A message we were about to send exceeds our configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes; split it or use a batch stream")]
    MessageTooLarge { size: usize, limit: usize },

    /// A message we were receiving exceeds our configured limit.
    #[error("peer {peer} sent a message larger than the limit of {limit} bytes; raise max_message_size on both sides or use a batch stream")]
    IncomingTooLarge { peer: SocketAddr, limit: usize },

    /// Our own value could not be serialised.
    #[error("cannot encode message: {0}")]
    Encode(String),

    /// The peer's bytes did not decode as the expected type (usually a version skew).
    #[error("cannot decode message from peer {peer}: {reason}; are both nodes running the same version?")]
    Decode { peer: SocketAddr, reason: String },

    /// The peer answered with an error instead of a response (it failed to decode our request,
    /// was overloaded, or has no handler).
    #[error("peer {peer} refused the request: {message}")]
    Remote { peer: SocketAddr, message: String },

    /// The peer broke the wire protocol.
    #[error("protocol violation by peer {peer}: {reason}")]
    Protocol { peer: SocketAddr, reason: String },

    /// The local endpoint has been shut down.
    #[error("the endpoint is shut down; create a new one to talk to peers")]
    Shutdown,
}

impl TransportError {
    /// True for the timeout variants (connect, open, write, read).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout { .. }
                | Self::OpenTimeout { .. }
                | Self::WriteTimeout { .. }
                | Self::ReadTimeout { .. }
        )
    }

    /// True when the peer could not be reached or the connection broke: a caller may try
    /// another replica. False for errors that will repeat (decode, too large, remote refusal).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout { .. }
                | Self::ConnectFailed { .. }
                | Self::PeerBackoff { .. }
                | Self::ConnectionLost { .. }
        )
    }
}

/// Errors while deriving, issuing, loading or writing certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {source}; check the path given on the command line")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; check that the directory exists and is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a pem file with a {expected}; regenerate it with `torua cert`")]
    NotPem {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{path} does not hold a usable private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{path} does not hold a valid x.509 certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("the private key in {key} does not match the certificate in {cert}; use the key generated together with that certificate")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {cert} is not signed by the ca in {ca}; issue it from that ca or point to the right ca file")]
    NotSignedByCa { cert: PathBuf, ca: PathBuf },
    #[error(
        "invalid node id {0:?}: it must be 1-64 characters of letters, digits, '-', '_' or '.'"
    )]
    BadNodeId(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

impl From<rcgen::Error> for IdentityError {
    fn from(e: rcgen::Error) -> Self {
        IdentityError::Generate(e.to_string())
    }
}
