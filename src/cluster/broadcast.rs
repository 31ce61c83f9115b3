//! Broadcast: one control message delivered to every member in parallel, each answer bounded by a
//! per-node timeout so a slow or dead node never delays the others.
//!
//! Receivers dispatch by `path` to a handler. Handlers are part of the binary, so every node knows
//! the same paths and an unknown path is refused before anything is sent.
//! - `/control`: runtime settings, e.g. `{"log_filter": "info,torua=debug"}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::node::context::NodeContext;
use crate::node::wire::Serve;

/// A control message for every node's handler of `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastMessage {
    pub path: String,
    /// The payload as JSON text.
    pub payload_json: String,
    pub from: String,
}

/// Answers a broadcast on this node.
impl Serve for BroadcastMessage {
    type Reply = ();

    async fn serve(self, ctx: &Arc<NodeContext>, _from: &str) -> Result<(), Error> {
        dispatch(ctx, &self.path, &self.payload_json)
    }
}

/// Largest broadcast payload (JSON text).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

pub const PATHS: &[&str] = &["/control"];

/// Whether this binary has a handler for `path`.
pub fn knows(path: &str) -> bool {
    PATHS.contains(&path)
}

/// Runs the handler of `path` on this node.
fn dispatch(ctx: &NodeContext, path: &str, payload_json: &str) -> Result<(), Error> {
    let payload: Value = serde_json::from_str(payload_json)
        .map_err(|e| Error::Invalid(format!("payload is not JSON: {e}")))?;
    match path {
        "/control" => control(ctx, &payload),
        other => Err(Error::Invalid(format!(
            "no handler for path {other:?}; known paths: {}",
            PATHS.join(", ")
        ))),
    }
}

/// `/control`: cluster-wide runtime settings. Every key is validated before any is applied.
fn control(ctx: &NodeContext, payload: &Value) -> Result<(), Error> {
    let invalid = |m: &str| Error::Invalid(m.to_string());
    let obj = payload.as_object().ok_or_else(|| {
        invalid("the /control payload must be an object such as {\"log_filter\": \"debug\"}")
    })?;
    if obj.is_empty() {
        return Err(invalid(
            "the /control payload is empty; accepted keys: log_filter",
        ));
    }
    let mut log_filter = None;
    for (key, value) in obj {
        match key.as_str() {
            "log_filter" => {
                let f = value
                    .as_str()
                    .ok_or_else(|| invalid("log_filter must be a string"))?;
                tracing_subscriber::EnvFilter::try_new(f).map_err(|e| {
                    Error::Invalid(format!("log_filter {f:?} is not a tracing filter: {e}"))
                })?;
                log_filter = Some(f.to_string());
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown /control key {other:?}; accepted keys: log_filter"
                )))
            }
        }
    }
    if let Some(f) = log_filter {
        ctx.log_filter.set(&f)?;
        tracing::info!(filter = %f, "log filter changed by broadcast");
    }
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub node_id: String,
    pub ok: bool,
    #[schema(required = true)]
    pub err: Option<String>,
    pub latency_ms: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BroadcastAnswer {
    pub sent_to: usize,
    pub results: Vec<Outcome>,
}

/// Sends the payload to every member in this node's view (dead ones included: they are reported
/// as failed, which is what a caller needs to know) and collects one outcome per member.
pub async fn send_to_all(
    ctx: &Arc<NodeContext>,
    path: &str,
    payload: &Value,
    timeout: Duration,
) -> BroadcastAnswer {
    let message = BroadcastMessage {
        path: path.to_string(),
        payload_json: payload.to_string(),
        from: ctx.node_id().as_str().to_string(),
    };
    let view = ctx.cluster.view();
    let mut tasks = tokio::task::JoinSet::new();
    for m in &view.members {
        let ctx = ctx.clone();
        let message = message.clone();
        let id = m.node_id.as_str().to_string();
        tasks.spawn(async move {
            let started = Instant::now();
            let err = crate::peer::call(&ctx, &id, message, timeout)
                .await
                .err()
                .map(|e| e.to_string());
            Outcome {
                node_id: id,
                ok: err.is_none(),
                err,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            }
        });
    }
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        if let Ok(outcome) = done {
            results.push(outcome);
        }
    }
    results.sort_by(|a, b| {
        membership::NodeId::new(&a.node_id)
            .ok()
            .cmp(&membership::NodeId::new(&b.node_id).ok())
    });
    BroadcastAnswer {
        sent_to: results.len(),
        results,
    }
}
