//! Schemas of the JSON the handlers build with `json!` (answers assembled field by field), for the
//! OpenAPI document. The handlers keep building that JSON themselves; these types only describe it,
//! so they are never constructed.
// Never constructed: they exist for their `ToSchema` implementations.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::cluster::messages::RegistryEntry;
use crate::graph::model::{Chunk, Document, Entity, ItemError};
use crate::query::scatter::ShardsReport;
use crate::query::traverse::TraversalStats;
use crate::retrieve::gather::{Report, TextUnit};
use crate::retrieve::search::Seed;
use crate::storage::RelationRecord;

/// Every error: `{"error": {"status": 400, "reason": "..."}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status again.
    status: u16,
    /// What went wrong and, where it helps, what would be accepted.
    reason: String,
}

/// `GET /health`: this process is up.
#[derive(Serialize, ToSchema)]
pub struct NodeHealthAnswer {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    status: String,
    node_id: String,
    /// This node's membership state in its own view: `joining`, `ready`, `leaving` or `dead`.
    #[schema(required = true)]
    state: Option<String>,
    generation: u64,
    version: String,
    uptime_ms: u64,
    /// The current log filter (`RUST_LOG` syntax).
    log_filter: String,
}

/// `GET /cluster/nodes`: the coordinator's registry.
#[derive(Serialize, ToSchema)]
pub struct RegistryAnswer {
    #[schema(required = true)]
    coordinator: Option<String>,
    #[schema(required = true)]
    term: Option<u64>,
    nodes: Vec<RegistryEntry>,
}

/// `GET /nodes`: the members in this node's gossip view.
#[derive(Serialize, ToSchema)]
pub struct NodesAnswer {
    nodes: Vec<NodeRow>,
}

#[derive(Serialize, ToSchema)]
pub struct NodeRow {
    id: String,
    /// The node's HTTP address.
    #[schema(required = true)]
    addr: Option<String>,
    /// `joining`, `ready`, `leaving` or `dead`.
    state: String,
    gossip_addr: String,
    #[schema(required = true)]
    peer_addr: Option<String>,
    generation: u64,
}

/// `POST|DELETE /nodes/{id}/drain`: the drain as the new shard map has it.
#[derive(Serialize, ToSchema)]
pub struct DrainAnswer {
    node: String,
    draining: bool,
    /// Shard copies still on the node.
    copies_left: usize,
    /// Version of the shard map that records the change.
    map_version: u64,
}

/// `POST /nodes/{id}/shards/{shard}/rebuild`: the copy is being rebuilt.
#[derive(Serialize, ToSchema)]
pub struct RebuildAnswer {
    node: String,
    shard: u32,
    /// Always `true`.
    rebuilding: bool,
}

/// `POST /graph/ingest`: what was written and what failed.
#[derive(Serialize, ToSchema)]
pub struct IngestAnswer {
    took_ms: u64,
    /// Whether some items were not written (listed in `items`).
    errors: bool,
    counts: IngestCounts,
    /// How many items were not written.
    failed: usize,
    /// The items of every shard whose write was not acknowledged, with why.
    items: Vec<ItemError>,
    /// What re-ingested documents' dropped text units took with them.
    replaced: crate::replication::document::Replaced,
}

/// Items in the request, by kind.
#[derive(Serialize, ToSchema)]
pub struct IngestCounts {
    entities: usize,
    relations: usize,
    chunks: usize,
    communities: usize,
    documents: usize,
}

/// `GET /graph/entities/{id}`.
#[derive(Serialize, ToSchema)]
pub struct EntityAnswer {
    entity: Entity,
    /// The relations whose source or target is the entity.
    relations: Vec<RelationRecord>,
    /// The shard that holds the entity.
    shard: u32,
}

/// `GET /graph/documents/{id}`.
#[derive(Serialize, ToSchema)]
pub struct DocumentAnswer {
    document: Document,
    shard: u32,
}

/// `GET /graph/chunks/{id}`.
#[derive(Serialize, ToSchema)]
pub struct ChunkAnswer {
    chunk: Chunk,
    shard: u32,
}

/// `DELETE /graph/entities/{id}`.
#[derive(Serialize, ToSchema)]
pub struct DeleteAnswer {
    /// The deleted entity's id.
    deleted: String,
    /// How many of its relations were deleted with it.
    relations: usize,
}

/// `POST /query`: rows merged (`merge: global`) or per shard (`merge: per_shard`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum CypherAnswer {
    Global(CypherGlobal),
    PerShard(CypherPerShard),
}

#[derive(Serialize, ToSchema)]
pub struct CypherGlobal {
    columns: Vec<String>,
    /// One array per row, one JSON value per column.
    rows: Vec<Vec<Value>>,
    /// `global`.
    #[schema(pattern = "^global$")]
    merge: String,
    #[serde(rename = "_shards")]
    shards_report: ShardsReport,
    took_ms: u64,
}

