//! `GET /cluster/health` and `GET /nodes`: the cluster as this node sees it.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::openapi::DrainFailures;
use super::schema::{DrainAnswer, ErrorBody, NodesAnswer, RebuildAnswer, RegistryAnswer};
use super::{ApiError, AppState};
use crate::cluster::health::{ClusterHealth, Status};
use crate::cluster::messages::{HealthRequest, HealthResponse};
use crate::error::Error;
use crate::node::config::parse_duration;

/// Longest `timeout` a `wait_for_status` request may ask for.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(60);
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// Wait until the status is at least this good: `green`, `yellow` or `red`.
    #[param(pattern = "^(green|yellow|red)$")]
    wait_for_status: Option<String>,
    /// How long to wait for `wait_for_status`, e.g. `30s` (default 30s, at most 60s).
    timeout: Option<String>,
}

/// Like Elasticsearch's: `?wait_for_status=green&timeout=30s` waits until the status is at least
/// as good as asked (or the timeout passes, answered with `"timed_out": true`).
#[utoipa::path(
    get,
    path = "/cluster/health",
    tag = "cluster",
    summary = "The cluster's health",
    description = "Role: `read`. The coordinator's aggregated verdict, or this node's local one when the coordinator does not answer (`source`). With `wait_for_status`, waits until the status is at least that good or `timeout` passes (`timed_out`).",
    params(HealthQuery),
    responses(
        (status = 200, description = "The health", body = HealthAnswer),
        (status = 400, description = "A bad `wait_for_status` or `timeout`, or a query string that does not parse", body = ErrorBody),
    )
)]
pub async fn cluster_health(
    State(state): State<AppState>,
    super::Params(q): super::Params<HealthQuery>,
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
#[utoipa::path(
    get,
    path = "/cluster/nodes",
    tag = "cluster",
    summary = "The coordinator's registry",
    description = "Role: `read`. Every registered node with its registration and last health report, as the coordinator has them.",
    responses(
        (status = 200, description = "The registry", body = RegistryAnswer),
        (status = 503, description = "The coordinator did not answer or could not list its registry (no `Retry-After`; `GET /nodes` gives this node's gossip view)", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    get,
    path = "/nodes",
    tag = "cluster",
    summary = "The members in this node's gossip view",
    description = "Role: `read`. `addr` is each node's HTTP address.",
    responses((status = 200, description = "The members", body = NodesAnswer))
)]
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
#[utoipa::path(
    post,
    path = "/nodes/{id}/drain",
    tag = "cluster",
    summary = "Drain a node",
    description = "Role: `admin`. Moves every shard copy and primary role off the node (progress in `GET /cluster/shards`); lasts until `DELETE /nodes/{id}/drain`.",
    params(("id" = String, Path, description = "The node's id")),
    responses(
        (status = 200, description = "The shard map records the change", body = DrainAnswer),
        DrainFailures,
    )
)]
pub async fn drain(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_drain(&state, &id, true).await
}

/// `DELETE /nodes/{id}/drain`: stop draining the node (copies may move back by rebalancing).
#[utoipa::path(
    delete,
    path = "/nodes/{id}/drain",
    tag = "cluster",
    summary = "Stop draining a node",
    description = "Role: `admin`. Copies may move back by rebalancing.",
    params(("id" = String, Path, description = "The node's id")),
    responses(
        (status = 200, description = "The shard map records the change", body = DrainAnswer),
        DrainFailures,
    )
)]
pub async fn undrain(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_drain(&state, &id, false).await
}

async fn set_drain(state: &AppState, id: &str, draining: bool) -> Result<Json<Value>, ApiError> {
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
#[utoipa::path(
    post,
    path = "/nodes/{id}/shards/{shard}/rebuild",
    tag = "cluster",
    summary = "Rebuild a shard copy from another copy",
    description = "Role: `admin`. The copy leaves the in-sync set (a primary hands its role to another in-sync copy first) and is replaced by a snapshot of the primary's, then rejoins; progress in `GET /cluster/shards`. For a copy you distrust, e.g. one of two copies anti-entropy found differing (`GET /cluster/health` names the shard).",
    params(
        ("id" = String, Path, description = "The node holding the copy"),
        ("shard" = u32, Path, description = "The shard"),
    ),
    responses(
        (status = 202, description = "The node marked its copy for a rebuild", body = RebuildAnswer),
        (status = 400, description = "The copy is the shard's only in-sync copy: there is nothing to rebuild it from", body = ErrorBody),
        (status = 404, description = "No such shard, or the node holds no copy of it", body = ErrorBody),
        (status = 503, description = "No shard map yet, or the node could not be reached", body = ErrorBody),
        (status = 504, description = "The node did not answer in time", body = ErrorBody),
        (status = 500, description = "An internal error (a bug)", body = ErrorBody),
    )
)]
pub async fn rebuild(
    State(state): State<AppState>,
    axum::extract::Path((id, shard)): axum::extract::Path<(String, String)>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let shard: u32 = shard.parse().map_err(|_| {
        ApiError::from(crate::error::Error::Invalid(format!(
            "{shard:?} is not a shard number"
        )))
    })?;
    crate::replication::anti_entropy::ask_rebuild(&state, &id, shard).await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({ "node": id, "shard": shard, "rebuilding": true })),
    ))
}
