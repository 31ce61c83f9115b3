//! `GET /cluster/health` and `GET /nodes`: the cluster as this node sees it.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use membership::{ClusterView, Member};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::cluster_health::{assess, Status};
use crate::config::parse_duration;

/// Longest `timeout` a `wait_for_status` request may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
pub struct HealthQuery {
    wait_for_status: Option<String>,
    timeout: Option<String>,
}

/// Like Elasticsearch's: `?wait_for_status=green&timeout=30s` waits until the status is at least
/// as good as asked (or the timeout passes, answered with `"timed_out": true`).
pub async fn cluster_health(
    State(state): State<AppState>,
    Query(q): Query<HealthQuery>,
) -> Result<Json<Value>, ApiError> {
    let wanted = match q.wait_for_status.as_deref() {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "wait_for_status={s:?}: accepted values are green, yellow, red"
            ))
        })?),
    };
    let timeout = match q.timeout.as_deref() {
        None => DEFAULT_WAIT,
        Some(t) => {
            let d = parse_duration(t).map_err(|e| ApiError::bad_request(format!("timeout: {e}")))?;
            if d > MAX_WAIT {
                return Err(ApiError::bad_request(format!(
                    "timeout={t}: at most {}s",
                    MAX_WAIT.as_secs()
                )));
            }
            d
        }
    };
    let mut timed_out = false;
    let view = match wanted {
        None => state.cluster.view(),
        Some(wanted) => match state
            .cluster
            .wait_for(timeout, |v| assess(v).status <= wanted)
            .await
        {
            Some(v) => v,
            None => {
                timed_out = true;
                state.cluster.view()
            }
        },
    };
    let mut body = health_body(&view);
    if wanted.is_some() {
        body["timed_out"] = timed_out.into();
    }
    Ok(Json(body))
}

/// The answer shape of `/cluster/health`, the same on every node.
pub fn health_body(view: &ClusterView) -> Value {
    let verdict = assess(view);
    json!({
        "cluster_id": view.cluster_id,
        "status": verdict.status,
        "reasons": verdict.reasons,
        "coordinator": view.coordinator,
        "term": view.term,
        "number_of_nodes": view.live_members().count(),
        "number_of_ready_nodes": view.ready_members().count(),
        "answered_by": view.self_id,
        "source": "local",
        "nodes": view.members.iter().map(|m| node_json(m, view)).collect::<Vec<_>>(),
    })
}

fn node_json(m: &Member, view: &ClusterView) -> Value {
    json!({
        "id": m.node_id,
        "state": m.state,
        "is_coordinator": view.coordinator.as_ref() == Some(&m.node_id),
        "generation": m.generation,
        "gossip_addr": m.gossip_addr,
        "http_addr": m.http_addr,
        "peer_addr": m.peer_addr,
        "version": m.version,
        "started_at_ms": m.started_at_ms,
        "last_heartbeat_ms_ago": m.heartbeat_age.as_millis() as u64,
    })
}

/// The member list in the seed system's shape: `{"nodes":[{"id":..,"addr":..,...}]}` where
/// `addr` is the node's HTTP address.
pub async fn nodes(State(state): State<AppState>) -> Json<Value> {
    let view = state.cluster.view();
    let nodes: Vec<Value> = view
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.node_id,
                "addr": m.http_addr,
                "state": m.state,
                "gossip_addr": m.gossip_addr,
                "peer_addr": m.peer_addr,
                "generation": m.generation,
            })
        })
        .collect();
    Json(json!({ "nodes": nodes }))
}
