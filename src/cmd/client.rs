//! How the `torua` commands reach a node's HTTP API: the address, the API key, the CA that
//! vouches for the nodes' HTTPS certificates, and one call that answers with the status and the
//! JSON body (or says why no answer came).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

/// Where the commands send their requests.
#[derive(Debug, Clone, Args)]
pub struct Connect {
    /// Any node's HTTP address.
    #[arg(
        long,
        global = true,
        env = "TORUA_URL",
        default_value = "http://127.0.0.1:7101"
    )]
    pub url: String,
    /// The API key to send (`Authorization: Bearer <key>`); not needed by a node in the loopback
    /// development mode.
    #[arg(long, global = true, env = "TORUA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The CA certificate (PEM) to trust for https:// URLs. Without it, a CA derived from
    /// TORUA_CLUSTER_SECRET, else the public web roots.
    #[arg(long, global = true, env = "TORUA_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// The cluster secret: the commands derive the cluster's CA from it (as the nodes do).
    #[arg(
        long,
        global = true,
        env = "TORUA_CLUSTER_SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,
    /// The cluster id the CA is derived for (as the nodes' TORUA_CLUSTER_ID).
    #[arg(long, global = true, env = "TORUA_CLUSTER_ID", default_value = "torua")]
    pub cluster_id: String,
}

/// An answer: status, JSON body (a JSON string holding the text if it was not JSON), and the
/// `Retry-After` seconds if given.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

impl Answer {
    /// The body when the status is 2xx, else an error naming the request and the node's reason.
    pub fn ok(self, what: &str) -> anyhow::Result<Value> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let reason = self.body["error"]["reason"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| self.body.to_string());
        let hint = match self.status {
            401 => " (set TORUA_API_KEY or --api-key)",
            403 => " (use a key with a larger role)",
            _ => "",
        };
        bail!("{what}: HTTP {}: {reason}{hint}", self.status)
    }
}

impl Connect {
    /// The HTTP agent: trusting only the cluster's CA when one is known.
    fn agent(&self) -> anyhow::Result<ureq::Agent> {
        let ca = match (&self.ca, &self.cluster_secret) {
            (Some(path), _) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("TORUA_CA: cannot read {}", path.display()))?;
                Some(
                    rustls::pki_types::CertificateDer::from_pem_slice(&pem).map_err(|_| {
                        anyhow::anyhow!("TORUA_CA: {} holds no PEM certificate", path.display())
                    })?,
                )
            }
            (None, Some(secret)) => Some(
                transport::ClusterCa::derive(secret, &self.cluster_id)
                    .context("TORUA_CLUSTER_SECRET: cannot derive the cluster CA")?
                    .cert_der()
                    .clone(),
            ),
            (None, None) => None,
        };
        let mut agent = ureq::AgentBuilder::new();
        if let Some(ca) = ca {
            agent = agent.tls_config(client_tls(ca)?);
        }
        Ok(agent.build())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    /// Sends `method path` (with `body` as JSON when given) and waits at most `timeout`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        let url = self.url(path);
        let mut request = self.agent()?.request(method, &url).timeout(timeout);
        if let Some(key) = &self.api_key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let result = match body {
            Some(b) => request.send_json(b.clone()),
            None => request.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => bail!(
                "{method} {url}: {e}; is a torua node listening there? (nodes with a cluster \
                 secret serve https://, verified with TORUA_CA or TORUA_CLUSTER_SECRET)"
            ),
        };
        let status = response.status();
        let retry_after = response
            .header("retry-after")
            .and_then(|v| v.parse::<u64>().ok());
        let text = response.into_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }
}

/// A TLS client configuration that trusts `ca` only.
pub fn client_tls(
    ca: rustls::pki_types::CertificateDer<'static>,
) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca)
        .context("the CA certificate is not usable as a trust anchor")?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}
