//! A wrapper around chitchat's transport that counts gossip traffic for `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{ChitchatEnvelope, ChitchatMessage};

/// Gossip traffic counters; a gossip round starts with one `Syn` sent by this node.
#[derive(Debug, Default)]
pub(crate) struct GossipCounters {
    pub rounds: AtomicU64,
    pub packets_sent: AtomicU64,
    pub packets_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

pub(crate) struct MeteredTransport<T> {
    inner: T,
    counters: Arc<GossipCounters>,
}

impl<T> MeteredTransport<T> {
    pub fn new(inner: T, counters: Arc<GossipCounters>) -> Self {
        MeteredTransport { inner, counters }
    }
}

#[async_trait]
impl<T: Transport> Transport for MeteredTransport<T> {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = self.inner.open(listen_addr).await?;
        Ok(Box::new(MeteredSocket {
            inner,
            counters: self.counters.clone(),
        }))
    }
}

struct MeteredSocket {
    inner: Box<dyn Socket>,
    counters: Arc<GossipCounters>,
}

#[async_trait]
impl Socket for MeteredSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let is_syn = matches!(envelope.message, ChitchatMessage::Syn { .. });
        let outcome = self.inner.send(to, envelope).await?;
        let c = &self.counters;
        if is_syn {
            c.rounds.fetch_add(1, Ordering::Relaxed);
        }
        c.packets_sent.fetch_add(1, Ordering::Relaxed);
        c.bytes_sent
            .fetch_add(outcome.num_bytes_sent as u64, Ordering::Relaxed);
        Ok(outcome)
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let outcome = self.inner.recv().await?;
        let c = &self.counters;
        c.packets_received.fetch_add(1, Ordering::Relaxed);
        c.bytes_received
            .fetch_add(outcome.num_bytes_received as u64, Ordering::Relaxed);
        Ok(outcome)
    }
}
