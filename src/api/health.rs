//! `GET /health` (this process is up) and `GET /metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::node::metrics::CopyBacklog;

pub async fn node_health(State(state): State<AppState>) -> Json<Value> {
    let view = state.cluster.view();
    let me = view.member(state.cluster.self_id());
    Json(json!({
        "status": "ok",
        "node_id": state.cluster.self_id(),
        "state": me.map(|m| m.state.as_str()),
        "generation": state.cluster.generation(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": state.settings.started.elapsed().as_millis() as u64,
        "log_filter": state.log_filter.current(),
    }))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut copies = Vec::new();
    for shard in state.storage.on_disk() {
        if let Some(copy) = state.storage.get(shard) {
            if let Ok(s) = copy.stats().await {
                copies.push(CopyBacklog {
                    shard,
                    pending: s.pending_writes,
                    failed: s.failed_writes,
                    apply_lag: copy.apply_lag(),
                    last_round_lag: copy.applier_timing().last_round_lag,
                });
            }
        }
    }
    state.metrics.set_copies(&copies);
    state.metrics.set_algorithm_tasks(
        state.algorithms.tasks.running(),
        state.algorithms.workers.count(),
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&state.cluster),
    )
}
