//! `GET /cluster/health` and `GET /nodes`: the cluster as this node sees it.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use membership::ClusterView;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::cluster::health::{self, ClusterHealth, Status};
use crate::cluster::messages::{HealthRequest, HealthResponse};
use crate::error::Error;
use crate::node::config::parse_duration;

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
) -> Result<Json<HealthAnswer>, ApiError> {
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
            let d =
                parse_duration(t).map_err(|e| ApiError::bad_request(format!("timeout: {e}")))?;
            if d > MAX_WAIT {
                return Err(ApiError::bad_request(format!(
                    "timeout={t}: at most {}s",
                    MAX_WAIT.as_secs()
                )));
            }
            d
        }
    };
    let started = tokio::time::Instant::now();
    loop {
        let health = best_health(&state).await;
        let done = match wanted {
            None => true,
            Some(w) => health.status <= w,
        };
        let timed_out = !done && started.elapsed() >= timeout;
        if done || timed_out {
            return Ok(Json(HealthAnswer {
                health,
                timed_out: wanted.map(|_| timed_out),
            }));
        }
        // Wake on a membership change or poll (reports change the coordinator's verdict too).
        let mut views = state.cluster.view_watcher();
        let _ = tokio::time::timeout(POLL, views.changed()).await;
    }
}

/// The answer: the health itself plus `timed_out` when the request waited. Serialised straight
/// from the struct (no intermediate JSON tree: this endpoint is polled hard).
#[derive(serde::Serialize)]
pub struct HealthAnswer {
    #[serde(flatten)]
    health: ClusterHealth,
    #[serde(skip_serializing_if = "Option::is_none")]
    timed_out: Option<bool>,
}

/// How long a non-coordinator reuses the coordinator's answer. Concurrent requests share one peer
/// request instead of each asking the coordinator.
const COORDINATOR_ANSWER_TTL: Duration = Duration::from_millis(50);

/// Poll interval of `wait_for_status`.
const POLL: Duration = Duration::from_millis(100);

/// The coordinator's aggregated health (`source: "coordinator"`), or this node's own view
/// (`source: "local"`) when the coordinator does not answer within `TORUA_COORDINATOR_TIMEOUT`.
pub async fn best_health(state: &AppState) -> ClusterHealth {
    let view = state.cluster.view();
    if !view.is_coordinator() {
        // One request in flight at a time; the others wait for it and reuse its answer.
        let mut cached = state.health_cache.lock().await;
        if let Some((at, h)) = cached.as_ref() {
            if at.elapsed() < COORDINATOR_ANSWER_TTL
                && h.coordinator.as_deref() == view.coordinator.as_ref().map(|c| c.as_str())
            {
                return h.clone();
            }
        }
        let h = fetch_health(state, &view).await;
        if h.source == "coordinator" {
            *cached = Some((std::time::Instant::now(), h.clone()));
        }
        return h;
    }
    fetch_health(state, &view).await
}

/// After the coordinator failed to answer, answer locally at once for this long instead of
/// waiting `TORUA_COORDINATOR_TIMEOUT` on every request (a dead coordinator stays in the view until
/// failure detection, ~1 s).
const COORDINATOR_RETRY_AFTER: Duration = Duration::from_millis(500);

async fn fetch_health(state: &AppState, view: &ClusterView) -> ClusterHealth {
    let view = view.clone();
    let coordinator = view
        .coordinator
        .as_ref()
        .map(|c| (c.as_str().to_string(), view.member(c).map(|m| m.generation)));
    if let Some((at, who, error)) = state
        .coordinator_failure
        .lock()
        .expect("failure lock")
        .clone()
    {
        if at.elapsed() < COORDINATOR_RETRY_AFTER && Some(&who) == coordinator.as_ref() {
            return local_with_note(
                state,
                &view,
                format!(
                    "{error} (less than {} ms ago; not asked again yet)",
                    COORDINATOR_RETRY_AFTER.as_millis()
                ),
            );
        }
    }
    let result = match ask_coordinator(state, HealthRequest::ClusterHealth).await {
        Ok(HealthResponse::ClusterHealth(h)) => {
            if let (Some(term), Some(by)) = (h.term, &h.coordinator) {
                state.cluster.observe_term(term, by);
            }
            return *h;
        }
        Ok(other) => format!("coordinator answered {other:?}"),
        Err(e) => e.to_string(),
    };
    if let Some(who) = coordinator {
        *state.coordinator_failure.lock().expect("failure lock") =
            Some((std::time::Instant::now(), who, result.clone()));
    }
    local_with_note(state, &view, result)
}

fn local_with_note(state: &AppState, view: &ClusterView, note: String) -> ClusterHealth {
    let mut h = health::with_shards(health::local(view), view, state.shard_map.get().as_ref());
    h.coordinator_error = Some(note);
    h
}

/// Sends `request` to the coordinator of this node's view.
async fn ask_coordinator(
    state: &AppState,
    request: HealthRequest,
) -> Result<HealthResponse, Error> {
    crate::peer::call_coordinator(state, request, state.settings.coordinator_timeout).await
}

/// `GET /cluster/nodes`: the coordinator's registry.
pub async fn registry(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let view = state.cluster.view();
    match ask_coordinator(&state, HealthRequest::Registry).await {
        Ok(HealthResponse::Registry(entries)) => Ok(Json(json!({
            "coordinator": view.coordinator,
            "term": view.term,
            "nodes": entries,
        }))),
        Ok(other) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the coordinator could not list its registry ({other:?}); retry once the cluster has settled"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the coordinator did not answer: {e}; retry, or read GET /nodes for this node's gossip view"),
        )),
    }
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

/// `POST /nodes/{id}/drain`: move every shard copy and primary role off the node (progress in
/// `GET /cluster/shards`); lasts until `DELETE /nodes/{id}/drain`.
pub async fn drain(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_drain(&state, &id, true).await
}

/// `DELETE /nodes/{id}/drain`: stop draining the node (copies may move back by rebalancing).
pub async fn undrain(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_drain(&state, &id, false).await
}

async fn set_drain(state: &AppState, id: &str, draining: bool) -> Result<Json<Value>, ApiError> {
    if membership::NodeId::new(id).is_err() {
        return Err(ApiError::bad_request(format!(
            "{id:?} is not a node id (letters, digits, '.', '_', '-')"
        )));
    }
    // The coordinator may be changing hands or busy: retry for a few seconds before answering 503.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let result = loop {
        match crate::cluster::coordinator::ask_set_draining(state, id, draining, false).await {
            Err(e) if !matches!(e, Error::NotFound(_)) && std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "drain request not accepted yet; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => break other,
        }
    };
    match result {
        Ok(map) => Ok(Json(json!({
            "node": id,
            "draining": draining,
            "copies_left": map.held_by(id).len(),
            "map_version": map.version,
        }))),
        Err(e @ Error::NotFound(_)) => Err(ApiError::from(e)),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the coordinator did not accept the drain: {e}; retry"),
        )),
    }
}
