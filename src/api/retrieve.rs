//! `POST /retrieve`: GraphRAG retrieval on any node (see `crate::retrieve`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

use super::freshness::{ReadAnswer, ReadParams, ReadResult};
use super::query::permit;
use super::{current_map, ApiError, AppState, Params};
use crate::retrieve::{retrieve as run_retrieve, RetrieveError, RetrieveRequest};

pub async fn retrieve(
    State(state): State<AppState>,
    Params(read): Params<ReadParams>,
    body: Bytes,
) -> ReadResult {
    let req = RetrieveRequest::parse(&body, state.storage.embedding_dim())?;
    let map = current_map(&state)?;
    let _permit = permit(&state, Duration::from_millis(req.timeout_ms)).await?;
    let scope = read.scope(&state);
    run_retrieve(&state, map, &req, &scope)
        .await
        .map(|body| ReadAnswer::new(&state, body, scope.lags()))
        .map_err(|e| match e {
            RetrieveError::Unavailable(r) => ApiError::unavailable(r),
            RetrieveError::Timeout(r) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{r}; raise timeout_ms or lower top_k / hops"),
            ),
            RetrieveError::TooLarge(r) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, r),
            RetrieveError::Internal(r) => {
                tracing::error!(reason = %r, "a retrieval statement was refused");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("retrieval failed inside torua (a bug; please report it): {r}"),
                )
            }
        })
}
