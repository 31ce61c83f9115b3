//! The node's single QUIC endpoint: one UDP socket that both serves (mutual TLS, ALPN = wire
//! version) and dials (connection cache with backoff), typed requests, batch streams, and an
//! orderly shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use crate::config::TransportConfig;
use crate::connection::{local_frame_error, PeerConnection};
use crate::error::TransportError;
use crate::frame::{encode_frame, KIND_BATCH};
use crate::identity::NodeIdentity;
use crate::pool::Pool;
use crate::server::{accept_loop, Handlers, Slot};
use crate::service::{Service, StreamService, TypedService};
use crate::stream::{BatchSender, TypedStreamService};

/// Application close code sent to peers at shutdown.
pub const CODE_SHUTDOWN: u32 = 0;

/// A QUIC endpoint serving and dialling on one socket. Cheap to clone; all clones share the
/// socket, the connection cache and the installed services.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    quinn: quinn::Endpoint,
    local_addr: SocketAddr,
    identity: NodeIdentity,
    config: Arc<TransportConfig>,
    pool: Pool,
    handlers: Arc<Handlers>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Inner {
    /// Closes the socket with `reason` and stops the accept loop.
    fn close(&self, reason: &[u8]) {
        self.quinn.close(CODE_SHUTDOWN.into(), reason);
        let task = self
            .accept_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

impl Drop for Inner {
    // The last handle going away must not leave a socket and an accept loop behind.
    fn drop(&mut self) {
        self.close(b"endpoint dropped");
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.inner.local_addr)
            .field("node_id", &self.inner.identity.node_id())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds the UDP socket and starts accepting connections. Must be called inside a tokio
    /// runtime. Until [`serve`](Self::serve) is called, incoming requests get an error reply.
    pub fn bind(
        listen: SocketAddr,
        identity: NodeIdentity,
        config: TransportConfig,
    ) -> Result<Endpoint, TransportError> {
        config.validate().map_err(TransportError::Config)?;
        let (server, client) = crate::tls::build_configs(&identity, &config)?;
        let mut quinn =
            quinn::Endpoint::server(server, listen).map_err(|source| TransportError::Bind {
                addr: listen,
                source,
            })?;
        quinn.set_default_client_config(client);
        let local_addr = quinn.local_addr().map_err(|source| TransportError::Bind {
            addr: listen,
            source,
        })?;
        let config = Arc::new(config);
        let handlers = Arc::new(Handlers {
            service: Slot::empty(),
            streams: Slot::empty(),
            permits: Arc::new(Semaphore::new(config.max_concurrent_handlers)),
            config: config.clone(),
        });
        let accept_task = tokio::spawn(accept_loop(quinn.clone(), handlers.clone()));
        tracing::info!(%local_addr, node_id = %identity.node_id(), "quic endpoint bound");
        Ok(Endpoint {
            inner: Arc::new(Inner {
                quinn,
                local_addr,
                identity,
                config,
                pool: Pool::default(),
                handlers,
                accept_task: Mutex::new(Some(accept_task)),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's id (from its certificate).
    pub fn node_id(&self) -> &str {
        self.inner.identity.node_id()
    }

    /// The configuration in use.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// Installs (or replaces) the request service.
    pub fn serve<S: Service>(&self, service: S) {
        let handler = TypedService(Arc::new(service));
        self.inner.handlers.service.set(Arc::new(handler));
    }

    /// Installs (or replaces) the batch stream service.
    pub fn serve_streams<S: StreamService>(&self, service: S) {
        let handler = TypedStreamService(Arc::new(service));
        self.inner.handlers.streams.set(Arc::new(handler));
    }

    /// A verified connection to `peer`, from the cache or freshly dialled (bounded by the
    /// connect timeout; fails fast with `PeerBackoff` after recent failures).
    pub async fn connect(&self, peer: SocketAddr) -> Result<PeerConnection, TransportError> {
        self.connect_to(peer, None).await
    }

    /// [`Self::connect`] to the process `incarnation` of the peer (a number that changes when
    /// it restarts, such as its start time): a cached connection to an earlier process at the
    /// same address is dropped and re-dialled instead of used until its idle timeout.
    pub async fn connect_to(
        &self,
        peer: SocketAddr,
        incarnation: Option<u64>,
    ) -> Result<PeerConnection, TransportError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(TransportError::Shutdown);
        }
        self.inner
            .pool
            .get(&self.inner.quinn, &self.inner.config, peer, incarnation)
            .await
    }

    /// Sends `request` to `peer` and waits for the typed response. The connect phase is
    /// bounded by the connect timeout; open + write + read by `timeout` (default: the
    /// config's request timeout). Dropping the future cancels the request on the peer too.
    pub async fn request<Req, Resp>(
        &self,
        peer: SocketAddr,
        request: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, TransportError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.connect(peer).await?.request(request, timeout).await
    }

    /// Opens a batch stream to `peer`, sending `header` first. See [`BatchSender`].
    pub async fn open_batch_stream<H, B, A>(
        &self,
        peer: SocketAddr,
        header: &H,
    ) -> Result<BatchSender<B, A>, TransportError>
    where
        H: Serialize + ?Sized,
        B: Serialize + ?Sized,
        A: DeserializeOwned,
    {
        let config = &self.inner.config;
        let mut first = vec![KIND_BATCH];
        first.extend(encode_frame(header, config.max_message_size).map_err(local_frame_error)?);
        let conn = self.connect(peer).await?;
        let after = config.request_timeout;
        let (send, recv) = conn.open_stream(Instant::now() + after, after).await?;
        let mut sender = BatchSender::new(send, recv, peer, config.clone());
        sender.write(&first).await?;
        Ok(sender)
    }

    /// Closes and forgets the cached connection to `peer` (e.g. it left the cluster).
    pub fn disconnect(&self, peer: SocketAddr) {
        self.inner.pool.remove(peer);
    }

    /// Closes every connection with [`CODE_SHUTDOWN`], stops accepting, and waits (at most
    /// the configured `shutdown_wait`) for peers to acknowledge. Idempotent.
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.close(b"node shutting down");
        self.inner.pool.clear();
        if timeout(
            self.inner.config.shutdown_wait,
            self.inner.quinn.wait_idle(),
        )
        .await
        .is_err()
        {
            tracing::debug!("shutdown: peers did not acknowledge the close in time");
        }
    }
}
