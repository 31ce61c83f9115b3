//! The HTTP API every node answers (axum). Routes live in one file per area; this module builds
//! the router, its limits, and the JSON error shape. Every route but `/health`, `/openapi.json`
//! and the operator console (`/ui`, static files: [`console`]) needs an API key with the role it
//! names (see [`auth`]) unless the node runs without keys.

mod algorithms;
mod auth;
mod broadcast;
mod cluster;
mod console;
mod freshness;
mod graph;
mod health;
mod keys;
mod openapi;
mod query;
mod retrieve;
mod schema;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::timeout::TimeoutLayer;

use crate::error::Error;
use crate::node::context::NodeContext;
use crate::node::metrics::track_http;

/// Request bodies are small control messages in this API; refuse anything bigger.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;
/// No request may hold a connection longer than this (waits such as `wait_for_status` are
/// capped below it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(65);

/// What handlers share.
pub type AppState = Arc<NodeContext>;

/// What most handlers answer: a JSON value, or an error.
pub type JsonAnswer = Result<Json<serde_json::Value>, ApiError>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::node_health))
        .route("/cluster/health", get(cluster::cluster_health))
        .route("/cluster/nodes", get(cluster::registry))
        .route("/nodes", get(cluster::nodes))
        .route(
            "/nodes/{id}/drain",
            post(cluster::drain).delete(cluster::undrain),
        )
        .route("/nodes/{id}/shards/{shard}/rebuild", post(cluster::rebuild))
        .route("/broadcast", post(broadcast::broadcast))
        .route("/cluster/shards", get(graph::shards))
        .route(
            "/graph/ingest",
            post(graph::ingest).layer(axum::extract::DefaultBodyLimit::max(
                graph::MAX_INGEST_BYTES,
            )),
        )
        .route(
            "/graph/entities/{id}",
            get(graph::get_entity).delete(graph::delete_entity),
        )
        .route("/graph/chunks/{id}", get(graph::get_chunk))
        .route(
            "/graph/documents/{id}",
            get(graph::get_document).delete(graph::delete_document),
        )
        .route("/query", post(query::query))
        .route("/graph/neighborhood", post(query::neighborhood))
        .route("/graph/path", post(query::path))
        .route("/retrieve", post(retrieve::retrieve))
        .route("/graph/algorithms/{name}", post(algorithms::run))
        .route("/tasks", get(algorithms::list))
        .route("/tasks/{id}", get(algorithms::get))
        .route("/tasks/{id}/_cancel", post(algorithms::cancel))
        .route("/metrics", get(health::metrics))
        .route("/keys", post(keys::create).get(keys::list))
        .route("/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/openapi.json", get(openapi::openapi_json))
        .route(console::PREFIX, get(console::index))
        .route("/ui/", get(console::index))
        .route("/ui/{*path}", get(console::file))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            mark_possibly_stale,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            track_http,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// On a node without a quorum (minority side of a partition) every answer carries
/// `x-torua-stale: <reason>`: reads still answer, from copies that may miss the majority's
/// latest writes.
async fn mark_possibly_stale(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    if let Err(reason) = state.quorum() {
        if let Ok(value) = axum::http::HeaderValue::from_str(&reason.to_string()) {
            response.headers_mut().insert("x-torua-stale", value);
        }
    }
    response
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {uri}; see the README for the API"),
    )
}

/// A JSON error: `{"error": {"status": 400, "reason": "..."}}`, with `Retry-After: 1` when
/// asking again may succeed.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
    retry: bool,
    /// One more header (e.g. `x-torua-behind` on a 404 read from a copy behind its writes).
    header: Option<(&'static str, axum::http::HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.into(),
            retry: false,
            header: None,
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    /// A 503 with `Retry-After: 1`.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, reason).retry_later()
    }

    /// The same error answered with the header `name: value` too.
    pub fn with_header(mut self, name: &'static str, value: axum::http::HeaderValue) -> Self {
        self.header = Some((name, value));
        self
    }

    /// The same error answered with `Retry-After: 1`: the condition passes (busy, forming, a
    /// shard down).
    pub fn retry_later(mut self) -> Self {
        self.retry = true;
        self
    }
}

/// Adds `Retry-After: 1` to a response.
pub fn with_retry_after(mut r: Response) -> Response {
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        "1".parse().expect("header"),
    );
    r
}

/// The node's shard map, or the 503 a request gets before the cluster has formed.
pub fn current_map(state: &AppState) -> Result<crate::cluster::shard_map::ShardMap, ApiError> {
    state.shard_map.get().ok_or_else(|| {
        ApiError::unavailable(
            "no shard map yet: the cluster is still forming (TORUA_BOOTSTRAP_EXPECT)",
        )
    })
}

/// A JSON body, or a 400 that says what was wrong with it and what `expected` looks like.
pub fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
    expected: &str,
) -> Result<T, ApiError> {
    body.map(|Json(t)| t)
        .map_err(|e| ApiError::bad_request(format!("{}; expected {expected}", e.body_text())))
}

/// A duration query parameter such as `timeout=2s`: `default` when absent, else within `range`.
pub fn duration_param(
    name: &str,
    value: Option<&str>,
    default: Duration,
    range: std::ops::RangeInclusive<Duration>,
) -> Result<Duration, ApiError> {
    let Some(raw) = value else {
        return Ok(default);
    };
    let d = crate::node::config::parse_duration(raw)
        .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))?;
    if !range.contains(&d) {
        return Err(ApiError::bad_request(format!(
            "{name}={raw}: must be between {:?} and {:?}",
            range.start(),
            range.end()
        )));
    }
    Ok(d)
}

/// The one mapping from a service's [`Error`] to an HTTP status: the client's fault is 4xx, a
/// condition that passes is 503 with `Retry-After`, a time limit 504, anything else 500.
impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Busy(_)
            | Error::Unavailable(_)
            | Error::Unreachable(_)
            | Error::NoQuorum(_)
            | Error::NotPrimary { .. }
            | Error::NotCoordinator { .. }
            | Error::NotRegistered
            | Error::Fenced(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Diverged(_) | Error::NeedsRebuild(_) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError {
            retry: status == StatusCode::SERVICE_UNAVAILABLE,
            ..ApiError::new(status, e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"status": self.status.as_u16(), "reason": self.reason}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        if self.retry {
            with_retry_after(response)
        } else {
            response
        }
    }
}

/// `axum::extract::Query` whose refusal (a malformed or repeated parameter) is the API's JSON
/// 400 instead of axum's plain text.
pub struct Params<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))
    }
}