#[derive(Serialize, ToSchema)]
pub struct CypherPerShard {
    /// `per_shard`.
    #[schema(pattern = "^per_shard$")]
    merge: String,
    shards: Vec<ShardRows>,
    #[serde(rename = "_shards")]
    shards_report: ShardsReport,
    took_ms: u64,
}

/// One shard's rows.
#[derive(Serialize, ToSchema)]
pub struct ShardRows {
    shard: u32,
    /// The copy that answered.
    node: String,
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// The fields every entity answer shows (no embedding, no id lists).
#[derive(Serialize, ToSchema)]
pub struct EntityFields {
    id: String,
    title: String,
    #[serde(rename = "type")]
    kind: String,
    description: String,
    degree: i64,
}

/// An entity as traversals return it.
#[derive(Serialize, ToSchema)]
pub struct EntityRow {
    #[serde(flatten)]
    fields: EntityFields,
    frequency: i64,
}

/// An entity of a neighborhood, with the hop it was reached at (0 for a seed).
#[derive(Serialize, ToSchema)]
pub struct NeighborEntity {
    #[serde(flatten)]
    entity: EntityRow,
    hop: u32,
}

/// A relation as traversals and retrieval return it.
#[derive(Serialize, ToSchema)]
pub struct EdgeRow {
    id: String,
    source: String,
    target: String,
    description: String,
    weight: f64,
}

/// `POST /graph/neighborhood`.
#[derive(Serialize, ToSchema)]
pub struct NeighborhoodAnswer {
    entities: Vec<NeighborEntity>,
    relations: Vec<EdgeRow>,
    /// Whether `max_nodes` or `max_relations` cut the answer.
    truncated: bool,
    /// Seeds no shard holds.
    missing_seeds: Vec<String>,
    #[serde(rename = "_shards")]
    shards_report: ShardsReport,
    traversal: TraversalStats,
    took_ms: u64,
}

/// `POST /graph/path`: a shortest path, or why none was found.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum PathAnswer {
    Found(PathFound),
    NotFound(PathNotFound),
}

#[derive(Serialize, ToSchema)]
pub struct PathFound {
    /// `true`.
    found: bool,
    /// Relations on the path.
    length: usize,
    /// The entities from `from` to `to`, in order.
    entities: Vec<EntityRow>,
    /// The relations between consecutive entities.
    relations: Vec<EdgeRow>,
    #[serde(rename = "_shards")]
    shards_report: ShardsReport,
    traversal: TraversalStats,
    took_ms: u64,
}

#[derive(Serialize, ToSchema)]
pub struct PathNotFound {
    /// `false`.
    found: bool,
    /// Always `null`.
    #[schema(value_type = Option<usize>, required = true)]
    length: (),
    reason: String,
    #[serde(rename = "_shards")]
    shards_report: ShardsReport,
    traversal: TraversalStats,
    took_ms: u64,
}

/// `POST /retrieve`: the ranked context of a question.
#[derive(Serialize, ToSchema)]
pub struct RetrieveAnswer {
    /// `local`, `global`, `naive` or `hybrid`.
    mode: String,
    /// The entity seeds found, best first.
    seeds: Vec<Seed>,
    entities: Vec<RetrievedEntity>,
    relations: Vec<EdgeRow>,
    text_units: Vec<TextUnit>,
    community_reports: Vec<Report>,
    /// The context as GraphRAG's prompt tables (CSV-like sections).
    context_text: String,
    tokens: TokenCounts,
    #[serde(rename = "_shards")]
    shards_report: ShardsReport,
    /// How the expansion ran (zeros when there was none).
    traversal: TraversalStats,
    /// Milliseconds per stage, by stage name.
    timings_ms: BTreeMap<String, f64>,
    /// The chunk seeds found (modes `naive` and `hybrid` only).
    chunk_seeds: Option<Vec<Seed>>,
}

/// An entity of a retrieval: a seed (with its fused score) or reached by the expansion.
#[derive(Serialize, ToSchema)]
pub struct RetrievedEntity {
    #[serde(flatten)]
    fields: EntityFields,
    /// 0 for a seed.
    hop: u32,
    /// The fused score of a seed; `null` for an entity reached by the expansion.
    #[schema(required = true)]
    score: Option<f64>,
}

/// Tokens of the context, by section, counted with `tokenizer`.
#[derive(Serialize, ToSchema)]
pub struct TokenCounts {
    tokenizer: String,
    budget: usize,
    total: usize,
    community_reports: usize,
    entities: usize,
    relations: usize,
    text_units: usize,
}

/// `POST /graph/ingest`'s 400: the error, and `items` when items are invalid (nothing written).
#[derive(Serialize, ToSchema)]
pub struct IngestRefused {
    error: ErrorDetail,
    /// Present when items are invalid: each one's kind, position in its list, id and why.
    items: Option<Vec<ItemError>>,
}

/// `POST /graph/ingest`'s 503: refused before writing (no shard map, no quorum), or written in
/// part while a shard had no room to apply (the answer lists the items not written).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum IngestUnavailable {
    Error(ErrorBody),
    Partial(IngestAnswer),
}
