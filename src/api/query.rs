//! The distributed read API: `POST /query` (read-only Cypher over every shard, merged),
//! `POST /graph/neighborhood` and `POST /graph/path` (traversals across shards).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::freshness::{not_found, ReadAnswer, ReadParams, ReadResult};
use super::{current_map, ApiError, AppState, Params};
use crate::graph::model::MAX_ID_BYTES;
use crate::query::run::{self, CypherAnswer, CypherRequest};
use crate::query::traverse::{
    neighborhood as run_neighborhood, shortest_path, PathAnswer, Traversal, TraverseError,
};
use crate::storage::{Direction, Edge, EntitySummary, RelationFilter};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Below the HTTP layer's request timeout.
pub(super) const MAX_TIMEOUT_MS: u64 = 60_000;
pub(super) const MAX_SEEDS: usize = 1000;
pub(super) const MAX_HOPS: u32 = 3;
pub(super) const MAX_PATH_HOPS: u32 = 8;
pub(super) const MAX_NODES: u64 = 100_000;
pub(super) const MAX_RELATIONS: u64 = 1_000_000;

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed request: {e}")))
}

fn timeout_ms(v: Option<u64>) -> Result<u64, ApiError> {
    let t = v.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&t) {
        return Err(ApiError::bad_request(format!(
            "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"
        )));
    }
    Ok(t)
}

/// Waits for a slot among the node's concurrent distributed queries, at most `wait`.
pub(super) async fn permit(
    state: &AppState,
    wait: Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    acquire(&state.reads.permits, wait, || {
        "too many queries in flight on this node; retry after a second".into()
    })
    .await
}

/// Waits for a slot among the node's concurrent user Cypher statements, at most a second (or
/// the query's time limit if shorter).
async fn user_query_permit(
    state: &AppState,
    timeout: Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    acquire(
        &state.reads.user_queries,
        timeout.min(Duration::from_secs(1)),
        || {
            format!(
                "this node already runs {} Cypher statements (TORUA_MAX_USER_QUERIES); retry \
             after a second or send the query to another node",
                state.reads.max_user_queries
            )
        },
    )
    .await
}

/// A permit of `slots` within `wait`, or a 429 with `Retry-After` saying `why`.
async fn acquire(
    slots: &Arc<tokio::sync::Semaphore>,
    wait: Duration,
    why: impl FnOnce() -> String,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, why()).retry_later()),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct QueryBody {
    /// A read-only Cypher statement, run on every shard (or those in `shards`) and merged.
    cypher: String,
    /// Parameters of the statement (`$name`), any JSON values.
    #[serde(default)]
    #[schema(value_type = Object)]
    params: Map<String, Value>,
    /// Only these shards (default: all).
    shards: Option<Vec<u32>>,
    /// Time limit in milliseconds: 1 to 60000 (default 10000).
    #[schema(minimum = 1, maximum = 60000)]
    timeout_ms: Option<u64>,
    /// Answer from the shards that answered when some did not (default: the node's
    /// `TORUA_ALLOW_PARTIAL`).
    allow_partial: Option<bool>,
    /// `global` (default: rows merged as one database would return them) or `per_shard`.
    #[schema(pattern = "^(global|per_shard)$")]
    merge: Option<String>,
}

