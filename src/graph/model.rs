//! The data model, in the shape of Microsoft GraphRAG's output: entities, relations, chunks (text
//! units), communities (with their reports) and documents. Ids are strings chosen by the client.
//!
//! These types are the ingest API's JSON and travel between nodes (postcard), so: no skipped fields,
//! `Option` for what may be absent, and every limit checked in [`Batch::validate`] before anything
//! is written.

use serde::{Deserialize, Serialize};

/// Longest id, title or type, in bytes.
pub const MAX_ID_BYTES: usize = 512;
/// Longest text field (description, chunk text, report), in bytes.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Longest id list (text_unit_ids, entity_ids).
pub const MAX_LIST: usize = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entity {
    #[schema(min_length = 1, max_length = 512)]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub text_unit_ids: Vec<String>,
    #[serde(default)]
    pub frequency: i64,
    #[serde(default)]
    pub degree: i64,
    /// Exactly `TORUA_EMBEDDING_DIM` numbers; refused when the cluster stores no embeddings.
    #[serde(default)]
    pub embedding: Option<Vec<f32>>,
    /// Placement key: entities with the same key live in the same shard (`shard_of(routing)`
    /// instead of `shard_of(id)`). Reads by id still find the entity without it.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 512)]
    pub routing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Relation {
    #[schema(min_length = 1, max_length = 512)]
    pub id: String,
    /// Entity id of the source. It need not exist yet: a stub stands in until it arrives.
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default)]
    pub text_unit_ids: Vec<String>,
    /// The source entity's routing key, for a source that is not in this batch and not stored
    /// yet. torua fills it in from the batch or from where the source is stored, which win.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 512)]
    pub source_routing: Option<String>,
    /// Like `source_routing`, for the target.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 512)]
    pub target_routing: Option<String>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Chunk {
    #[schema(min_length = 1, max_length = 512)]
    pub id: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub n_tokens: i64,
    #[serde(default)]
    pub document_id: String,
    #[serde(default)]
    pub entity_ids: Vec<String>,
    /// Exactly `TORUA_EMBEDDING_DIM` numbers; refused when the cluster stores no embeddings.
    #[serde(default)]
    pub embedding: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Community {
    #[schema(min_length = 1, max_length = 512)]
    pub id: String,
    #[serde(default)]
    pub level: i64,
    /// Parent community id; empty for a root.
    #[serde(default)]
    pub parent: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub entity_ids: Vec<String>,
    /// The community report.
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub full_content: String,
    #[serde(default)]
    pub rank: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Document {
    #[schema(min_length = 1, max_length = 512)]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub text_unit_ids: Vec<String>,
}

/// One ingest request: any mix of the five kinds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    #[serde(default)]
    pub entities: Vec<Entity>,
    #[serde(default)]
    pub relations: Vec<Relation>,
    #[serde(default)]
    pub chunks: Vec<Chunk>,
    #[serde(default)]
    pub communities: Vec<Community>,
    #[serde(default)]
    pub documents: Vec<Document>,
}

/// Which kind of item, for counts and errors.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Entity,
    Relation,
    Chunk,
    Community,
    Document,
}

/// An item the batch refused, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemError {
    pub kind: Kind,
    /// Position in its list in the request.
    pub index: usize,
    pub id: String,
    pub reason: String,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.entities.len()
            + self.relations.len()
            + self.chunks.len()
            + self.communities.len()
            + self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `other` to this batch.
    pub fn extend(&mut self, other: Batch) {
        self.entities.extend(other.entities);
        self.relations.extend(other.relations);
        self.chunks.extend(other.chunks);
        self.communities.extend(other.communities);
        self.documents.extend(other.documents);
    }

    /// Checks every item against the limits and the embedding dimension (`0` = embeddings
    /// refused). Returns the refused items; an empty list means the batch may be written.
    pub fn validate(&self, embedding_dim: usize) -> Vec<ItemError> {
        let mut errors = Vec::new();
        let mut check = |kind: Kind, index: usize, id: &str, problem: Option<String>| {
            let reason = if id.is_empty() {
                Some("missing id".to_string())
            } else if id.len() > MAX_ID_BYTES {
                Some(format!("id longer than {MAX_ID_BYTES} bytes"))
            } else {
                problem
            };
            if let Some(reason) = reason {
                errors.push(ItemError {
                    kind,
                    index,
                    id: id.chars().take(80).collect(),
                    reason,
                });
            }
        };
        for (i, e) in self.entities.iter().enumerate() {
            let problem = text_problem(&[("title", &e.title), ("type", &e.kind)], MAX_ID_BYTES)
                .or_else(|| text_problem(&[("description", &e.description)], MAX_TEXT_BYTES))
                .or_else(|| list_problem("text_unit_ids", &e.text_unit_ids))
                .or_else(|| embedding_problem(&e.embedding, embedding_dim))
                .or_else(|| routing_problem("routing", &e.routing));
            check(Kind::Entity, i, &e.id, problem);
        }
        for (i, r) in self.relations.iter().enumerate() {
            let problem = if r.source.is_empty() || r.target.is_empty() {
                Some("source and target entity ids are required".to_string())
            } else if r.source.len() > MAX_ID_BYTES || r.target.len() > MAX_ID_BYTES {
                Some(format!("source/target longer than {MAX_ID_BYTES} bytes"))
            } else if !r.weight.is_finite() {
                Some("weight must be a finite number".to_string())
            } else {
                text_problem(&[("description", &r.description)], MAX_TEXT_BYTES)
                    .or_else(|| list_problem("text_unit_ids", &r.text_unit_ids))
                    .or_else(|| routing_problem("source_routing", &r.source_routing))
                    .or_else(|| routing_problem("target_routing", &r.target_routing))
            };
            check(Kind::Relation, i, &r.id, problem);
        }
        for (i, c) in self.chunks.iter().enumerate() {
            let problem = text_problem(&[("text", &c.text)], MAX_TEXT_BYTES)
                .or_else(|| text_problem(&[("document_id", &c.document_id)], MAX_ID_BYTES))
                .or_else(|| list_problem("entity_ids", &c.entity_ids))
                .or_else(|| embedding_problem(&c.embedding, embedding_dim));
            check(Kind::Chunk, i, &c.id, problem);
        }
        for (i, c) in self.communities.iter().enumerate() {
            let problem = text_problem(&[("title", &c.title), ("parent", &c.parent)], MAX_ID_BYTES)
                .or_else(|| {
                    text_problem(
                        &[("summary", &c.summary), ("full_content", &c.full_content)],
                        MAX_TEXT_BYTES,
                    )
                })
                .or_else(|| list_problem("entity_ids", &c.entity_ids))
                .or_else(|| {
                    (!c.rank.is_finite()).then(|| "rank must be a finite number".to_string())
                });
            check(Kind::Community, i, &c.id, problem);
        }
        for (i, d) in self.documents.iter().enumerate() {
            let problem = text_problem(&[("title", &d.title)], MAX_ID_BYTES)
                .or_else(|| text_problem(&[("text", &d.text)], MAX_TEXT_BYTES))
                .or_else(|| list_problem("text_unit_ids", &d.text_unit_ids));
            check(Kind::Document, i, &d.id, problem);
        }
        errors
    }
}

