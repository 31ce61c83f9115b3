//! The graph API: `POST /graph/ingest`, `GET|DELETE /graph/entities/{id}`, `GET /cluster/shards`.
//! Parsing, validation and rendering; the writes are [`crate::replication::ingest`]'s.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{shard_map_or_503, with_retry_after, ApiError, AppState};
use crate::cluster::messages::{HealthRequest, HealthResponse};
use crate::error::Error;
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
    let map = state
        .shard_map
        .get()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no shard map yet"))?;
    let shard = shard_of(&id, map.shards);
    match route_get_entity(&state, shard, &id).await {
        Ok(Some(rec)) => Ok(Json(
            json!({"entity": rec.entity, "relations": rec.relations, "shard": shard}),
        )),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no entity with id {id:?}"),
        )),
        Err(e) => Err(ApiError::from(e)),
    }
}

pub async fn get_chunk(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let map = state
        .shard_map
        .get()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no shard map yet"))?;
    let shard = shard_of(&id, map.shards);
    match route_get_chunk(&state, shard, &id).await {
        Ok(Some(chunk)) => Ok(Json(json!({"chunk": chunk, "shard": shard}))),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no chunk with id {id:?}"),
        )),
        Err(e) => Err(ApiError::from(e)),
    }
}

pub async fn delete_entity(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let map = state
        .shard_map
        .get()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no shard map yet"))?;
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
) -> Result<Json<Value>, ApiError> {
    let map = state.shard_map.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no shard map yet: the cluster is still forming",
        )
    })?;
    let view = state.cluster.view();
    // Checksums first: they wait until each copy applied what it logged, so the counts gathered
    // next describe the same content.
    let sums = if q.checksum {
        checksums(&state, &view).await
    } else {
        BTreeMap::new()
    };
    let mut stats: BTreeMap<String, BTreeMap<u32, crate::storage::ShardStats>> = BTreeMap::new();
    for (id, answer) in ask_live_nodes(&state, &view, HealthRequest::ShardStats, 10).await {
        if let Ok(HealthResponse::Stats(list)) = answer {
            stats.insert(id, list.into_iter().collect());
        }
    }
    let mut copies = Vec::new();
    let mut pending: Option<u64> = Some(0);
    for a in &map.assignments {
        for node in a.copies() {
            let live = view.member_by_str(node).is_some_and(|m| m.is_live());
            let s = stats.get(node).and_then(|m| m.get(&a.shard));
            let moving_from = map
                .moves
                .iter()
                .any(|m| m.shard == a.shard && m.from == *node);
            let state_name = if !live {
                "unavailable"
            } else if !a.is_in_sync(node) || s.is_none() {
                "initializing"
            } else if moving_from || map.is_draining(node) {
                "relocating"
            } else {
                "started"
            };
            // A node that did not answer: its error stands for each of its copies' checksums.
            let sum = sums.get(node).and_then(|m| match m {
                Ok(m) => m.get(&a.shard).cloned(),
                Err(e) => Some(Err(e.clone())),
            });
            let sum = sum.as_ref();
            copies.push(json!({
                "shard": a.shard,
                "node": node,
                "primary": *node == a.primary,
                "state": state_name,
                "checksum": sum.map(|r| match r {
                    Ok((_, c)) => json!(c),
                    Err(e) => json!({"error": e.to_string()}),
                }),
                "checksum_seq": sum.and_then(|r| r.as_ref().ok().map(|(seq, _)| *seq)),
                "in_sync": a.is_in_sync(node),
                "entities": s.map(|s| s.counts.entities),
                "relations": s.map(|s| s.counts.relations),
                "chunks": s.map(|s| s.counts.chunks),
                "communities": s.map(|s| s.counts.communities),
                "documents": s.map(|s| s.counts.documents),
                "size_bytes": s.map(|s| s.size_bytes),
                "seq": s.map(|s| s.logged_seq),
                "applied_seq": s.map(|s| s.applied_seq),
                "pending_writes": s.map(|s| s.pending_writes),
                "failed_writes": s.map(|s| s.failed_writes),
            }));
            // Unknown when a live copy did not report.
            // (A node that answered without this copy has not opened it: nothing is pending.)
            pending = match (pending, s) {
                (Some(p), Some(s)) => Some(p + s.pending_writes),
                (p, None) if !live || stats.contains_key(node.as_str()) => p,
                _ => None,
            };
        }
    }
    Ok(Json(
        json!({"cluster_id": map.cluster_id, "version": map.version, "term": map.term, "shards": map.shards, "replicas": map.replicas,
               "pending_writes": pending, "moves": map.moves, "draining": map.draining,
               "copies": copies}),
    ))
}

/// Every live node's copy checksums by shard, or why the node did not give them.
async fn checksums(
    state: &AppState,
    view: &membership::ClusterView,
) -> BTreeMap<String, Result<BTreeMap<u32, ChecksumAnswer>, Error>> {
    let mut out = BTreeMap::new();
    for (id, answer) in ask_live_nodes(state, view, HealthRequest::ShardChecksums, 30).await {
        let sums = match answer {
            Ok(HealthResponse::Checksums(list)) => Ok(list.into_iter().collect()),
            Ok(other) => Err(Error::Internal(format!("unexpected answer {other:?}"))),
            Err(e) if e.is_no_answer() => Err(e.context("no answer; ask again")),
            Err(e) => Err(e),
        };
        out.insert(id, sums);
    }
    out
}

/// One copy's checksum with the sequence number it was taken at, or why not.
type ChecksumAnswer = Result<(u64, String), Error>;

/// Sends `request` to every live member in parallel (each within `timeout_s`); each one's answer
/// or error, by node id.
async fn ask_live_nodes(
    state: &AppState,
    view: &membership::ClusterView,
    request: HealthRequest,
    timeout_s: u64,
) -> Vec<(String, Result<HealthResponse, Error>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for m in view.live_members().filter(|m| m.peer_addr.is_some()) {
        let (id, state, request) = (
            m.node_id.as_str().to_string(),
            state.clone(),
            request.clone(),
        );
        tasks.spawn(async move {
            let timeout = std::time::Duration::from_secs(timeout_s);
            let r = crate::peer::call(&state, &id, request, timeout).await;
            (id, r)
        });
    }
    let mut out = Vec::new();
    while let Some(Ok((id, r))) = tasks.join_next().await {
        out.push((id, r));
    }
    out
}
