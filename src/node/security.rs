//! Who this node is to its peers and clients: the TLS identity for QUIC, the key that
//! authenticates gossip, and the HTTP API's TLS certificate.
//!
//! Two modes. **Secret** (default): every node derives the same cluster CA from
//! `TORUA_CLUSTER_SECRET` and issues itself a leaf for its node id, so identical binaries with the
//! same secret trust each other and nothing else. **Operator PKI**: `TORUA_TLS_CA/CERT/KEY` name
//! files made by `torua cert` (or any CA); the secret is then still needed for gossip.
//! Without a secret, a well-known development secret is used, but only if every listen address is
//! loopback: nothing outside this machine can reach such a node anyway.

use std::sync::Arc;

use anyhow::{bail, Context};
use membership::{DatagramSealer, NodeId};
use transport::{ClusterCa, GossipKey, NodeIdentity, ServerCert, DEV_CLUSTER_SECRET};

use crate::node::config::ServeArgs;

/// Gossip datagrams older (or newer) than this are dropped as replays or from a skewed clock.
const GOSSIP_MAX_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

pub struct Security {
    pub identity: NodeIdentity,
    pub gossip_key: GossipKey,
    /// How the identity was obtained, for the start-up log line.
    pub mode: &'static str,
    /// The HTTP API's TLS configuration; `None`: plain HTTP.
    pub http_tls: Option<Arc<rustls::ServerConfig>>,
}

impl Security {
    /// `http_names`: the names and addresses clients reach the HTTP API by (the certificate's).
    pub fn from_args(
        args: &ServeArgs,
        node_id: &NodeId,
        http_names: &[String],
    ) -> anyhow::Result<Security> {
        let secret = match (&args.cluster_secret, args.is_loopback_only()) {
            (Some(s), _) => s.clone(),
            (None, true) => {
                tracing::warn!(
                    "TORUA_CLUSTER_SECRET is not set: using the public development secret. \
                     This is only allowed because every listen address is loopback; set a secret \
                     before listening on a network."
                );
                DEV_CLUSTER_SECRET.to_string()
            }
            (None, false) => bail!(
                "TORUA_CLUSTER_SECRET must be set when listening on a non-loopback address: peers \
                 authenticate each other (mutual TLS) and gossip with keys derived from it. \
                 Generate one with `openssl rand -hex 32` and give the same value to every node."
            ),
        };
        let gossip_key = GossipKey::derive(&secret, &args.cluster_id)
            .context("TORUA_CLUSTER_SECRET: cannot derive the gossip key")?;
        let files = [&args.tls_ca, &args.tls_cert, &args.tls_key];
        let given = files.iter().filter(|f| f.is_some()).count();
        let (identity, mode) = match given {
            0 => {
                let ca = ClusterCa::derive(&secret, &args.cluster_id)
                    .context("TORUA_CLUSTER_SECRET: cannot derive the cluster CA")?;
                let identity = ca
                    .issue_node_identity(node_id.as_str())
                    .context("cannot issue this node's certificate")?;
                let mode = if args.cluster_secret.is_some() {
                    "cluster secret"
                } else {
                    "development secret (loopback only)"
                };
                (identity, mode)
            }
            3 => {
                let (ca, cert, key) = (
                    args.tls_ca.as_ref().expect("checked"),
                    args.tls_cert.as_ref().expect("checked"),
                    args.tls_key.as_ref().expect("checked"),
                );
                let identity = NodeIdentity::from_pem_files(ca, cert, key)
                    .context("TORUA_TLS_CA / TORUA_TLS_CERT / TORUA_TLS_KEY")?;
                if identity.node_id() != node_id.as_str() {
                    bail!(
                        "TORUA_TLS_CERT is issued for node {:?} but this node's id is {:?}; use that \
                         node's certificate or set TORUA_NODE_ID to match",
                        identity.node_id(),
                        node_id.as_str()
                    );
                }
                (identity, "operator certificates")
            }
            _ => bail!(
                "TORUA_TLS_CA, TORUA_TLS_CERT and TORUA_TLS_KEY must be given together (or none of \
                 them, to derive certificates from TORUA_CLUSTER_SECRET)"
            ),
        };
        let http_tls = if !args.http_tls_enabled() {
            None
        } else {
            let cert = match (&args.http_tls_cert, &args.http_tls_key, given) {
                (Some(cert), Some(key), _) => ServerCert::from_pem_files(cert, key)
                    .context("TORUA_HTTP_TLS_CERT / TORUA_HTTP_TLS_KEY")?,
                (_, _, 0) => ClusterCa::derive(&secret, &args.cluster_id)
                    .and_then(|ca| ca.issue_server_cert(http_names))
                    .context("cannot issue the HTTP API's certificate")?,
                _ => bail!(
                    "with operator certificates (TORUA_TLS_CA ...), the HTTP API needs its own: set                      TORUA_HTTP_TLS_CERT and TORUA_HTTP_TLS_KEY (or TORUA_HTTP_TLS=off to serve                      plain HTTP)"
                ),
            };
            Some(crate::node::http_server::server_config(cert)?)
        };
        Ok(Security {
            identity,
            gossip_key,
            mode,
            http_tls,
        })
    }

    /// The gossip MAC for `membership::AuthenticatedUdpTransport`.
    pub fn gossip_sealer(&self) -> Arc<dyn DatagramSealer> {
        Arc::new(GossipSealer(self.gossip_key.clone()))
    }
}

struct GossipSealer(GossipKey);

impl DatagramSealer for GossipSealer {
    fn seal(&self, payload: &[u8]) -> Vec<u8> {
        self.0.seal(payload)
    }
    fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        self.0.open_fresh(datagram, GOSSIP_MAX_SKEW)
    }
}