fn text_problem(fields: &[(&str, &String)], max: usize) -> Option<String> {
    fields
        .iter()
        .find(|(_, v)| v.len() > max)
        .map(|(name, v)| format!("{name} is {} bytes; at most {max}", v.len()))
}

fn routing_problem(name: &str, routing: &Option<String>) -> Option<String> {
    let key = routing.as_ref()?;
    if key.is_empty() {
        Some(format!("{name} is empty: leave it out to place by id"))
    } else if key.len() > MAX_ID_BYTES {
        Some(format!(
            "{name} is {} bytes; at most {MAX_ID_BYTES}",
            key.len()
        ))
    } else {
        None
    }
}

fn list_problem(name: &str, list: &[String]) -> Option<String> {
    if list.len() > MAX_LIST {
        return Some(format!(
            "{name} has {} entries; at most {MAX_LIST}",
            list.len()
        ));
    }
    list.iter()
        .find(|v| v.len() > MAX_ID_BYTES)
        .map(|_| format!("an entry of {name} is longer than {MAX_ID_BYTES} bytes"))
}

fn embedding_problem(embedding: &Option<Vec<f32>>, dim: usize) -> Option<String> {
    let v = embedding.as_ref()?;
    if dim == 0 {
        return Some("embeddings are disabled on this cluster (TORUA_EMBEDDING_DIM=0)".into());
    }
    if v.len() != dim {
        return Some(format!(
            "embedding has {} dimensions; this cluster uses TORUA_EMBEDDING_DIM={dim}",
            v.len()
        ));
    }
    v.iter()
        .all(|x| x.is_finite())
        .then_some(())
        .map_or(Some("embedding contains NaN or infinity".into()), |_| None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: &str) -> Entity {
        Entity {
            id: id.into(),
            title: id.to_uppercase(),
            kind: "PERSON".into(),
            frequency: 1,
            ..Entity::default()
        }
    }

    #[test]
    fn bad_items_are_named_with_their_reason() {
        let b = Batch {
            entities: vec![
                entity("a"),
                entity(""),
                Entity {
                    embedding: Some(vec![1.0; 3]),
                    ..entity("c")
                },
            ],
            relations: vec![Relation {
                id: "r".into(),
                source: "a".into(),
                target: String::new(),
                description: String::new(),
                weight: 1.0,
                text_unit_ids: vec![],
                source_routing: None,
                target_routing: None,
            }],
            ..Batch::default()
        };
        let errors = b.validate(4);
        let got: Vec<(Kind, usize, &str)> = errors
            .iter()
            .map(|e| (e.kind, e.index, e.reason.as_str()))
            .collect();
        assert_eq!(got.len(), 3, "{errors:?}");
        assert_eq!(got[0], (Kind::Entity, 1, "missing id"));
        assert!(got[1].2.contains("TORUA_EMBEDDING_DIM=4"));
        assert!(got[2].2.contains("source and target"));
        assert!(Batch {
            entities: vec![entity("ok")],
            ..Batch::default()
        }
        .validate(4)
        .is_empty());
    }

    #[test]
    fn unknown_top_level_fields_are_refused() {
        let err = serde_json::from_str::<Batch>(r#"{"entitys": []}"#).unwrap_err();
        assert!(err.to_string().contains("entitys"), "{err}");
    }
}
