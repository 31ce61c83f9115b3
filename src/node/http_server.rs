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
                serve_connection(TokioIo::new(tcp), from, app, watcher).await;
                return;
            };
            if !starts_with_tls(&tcp).await {
                refuse_plain_http(tcp).await;
                return;
            }
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), from, app, watcher).await,
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
