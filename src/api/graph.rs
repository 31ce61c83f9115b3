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

use super::openapi::PointReadFailures;
use super::schema::{
    ChunkAnswer, DeleteAnswer, DocumentAnswer, EntityAnswer, ErrorBody, IngestAnswer,
    IngestRefused, IngestUnavailable,
};
use super::{shard_map_or_503, with_retry_after, ApiError, AppState};
use crate::graph::model::Batch;
use crate::graph::partition::shard_of;
use crate::query::read::{route_get_chunk, route_get_document, route_get_entity};

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

#[utoipa::path(
    post,
    path = "/graph/ingest",
    tag = "graph",
    summary = "Write a batch of entities, relations, chunks, communities and documents",
    description = "Role: `write`. A JSON batch, or NDJSON (`Content-Type` containing `ndjson`): one `{\"entity\": {...}}`, `{\"relation\": ...}`, `{\"chunk\": ...}`, `{\"community\": ...}` or `{\"document\": ...}` per line. The body is at most 64 MiB. Every item is checked first (ids and titles at most 512 bytes, texts at most 1 MiB, id lists at most 100000 entries, embeddings of `TORUA_EMBEDDING_DIM` numbers): one invalid item refuses the whole batch. A document stored before whose `text_unit_ids` listed text units the new version does not list (and the batch does not write) first loses them, with whatever only they supported, as `DELETE /graph/documents/{id}` removes them (`replaced`). A 200 may still list items not written (`errors`, `items`).",
    request_body(content(
        (Batch = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 200, description = "Written; `items` lists what was not (a shard's write not acknowledged)", body = IngestAnswer),
        (status = 400, description = "Malformed JSON or NDJSON, an empty batch, or invalid items (`items`; nothing was written)", body = IngestRefused),
        (status = 413, description = "The body is larger than 64 MiB (plain-text answer from the HTTP layer)", content_type = "text/plain", body = String),
        (status = 429, description = "Too many ingest requests in flight on this node", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before asking again (always 1)"))),
        (status = 503, description = "No shard map yet or no quorum (nothing written), or a shard had no room to apply (the answer lists the items not written)", body = IngestUnavailable, headers(("Retry-After" = u32, description = "Seconds to wait before asking again (always 1)"))),
    )
)]
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
        "replaced": outcome.replaced,
    });
    let response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return with_retry_after(response);
    }
    response
}

#[utoipa::path(
    get,
    path = "/graph/entities/{id}",
    tag = "graph",
    summary = "An entity and its relations",
    description = "Role: `read`. Read from an in-sync copy of the entity's shard.",
    params(("id" = String, Path, description = "The entity's id")),
    responses(
        (status = 200, description = "The entity", body = EntityAnswer),
        (status = 404, description = "No entity with this id", body = ErrorBody),
        PointReadFailures,
    )
)]
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

#[utoipa::path(
    get,
    path = "/graph/chunks/{id}",
    tag = "graph",
    summary = "A chunk (text unit)",
    description = "Role: `read`. Read from an in-sync copy of the chunk's shard.",
    params(("id" = String, Path, description = "The chunk's id")),
    responses(
        (status = 200, description = "The chunk", body = ChunkAnswer),
        (status = 404, description = "No chunk with this id", body = ErrorBody),
        PointReadFailures,
    )
)]
pub async fn get_chunk(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let shard = shard_of(&id, current_map(&state)?.shards);
    let chunk = found("chunk", &id, route_get_chunk(&state, shard, &id).await)?;
    Ok(Json(json!({"chunk": chunk, "shard": shard})))
}

#[utoipa::path(
    get,
    path = "/graph/documents/{id}",
    tag = "graph",
    summary = "A document",
    description = "Role: `read`. Read from an in-sync copy of the document's shard.",
    params(("id" = String, Path, description = "The document's id")),
    responses(
        (status = 200, description = "The document", body = DocumentAnswer),
        (status = 404, description = "No document with this id", body = ErrorBody),
        PointReadFailures,
    )
)]
pub async fn get_document(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let shard = shard_of(&id, current_map(&state)?.shards);
    let document = found(
        "document",
        &id,
        route_get_document(&state, shard, &id).await,
    )?;
    Ok(Json(json!({"document": document, "shard": shard})))
}

#[utoipa::path(
    delete,
    path = "/graph/documents/{id}",
    tag = "graph",
    summary = "Delete a document, its text units and what only they support",
    description = "Role: `write`. Removes the document, its text units (the chunks it lists in `text_unit_ids` and the chunks whose `document_id` it is), the entities and relations whose `text_unit_ids` cite only those text units (in every shard, both copies of each relation, with an entity's remaining relations), and takes the removed text units out of the `text_unit_ids` of the other entities and relations. Communities lose removed entities from `entity_ids` and their reports are marked `stale` in retrieval answers. Entities and relations with no `text_unit_ids` are never touched. Idempotent: after a failure (503, 504, a node down) send it again and it finishes what is left; a document already deleted answers 200 with `found: false` and zero counts. At most 100000 text units per document.",
    params(("id" = String, Path, description = "The document's id (at most 512 bytes)")),
    responses(
        (status = 200, description = "Deleted (or nothing left to delete: `found: false`)", body = crate::replication::document::DocumentDeleted),
        (status = 400, description = "The id is too long, or the document has too many text units", body = ErrorBody),
        (status = 500, description = "An internal error", body = ErrorBody),
        (status = 503, description = "No shard map yet, no quorum, a shard with no live copy to read, or a write not taken (with `Retry-After`); what was done stays done: send the delete again", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before asking again (1)"))),
        (status = 504, description = "A write was not acknowledged in time: send the delete again", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    delete,
    path = "/graph/entities/{id}",
    tag = "graph",
    summary = "Delete an entity and its relations",
    description = "Role: `write`.",
    params(("id" = String, Path, description = "The entity's id")),
    responses(
        (status = 200, description = "Deleted", body = DeleteAnswer),
        (status = 400, description = "The request is invalid", body = ErrorBody),
        (status = 404, description = "No entity with this id", body = ErrorBody),
        (status = 500, description = "An internal error", body = ErrorBody),
        (status = 503, description = "No shard map yet (the cluster is forming), or no quorum or no primary could take the write (with `Retry-After`)", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before asking again (1), when the condition passes"))),
        (status = 504, description = "The write was not acknowledged in time", body = ErrorBody),
    )
)]
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
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShardsQuery {
    /// `true`: each copy's checksum too (reads every copy whole).
    #[serde(default)]
    checksum: bool,
}

#[utoipa::path(
    get,
    path = "/cluster/shards",
    tag = "cluster",
    summary = "Every shard copy",
    description = "Role: `read`. Each copy's node, role, state, counts and size, with moves and drains in progress.",
    params(ShardsQuery),
    responses(
        (status = 200, description = "The copies", body = crate::cluster::copies::Copies),
        (status = 400, description = "A query string that does not parse", body = ErrorBody),
        (status = 503, description = "No shard map yet: the cluster is forming (no `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn shards(
    State(state): State<AppState>,
    super::Params(q): super::Params<ShardsQuery>,
) -> Result<Json<crate::cluster::copies::Copies>, ApiError> {
    let map = current_map(&state)?;
    Ok(Json(
        crate::cluster::copies::copies(&state, &map, q.checksum).await,
    ))
}
