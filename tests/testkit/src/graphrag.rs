//! The items of a GraphRAG index as torua's `/graph/ingest` takes them (serialised into ingest
//! bodies by [`crate::gen::bodies`] or [`crate::gen::pack`]).

/// The items are torua's own: the JSON `/graph/ingest` takes.
pub use torua::graph::model::{Chunk, Community, Document, Entity, Relation};

/// The items of a GraphRAG index, or of a part of one, kind by kind.
pub type Items = torua::graph::model::Batch;

/// An entity's embedding, empty when there is none.
pub trait WithEmbedding {
    fn vector(&self) -> &[f32];
}

impl WithEmbedding for Entity {
    fn vector(&self) -> &[f32] {
        self.embedding.as_deref().unwrap_or(&[])
    }
}
