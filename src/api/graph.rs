//! The graph API: `POST /graph/ingest`, `GET|DELETE /graph/entities/{id}`, `GET /cluster/shards`.
//! Parsing, validation and rendering; the writes are [`crate::replication::ingest`]'s, the copies'
//! states [`crate::cluster::copies`]'.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{shard_map_or_503, with_retry_after, ApiError, AppState};
use crate::graph::model::Batch;
use crate::graph::partition::shard_of;
use crate::query::read::{route_get_chunk, route_get_entity};

/// Largest ingest body.
pub const MAX_INGEST_BYTES: usize = 64 << 20;

fn busy(reason: String) -> Response {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, reason).retry_later()
}

/// Parses a JSON batch, or NDJSON (one `{"entity": {...}}` / `{"relation": ...}` ... per line).
fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Batch, ApiError> {
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("ndjson"));
    if !ndjson {
        return serde_json::from_slice::<Batch>(body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON batch: {e}")));
    }
    let mut batch = Batch::default();
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: serde_json::Map<String, Value> = serde_json::from_slice(line)
            .map_err(|e| ApiError::bad_request(format!("line {}: malformed JSON: {e}", n + 1)))?;
        if value.len() != 1 {
            return Err(ApiError::bad_request(format!(
                "line {}: expected one key (entity, relation, chunk, community or document)",
                n + 1
            )));
        }
        let (kind, item) = value.into_iter().next().expect("one entry");
        let bad =
            |e: serde_json::Error| ApiError::bad_request(format!("line {}: {kind}: {e}", n + 1));
        match kind.as_str() {
            "entity" => batch
                .entities
                .push(serde_json::from_value(item).map_err(bad)?),
            "relation" => batch
                .relations
                .push(serde_json::from_value(item).map_err(bad)?),
            "chunk" => batch
                .chunks
                .push(serde_json::from_value(item).map_err(bad)?),
            "community" => batch
                .communities
                .push(serde_json::from_value(item).map_err(bad)?),
            "document" => batch
                .documents
                .push(serde_json::from_value(item).map_err(bad)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "line {}: unknown kind {other:?}",
                    n + 1
                )))
            }
        }
    }
    Ok(batch)
}

pub async fn ingest(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let Ok(_permit) = state.ingest_permits.clone().try_acquire_owned() else {
        return busy(
            "too many ingest requests in flight on this node; retry after a second".into(),
        );
    };
    let batch = match parse(&headers, &body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if batch.is_empty() {
        return ApiError::bad_request(
            "empty batch: give entities, relations, chunks, communities or documents",
        )
        .into_response();
    }
    let errors = batch.validate(state.storage.embedding_dim());
    if !errors.is_empty() {
        // Nothing is written when any item is invalid: a bad batch never half-applies.
        let body = json!({"error": {"status": 400, "reason": format!("{} invalid item(s); nothing was written", errors.len())}, "items": errors});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let map = match shard_map_or_503(&state) {
        Ok(map) => map,
        Err(r) => return r,
    };
    if let Err(e) = state.quorum() {
        return ApiError::from(e).into_response();
    }
    let counts = json!({
        "entities": batch.entities.len(), "relations": batch.relations.len(), "chunks": batch.chunks.len(),
        "communities": batch.communities.len(), "documents": batch.documents.len(),
    });
    let outcome = crate::replication::ingest::ingest(&state, batch, map.shards).await;
    let failed = outcome.failed;
    let status = if failed.is_empty() {
        StatusCode::OK
    } else if outcome.busy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "took_ms": started.elapsed().as_millis() as u64,
        "errors": !failed.is_empty(),
        "counts": counts,
        "failed": failed.len(),
        "items": failed,
    });
    let response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return with_retry_after(response);
    }
    response
}

pub async fn get_entity(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let shard = shard_of(&id, current_map(&state)?.shards);
    let rec = found("entity", &id, route_get_entity(&state, shard, &id).await)?;
    Ok(Json(
        json!({"entity": rec.entity, "relations": rec.relations, "shard": shard}),
    ))
}

pub async fn get_chunk(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let shard = shard_of(&id, current_map(&state)?.shards);
    let chunk = found("chunk", &id, route_get_chunk(&state, shard, &id).await)?;
    Ok(Json(json!({"chunk": chunk, "shard": shard})))
}

/// This node's shard map, or 503 while the cluster is forming.
fn current_map(state: &AppState) -> Result<crate::cluster::shard_map::ShardMap, ApiError> {
    state
        .shard_map
        .get()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no shard map yet"))
}

/// A point read's item, or 404 when no copy holds `id`.
fn found<T>(
    what: &str,
    id: &str,
    read: Result<Option<T>, crate::error::Error>,
) -> Result<T, ApiError> {
    read?.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no {what} with id {id:?}")))
}

pub async fn delete_entity(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let map = current_map(&state)?;
    state.quorum()?;
    let relations = crate::replication::ingest::delete_entity(&state, &id, map.shards).await?;
    Ok(Json(json!({"deleted": id, "relations": relations})))
}

/// Every shard copy: node, primary or replica, in sync or not, counts and size.
#[derive(Debug, serde::Deserialize)]
pub struct ShardsQuery {
    /// `true`: each copy's checksum too (reads every copy whole).
    #[serde(default)]
    checksum: bool,
}

pub async fn shards(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<ShardsQuery>,
) -> Result<Json<crate::cluster::copies::Copies>, ApiError> {
    let map = current_map(&state)?;
    Ok(Json(
        crate::cluster::copies::copies(&state, &map, q.checksum).await,
    ))
}
