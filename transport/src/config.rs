//! Limits and timeouts of the transport. quinn's own defaults suit the open internet (unbounded
//! receive windows, 30 s idle timeout, no keep-alive, no connect or request timeout at all), so
//! every knob a cluster depends on is set explicitly here.

use std::time::Duration;

/// The wire version, sent as the TLS ALPN protocol. Nodes with different values refuse each
/// other during the handshake instead of exchanging undecodable messages. Bump it whenever a
/// change to a wire type is not append-only.
pub const WIRE_VERSION: &str = "torua/10";

/// Tuning of one [`crate::Endpoint`]. `Default` gives values suitable for a LAN cluster.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// How long a dial (UDP + QUIC + TLS handshake) may take before `ConnectTimeout`.
    pub connect_timeout: Duration,
    /// Default deadline for open + write + read of one request, used when the caller passes
    /// `None`. Also bounds how long a server waits for a request's bytes.
    pub request_timeout: Duration,
    /// Largest request or response body, and largest single frame on a batch stream. Both
    /// sides enforce it: a sender refuses to send more, a receiver stops reading past it.
    pub max_message_size: usize,
    /// Streams a peer may have open towards us at once on one connection. Further `open`
    /// calls on that peer wait (bounded by the request timeout): this is the per-peer
    /// backpressure.
    pub max_concurrent_streams: u32,
    /// Handler tasks running at once across all connections; accepting pauses beyond it.
    pub max_concurrent_handlers: usize,
    /// A connection with no traffic for this long is dead (peer crashed, network cut).
    pub idle_timeout: Duration,
    /// Ping interval on idle connections; must be well below `idle_timeout`.
    pub keep_alive: Duration,
    /// Bytes one stream may have in flight towards us before the sender is blocked.
    pub stream_receive_window: u32,
    /// Bytes all streams of one connection may have in flight towards us.
    pub connection_receive_window: u32,
    /// Bytes we buffer for sending on one connection.
    pub send_window: u64,
    /// Longest wait for one frame (write or read) on a batch stream, and for its final ack.
    /// Longer than `request_timeout` because a receiver may do real work per batch.
    pub stream_frame_timeout: Duration,
    /// Cap on waiting for peers to acknowledge the close at shutdown (`wait_idle` can hang).
    pub shutdown_wait: Duration,
    /// First delay after a failed dial before the same peer is dialled again.
    pub backoff_initial: Duration,
    /// Largest delay between dials of a peer that keeps failing.
    pub backoff_max: Duration,
    /// ALPN protocol; see [`WIRE_VERSION`]. Only tests should change it.
    pub alpn: String,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_message_size: 16 * 1024 * 1024,
            max_concurrent_streams: 256,
            max_concurrent_handlers: 1024,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            stream_receive_window: 2 * 1024 * 1024,
            connection_receive_window: 16 * 1024 * 1024,
            send_window: 16 * 1024 * 1024,
            stream_frame_timeout: Duration::from_secs(30),
            shutdown_wait: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            alpn: WIRE_VERSION.to_string(),
        }
    }
}

impl TransportConfig {
    /// Checks relations between fields that would otherwise fail in confusing ways later.
    pub fn validate(&self) -> Result<(), String> {
        if self.keep_alive >= self.idle_timeout {
            return Err(format!(
                "keep_alive ({:?}) must be shorter than idle_timeout ({:?}) or idle connections die",
                self.keep_alive, self.idle_timeout
            ));
        }
        if self.max_message_size == 0 || self.max_message_size > u32::MAX as usize - 1 {
            return Err("max_message_size must be between 1 byte and 4 GiB".into());
        }
        if self.max_concurrent_streams == 0 || self.max_concurrent_handlers == 0 {
            return Err(
                "max_concurrent_streams and max_concurrent_handlers must be at least 1".into(),
            );
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err("connect_timeout and request_timeout must be non-zero".into());
        }
        if self.alpn.is_empty() {
            return Err("alpn must not be empty".into());
        }
        Ok(())
    }

    /// quinn's per-connection transport parameters derived from this config.
    pub(crate) fn quinn_transport(&self) -> Result<quinn::TransportConfig, String> {
        let mut t = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| format!("idle_timeout {:?} is too large", self.idle_timeout))?;
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive))
            .max_concurrent_bidi_streams(self.max_concurrent_streams.into())
            // Everything rides on bidirectional streams (each needs an answer or an ack).
            .max_concurrent_uni_streams(0u32.into())
            .stream_receive_window(self.stream_receive_window.into())
            .receive_window(self.connection_receive_window.into())
            .send_window(self.send_window)
            .datagram_receive_buffer_size(None);
        Ok(t)
    }
}
