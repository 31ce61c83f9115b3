//! Which items a copy's acknowledged-but-unapplied writes touch, so that a read of a few items
//! (a point read, a traversal step) waits for the applier only when one of those writes concerns
//! them. Under a steady stream of writes a copy is nearly always a round or two behind; without
//! this, every read of the copy waits for the writes logged before it, whatever they touch.
//!
//! An upsert touches the ids of its entities, the source and target of its relations, and its
//! chunks and documents (an entity's record holds its relations, read from its own shard). Any
//! other write (a delete, a document cascade step) may change what many items read, so while one
//! is pending every read waits.

use std::collections::HashMap;

use super::{Placement, WriteOp};

#[derive(Debug, Default)]
pub struct PendingItems {
    /// Unapplied writes touching each id (entities, relation ends, chunks, documents alike).
    ids: HashMap<String, u32>,
    /// Unapplied writes whose reach is not a list of ids.
    wide: usize,
    /// How the newest unapplied write of each entity places it (an upsert stores it here, a
    /// pointer says where it lives), so that a lookup of placements need not wait for them.
    placed: HashMap<String, Placement>,
}

/// The ids `op` touches, or `None` when it may touch any.
fn ids_of(op: &WriteOp) -> Option<Box<dyn Iterator<Item = &str> + '_>> {
    let b = match op {
        WriteOp::Upsert(b) => b,
        WriteOp::Point(pointers) => {
            return Some(Box::new(pointers.iter().map(|(id, _)| id.as_str())));
        }
        // Staged results are not read until they are published.
        WriteOp::Stage { .. } | WriteOp::Discard { .. } => {
            return Some(Box::new(std::iter::empty()))
        }
        _ => return None,
    };
    Some(Box::new(
        b.entities
            .iter()
            .map(|e| e.id.as_str())
            .chain(
                b.relations
                    .iter()
                    .flat_map(|r| [r.source.as_str(), r.target.as_str()]),
            )
            .chain(b.chunks.iter().map(|c| c.id.as_str()))
            .chain(b.documents.iter().map(|d| d.id.as_str())),
    ))
}

impl PendingItems {
    /// `op` is logged and waits to be applied.
    pub fn add(&mut self, op: &WriteOp) {
        let placed = |id: &str, stub, routing: Option<&String>| Placement {
            id: id.to_string(),
            stub,
            routing: routing.cloned(),
        };
        match op {
            WriteOp::Upsert(b) => {
                for e in &b.entities {
                    (self.placed).insert(e.id.clone(), placed(&e.id, false, e.routing.as_ref()));
                }
            }
            WriteOp::Point(pointers) => {
                for (id, key) in pointers {
                    self.placed.insert(id.clone(), placed(id, true, Some(key)));
                }
            }
            _ => {}
        }
        match ids_of(op) {
            Some(ids) => {
                for id in ids {
                    *self.ids.entry(id.to_string()).or_default() += 1;
                }
            }
            None => self.wide += 1,
        }
    }

    /// `op` is applied (visible to reads), or will never be.
    pub fn remove(&mut self, op: &WriteOp) {
        match ids_of(op) {
            Some(ids) => {
                for id in ids {
                    if let Some(n) = self.ids.get_mut(id) {
                        *n -= 1;
                        if *n == 0 {
                            self.ids.remove(id);
                            self.placed.remove(id);
                        }
                    }
                }
            }
            None => self.wide = self.wide.saturating_sub(1),
        }
    }

    /// The placements unapplied writes give to those of `ids` they store.
    pub fn placed<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<Placement> {
        (ids.into_iter())
            .filter_map(|id| self.placed.get(id).cloned())
            .collect()
    }

    /// Whether an unapplied write may change what a read of `ids` answers.
    pub fn touch_any<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> bool {
        self.wide > 0 || ids.into_iter().any(|id| self.ids.contains_key(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upsert(entities: &[&str], relations: &[(&str, &str)]) -> WriteOp {
        let batch = json!({
            "entities": entities.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            "relations": relations.iter()
                .map(|(s, t)| json!({"id": format!("{s}-{t}"), "source": s, "target": t}))
                .collect::<Vec<_>>(),
        });
        WriteOp::Upsert(serde_json::from_value(batch).expect("a batch"))
    }

    #[test]
    fn a_read_waits_only_for_writes_that_touch_its_items() {
        let mut p = PendingItems::default();
        let a = upsert(&["a"], &[("a", "b")]);
        let a_again = upsert(&["a"], &[]);
        p.add(&a);
        p.add(&a_again);
        assert!(p.touch_any(["b"]), "a relation's far end is touched");
        assert!(!p.touch_any(["c", "d"]));
        p.remove(&a);
        assert!(p.touch_any(["a"]), "a second write of a is still pending");
        assert!(!p.touch_any(["b"]));
        p.remove(&a_again);
        assert!(!p.touch_any(["a"]));

        let delete = WriteOp::DeleteRelationsOf("z".into());
        p.add(&delete);
        assert!(p.touch_any(["c"]), "a pending delete may change any read");
        p.remove(&delete);
        assert!(!p.touch_any(["c"]));
        assert!(p.ids.is_empty() && p.wide == 0);
    }
}
