//! Turning a [`NodeIdentity`] into quinn's server and client crypto configs (mutual TLS 1.3,
//! ALPN = wire version), reading the peer's node id back from a live connection, and turning
//! quinn's connection errors into advice.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::config::TransportConfig;
use crate::error::TransportError;
use crate::identity::{node_id_from_cert, NodeIdentity};

/// Builds both halves. Uses `builder_with_provider` everywhere: with more than one crypto
/// provider compiled into the binary the implicit-provider builders panic.
pub(crate) fn build_configs(
    identity: &NodeIdentity,
    config: &TransportConfig,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TransportError> {
    let err =
        |what: &str, e: &dyn std::fmt::Display| TransportError::Config(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(identity.ca_der().clone())
        .map_err(|e| err("the ca certificate is not a usable trust anchor", &e))?;
    let roots = Arc::new(roots);
    let chain: Vec<CertificateDer<'static>> = vec![identity.cert_der().clone()];
    let alpn = vec![config.alpn.as_bytes().to_vec()];
    let transport = Arc::new(config.quinn_transport().map_err(TransportError::Config)?);

    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| err("client verifier", &e))?;
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err("tls 1.3 unavailable", &e))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), identity.key_der())
        .map_err(|e| err("node certificate or key rejected", &e))?;
    server_tls.alpn_protocols = alpn.clone();
    let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
        .map_err(|e| err("quic server crypto", &e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());

    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err("tls 1.3 unavailable", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, identity.key_der())
        .map_err(|e| err("node certificate or key rejected", &e))?;
    client_tls.alpn_protocols = alpn;
    let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
        .map_err(|e| err("quic client crypto", &e))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    Ok((server, client))
}

/// The node id in the certificate the peer authenticated with (None only if the handshake
/// has not completed, which callers never observe).
pub(crate) fn peer_node_id(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_id_from_cert(certs.first()?)
}

/// A TLS alert carried in a QUIC CRYPTO_ERROR code (0x100 + alert). Certificate alerts seen:
/// 42-49 (bad/unknown certificate or CA), 51 decrypt_error (same CA name, different key:
/// another secret), 116 certificate_required.
fn tls_alert(code: u64) -> Option<u8> {
    (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8)
}

/// quinn's connection error, with what the operator should check.
pub(crate) fn describe(e: &quinn::ConnectionError) -> String {
    let code = match e {
        quinn::ConnectionError::TransportError(t) => Some(u64::from(t.code)),
        quinn::ConnectionError::ConnectionClosed(c) => Some(u64::from(c.error_code)),
        _ => None,
    };
    match code.and_then(tls_alert) {
        Some(120) => format!(
            "{e}: the peer speaks a different wire version (tls alpn mismatch); run the same torua version on both nodes"
        ),
        Some(alert @ (40 | 42..=49 | 51 | 116)) => format!(
            "{e} (tls alert {alert}): certificate rejected; both nodes must use the same cluster secret and cluster id (or the same operator ca)"
        ),
        Some(alert) => format!("{e} (tls alert {alert})"),
        None => match e {
            quinn::ConnectionError::TimedOut => {
                format!("{e}: no traffic within the idle timeout; the peer is down or unreachable")
            }
            quinn::ConnectionError::Reset => format!("{e}: the peer restarted or forgot the connection"),
            _ => e.to_string(),
        },
    }
}

/// True when the connection died of a TLS rejection: redialling will fail the same way, so
/// it counts as a dial failure for backoff.
pub(crate) fn is_tls_rejection(e: &quinn::ConnectionError) -> bool {
    let code = match e {
        quinn::ConnectionError::TransportError(t) => u64::from(t.code),
        quinn::ConnectionError::ConnectionClosed(c) => u64::from(c.error_code),
        _ => return false,
    };
    tls_alert(code).is_some()
}
