//! `POST /broadcast`: `{"path": "/control", "payload": <any JSON>}` delivered to every member.
//! `?timeout=2s` bounds each node's answer (default 2 s, at most 30 s).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::schema::ErrorBody;
use super::{ApiError, AppState};
use crate::cluster::broadcast::{
    self, BroadcastAnswer, DEFAULT_TIMEOUT, MAX_PAYLOAD_BYTES, MAX_TIMEOUT,
};
use crate::node::config::parse_duration;

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

#[utoipa::path(
    post,
    path = "/broadcast",
    tag = "cluster",
    summary = "Deliver a message to every member",
    description = "Role: `admin`. Sends `payload` to the `path` handler of every member and reports each node's answer. The body is at most 1 MiB; the payload at most 65536 bytes serialised.",
    params(BroadcastQuery),
    request_body(content = BroadcastBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Each member's answer", body = BroadcastAnswer),
        (status = 400, description = "Malformed JSON, a body over 1 MiB, a bad `timeout` or an unknown `path`", body = ErrorBody),
        (status = 413, description = "The payload is larger than 65536 bytes", body = ErrorBody),
    )
)]
pub async fn broadcast(
    State(state): State<AppState>,
    super::Params(q): super::Params<BroadcastQuery>,
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
