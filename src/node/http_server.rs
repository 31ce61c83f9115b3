//! Serving the HTTP API, over TLS unless the node runs in the loopback development mode. The
//! certificate is the operator's (`TORUA_HTTP_TLS_CERT/KEY`) or issued at start from the cluster
//! CA that every node derives from the cluster secret, so a client that knows the secret (or
//! holds the CA's PEM) verifies any node. Each connection gets a bounded handshake, a bounded
//! wait for its request headers and a bounded header size, and the node serves a bounded number
//! of connections, so slow or oversized clients cannot hold it up (`tests/security_process.rs`
//! holds hundreds of slow connections open while `/health` answers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::Service;
use transport::ServerCert;

/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not sent its request headers by then is disconnected.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 4096;
/// Largest request head (request line and headers); a larger one gets 431.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// A closed connection keeps reading (and dropping) what the client still sends for at most
/// this long, so that the answer it was sent is not lost to a reset (see [`Lingering`]).
const LINGER_TIME: Duration = Duration::from_secs(10);
/// ... and stops once the client has sent nothing for this long.
const LINGER_IDLE: Duration = Duration::from_secs(2);
/// Closed connections lingering at once; past that, a connection closes at once.
const MAX_LINGERING: usize = 256;

/// Whether the client's first byte opens a TLS handshake (record type 22); false for plain HTTP,
/// or a client silent for `HANDSHAKE_TIMEOUT`.
async fn starts_with_tls(tcp: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == 0x16
    )
}

/// Answers a plain-HTTP request on the HTTPS port with a 400 that says what to do, then closes.
async fn refuse_plain_http(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read the request's head first: closing with unread bytes would reset the connection before
    // the client reads the answer.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while head.len() < 16 << 10 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let body = r#"{"error":{"status":400,"reason":"this node serves HTTPS only: use https:// (with the cluster's CA: torua --ca, or TORUA_CLUSTER_SECRET)"}}"#;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.write_all(answer.as_bytes())).await;
    let _ = tcp.shutdown().await;
}

/// The rustls server configuration for `cert`.
pub fn server_config(cert: ServerCert) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(cert.chain, cert.key_der)
        .context("the HTTP API's certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop` fires; then stops
/// accepting and waits for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (tcp, from) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                serve_connection(TokioIo::new(Lingering::new(tcp)), from, app, watcher).await;
                return;
            };
            if !starts_with_tls(&tcp).await {
                refuse_plain_http(tcp).await;
                return;
            }
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    serve_connection(TokioIo::new(Lingering::new(tls)), from, app, watcher).await
                }
                Ok(Err(e)) => tracing::debug!(%from, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%from, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// HTTP/1.1 on one connection, with the header limits.
async fn serve_connection<IO>(
    io: TokioIo<IO>,
    from: SocketAddr,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request| {
        request
            .extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(from));
        app.clone().call(request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES);
    if let Err(e) = watcher.watch(http.serve_connection(io, service)).await {
        tracing::debug!(%from, error = %e, "HTTP connection ended with an error");
    }
}

/// A connection that, when dropped, closes its sending side and reads what the client still
/// sends before closing (a "lingering close", as web servers do). An answer sent before the
/// request's body was read (413 for a body over the limit, 401) would otherwise be lost: closing
/// a socket with unread data makes the kernel send a reset, and the client, still sending its
/// body, sees "connection reset" instead of the answer. Bounded by [`LINGER_TIME`],
/// [`LINGER_IDLE`] and [`MAX_LINGERING`].
struct Lingering<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> {
    io: Option<IO>,
}

impl<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Lingering<IO> {
    fn new(io: IO) -> Self {
        Lingering { io: Some(io) }
    }

    fn io(&mut self) -> &mut IO {
        self.io.as_mut().expect("present until dropped")
    }
}

static LINGERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LINGERING);

impl<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Drop
    for Lingering<IO>
{
    fn drop(&mut self) {
        let (Some(mut io), Ok(runtime)) = (self.io.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let Ok(permit) = LINGERING.try_acquire() else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _permit = permit;
            let _ = tokio::time::timeout(LINGER_TIME, async {
                let _ = io.shutdown().await;
                let mut sink = vec![0u8; 64 << 10];
                while let Ok(Ok(n)) = tokio::time::timeout(LINGER_IDLE, io.read(&mut sink)).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

impl<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> tokio::io::AsyncRead
    for Lingering<IO>
{
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.io()).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>
    tokio::io::AsyncWrite for Lingering<IO>
{
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(self.io()).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.io()).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.io()).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(self.io()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that sends its whole (too large) body before reading gets the 413, not a reset.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_early_answer_reaches_a_client_still_sending_its_body() {
        let app = Router::new()
            .route(
                "/in",
                axum::routing::post(
                    |body: axum::body::Bytes| async move { body.len().to_string() },
                ),
            )
            .layer(axum::extract::DefaultBodyLimit::max(1024));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, stop) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(listener, None, app, stop));
        let status = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let size = 16 << 20;
            write!(
                tcp,
                "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
            )
            .unwrap();
            let chunk = vec![b'x'; 64 << 10];
            // As most clients do: the whole body first (a failed write ends the request).
            for _ in 0..size / chunk.len() {
                tcp.write_all(&chunk)
                    .map_err(|e| format!("sending the body: {e}"))?;
            }
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer)
                .map_err(|e| format!("reading the answer: {e}"))?;
            let status = String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .map(str::to_string);
            Ok::<_, String>(status.unwrap_or_default())
        })
        .await
        .unwrap();
        assert_eq!(status.as_deref(), Ok("HTTP/1.1 413 Payload Too Large"));
    }
}
