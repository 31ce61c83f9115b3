//! Where each item lives.
//!
//! `shard_of(id) = FNV-1a-64(utf8 bytes of id) mod TORUA_SHARDS`. FNV-1a is tiny, has no seed and
//! is specified byte for byte, so the placement is stable across versions, platforms and languages
//! (a client can compute it too). Placement by kind:
//! - **Entity**: its *home*, `shard_of(entity.id)`, or `shard_of(entity.routing)` when it has a
//!   routing key (Elasticsearch's custom routing: entities with the same key share a shard, so a
//!   community's relations stay inside one shard). A routed entity whose home is not the shard of
//!   its id leaves a *pointer* there (a stub carrying its key): that shard is the id → shard
//!   directory, found from the id alone, so reads by id need no key.
//! - **Relation**: stored in both endpoints' homes (once when equal), so it can be traversed
//!   from either endpoint without leaving the shard; it carries the routing keys of routed
//!   endpoints, so a traversal knows the far end's home without a lookup. In a shard that does not
//!   own an endpoint, that endpoint is a *stub* entity (id only, `stub = true`); a stub is also
//!   created when a relation names an entity that has not arrived yet, and is filled in when it
//!   does.
//! - **Chunk**, **Community**, **Document**: `shard_of(own id)`.

use std::collections::{BTreeMap, HashMap};

use super::model::Batch;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

pub fn shard_of(id: &str, shards: u32) -> u32 {
    (fnv1a64(id.as_bytes()) % u64::from(shards.max(1))) as u32
}

/// The home of entity `id` with routing key `routing` (see the module doc).
pub fn home_shard(id: &str, routing: Option<&str>, shards: u32) -> u32 {
    shard_of(routing.unwrap_or(id), shards)
}

/// A batch cut by shard: each shard's items, and the pointers each shard keeps for routed
/// entities whose id it is the shard of (`(id, routing)`).
#[derive(Debug, Default)]
pub struct Split {
    pub parts: BTreeMap<u32, Batch>,
    pub pointers: BTreeMap<u32, Vec<(String, String)>>,
}

/// Splits a batch by shard, following the placement rules above. The relations' endpoint
/// routing keys must already be filled in (the ingest resolves them).
pub fn split(batch: Batch, shards: u32) -> Split {
    let mut out = Split::default();
    let parts = &mut out.parts;
    // The kinds placed by their own id.
    macro_rules! by_id {
        ($($kind:ident),*) => {$(
            for item in batch.$kind {
                parts.entry(shard_of(&item.id, shards)).or_default().$kind.push(item);
            }
        )*};
    }
    by_id!(chunks, communities, documents);
    // The last write of an id wins (as the applier folds writes); with routing keys an earlier
    // one could be placed in another shard, so it is dropped here.
    let last: HashMap<&str, usize> = (batch.entities.iter().enumerate())
        .map(|(i, e)| (e.id.as_str(), i))
        .collect();
    let keep: Vec<bool> = (batch.entities.iter().enumerate())
        .map(|(i, e)| last[e.id.as_str()] == i)
        .collect();
    for (e, keep) in batch.entities.into_iter().zip(keep) {
        if !keep {
            continue;
        }
        let home = home_shard(&e.id, e.routing.as_deref(), shards);
        let by_id = shard_of(&e.id, shards);
        if let (Some(key), true) = (&e.routing, home != by_id) {
            (out.pointers.entry(by_id).or_default()).push((e.id.clone(), key.clone()));
        }
        parts.entry(home).or_default().entities.push(e);
    }
    for r in batch.relations {
        let a = home_shard(&r.source, r.source_routing.as_deref(), shards);
        let b = home_shard(&r.target, r.target_routing.as_deref(), shards);
        if a != b {
            parts.entry(b).or_default().relations.push(r.clone());
        }
        parts.entry(a).or_default().relations.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::{Entity, Relation};

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV specification's test suite.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn relations_go_to_both_endpoint_shards() {
        let shards = 16;
        let (s, t) = ("alice", "bob");
        assert_ne!(
            shard_of(s, shards),
            shard_of(t, shards),
            "pick ids in different shards"
        );
        let rel = Relation {
            id: "r1".into(),
            source: s.into(),
            target: t.into(),
            description: String::new(),
            weight: 1.0,
            text_unit_ids: vec![],
            source_routing: None,
            target_routing: None,
        };
        let parts = split(
            Batch {
                relations: vec![rel],
                ..Batch::default()
            },
            shards,
        )
        .parts;
        assert_eq!(parts.len(), 2);
        assert!(
            parts.contains_key(&shard_of(s, shards)) && parts.contains_key(&shard_of(t, shards))
        );
    }

    #[test]
    fn routed_entities_live_with_their_key_and_leave_a_pointer_by_id() {
        let shards = 16;
        let key = "community-7";
        // An id whose own shard differs from its key's.
        let id = (0..100)
            .map(|i| format!("e{i}"))
            .find(|id| shard_of(id, shards) != shard_of(key, shards))
            .expect("an id in another shard");
        let entity: Entity = serde_json::from_value(serde_json::json!({"id": id, "routing": key}))
            .expect("an entity");
        let relation: Relation = serde_json::from_value(serde_json::json!({
            "id": "r", "source": id, "target": "plain", "source_routing": key
        }))
        .expect("a relation");
        let out = split(
            Batch {
                entities: vec![entity],
                relations: vec![relation],
                ..Batch::default()
            },
            shards,
        );
        let home = shard_of(key, shards);
        assert_eq!(out.parts[&home].entities[0].id, id);
        assert_eq!(
            out.pointers[&shard_of(&id, shards)],
            vec![(id.clone(), key.to_string())]
        );
        assert_eq!(out.pointers.len(), 1);
        assert!(out.parts[&home].relations.iter().any(|r| r.id == "r"));
        assert!(out.parts[&shard_of("plain", shards)]
            .relations
            .iter()
            .any(|r| r.id == "r"));
        // The relation is not in the source id's own shard (unless that is plain's).
        if shard_of(&id, shards) != shard_of("plain", shards) {
            assert!(!out.parts.contains_key(&shard_of(&id, shards)));
        }
    }
}
