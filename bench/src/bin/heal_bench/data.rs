//! Deterministic GraphRAG-shaped data, generated document by document: the items of one
//! load round and the totals torua should then report.

use super::*;

/// What the primaries must hold: every acknowledged item once, each relation once per endpoint
/// shard.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) entities: u64,
    pub(crate) relations: u64,
    pub(crate) relation_copies: u64,
    pub(crate) chunks: u64,
    pub(crate) documents: u64,
    pub(crate) communities: u64,
}

impl Totals {
    pub(crate) fn add_relation(&mut self, source: &str, target: &str, shards: u32) {
        self.relations += 1;
        self.relation_copies += 1 + u64::from(shard_of(source, shards) != shard_of(target, shards));
    }
    pub(crate) fn add(&mut self, o: &Totals) {
        self.entities += o.entities;
        self.relations += o.relations;
        self.relation_copies += o.relation_copies;
        self.chunks += o.chunks;
        self.documents += o.documents;
        self.communities += o.communities;
    }
    pub(crate) fn of_round(r: &Items, shards: u32) -> Totals {
        let mut t = Totals {
            entities: r.entities.len() as u64,
            chunks: r.chunks.len() as u64,
            documents: r.documents.len() as u64,
            communities: r.communities.len() as u64,
            ..Totals::default()
        };
        for rel in &r.relations {
            t.add_relation(&rel.source, &rel.target, shards);
        }
        t
    }
}

pub(crate) const CHUNKS_PER_DOC: usize = 6;
pub(crate) const ENTITIES_PER_DOC: usize = 10;
pub(crate) const RELATIONS_PER_DOC: usize = 12;

pub(crate) struct Gen {
    rng: Rng,
    pub(crate) vocab: Vec<String>,
    names: Vec<String>,
    dim: usize,
    docs: usize,
    pub(crate) entities: usize,
    relations: usize,
}

impl Gen {
    pub(crate) fn new(seed: u64, dim: usize) -> Gen {
        let mut rng = Rng(seed);
        let vocab = vocabulary(&mut rng, 5000, 2, 3);
        let names = vocabulary(&mut rng, 20_000, 3, 4)
            .into_iter()
            .map(|w| w.to_uppercase())
            .collect();
        Gen {
            rng,
            vocab,
            names,
            dim,
            docs: 0,
            entities: 0,
            relations: 0,
        }
    }

    pub(crate) fn name(&mut self) -> String {
        let a = self.rng.below(self.names.len());
        let b = self.rng.below(self.names.len());
        format!("{} {}", self.names[a], self.names[b])
    }

    /// One document with its chunks, entities, relations and community report.
    pub(crate) fn document(&mut self, out: &mut Items) {
        let d = self.docs;
        self.docs += 1;
        let doc_id = format!("d-{d}");
        let first_entity = self.entities;
        let entity_ids: Vec<String> = (0..ENTITIES_PER_DOC)
            .map(|k| format!("e-{}", first_entity + k))
            .collect();
        self.entities += ENTITIES_PER_DOC;
        let chunk_ids: Vec<String> = (0..CHUNKS_PER_DOC).map(|k| format!("c-{d}-{k}")).collect();
        let mut chunk_entities: Vec<Vec<String>> = vec![Vec::new(); CHUNKS_PER_DOC];
        for (k, id) in entity_ids.iter().enumerate() {
            let n = self.rng.range(1, 3);
            let mut units: Vec<usize> = (0..n).map(|_| self.rng.below(CHUNKS_PER_DOC)).collect();
            units.sort_unstable();
            units.dedup();
            for &u in &units {
                chunk_entities[u].push(id.clone());
            }
            let description_len = self.rng.range(400, 900);
            let title = self.name();
            out.entities.push(Entity {
                id: id.clone(),
                title,
                kind: TYPES[(d + k) % TYPES.len()].to_string(),
                description: text(&mut self.rng, &self.vocab, description_len),
                frequency: units.len() as i64,
                text_unit_ids: units.iter().map(|&u| chunk_ids[u].clone()).collect(),
                degree: 0,
                embedding: (self.dim > 0).then(|| embedding(&mut self.rng, self.dim)),
                routing: None,
            });
        }
        let mut full = Vec::with_capacity(CHUNKS_PER_DOC);
        for (k, id) in chunk_ids.iter().enumerate() {
            let len = self.rng.range(1700, 3100);
            let t = text(&mut self.rng, &self.vocab, len);
            full.push(t.clone());
            out.chunks.push(Chunk {
                id: id.clone(),
                n_tokens: (t.split(' ').count() as f64 * 1.3).round() as i64,
                text: t,
                document_id: doc_id.clone(),
                entity_ids: std::mem::take(&mut chunk_entities[k]),
                embedding: (self.dim > 0).then(|| embedding(&mut self.rng, self.dim)),
            });
        }
        let title = format!("Report {d}: {}", self.name());
        out.documents.push(Document {
            id: doc_id,
            title,
            text: full.join("\n"),
            text_unit_ids: chunk_ids.clone(),
        });
        for j in 0..RELATIONS_PER_DOC {
            let s = first_entity + self.rng.below(ENTITIES_PER_DOC);
            let mut t = if j % 2 == 0 || first_entity == 0 {
                first_entity + self.rng.below(ENTITIES_PER_DOC)
            } else {
                // Earlier entities, a few of them hubs.
                power_law(&mut self.rng, first_entity, 0.6)
            };
            if t == s {
                t = if s == first_entity { s + 1 } else { s - 1 };
            }
            let len = self.rng.range(100, 300);
            out.relations.push(Relation {
                id: format!("r-{}", self.relations),
                source: format!("e-{s}"),
                target: format!("e-{t}"),
                description: text(&mut self.rng, &self.vocab, len),
                weight: (1 + self.rng.below(10)) as f64,
                text_unit_ids: vec![chunk_ids[self.rng.below(CHUNKS_PER_DOC)].clone()],
                source_routing: None,
                target_routing: None,
            });
            self.relations += 1;
        }
        let summary_len = self.rng.range(300, 600);
        let content_len = self.rng.range(3000, 5000);
        let title = format!("Community {d}: {}", self.name());
        out.communities.push(Community {
            id: format!("m-{d}"),
            level: 0,
            parent: format!("m1-{}", d / 20),
            title,
            entity_ids,
            summary: text(&mut self.rng, &self.vocab, summary_len),
            full_content: text(&mut self.rng, &self.vocab, content_len),
            rank: (1 + self.rng.below(100)) as f64 / 10.0,
        });
    }
}
