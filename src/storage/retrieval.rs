//! The reads retrieval makes of a shard copy, as typed operations: nearest items by embedding,
//! best items by full-text score, items by id, community reports. Callers say what they want
//! ([`RetrievalRead`]) and get typed rows back ([`RetrievalRows`]); how a copy answers (its query
//! language, its tables and index names) stays inside storage (`kuzu_retrieval`).

use serde::{Deserialize, Serialize};

/// Which items a search or lookup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemKind {
    Entities,
    Chunks,
}

/// A full-text (BM25) index of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextIndex {
    /// Entities by title alone.
    EntityTitle,
    /// Entities by title and description.
    EntityText,
    /// Chunks by text.
    ChunkText,
}

impl TextIndex {
    /// The items the index covers.
    pub fn items(self) -> ItemKind {
        match self {
            TextIndex::EntityTitle | TextIndex::EntityText => ItemKind::Entities,
            TextIndex::ChunkText => ItemKind::Chunks,
        }
    }
}

/// A read retrieval makes of one shard copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RetrievalRead {
    /// The `k` items nearest to `embedding` (cosine distance, approximate: HNSW), ids and
    /// distances only. Answers [`RetrievalRows::Nearest`].
    Nearest {
        items: ItemKind,
        embedding: Vec<f32>,
        k: usize,
    },
    /// The `k` best items for `words` by BM25 over `index`, with their properties. Answers
    /// [`RetrievalRows::Scored`].
    TextSearch {
        index: TextIndex,
        words: String,
        k: usize,
    },
    /// The items with these ids (one primary-key read each); ids this copy does not hold are
    /// left out. Answers [`RetrievalRows::Items`].
    Lookup { items: ItemKind, ids: Vec<String> },
    /// Reports of the communities holding any of `entity_ids` (of `level`, if given), each with
    /// how many it holds, by that count (desc), rank (desc), id; at most `limit`. Answers
    /// [`RetrievalRows::Reports`].
    ReportsOf {
        entity_ids: Vec<String>,
        level: Option<i64>,
        limit: usize,
    },
    /// Every community's report (of `level`, if given) by rank (desc), id; at most `limit`.
    /// Answers [`RetrievalRows::Reports`].
    AllReports { level: Option<i64>, limit: usize },
}

/// An item's id and its distance to the embedding searched for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorHit {
    pub id: String,
    pub distance: f64,
}

/// An entity's properties retrieval uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityItem {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub description: String,
    pub degree: i64,
    pub text_unit_ids: Vec<String>,
}

/// A chunk's (text unit's) properties retrieval uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkItem {
    pub id: String,
    pub text: String,
    pub n_tokens: i64,
    pub document_id: String,
}

/// An entity or a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RetrievedItem {
    Entity(EntityItem),
    Chunk(ChunkItem),
}

impl RetrievedItem {
    pub fn id(&self) -> &str {
        match self {
            RetrievedItem::Entity(e) => &e.id,
            RetrievedItem::Chunk(c) => &c.id,
        }
    }
}

/// An item found by a full-text search, with its BM25 score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredItem {
    pub item: RetrievedItem,
    pub score: f64,
}

/// A community's report as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommunityReport {
    pub id: String,
    pub title: String,
    pub level: i64,
    pub rank: f64,
    pub full_content: String,
    pub summary: String,
    /// Whether the document cascade changed the community (removed entities) since its report
    /// was written: the report may describe what is no longer there.
    pub stale: bool,
    /// How many of the entities asked for the community holds ([`RetrievalRead::ReportsOf`]).
    pub matches: Option<i64>,
}

/// What a copy answers to a [`RetrievalRead`]. Scores, distances and ranks are finite numbers:
/// one the engine cannot express (a zero vector's cosine distance) reads as 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RetrievalRows {
    Nearest(Vec<VectorHit>),
    Scored(Vec<ScoredItem>),
    Items(Vec<RetrievedItem>),
    Reports(Vec<CommunityReport>),
}

impl RetrievalRows {
    pub fn into_nearest(self) -> Option<Vec<VectorHit>> {
        match self {
            RetrievalRows::Nearest(v) => Some(v),
            _ => None,
        }
    }

    pub fn into_scored(self) -> Option<Vec<ScoredItem>> {
        match self {
            RetrievalRows::Scored(v) => Some(v),
            _ => None,
        }
    }

    pub fn into_items(self) -> Option<Vec<RetrievedItem>> {
        match self {
            RetrievalRows::Items(v) => Some(v),
            _ => None,
        }
    }

    pub fn into_reports(self) -> Option<Vec<CommunityReport>> {
        match self {
            RetrievalRows::Reports(v) => Some(v),
            _ => None,
        }
    }
}
