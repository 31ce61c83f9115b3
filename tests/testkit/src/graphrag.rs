//! The items of a GraphRAG index as torua's `/graph/ingest` takes them (serialised into ingest
//! bodies by [`crate::gen::bodies`] or [`crate::gen::pack`]).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Entity {
    pub id: String,
    pub title: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub text_unit_ids: Vec<String>,
    pub frequency: i64,
    pub degree: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

impl Entity {
    /// The embedding, empty when there is none.
    pub fn vector(&self) -> &[f32] {
        self.embedding.as_deref().unwrap_or(&[])
    }
}

/// A relation is torua's own (its JSON has the same fields).
pub use torua::graph::model::Relation;

/// A text unit.
#[derive(Debug, Clone, Serialize)]
pub struct Chunk {
    pub id: String,
    pub text: String,
    pub n_tokens: i64,
    pub document_id: String,
    pub entity_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Document {
    pub id: String,
    pub title: String,
    pub text: String,
    pub text_unit_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Community {
    pub id: String,
    pub level: i64,
    pub parent: String,
    pub title: String,
    pub entity_ids: Vec<String>,
    pub summary: String,
    pub full_content: String,
    pub rank: f64,
}

/// The items of a GraphRAG index, or of a part of one, kind by kind.
#[derive(Default)]
pub struct Items {
    pub entities: Vec<Entity>,
    pub relations: Vec<Relation>,
    pub chunks: Vec<Chunk>,
    pub documents: Vec<Document>,
    pub communities: Vec<Community>,
}