pub async fn query(
    State(state): State<AppState>,
    Params(read): Params<ReadParams>,
    body: Bytes,
) -> ReadResult {
    let state = &state;
    let started = Instant::now();
    let req: QueryBody = parse(&body)?;
    let timeout = timeout_ms(req.timeout_ms)?;
    let per_shard = match req.merge.as_deref() {
        None | Some("global") => false,
        Some("per_shard") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "merge must be \"global\" or \"per_shard\", not {other:?}"
            )))
        }
    };
    let request = CypherRequest {
        cypher: req.cypher,
        params: req.params,
        shards: req.shards,
        timeout_ms: timeout,
        allow_partial: req.allow_partial.unwrap_or(state.settings.allow_partial),
        per_shard,
    };
    let _user_permit = user_query_permit(state, Duration::from_millis(timeout)).await?;
    let prepared = run::prepare(state, request).await?;
    let _permit = permit(state, Duration::from_millis(prepared.timeout_ms())).await?;
    let scope = read.scope(state);
    let answer = run::execute(state, prepared, &scope).await?;
    let took_ms = started.elapsed().as_millis() as u64;
    let body = match answer {
        CypherAnswer::PerShard { shards, report } => {
            let shards: Vec<Value> = shards
                .into_iter()
                .map(|s| json!({"shard": s.shard, "node": s.node, "columns": s.columns, "rows": s.rows}))
                .collect();
            json!({"merge": "per_shard", "shards": shards, "_shards": report, "took_ms": took_ms})
        }
        CypherAnswer::Global {
            columns,
            rows,
            report,
        } => json!({
            "columns": columns,
            "rows": rows,
            "merge": "global",
            "_shards": report,
            "took_ms": took_ms,
        }),
    };
    Ok(ReadAnswer::new(state, body, scope.lags()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FilterBody {
    /// Only relations of at least this weight (a finite number).
    min_weight: Option<f64>,
    /// Only relations whose description contains this text (at most 512 bytes).
    #[schema(max_length = 512)]
    description_contains: Option<String>,
}

fn direction(v: Option<&str>) -> Result<Direction, ApiError> {
    match v {
        None | Some("both") => Ok(Direction::Both),
        Some("out") => Ok(Direction::Out),
        Some("in") => Ok(Direction::In),
        Some(other) => Err(ApiError::bad_request(format!(
            "direction must be \"out\", \"in\" or \"both\", not {other:?}"
        ))),
    }
}

fn filter(v: Option<FilterBody>) -> Result<RelationFilter, ApiError> {
    let Some(f) = v else {
        return Ok(RelationFilter::default());
    };
    if f.min_weight.is_some_and(|w| !w.is_finite()) {
        return Err(ApiError::bad_request(
            "relation_filter.min_weight must be a finite number",
        ));
    }
    if f.description_contains
        .as_ref()
        .is_some_and(|d| d.len() > MAX_ID_BYTES)
    {
        return Err(ApiError::bad_request(format!(
            "relation_filter.description_contains is longer than {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(RelationFilter {
        min_weight: f.min_weight,
        description_contains: f.description_contains,
    })
}

fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ApiError::bad_request(format!(
            "{what} must be a non-empty id of at most {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

fn in_range(what: &str, v: u64, lo: u64, hi: u64) -> Result<u64, ApiError> {
    if !(lo..=hi).contains(&v) {
        return Err(ApiError::bad_request(format!(
            "{what} must be between {lo} and {hi}, not {v}"
        )));
    }
    Ok(v)
}

fn entity_json(e: &EntitySummary) -> Value {
    json!({"id": e.id, "title": e.title, "type": e.kind, "description": e.description, "degree": e.degree, "frequency": e.frequency})
}

fn edge_json(e: &Edge) -> Value {
    json!({"id": e.id, "source": e.source, "target": e.target, "description": e.description, "weight": e.weight})
}

fn traverse_error(e: TraverseError) -> ApiError {
    match e {
        TraverseError::TooLarge(r) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, r),
        TraverseError::Unavailable(r) => ApiError::unavailable(r),
        TraverseError::Timeout(r) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, r),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NeighborhoodBody {
    /// Entity ids to start from: 1 to 1000 ids of 1 to 512 bytes.
    #[schema(min_items = 1, max_items = 1000)]
    seeds: Vec<String>,
    /// Hops from the seeds: 1 to 3 (default 1).
    #[schema(minimum = 1, maximum = 3)]
    hops: Option<u64>,
    /// `out`, `in` or `both` (default).
    #[schema(pattern = "^(out|in|both)$")]
    direction: Option<String>,
    relation_filter: Option<FilterBody>,
    /// Most entities in the answer: 1 to 100000 (default 1000); more sets `truncated`.
    #[schema(minimum = 1, maximum = 100000)]
    max_nodes: Option<u64>,
    /// Most relations in the answer: 1 to 1000000 (default 5000); more sets `truncated`.
    #[schema(minimum = 1, maximum = 1000000)]
    max_relations: Option<u64>,
    /// Time limit in milliseconds: 1 to 60000 (default 10000).
    #[schema(minimum = 1, maximum = 60000)]
    timeout_ms: Option<u64>,
    /// Answer from the shards that answered when some did not (default: the node's
    /// `TORUA_ALLOW_PARTIAL`).
    allow_partial: Option<bool>,
}

/// A checked neighborhood request.
struct NeighborhoodRequest {
    seeds: Vec<String>,
    hops: u32,
    direction: Direction,
    filter: RelationFilter,
    max_nodes: usize,
    max_relations: usize,
    timeout_ms: u64,
    allow_partial: Option<bool>,
}

fn neighborhood_request(body: &[u8]) -> Result<NeighborhoodRequest, ApiError> {
    let req: NeighborhoodBody = parse(body)?;
    if req.seeds.is_empty() || req.seeds.len() > MAX_SEEDS {
        return Err(ApiError::bad_request(format!(
            "seeds must list 1 to {MAX_SEEDS} entity ids"
        )));
    }
    for s in &req.seeds {
        check_id("a seed", s)?;
    }
    Ok(NeighborhoodRequest {
        hops: in_range("hops", req.hops.unwrap_or(1), 1, MAX_HOPS.into())? as u32,
        direction: direction(req.direction.as_deref())?,
        filter: filter(req.relation_filter)?,
        max_nodes: in_range("max_nodes", req.max_nodes.unwrap_or(1000), 1, MAX_NODES)? as usize,
        max_relations: in_range(
            "max_relations",
            req.max_relations.unwrap_or(5000),
            1,
            MAX_RELATIONS,
        )? as usize,
        timeout_ms: timeout_ms(req.timeout_ms)?,
        allow_partial: req.allow_partial,
        seeds: req.seeds,
    })
}

/// What a traversal handler holds while it runs: the traversal and its query slot.
struct Started<'a> {
    traversal: Traversal<'a>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Takes a query slot and starts a traversal over the current shard map that must end
/// `timeout_ms` after `started`.
async fn start_traversal<'a>(
    state: &'a AppState,
    started: Instant,
    timeout_ms: u64,
    allow_partial: Option<bool>,
    direction: Direction,
    filter: RelationFilter,
    read: &ReadParams,
) -> Result<Started<'a>, ApiError> {
    let map = current_map(state)?;
    let timeout = Duration::from_millis(timeout_ms);
    let _permit = permit(state, timeout).await?;
    let traversal = Traversal::new(
        state,
        map,
        started + timeout,
        allow_partial.unwrap_or(state.settings.allow_partial),
        direction,
        filter,
        read.scope(state),
    );
    Ok(Started { traversal, _permit })
}

pub async fn neighborhood(
    State(state): State<AppState>,
    Params(read): Params<ReadParams>,
    body: Bytes,
) -> ReadResult {
    let state = &state;
    let started = Instant::now();
    let req = neighborhood_request(&body)?;
    let mut run = start_traversal(
        state,
        started,
        req.timeout_ms,
        req.allow_partial,
        req.direction,
        req.filter,
        &read,
    )
    .await?;
    let t = &mut run.traversal;
    let n = run_neighborhood(t, &req.seeds, req.hops, req.max_nodes, req.max_relations)
        .await
        .map_err(traverse_error)?;
    let entities: Vec<Value> = n
        .entities
        .iter()
        .map(|(e, hop)| {
            let mut v = entity_json(e);
            v["hop"] = json!(hop);
            v
        })
        .collect();
    let relations: Vec<Value> = n.relations.iter().map(edge_json).collect();
    let report = t.report();
    let behind = report.behind.clone();
    let body = json!({
        "entities": entities,
        "relations": relations,
        "truncated": n.truncated,
        "missing_seeds": n.missing_seeds,
        "_shards": report,
        "traversal": t.stats(),
        "took_ms": started.elapsed().as_millis() as u64,
    });
    Ok(ReadAnswer::new(state, body, behind))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PathBody {
    /// Entity id the path starts at (1 to 512 bytes).
    #[schema(min_length = 1, max_length = 512)]
    from: String,
    /// Entity id the path ends at (1 to 512 bytes).
    #[schema(min_length = 1, max_length = 512)]
    to: String,
    /// Longest path searched: 1 to 8 hops (default 4).
    #[schema(minimum = 1, maximum = 8)]
    max_hops: Option<u64>,
    /// `out`, `in` or `both` (default).
    #[schema(pattern = "^(out|in|both)$")]
    direction: Option<String>,
    /// Time limit in milliseconds: 1 to 60000 (default 10000).
    #[schema(minimum = 1, maximum = 60000)]
    timeout_ms: Option<u64>,
    /// Answer from the shards that answered when some did not (default: the node's
    /// `TORUA_ALLOW_PARTIAL`).
    allow_partial: Option<bool>,
}

pub async fn path(
    State(state): State<AppState>,
    Params(read): Params<ReadParams>,
    body: Bytes,
) -> ReadResult {
    let state = &state;
    let started = Instant::now();
    let req: PathBody = parse(&body)?;
    check_id("from", &req.from)?;
    check_id("to", &req.to)?;
    let max_hops = in_range(
        "max_hops",
        req.max_hops.unwrap_or(4),
        1,
        MAX_PATH_HOPS.into(),
    )? as u32;
    let dir = direction(req.direction.as_deref())?;
    let mut run = start_traversal(
        state,
        started,
        timeout_ms(req.timeout_ms)?,
        req.allow_partial,
        dir,
        RelationFilter::default(),
        &read,
    )
    .await?;
    let t = &mut run.traversal;
    let answer = shortest_path(t, &req.from, &req.to, max_hops)
        .await
        .map_err(traverse_error)?;
    let took_ms = started.elapsed().as_millis() as u64;
    match answer {
        PathAnswer::Found {
            entities,
            relations,
        } => {
            let report = t.report();
            let behind = report.behind.clone();
            let body = json!({
                "found": true,
                "length": relations.len(),
                "entities": entities.iter().map(entity_json).collect::<Vec<_>>(),
                "relations": relations.iter().map(edge_json).collect::<Vec<_>>(),
                "_shards": report,
                "traversal": t.stats(),
                "took_ms": took_ms,
            });
            Ok(ReadAnswer::new(state, body, behind))
        }
        PathAnswer::NotFound => {
            let report = t.report();
            let mut reason = format!(
                "no path from {:?} to {:?} within {max_hops} hops",
                req.from, req.to
            );
            if report.failed > 0 {
                reason.push_str(&format!(
                    " among the shards that answered ({} did not)",
                    report.failed
                ));
            }
            let behind = report.behind.clone();
            let body = json!({
                "found": false,
                "length": null,
                "reason": reason,
                "_shards": report,
                "traversal": t.stats(),
                "took_ms": took_ms,
            });
            Ok(ReadAnswer::new(state, body, behind))
        }
        PathAnswer::Missing(id) => {
            Err(not_found(format!("entity {id:?} does not exist"), &t.scope))
        }
    }
}
