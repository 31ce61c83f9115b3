//! `POST /broadcast`: `{"path": "/control", "payload": <any JSON>}` delivered to every member.
//! `?timeout=2s` bounds each node's answer (default 2 s, at most 30 s).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::cluster::broadcast::{
    self, BroadcastAnswer, DEFAULT_TIMEOUT, MAX_PAYLOAD_BYTES, MAX_TIMEOUT,
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BroadcastBody {
    /// The handler to deliver to: `/control`.
    #[schema(pattern = "^/control$")]
    path: String,
    /// Any JSON value, at most 65536 bytes serialised.
    payload: Value,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BroadcastQuery {
    /// How long each node may take to answer, e.g. `500ms`, `2s` (default 2s, at most 30s).
    timeout: Option<String>,
}

pub async fn broadcast(
    State(state): State<AppState>,
    super::Params(q): super::Params<BroadcastQuery>,
    body: Result<Json<BroadcastBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<BroadcastAnswer>, ApiError> {
    let body = super::json_body(body, r#"{"path": "/control", "payload": {...}}"#)?;
    let timeout = super::duration_param(
        "timeout",
        q.timeout.as_deref(),
        DEFAULT_TIMEOUT,
        Duration::from_millis(1)..=MAX_TIMEOUT,
    )?;
    if !crate::cluster::broadcast::knows(&body.path) {
        return Err(ApiError::bad_request(format!(
            "no broadcast handler for path {:?}; known paths: {}",
            body.path,
            broadcast::PATHS.join(", ")
        )));
    }
    let size = body.payload.to_string().len();
    if size > MAX_PAYLOAD_BYTES {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("payload is {size} bytes; at most {MAX_PAYLOAD_BYTES}"),
        ));
    }
    Ok(Json(
        broadcast::send_to_all(&state, &body.path, &body.payload, timeout).await,
    ))
}
