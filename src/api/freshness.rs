//! How fresh a read route's answer must be: the `freshness` query parameter every read route
//! takes, and the `x-torua-behind` header that names the shard copies which answered before the
//! writes acknowledged ahead of the read were applied (see [`crate::storage::freshness`]).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::storage::{Freshness, Lag, ReadScope};

/// The answer header naming the copies that answered behind.
pub const BEHIND_HEADER: &str = "x-torua-behind";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// `bounded` (default): wait up to the node's `TORUA_READ_WAIT` (2s by default) for the
    /// writes acknowledged before this read, then answer from what is applied and name the copies
    /// still behind in the `x-torua-behind` header (and `_shards.behind`). `strict`: wait for them
    /// (read-your-writes) up to 8 s, else 503 with `Retry-After`.
    #[param(inline)]
    freshness: Option<FreshnessParam>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FreshnessParam {
    Bounded,
    Strict,
}

impl ReadParams {
    /// The read's scope: its freshness, with the node's bounded wait.
    pub fn scope(&self, state: &AppState) -> ReadScope {
        ReadScope::new(match self.freshness {
            Some(FreshnessParam::Strict) => Freshness::Strict,
            None | Some(FreshnessParam::Bounded) => Freshness::bounded(state.settings.read_wait),
        })
    }
}

/// What a read route returns.
pub type ReadResult = Result<ReadAnswer, ApiError>;

/// A read's JSON answer, with `x-torua-behind` when a copy answered it behind.
pub struct ReadAnswer<T = serde_json::Value> {
    pub body: Json<T>,
    pub behind: Vec<Lag>,
}

impl<T> ReadAnswer<T> {
    /// `body` with the copies that answered behind (counted in `torua_reads_behind_total`).
    pub fn new(state: &AppState, body: T, behind: Vec<Lag>) -> Self {
        if !behind.is_empty() {
            state.metrics.read_behind();
        }
        ReadAnswer {
            body: Json(body),
            behind,
        }
    }
}

impl<T: serde::Serialize> IntoResponse for ReadAnswer<T> {
    fn into_response(self) -> Response {
        let mut response = self.body.into_response();
        if let Some(value) = behind_header(&self.behind) {
            response.headers_mut().insert(BEHIND_HEADER, value);
        }
        response
    }
}

/// A "not found" of a read: when a copy answered behind, the item may be among the writes it has
/// not applied yet, and the answer says so (in its reason and `x-torua-behind`).
pub fn not_found(reason: String, scope: &ReadScope) -> ApiError {
    let lags = scope.lags();
    let Some(value) = behind_header(&lags) else {
        return ApiError::new(StatusCode::NOT_FOUND, reason);
    };
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "{reason} as of the writes applied so far: its shard's copy is behind acknowledged \
             writes; retry, or ask with freshness=strict to wait for them"
        ),
    )
    .with_header(BEHIND_HEADER, value)
}

/// `shard=3; node=n2; applied_seq=120; logged_seq=180, shard=…`, or none when nothing lagged.
fn behind_header(lags: &[Lag]) -> Option<HeaderValue> {
    if lags.is_empty() {
        return None;
    }
    let text = lags
        .iter()
        .map(|l| {
            format!(
                "shard={}; node={}; applied_seq={}; logged_seq={}",
                l.shard,
                l.node.as_deref().unwrap_or("-"),
                l.applied_seq,
                l.logged_seq
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_lists_every_lagging_copy() {
        let lag = |shard, node: Option<&str>| Lag {
            shard,
            node: node.map(str::to_string),
            applied_seq: 7,
            logged_seq: 9,
        };
        assert_eq!(behind_header(&[]), None);
        assert_eq!(
            behind_header(&[lag(1, Some("n2")), lag(4, None)]).unwrap(),
            "shard=1; node=n2; applied_seq=7; logged_seq=9, shard=4; node=-; applied_seq=7; logged_seq=9"
        );
    }
}
