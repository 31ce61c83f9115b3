//! `GET /cluster/health` and `GET /nodes`: the cluster as this node sees it.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState, JsonAnswer};
use crate::cluster::health::{ClusterHealth, Status};
use crate::cluster::messages::{HealthRequest, HealthResponse};
use crate::error::Error;

/// Longest `timeout` a `wait_for_status` request may ask for.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(60);
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// Wait until the status is at least this good: `green`, `yellow` or `red`.
    #[param(inline)]
    wait_for_status: Option<Status>,
    /// How long to wait for `wait_for_status`, e.g. `30s` (default 30s, at most 60s).
    timeout: Option<String>,
}

/// Like Elasticsearch's: `?wait_for_status=green&timeout=30s` waits until the status is at least
/// as good as asked (or the timeout passes, answered with `"timed_out": true`).
pub async fn cluster_health(
    State(state): State<AppState>,
    super::Params(q): super::Params<HealthQuery>,
) -> Result<Json<HealthAnswer>, ApiError> {
    let wanted = q.wait_for_status;
    let timeout = super::duration_param(
        "timeout",
        q.timeout.as_deref(),
        DEFAULT_WAIT,
        Duration::ZERO..=MAX_WAIT,
    )?;
    let (health, timed_out) = match wanted {
        None => (state.health.best(&state).await, None),
        Some(w) => {
            let (health, timed_out) = state.health.wait_for(&state, w, timeout).await;
            (health, Some(timed_out))
        }
    };
    Ok(Json(HealthAnswer { health, timed_out }))
}

/// The answer: the health itself plus `timed_out` when the request waited. Serialised straight
/// from the struct (no intermediate JSON tree: this endpoint is polled hard).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(description = "The cluster's health; `timed_out` is present when the request waited.")]
pub struct HealthAnswer {
    #[serde(flatten)]
    health: ClusterHealth,
    /// Present when the request waited: whether the wait ended by the timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    timed_out: Option<bool>,
}

/// Sends `request` to the coordinator of this node's view.
async fn ask_coordinator(
    state: &AppState,
    request: HealthRequest,
) -> Result<HealthResponse, Error> {
    crate::peer::call_coordinator(state, request, state.settings.coordinator_timeout).await
}

/// `GET /cluster/nodes`: the coordinator's registry.
pub async fn registry(State(state): State<AppState>) -> JsonAnswer {
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
) -> JsonAnswer {
    set_drain(&state, &id, true).await
}

/// `DELETE /nodes/{id}/drain`: stop draining the node (copies may move back by rebalancing).
pub async fn undrain(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> JsonAnswer {
    set_drain(&state, &id, false).await
}

async fn set_drain(state: &AppState, id: &str, draining: bool) -> JsonAnswer {
    let map = crate::cluster::drain::set_draining(state, id, draining).await?;
    Ok(Json(json!({
        "node": id,
        "draining": draining,
        "copies_left": map.held_by(id).len(),
        "map_version": map.version,
    })))
}

/// `POST /nodes/{id}/shards/{shard}/rebuild`: rebuild a node's copy of a shard from another
/// in-sync copy.
pub async fn rebuild(
    State(state): State<AppState>,
    axum::extract::Path((id, shard)): axum::extract::Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let shard: u32 = shard
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{shard:?} is not a shard number")))?;
    crate::replication::anti_entropy::ask_rebuild(&state, &id, shard).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "node": id, "shard": shard, "rebuilding": true })),
    ))
}
