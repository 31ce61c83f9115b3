//! Authenticated gossip over UDP: every datagram carries a MAC keyed from the cluster secret.
//!
//! chitchat's own `UdpTransport` accepts any well-formed packet, so anyone who can reach the gossip
//! port could join the membership (and, with a low node id, win the election). This transport seals
//! each serialized envelope and drops every datagram whose MAC does not verify before chitchat sees
//! it. The MAC itself is pluggable ([`DatagramSealer`]) so this crate stays free of key handling;
//! `torua` plugs in `transport::GossipKey` (HMAC-SHA256 with a timestamp against replays).
//!
//! Why a loopback codec: chitchat 0.13 keeps its wire encoding crate-private, and its `Socket` trait
//! hands us envelopes, not bytes. So each socket owns a private chitchat `UdpSocket` (the *codec*) and
//! a plain socket (the *tap*), both on 127.0.0.1: to encode, the codec sends the envelope to the tap
//! and the tap reads the bytes; to decode, the tap sends verified bytes to the codec, which parses
//! them. Both only accept datagrams from each other, so nothing unauthenticated reaches chitchat.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use tracing::{debug, warn};

/// Largest UDP payload (IPv4): 65,535 − 8 (UDP header) − 20 (IP header).
const MAX_DATAGRAM: usize = 65_507;

/// Seals and opens datagrams. `open` must verify in constant time and return the payload only if
/// the datagram was sealed with the same key (and is fresh enough, if the sealer checks that).
pub trait DatagramSealer: Send + Sync + 'static {
    fn seal(&self, payload: &[u8]) -> Vec<u8>;
    fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]>;
}

/// UDP gossip transport that authenticates every datagram with a [`DatagramSealer`].
pub struct AuthenticatedUdpTransport {
    sealer: Arc<dyn DatagramSealer>,
    rejected: Arc<AtomicU64>,
}

impl AuthenticatedUdpTransport {
    pub fn new(sealer: Arc<dyn DatagramSealer>) -> Self {
        AuthenticatedUdpTransport {
            sealer,
            rejected: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Count of datagrams dropped because they were not authentic (or not gossip at all).
    pub fn rejected_counter(&self) -> Arc<AtomicU64> {
        self.rejected.clone()
    }
}

#[async_trait]
impl Transport for AuthenticatedUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?;
        let loopback: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
        let codec = chitchat::transport::UdpSocket::open(loopback)
            .await
            .context("cannot open the loopback gossip codec socket")?;
        let codec_addr = codec.local_addr()?;
        let tap = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("cannot open the loopback gossip tap socket")?;
        let tap_addr = tap.local_addr()?;
        Ok(Box::new(AuthenticatedSocket {
            socket,
            codec,
            codec_addr,
            tap,
            tap_addr,
            pending_from: VecDeque::new(),
            sealer: self.sealer.clone(),
            rejected: self.rejected.clone(),
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

struct AuthenticatedSocket {
    /// The public gossip socket: sealed datagrams only.
    socket: tokio::net::UdpSocket,
    /// chitchat's own socket on loopback, used as encoder and decoder.
    codec: chitchat::transport::UdpSocket,
    codec_addr: SocketAddr,
    /// Plain loopback socket exchanging plaintext with `codec`.
    tap: tokio::net::UdpSocket,
    tap_addr: SocketAddr,
    /// Senders of verified datagrams handed to the codec but not yet read back from it (a `recv`
    /// can be cancelled between the two steps; chitchat requires recv to be cancel-safe).
    pending_from: VecDeque<(SocketAddr, usize)>,
    sealer: Arc<dyn DatagramSealer>,
    rejected: Arc<AtomicU64>,
    buf: Box<[u8]>,
}

/// Longest wait for a datagram to cross loopback between codec and tap.
const LOOPBACK_TIMEOUT: Duration = Duration::from_secs(1);

impl AuthenticatedSocket {
    fn reject(&self, from: SocketAddr, len: usize, why: &str) {
        let n = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        // A flood of forged packets must not flood the log too: warn on the first and then rarely.
        if n == 1 || n.is_power_of_two() {
            warn!(%from, len, rejected_total = n, "dropping gossip datagram: {why}; is the sender using another TORUA_CLUSTER_SECRET?");
        } else {
            debug!(%from, len, "dropping gossip datagram: {why}");
        }
    }

    /// Serializes an envelope through the codec; `None` if loopback lost it.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Option<Vec<u8>>> {
        self.codec.send(self.tap_addr, envelope).await?;
        let deadline = tokio::time::Instant::now() + LOOPBACK_TIMEOUT;
        loop {
            let (len, from) =
                match tokio::time::timeout_at(deadline, self.tap.recv_from(&mut self.buf)).await {
                    Ok(r) => r.context("gossip tap receive failed")?,
                    Err(_) => return Ok(None),
                };
            if from == self.codec_addr {
                return Ok(Some(self.buf[..len].to_vec()));
            }
            self.reject(from, len, "unexpected datagram on the loopback tap");
        }
    }
}

#[async_trait]
impl Socket for AuthenticatedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.socket
            .local_addr()
            .context("failed to get UDP socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let Some(plain) = self.encode(envelope).await? else {
            warn!(%to, "gossip message lost on the loopback codec; dropped (gossip retries)");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        };
        let sealed = self.sealer.seal(&plain);
        if sealed.len() > MAX_DATAGRAM {
            // chitchat sizes deltas for a bare datagram; only a huge node state gets here. Dropping
            // one packet is safe (gossip retries with a fresh delta); failing the socket is not.
            warn!(%to, len = sealed.len(), "gossip datagram too large once sealed; dropped");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        match self.socket.send_to(&sealed, to).await {
            Ok(n) => Ok(SendOutcome { num_bytes_sent: n }),
            // A peer that went away (ICMP unreachable) is the failure detector's business.
            Err(e) if is_transient(&e) => Ok(SendOutcome { num_bytes_sent: 0 }),
            Err(e) => Err(e).context("failed to send gossip datagram"),
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(&(from, len)) = self.pending_from.front() {
                // Decode what was handed to the codec. chitchat's socket drops undecodable
                // datagrams itself and keeps waiting, so bound the wait.
                match tokio::time::timeout(LOOPBACK_TIMEOUT, self.codec.recv()).await {
                    Ok(outcome) => {
                        let outcome = outcome?;
                        self.pending_from.pop_front();
                        if outcome.from_addr != self.tap_addr {
                            self.reject(
                                outcome.from_addr,
                                len,
                                "unexpected datagram on the loopback codec",
                            );
                            continue;
                        }
                        return Ok(RecvOutcome {
                            from_addr: from,
                            envelope: outcome.envelope,
                            num_bytes_received: len,
                        });
                    }
                    Err(_) => {
                        self.pending_from.pop_front();
                        self.reject(from, len, "authentic but not a chitchat message");
                        continue;
                    }
                }
            }
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e).context("fatal gossip UDP receive error"),
            };
            let Some(payload) = self.sealer.open(&self.buf[..len]) else {
                self.reject(from, len, "bad or stale MAC");
                continue;
            };
            self.tap
                .send_to(payload, self.codec_addr)
                .await
                .context("gossip tap send failed")?;
            self.pending_from.push_back((from, len));
        }
    }
}

fn is_transient(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::Interrupted
    )
}
