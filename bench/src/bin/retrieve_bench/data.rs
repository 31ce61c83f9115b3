//! The generated corpus: topic clusters of entities, relations, chunks and communities with
//! embeddings around their topic's centre, the same for both systems of one seed.

use super::*;

pub(crate) struct Graph {
    /// Entities, relations, chunks and communities; no documents.
    pub(crate) items: Items,
    /// Cluster (level-0 community) of each entity.
    pub(crate) cluster: Vec<usize>,
}

/// Words of the general vocabulary, of names, and topic words per cluster.
pub(crate) const VOCAB: usize = 5000;
pub(crate) const NAMES: usize = 20_000;
pub(crate) const TOPIC_WORDS: usize = 30;

/// `lo..=hi` words, each a topic word with probability 1/2, else a word of the vocabulary
/// (frequent words more likely).
pub(crate) fn text(
    rng: &mut Rng,
    vocab: &[String],
    topic: &[usize],
    lo: usize,
    hi: usize,
) -> String {
    let n = rng.range(lo, hi);
    let mut s = String::with_capacity(n * 9);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        let w = if rng.below(2) == 0 {
            topic[rng.below(topic.len())]
        } else {
            power_law(rng, vocab.len(), 0.7)
        };
        s.push_str(&vocab[w]);
    }
    s
}

/// `centre` plus gaussian noise of expected norm `noise`, normalised.
pub(crate) fn around(rng: &mut Rng, centre: &[f64], noise: f64) -> Vec<f64> {
    let s = noise / (centre.len() as f64).sqrt();
    let mut v: Vec<f64> = centre.iter().map(|c| c + s * rng.gauss()).collect();
    normalize(&mut v);
    v
}

pub(crate) fn generate(a: &Args) -> Graph {
    let mut rng = Rng(a.graph.seed);
    let vocab = vocabulary(&mut rng, VOCAB, 2, 3);
    let names: Vec<String> = vocabulary(&mut rng, NAMES, 3, 4)
        .into_iter()
        .map(|w| w.to_uppercase())
        .collect();
    let n0 = (a.graph.entities / 400).max(20);
    let n1 = n0.div_ceil(10);
    let centres: Vec<Vec<f64>> = (0..n0)
        .map(|_| {
            let mut c: Vec<f64> = (0..a.dim).map(|_| rng.gauss()).collect();
            normalize(&mut c);
            c
        })
        .collect();
    let topics: Vec<Vec<usize>> = (0..n0)
        .map(|_| {
            (0..TOPIC_WORDS)
                .map(|_| power_law(&mut rng, VOCAB, 0.3))
                .collect()
        })
        .collect();
    // Chunks: a cluster each.
    let chunk_cluster: Vec<usize> = (0..a.chunks).map(|_| rng.below(n0)).collect();
    let mut chunks: Vec<Chunk> = (0..a.chunks)
        .map(|i| {
            let c = chunk_cluster[i];
            let text = text(&mut rng, &vocab, &topics[c], 60, 120);
            let words = text.split(' ').count();
            Chunk {
                id: format!("tu-{i}"),
                n_tokens: (words as f64 * 1.3).round() as i64,
                text,
                document_id: format!("doc-{}", i / 10),
                entity_ids: vec![],
                embedding: Some(quantize(&around(&mut rng, &centres[c], 1.0))),
            }
        })
        .collect();
    let cluster: Vec<usize> = (0..a.graph.entities).map(|_| rng.below(n0)).collect();
    let mut members: Vec<Vec<usize>> = vec![vec![]; n0];
    for (i, &c) in cluster.iter().enumerate() {
        members[c].push(i);
    }
    let mut entities: Vec<Entity> = (0..a.graph.entities)
        .map(|i| {
            let c = cluster[i];
            let mut text_unit_ids: Vec<String> = (0..rng.range(1, 4))
                .map(|_| format!("tu-{}", rng.below(a.chunks)))
                .collect();
            text_unit_ids.sort();
            text_unit_ids.dedup();
            for t in &text_unit_ids {
                let k: usize = t[3..].parse().expect("chunk index");
                chunks[k].entity_ids.push(format!("ent-{i}"));
            }
            Entity {
                id: format!("ent-{i}"),
                title: format!("{} {}", names[rng.below(NAMES)], names[rng.below(NAMES)]),
                kind: TYPES[rng.below(TYPES.len())].to_string(),
                description: text(&mut rng, &vocab, &topics[c], 12, 30),
                frequency: text_unit_ids.len() as i64,
                text_unit_ids,
                degree: 0,
                embedding: Some(quantize(&around(&mut rng, &centres[c], 1.0))),
                routing: None,
            }
        })
        .collect();
    let sources = permutation(&mut rng, a.graph.entities);
    let targets = permutation(&mut rng, a.graph.entities);
    let relations = relations(
        &mut rng,
        &mut entities,
        a.graph.relations,
        |rng| {
            let s = sources[power_law(rng, a.graph.entities, a.graph.skew)];
            let t = if rng.below(2) == 0 {
                let m = &members[cluster[s]];
                m[rng.below(m.len())]
            } else {
                targets[power_law(rng, a.graph.entities, a.graph.skew)]
            };
            (s, t)
        },
        |rng, s| text(rng, &vocab, &topics[cluster[s]], 5, 12),
        |rng| vec![format!("tu-{}", rng.below(a.chunks))],
    );
    let mut communities = Vec::with_capacity(n0 + n1);
    for c in 0..n0 {
        let topic = &topics[c];
        communities.push(Community {
            id: format!("comm-0-{c}"),
            level: 0,
            parent: format!("comm-1-{}", c % n1),
            title: format!("Community {c} {} and {}", vocab[topic[0]], vocab[topic[1]]),
            entity_ids: members[c].iter().map(|&i| entities[i].id.clone()).collect(),
            summary: text(&mut rng, &vocab, topic, 20, 40),
            full_content: text(&mut rng, &vocab, topic, 150, 300),
            rank: (1 + rng.below(100)) as f64 / 10.0,
        });
    }
    for (p, topic) in topics.iter().enumerate().take(n1) {
        communities.push(Community {
            id: format!("comm-1-{p}"),
            level: 1,
            parent: String::new(),
            title: format!("Community group {p} {}", vocab[topic[2]]),
            entity_ids: (p..n0)
                .step_by(n1)
                .flat_map(|c| members[c].iter().map(|&i| entities[i].id.clone()))
                .collect(),
            summary: text(&mut rng, &vocab, topic, 20, 40),
            full_content: text(&mut rng, &vocab, topic, 200, 400),
            rank: (1 + rng.below(100)) as f64 / 10.0,
        });
    }
    Graph {
        items: Items {
            entities,
            relations,
            chunks,
            documents: Vec::new(),
            communities,
        },
        cluster,
    }
}
