//! The generated graph: GraphRAG-shaped entities and relations with a power-law degree
//! distribution, the same for every target of one seed.

use super::*;

pub(crate) struct Graph {
    pub(crate) entities: Vec<Entity>,
    pub(crate) relations: Vec<Relation>,
}

pub(crate) const WORDS: [&str; 48] = [
    "agent",
    "alliance",
    "archive",
    "signal",
    "operation",
    "protocol",
    "research",
    "facility",
    "contact",
    "mission",
    "network",
    "council",
    "treaty",
    "harbor",
    "river",
    "engine",
    "theory",
    "message",
    "control",
    "region",
    "market",
    "capital",
    "project",
    "system",
    "memory",
    "battle",
    "journey",
    "record",
    "station",
    "frontier",
    "command",
    "expedition",
    "colony",
    "alien",
    "team",
    "leader",
    "report",
    "decision",
    "crisis",
    "partner",
    "source",
    "vessel",
    "device",
    "language",
    "pattern",
    "archive",
    "venture",
    "summit",
];
pub(crate) const SYLLABLES: [&str; 16] = [
    "KA", "RO", "MI", "DEL", "TAN", "VER", "LO", "SA", "NIX", "OR", "BEL", "QUA", "ZE", "HA",
    "TOR", "UA",
];
pub(crate) fn words(rng: &mut Rng, lo: usize, hi: usize) -> String {
    let n = rng.range(lo, hi);
    let mut s = String::with_capacity(n * 8);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

pub(crate) fn text_units(rng: &mut Rng, lo: usize, hi: usize, pool: usize) -> Vec<String> {
    (0..rng.range(lo, hi))
        .map(|_| format!("tu-{}", rng.below(pool)))
        .collect()
}

/// `n` entities `ent-<i>` with a made-up title, a type, a short description and 1-4 of `pool`
/// text unit ids (degree 0, no embedding, no routing key).
pub(crate) fn entities(rng: &mut Rng, n: usize, pool: usize) -> Vec<Entity> {
    (0..n)
        .map(|i| {
            let name: String = (0..rng.range(2, 3))
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            let text_unit_ids = text_units(rng, 1, 4, pool);
            Entity {
                id: format!("ent-{i}"),
                title: format!("{name} {}", rng.below(1000)),
                kind: TYPES[rng.below(TYPES.len())].to_string(),
                description: words(rng, 8, 20),
                frequency: text_unit_ids.len() as i64,
                text_unit_ids,
                degree: 0,
                embedding: None,
                routing: None,
            }
        })
        .collect()
}

pub(crate) fn generate(shape: &Generated) -> Graph {
    let Generated {
        entities: n_entities,
        relations: n_relations,
        seed,
        skew,
    } = *shape;
    let mut rng = Rng(seed);
    let pool = (n_entities / 2).max(1);
    let mut entities = entities(&mut rng, n_entities, pool);
    let sources = permutation(&mut rng, n_entities);
    let targets = permutation(&mut rng, n_entities);
    let relations = relations(
        &mut rng,
        &mut entities,
        n_relations,
        |rng| {
            let s = sources[power_law(rng, n_entities, skew)];
            (s, targets[power_law(rng, n_entities, skew)])
        },
        |rng, _| words(rng, 5, 12),
        |rng| text_units(rng, 1, 2, pool),
    );
    Graph {
        entities,
        relations,
    }
}
