//! Where each item lives.
//!
//! `shard_of(id) = FNV-1a-64(utf8 bytes of id) mod TORUA_SHARDS`. FNV-1a is tiny, has no seed and
//! is specified byte for byte, so the placement is stable across versions, platforms and languages
//! (a client can compute it too). Placement by kind:
//! - **Entity**: `shard_of(entity.id)`.
//! - **Relation**: stored in `shard_of(source)` *and* `shard_of(target)` (once when equal), so it can be
//!   traversed from either endpoint without leaving the shard. In a shard that does not own an
//!   endpoint, that endpoint is a *stub* entity (id only, `stub = true`); a stub is also created when a
//!   relation names an entity that has not arrived yet, and is filled in when it does.
//! - **Chunk**, **Community**, **Document**: `shard_of(own id)`.

use std::collections::BTreeMap;

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

/// `ids` grouped by their shard, each group in the order given.
pub fn ids_by_shard(ids: &[String], shards: u32) -> BTreeMap<u32, Vec<String>> {
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for id in ids {
        out.entry(shard_of(id, shards))
            .or_default()
            .push(id.clone());
    }
    out
}

/// Splits a batch into one batch per shard, following the placement rules above.
pub fn split(batch: Batch, shards: u32) -> BTreeMap<u32, Batch> {
    let mut out: BTreeMap<u32, Batch> = BTreeMap::new();
    // The kinds placed by their own id.
    macro_rules! by_id {
        ($($kind:ident),*) => {$(
            for item in batch.$kind {
                out.entry(shard_of(&item.id, shards)).or_default().$kind.push(item);
            }
        )*};
    }
    by_id!(entities, chunks, communities, documents);
    for r in batch.relations {
        let a = shard_of(&r.source, shards);
        let b = shard_of(&r.target, shards);
        if a != b {
            out.entry(b).or_default().relations.push(r.clone());
        }
        out.entry(a).or_default().relations.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::Relation;

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
        };
        let parts = split(
            Batch {
                relations: vec![rel],
                ..Batch::default()
            },
            shards,
        );
        assert_eq!(parts.len(), 2);
        assert!(
            parts.contains_key(&shard_of(s, shards)) && parts.contains_key(&shard_of(t, shards))
        );
    }
}
