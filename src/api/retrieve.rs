//! `POST /retrieve`: GraphRAG retrieval on any node (see `crate::retrieve`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::openapi::ScatterFailures;
use super::query::permit;
use super::schema::{ErrorBody, RetrieveAnswer};
use super::{shard_map_or_503, ApiError, AppState};
use crate::retrieve::{retrieve as run_retrieve, RetrieveError, RetrieveRequest};

#[utoipa::path(
    post,
    path = "/retrieve",
    tag = "retrieve",
    summary = "GraphRAG retrieval: the context of a question",
    description = "Role: `read`. From a question (text and/or embedding) to the entities, relations, text units and community reports that answer it, fitted into `max_tokens` in GraphRAG's proportions. The body is at most 1 MiB.",
    request_body(content = crate::retrieve::request::RetrieveBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The context", body = RetrieveAnswer),
        (status = 400, description = "A malformed request or a field out of range", body = ErrorBody),
        (status = 422, description = "The context grew too large to gather", body = ErrorBody),
        ScatterFailures,
    )
)]
pub async fn retrieve(State(state): State<AppState>, body: Bytes) -> Response {
    let dim = state.storage.embedding_dim();
    let req = match RetrieveRequest::parse(&body, dim) {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let map = match shard_map_or_503(&state) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let _permit = match permit(&state, Duration::from_millis(req.timeout_ms)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let allow_partial = req.allow_partial.unwrap_or(state.settings.allow_partial);
    match run_retrieve(&state, map, &req, allow_partial).await {
        Ok(answer) => Json(answer).into_response(),
        Err(RetrieveError::Unavailable(r)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, r).retry_later()
        }
        Err(RetrieveError::Timeout(r)) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{r}; raise timeout_ms or lower top_k / hops"),
        )
        .into_response(),
        Err(RetrieveError::TooLarge(r)) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, r).into_response()
        }
        Err(RetrieveError::Internal(r)) => {
            tracing::error!(reason = %r, "a retrieval statement was refused");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("retrieval failed inside torua (a bug; please report it): {r}"),
            )
            .into_response()
        }
    }
}
