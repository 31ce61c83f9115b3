//! The document cascade as storage sees it: the typed reads that find what a set of text units
//! supports in one shard copy ([`CascadeRead`], answered by [`CascadeRows`]), and the replicated
//! write that takes text units out of a copy ([`Prune`], carried by `WriteOp::Prune`). Which
//! shards are asked and in which order the steps run is `replication::document`'s; how a Kuzu
//! copy answers and applies them is `kuzu_cascade`'s.

use serde::{Deserialize, Serialize};

/// A relation copy's identity: (id, source, target).
pub type RelationKey = (String, String, String);

/// A read of one shard copy for the cascade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CascadeRead {
    /// The chunks held here whose `document_id` is `document_id` (if given) or whose id is in
    /// `ids`. Answers [`CascadeRows::Chunks`].
    ChunksOf {
        document_id: Option<String>,
        ids: Vec<String>,
    },
    /// What cites any of `text_unit_ids` here. Answers [`CascadeRows::Use`].
    UseOf { text_unit_ids: Vec<String> },
    /// The communities held here whose `entity_ids` hold any of `entity_ids`. Answers
    /// [`CascadeRows::Communities`].
    CommunitiesOf { entity_ids: Vec<String> },
}

/// What one copy cites of a set of text units.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextUnitUse {
    /// Entities held here (not stubs) whose `text_unit_ids` are not empty and all in the set:
    /// the cascade deletes them.
    pub emptied_entities: Vec<String>,
    /// Entities held here citing some of the set and other text units: they lose the set.
    pub pruned_entities: Vec<String>,
    /// Relation copies stored here citing some of the set, each with whether it cites nothing
    /// else (then it is deleted).
    pub relations: Vec<(RelationKey, bool)>,
    /// Relation copies stored here attached to an emptied entity (deleted with it).
    pub relations_of_emptied: Vec<RelationKey>,
    /// The routed ends of those relations, with their routing keys (their copies live in the
    /// key's shard).
    pub routed_ends: Vec<(String, String)>,
}

/// What a copy answers to a [`CascadeRead`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CascadeRows {
    /// Chunk ids.
    Chunks(Vec<String>),
    Use(TextUnitUse),
    /// Community ids.
    Communities(Vec<String>),
}

/// One step of the cascade in one shard copy. Every step is idempotent: applied again (a
/// retried cascade, a log replayed) it finds nothing left to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Prune {
    /// First, in every shard where it matters: relation copies lose `text_unit_ids`; those left
    /// with none are deleted, and so is every relation copy attached to a stub of one of
    /// `entities` (the entities about to be deleted in their own shards), with the stub. Stubs
    /// left with no relation go too.
    Relations {
        text_unit_ids: Vec<String>,
        entities: Vec<String>,
    },
    /// Then: communities lose `entities` from `entity_ids` and are marked stale (before the
    /// entities go, so that a retry still knows which entities they must lose).
    Communities { entities: Vec<String> },
    /// Then: `entities` held here are deleted with their relations (and stubs left with no
    /// relation); other entities lose `text_unit_ids`.
    Entities {
        text_unit_ids: Vec<String>,
        entities: Vec<String>,
    },
    /// Last: the chunks and documents with these ids held here are deleted.
    Remove {
        chunks: Vec<String>,
        documents: Vec<String>,
    },
}
