//! JSON over HTTP: GET and POST that return the answer whatever the status code, timed POSTs of
//! prepared bodies, and answers shortened for messages. A test of a cluster that asks for API
//! keys names its key once ([`use_api_key`]); every helper here sends it.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::Context;

use serde_json::Value;

static API_KEY: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);
static AGENT: std::sync::RwLock<Option<ureq::Agent>> = std::sync::RwLock::new(None);

/// A TLS client configuration trusting only the CA that `secret` derives for cluster
/// `cluster_id` (as nodes started with that secret serve).
pub fn cluster_tls_config(secret: &str, cluster_id: &str) -> std::sync::Arc<rustls::ClientConfig> {
    let ca = transport::ClusterCa::derive(secret, cluster_id)
        .expect("a CA derives from any secret")
        .cert_der()
        .clone();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("the derived CA is a trust anchor");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// From now on, every helper speaks HTTPS trusting only the CA that `secret` derives for
/// cluster `cluster_id` (as nodes started with that secret serve).
pub fn trust_cluster_ca(secret: &str, cluster_id: &str) {
    let agent = ureq::AgentBuilder::new()
        .tls_config(cluster_tls_config(secret, cluster_id))
        .build();
    *AGENT.write().expect("agent lock") = Some(agent);
}

/// The agent the helpers use (the one [`trust_cluster_ca`] made, else a default one).
pub fn agent() -> ureq::Agent {
    AGENT
        .read()
        .expect("agent lock")
        .clone()
        .unwrap_or_else(ureq::Agent::new)
}

/// The API key every helper sends from now on (`None`: none).
pub fn use_api_key(key: Option<&str>) {
    *API_KEY.write().expect("key lock") = key.map(str::to_string);
}

/// `request` with the key named by [`use_api_key`], if any.
pub fn with_key(request: ureq::Request) -> ureq::Request {
    match API_KEY.read().expect("key lock").as_deref() {
        Some(key) => request.set("Authorization", &format!("Bearer {key}")),
        None => request,
    }
}

/// Sends `request`, with `body` as JSON when given: the response whatever its status code, or
/// the transport error when there was no HTTP answer.
pub fn send(
    request: ureq::Request,
    body: Option<&Value>,
) -> Result<ureq::Response, Box<ureq::Transport>> {
    let result = match body {
        Some(b) => request.send_json(b.clone()),
        None => request.call(),
    };
    match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => Ok(r),
        Err(ureq::Error::Transport(t)) => Err(Box::new(t)),
    }
}

/// An answer's body as JSON, or its text as a JSON string when it is not JSON.
pub fn json_or_text(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// GET a URL and parse JSON, whatever the status code.
pub fn get_json(url: &str, timeout: Duration) -> anyhow::Result<Value> {
    let resp = send(with_key(agent().get(url)).timeout(timeout), None)?;
    Ok(resp.into_json()?)
}

/// POST JSON and return status + parsed body, whatever the status code.
pub fn post_json(url: &str, body: &Value, timeout: Duration) -> anyhow::Result<(u16, Value)> {
    let resp = send(with_key(agent().post(url)).timeout(timeout), Some(body))?;
    let status = resp.status();
    Ok((status, json_or_text(resp.into_string()?)))
}

/// DELETE and return status + parsed body, whatever the status code.
pub fn delete_json(url: &str, timeout: Duration) -> anyhow::Result<(u16, Value)> {
    let resp = send(with_key(agent().delete(url)).timeout(timeout), None)?;
    let status = resp.status();
    Ok((status, json_or_text(resp.into_string()?)))
}

/// GET with an agent: (status, JSON body or the text as a string, value of `x-torua-stale`),
/// whatever the status code.
pub fn get_full(agent: &ureq::Agent, url: &str) -> anyhow::Result<(u16, Value, Option<String>)> {
    let resp = send(with_key(agent.get(url)), None)?;
    let status = resp.status();
    let stale = resp.header("x-torua-stale").map(String::from);
    Ok((status, json_or_text(resp.into_string()?), stale))
}

/// POSTs a prepared JSON body: (µs until the whole answer is read, status, body), whatever the
/// status code; `Err` when there was no HTTP answer.
pub fn post_timed(
    agent: &ureq::Agent,
    url: &str,
    body: &[u8],
) -> anyhow::Result<(f64, u16, Vec<u8>)> {
    let t = Instant::now();
    let resp = match with_key(agent.post(url))
        .set("content-type", "application/json")
        .send_bytes(body)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => anyhow::bail!("POST {url}: {e}"),
    };
    let status = resp.status();
    let mut buf = Vec::with_capacity(1 << 16);
    resp.into_reader()
        .read_to_end(&mut buf)
        .with_context(|| format!("POST {url}: reading the answer"))?;
    Ok((t.elapsed().as_nanos() as f64 / 1e3, status, buf))
}

/// At most `n` bytes of `s` (cut at a character boundary), with `...` when cut: answers quoted in
/// messages.
pub fn short(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}
