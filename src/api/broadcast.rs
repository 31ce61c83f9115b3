//! `POST /broadcast`: `{"path": "/control", "payload": <any JSON>}` delivered to every member.
//! `?timeout=2s` bounds each node's answer (default 2 s, at most 30 s).

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::cluster::broadcast::{
    self, BroadcastAnswer, DEFAULT_TIMEOUT, MAX_PAYLOAD_BYTES, MAX_TIMEOUT,
};
use crate::node::config::parse_duration;

#[derive(Debug, Deserialize)]
pub struct BroadcastBody {
    path: String,
    payload: Value,
}

#[derive(Debug, Deserialize)]
pub struct BroadcastQuery {
    timeout: Option<String>,
}

pub async fn broadcast(
    State(state): State<AppState>,
    Query(q): Query<BroadcastQuery>,
    body: Result<Json<BroadcastBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<BroadcastAnswer>, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; expected {{\"path\": \"/control\", \"payload\": {{...}}}}",
            e.body_text()
        ))
    })?;
    let timeout = match q.timeout.as_deref() {
        None => DEFAULT_TIMEOUT,
        Some(t) => {
            let d =
                parse_duration(t).map_err(|e| ApiError::bad_request(format!("timeout: {e}")))?;
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err(ApiError::bad_request(format!(
                    "timeout={t}: must be between 1ms and {}s",
                    MAX_TIMEOUT.as_secs()
                )));
            }
            d
        }
    };
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
