//! How the `torua` commands reach a node's HTTP API: the address, the API key, and one call that
//! answers with the status and the JSON body (or says why no answer came).

use std::time::Duration;

use anyhow::bail;
use clap::Args;
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
        let mut request = ureq::request(method, &url).timeout(timeout);
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
            Err(e) => bail!("{method} {url}: {e}; is a torua node listening there?"),
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
