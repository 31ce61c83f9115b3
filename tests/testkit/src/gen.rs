//! Building blocks of synthetic GraphRAG data (made-up words and texts, entity types, unit
//! embeddings), where torua places an id, and ingest bodies of many items.

use std::collections::HashSet;

use serde::Serialize;

use crate::graphrag::{Entity, Relation};
use crate::rng::{power_law, Rng};

/// Syllables of made-up words.
pub const SYLLABLES: [&str; 40] = [
    "ka", "ro", "mi", "del", "tan", "ver", "lo", "sa", "nix", "or", "bel", "qua", "ze", "ha",
    "tor", "ua", "pen", "dri", "mo", "lus", "ar", "ven", "cor", "ti", "gal", "shi", "bo", "rek",
    "fa", "nu", "ple", "sto", "wi", "jor", "ek", "mar", "dun", "vi", "os", "te",
];

/// Entity types as GraphRAG extracts them.
pub const TYPES: [&str; 6] = [
    "PERSON",
    "ORGANIZATION",
    "GEO",
    "EVENT",
    "CONCEPT",
    "TECHNOLOGY",
];

/// `n` distinct made-up words of `lo..=hi` [`SYLLABLES`].
pub fn vocabulary(rng: &mut Rng, n: usize, lo: usize, hi: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let w: String = (0..rng.range(lo, hi))
            .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
            .collect();
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// About `bytes` bytes of words of `vocab`, frequent (low-index) words more likely.
pub fn text_of_bytes(rng: &mut Rng, vocab: &[String], bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 16);
    while s.len() < bytes {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&vocab[power_law(rng, vocab.len(), 0.7)]);
    }
    s
}

/// Scales `v` to unit length.
pub fn normalize(v: &mut [f64]) {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// Rounded to 1e-4 (short JSON; torua and an embedded baseline then store exactly these f32s).
pub fn quantize(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| ((x * 1e4).round() / 1e4) as f32).collect()
}

/// A random unit vector of `dim` components, [`quantize`]d.
pub fn embedding(rng: &mut Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f64> = (0..dim).map(|_| rng.unit() * 2.0 - 1.0).collect();
    normalize(&mut v);
    quantize(&v)
}

/// The shard torua places an id on (FNV-1a-64 mod shards, as `src/graph/partition.rs`).
pub fn shard_of(id: &str, shards: u32) -> u32 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h % u64::from(shards.max(1))) as u32
}

/// Ingest bodies `{"<key>": [item, ...]}` of `batch` items each, with their item counts.
/// Serialised directly (not through `serde_json::Value`, which would print every f32 as its f64
/// expansion).
pub fn bodies<T: Serialize>(
    items: &[T],
    key: &str,
    batch: usize,
) -> serde_json::Result<Vec<(usize, Vec<u8>)>> {
    items
        .chunks(batch.max(1))
        .map(|c| {
            let mut body = format!("{{\"{key}\":").into_bytes();
            serde_json::to_writer(&mut body, c)?;
            body.push(b'}');
            Ok((c.len(), body))
        })
        .collect()
}

/// Ingest bodies `{"<key>": [item, ...]}` of about `max` bytes each, with their item counts.
pub fn pack<T: Serialize>(
    key: &str,
    items: &[T],
    max: usize,
) -> serde_json::Result<Vec<(usize, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut n = 0;
    for item in items {
        let s = serde_json::to_vec(item)?;
        if !body.is_empty() && body.len() + s.len() + 2 > max {
            body.extend_from_slice(b"]}");
            out.push((n, std::mem::take(&mut body)));
            n = 0;
        }
        if body.is_empty() {
            body.extend_from_slice(format!("{{\"{key}\":[").as_bytes());
        } else {
            body.push(b',');
        }
        body.extend_from_slice(&s);
        n += 1;
    }
    if !body.is_empty() {
        body.extend_from_slice(b"]}");
        out.push((n, body));
    }
    Ok(out)
}

/// `n` relations `rel-<j>` between `entities`, each drawn in this order: its source and target
/// indexes (`endpoints`; a target equal to the source is drawn again, uniformly), its
/// description (`description`, given the source), a weight of 1 to 10 and its text unit ids
/// (`text_unit_ids`). Each entity's `degree` becomes the number of relations it is an end of.
pub fn relations(
    rng: &mut Rng,
    entities: &mut [Entity],
    n: usize,
    mut endpoints: impl FnMut(&mut Rng) -> (usize, usize),
    mut description: impl FnMut(&mut Rng, usize) -> String,
    mut text_unit_ids: impl FnMut(&mut Rng) -> Vec<String>,
) -> Vec<Relation> {
    let mut degree = vec![0i64; entities.len()];
    let relations = (0..n)
        .map(|j| {
            let (s, mut t) = endpoints(rng);
            while t == s {
                t = rng.below(entities.len());
            }
            degree[s] += 1;
            degree[t] += 1;
            Relation {
                id: format!("rel-{j}"),
                source: entities[s].id.clone(),
                target: entities[t].id.clone(),
                description: description(rng, s),
                weight: (1 + rng.below(10)) as f64,
                text_unit_ids: text_unit_ids(rng),
                source_routing: None,
                target_routing: None,
            }
        })
        .collect();
    for (e, d) in entities.iter_mut().zip(degree) {
        e.degree = d;
    }
    relations
}
