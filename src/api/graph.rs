//! The graph API: `POST /graph/ingest`, `GET|DELETE /graph/entities/{id}`,
//! `GET /graph/chunks/{id}`, `GET|DELETE /graph/documents/{id}`, `GET /cluster/shards`.
//! Parsing, validation and rendering; the writes are [`crate::replication::ingest`]'s and
//! [`crate::replication::document`]'s, the copies' states [`crate::cluster::copies`]'.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::freshness::{not_found, ReadAnswer, ReadParams, ReadResult};
use super::{current_map, with_retry_after, ApiError, AppState, JsonAnswer, Params};
use crate::graph::model::Batch;
use crate::graph::partition::shard_of;
use crate::query::read::{find_entity, route_get_chunk, route_get_document};
use crate::storage::ReadScope;

/// Largest ingest body.
pub const MAX_INGEST_BYTES: usize = 64 << 20;

/// Adds an NDJSON line's item to its list.
fn push<T: serde::de::DeserializeOwned>(
    list: &mut Vec<T>,
    item: Value,
) -> Result<(), serde_json::Error> {
    list.push(serde_json::from_value(item)?);
    Ok(())
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
            "entity" => push(&mut batch.entities, item),
            "relation" => push(&mut batch.relations, item),
            "chunk" => push(&mut batch.chunks, item),
            "community" => push(&mut batch.communities, item),
            "document" => push(&mut batch.documents, item),
            other => {
                return Err(ApiError::bad_request(format!(
                    "line {}: unknown kind {other:?}",
                    n + 1
                )))
            }
        }
        .map_err(bad)?;
    }
    Ok(batch)
}

pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let Ok(_permit) = state.ingest_permits.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many ingest requests in flight on this node; retry after a second",
        )
        .retry_later());
    };
    let batch = parse(&headers, &body)?;
    if batch.is_empty() {
        return Err(ApiError::bad_request(
            "empty batch: give entities, relations, chunks, communities or documents",
        ));
    }
    let errors = batch.validate(state.storage.embedding_dim());
    if !errors.is_empty() {
        // Nothing is written when any item is invalid: a bad batch never half-applies.
        let body = json!({"error": {"status": 400, "reason": format!("{} invalid item(s); nothing was written", errors.len())}, "items": errors});
        return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    let map = current_map(&state)?;
    state.quorum()?;
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
        "replaced": outcome.replaced,
    });
    let response = (status, Json(body)).into_response();
    Ok(if status == StatusCode::SERVICE_UNAVAILABLE {
        with_retry_after(response)
    } else {
        response
    })
}

/// A point-read route `$name`: the `$what` with the id in the path, read by `$route` from an
/// in-sync copy of its shard, answered as `$answer` (given the item and its shard).
macro_rules! point_read_route {
    ($name:ident, $what:literal, $route:path, |$item:ident, $shard:ident| $answer:expr) => {
        pub async fn $name(
            State(state): State<AppState>,
            Path(id): Path<String>,
            Params(read): Params<ReadParams>,
        ) -> ReadResult {
            let $shard = shard_of(&id, current_map(&state)?.shards);
            let scope = read.scope(&state);
            let read = $route(&state, $shard, &id, &scope).await;
            let $item = found($what, &id, read, &scope)?;
            Ok(ReadAnswer::new(&state, $answer, scope.lags()))
        }
    };
}

/// An entity with its relations, wherever its routing key placed it.
pub async fn get_entity(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(read): Params<ReadParams>,
) -> ReadResult {
    let shards = current_map(&state)?.shards;
    let scope = read.scope(&state);
    let read = find_entity(&state, &id, shards, &scope).await;
    let (shard, rec) = found("entity", &id, read, &scope)?;
    let answer = json!({"entity": rec.entity, "relations": rec.relations, "shard": shard});
    Ok(ReadAnswer::new(&state, answer, scope.lags()))
}
point_read_route!(get_chunk, "chunk", route_get_chunk, |chunk, shard| json!({
    "chunk": chunk, "shard": shard
}));
point_read_route!(
    get_document,
    "document",
    route_get_document,
    |document, shard| json!({
        "document": document, "shard": shard
    })
);

pub async fn delete_document(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<crate::replication::document::DocumentDeleted>, ApiError> {
    current_map(&state)?;
    state.quorum()?;
    let answer = crate::replication::document::delete_document(&state, &id)
        .await
        .map_err(|e| {
            e.context(format!(
                "deleting document {:?} stopped part-way (what was removed stays removed; send the delete again to finish)",
                id.chars().take(80).collect::<String>()
            ))
        })?;
    Ok(Json(answer))
}

/// A point read's item, or 404 when no copy holds `id` (which says so when the copy that
/// answered was behind).
fn found<T>(
    what: &str,
    id: &str,
    read: Result<Option<T>, crate::error::Error>,
    scope: &ReadScope,
) -> Result<T, ApiError> {
    read?.ok_or_else(|| not_found(format!("no {what} with id {id:?}"), scope))
}

pub async fn delete_entity(State(state): State<AppState>, Path(id): Path<String>) -> JsonAnswer {
    let map = current_map(&state)?;
    state.quorum()?;
    let relations = crate::replication::ingest::delete_entity(&state, &id, map.shards).await?;
    Ok(Json(json!({"deleted": id, "relations": relations})))
}

/// Every shard copy: node, primary or replica, in sync or not, counts and size.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShardsQuery {
    /// `true`: each copy's checksum too (reads every copy whole).
    #[serde(default)]
    checksum: bool,
}

pub async fn shards(
    State(state): State<AppState>,
    super::Params(q): super::Params<ShardsQuery>,
) -> Result<Json<crate::cluster::copies::Copies>, ApiError> {
    let map = current_map(&state)?;
    Ok(Json(
        crate::cluster::copies::copies(&state, &map, q.checksum).await,
    ))
}
