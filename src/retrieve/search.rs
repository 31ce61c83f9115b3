//! Seed search: every shard's top k by vector distance (HNSW) and by BM25, merged into one
//! global top k per list, then fused by reciprocal rank fusion.
//!
//! Each shard scores BM25 with its own statistics (document counts and term frequencies of the
//! shard), as Elasticsearch's default query-then-fetch does; with items spread evenly the scores
//! are comparable, with very uneven shards they are not exactly the single-database scores.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::stage::{StageError, Stages};
use crate::graph::partition::shard_of;
use crate::storage::{ItemKind, RetrievalRead, RetrievalRows, RetrievedItem, TextIndex};

/// Reciprocal rank fusion's constant (Cormack et al.; also Elasticsearch's and LightRAG's).
pub const RRF_K: f64 = 60.0;

/// What is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Entities,
    Chunks,
}

impl Target {
    fn items(self) -> ItemKind {
        match self {
            Target::Entities => ItemKind::Entities,
            Target::Chunks => ItemKind::Chunks,
        }
    }

    /// The full-text indexes searched: entities by title alone and by title + description (a
    /// question that names an entity finds it first by its title), chunks by text.
    fn text_indexes(self) -> &'static [TextIndex] {
        match self {
            Target::Entities => &[TextIndex::EntityTitle, TextIndex::EntityText],
            Target::Chunks => &[TextIndex::ChunkText],
        }
    }
}

/// An item's id and properties, as retrieval keeps them.
fn item_of(found: RetrievedItem) -> (String, Item) {
    match found {
        RetrievedItem::Entity(e) => (
            e.id,
            Item::Entity {
                title: e.title,
                kind: e.kind,
                description: e.description,
                degree: e.degree,
                text_unit_ids: e.text_unit_ids,
            },
        ),
        RetrievedItem::Chunk(c) => (
            c.id,
            Item::Chunk {
                text: c.text,
                n_tokens: c.n_tokens,
                document_id: c.document_id,
            },
        ),
    }
}

/// The properties of a hit.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Entity {
        title: String,
        kind: String,
        description: String,
        degree: i64,
        text_unit_ids: Vec<String>,
    },
    Chunk {
        text: String,
        n_tokens: i64,
        document_id: String,
    },
}

/// A fused hit: its place and raw score in each list it came from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Seed {
    pub id: String,
    pub score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<f64>,
    /// Rank and BM25 score among titles (entities only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title_rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title_score: Option<f64>,
    /// Rank and BM25 score over the whole text (entities: title + description; chunks: text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bm25_rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bm25_score: Option<f64>,
    #[serde(skip)]
    pub item: Option<Item>,
}

/// The global top `k` by vector distance and by BM25 (whichever inputs are given), fused.
/// Every search runs at once.
pub async fn seeds(
    stages: &Stages<'_>,
    target: Target,
    text_query: Option<&str>,
    embedding: Option<&[f32]>,
    k: usize,
) -> Result<Vec<Seed>, StageError> {
    let shards = stages.all_shards();
    let by_vector = async {
        let Some(e) = embedding else {
            return Ok(vec![]);
        };
        // Ids and distances only; the rows of the global top k are read afterwards by primary
        // key.
        let read = RetrievalRead::Nearest {
            items: target.items(),
            embedding: e.to_vec(),
            k,
        };
        let hits = stages
            .run_by_shard(&shards, read, RetrievalRows::into_nearest)
            .await?;
        let hits = (hits.into_iter())
            .map(|(shard, h)| {
                if target == Target::Entities {
                    stages.found_in(&h.id, shard);
                }
                (h.id, None, h.distance)
            })
            .collect();
        Ok::<_, StageError>(top(hits, k, false))
    };
    let by_text = |index: TextIndex| {
        let shards = &shards;
        async move {
            let Some(words) = text_query.map(search_words).filter(|w| !w.is_empty()) else {
                return Ok(vec![]);
            };
            let read = RetrievalRead::TextSearch { index, words, k };
            let hits = stages
                .run_by_shard(shards, read, RetrievalRows::into_scored)
                .await?;
            let hits = hits
                .into_iter()
                .map(|(shard, h)| {
                    let (id, item) = item_of(h.item);
                    if target == Target::Entities {
                        stages.found_in(&id, shard);
                    }
                    (id, Some(item), h.score)
                })
                .collect();
            Ok::<_, StageError>(top(hits, k, true))
        }
    };
    let indexes = target.text_indexes();
    let by_title = async {
        match indexes {
            [title, _] => by_text(*title).await,
            _ => Ok(vec![]),
        }
    };
    let by_words = by_text(indexes[indexes.len() - 1]);
    let (by_vector, by_title, by_words) = tokio::join!(by_vector, by_title, by_words);
    let mut seeds = fuse(by_vector?, by_title?, by_words?, k);
    // Seeds found by vector only: their rows, by primary key in their shards, all at once.
    let missing: Vec<String> = seeds
        .iter()
        .filter(|s| s.item.is_none())
        .map(|s| s.id.clone())
        .collect();
    let mut found = lookup(stages, target, &missing).await?;
    for s in &mut seeds {
        if s.item.is_none() {
            s.item = found.remove(&s.id);
        }
    }
    // An item deleted between the search and the lookup is left out.
    seeds.retain(|s| s.item.is_some());
    Ok(seeds)
}

/// The rows of `ids` (items of `target`), each read by primary key in its own shard: where a
/// search found it, else the shard of its id (one read per shard, all shards at once).
pub async fn lookup(
    stages: &Stages<'_>,
    target: Target,
    ids: &[String],
) -> Result<HashMap<String, Item>, StageError> {
    let mut per_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for id in ids {
        let found_in = (target == Target::Entities).then(|| stages.shard_found_in(id));
        let shard = found_in
            .flatten()
            .unwrap_or_else(|| shard_of(id, stages.map.shards));
        per_shard.entry(shard).or_default().push(id.clone());
    }
    let answers = futures_util::future::join_all(per_shard.into_iter().map(|(shard, ids)| {
        let read = RetrievalRead::Lookup {
            items: target.items(),
            ids,
        };
        async move { stages.run(&[shard], read, RetrievalRows::into_items).await }
    }))
    .await;
    let mut out = HashMap::new();
    for found in answers {
        out.extend(found?.into_iter().map(item_of));
    }
    Ok(out)
}

/// The words of a question (letters and digits; everything else separates words), as the
/// full-text index sees them.
pub fn search_words(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A shard's hit: id, item (unless only the id was asked for), raw score.
type Hit = (String, Option<Item>, f64);

/// The best `k` of all shards' hits: by distance ascending or score descending, ties by id. An
/// item found on two shards (never, as items live in one shard) would count once.
fn top(mut hits: Vec<Hit>, k: usize, higher_is_better: bool) -> Vec<Hit> {
    hits.sort_by(|a, b| {
        let order = if higher_is_better {
            b.2.total_cmp(&a.2)
        } else {
            a.2.total_cmp(&b.2)
        };
        order.then_with(|| a.0.cmp(&b.0))
    });
    hits.dedup_by(|a, b| a.0 == b.0);
    hits.truncate(k);
    hits
}

/// Reciprocal rank fusion of the lists; the best `k`, ties by id.
pub fn fuse(by_vector: Vec<Hit>, by_title: Vec<Hit>, by_text: Vec<Hit>, k: usize) -> Vec<Seed> {
    let mut seeds: HashMap<String, Seed> = HashMap::new();
    add_list(&mut seeds, by_vector, |s, rank, distance| {
        s.vector_rank = Some(rank);
        s.distance = Some(distance);
    });
    add_list(&mut seeds, by_title, |s, rank, score| {
        s.title_rank = Some(rank);
        s.title_score = Some(score);
    });
    add_list(&mut seeds, by_text, |s, rank, score| {
        s.bm25_rank = Some(rank);
        s.bm25_score = Some(score);
    });
    let mut out: Vec<Seed> = seeds.into_values().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    out.truncate(k);
    out
}

/// Adds one ranked list to the fusion: each hit's `1 / (RRF_K + rank)` (rank from 1), its item
/// if still unknown, and its rank and raw score through `mark`.
fn add_list(
    seeds: &mut HashMap<String, Seed>,
    hits: Vec<Hit>,
    mark: impl Fn(&mut Seed, usize, f64),
) {
    for (i, (id, item, raw)) in hits.into_iter().enumerate() {
        let s = seeds
            .entry(id.clone())
            .or_insert_with(|| empty_seed(id, None));
        if s.item.is_none() {
            s.item = item;
        }
        mark(s, i + 1, raw);
        s.score += 1.0 / (RRF_K + (i + 1) as f64);
    }
}

fn empty_seed(id: String, item: Option<Item>) -> Seed {
    Seed {
        id,
        score: 0.0,
        vector_rank: None,
        distance: None,
        title_rank: None,
        title_score: None,
        bm25_rank: None,
        bm25_score: None,
        item,
    }
}

/// Reciprocal rank fusion of ranked id lists (for hybrid text units): ids by fused score, ties
/// by id, each with its score.
pub fn fuse_ids(lists: &[Vec<String>]) -> Vec<(String, f64)> {
    let mut score: HashMap<&str, f64> = HashMap::new();
    for list in lists {
        for (rank, id) in list.iter().enumerate() {
            *score.entry(id).or_default() += 1.0 / (RRF_K + (rank + 1) as f64);
        }
    }
    let mut out: Vec<(String, f64)> = score
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f64) -> Hit {
        (
            id.to_string(),
            Some(Item::Chunk {
                text: String::new(),
                n_tokens: 0,
                document_id: String::new(),
            }),
            score,
        )
    }

    #[test]
    fn search_words_keep_letters_and_digits_only() {
        assert_eq!(
            search_words("Who's 'Alex' \\ Mercer?\n(2024)"),
            "Who s Alex Mercer 2024"
        );
        assert_eq!(search_words("Émile Zoë"), "Émile Zoë");
        assert_eq!(search_words("?!"), "");
    }

    #[test]
    fn fusion_rewards_items_in_both_lists_and_breaks_ties_by_id() {
        let fused = fuse(
            vec![hit("a", 0.1), hit("b", 0.2), hit("c", 0.3)],
            vec![],
            vec![hit("c", 9.0), hit("d", 5.0)],
            3,
        );
        let ids: Vec<&str> = fused.iter().map(|s| s.id.as_str()).collect();
        // c: 1/63 + 1/61; a: 1/61; b and d: 1/62 each (tie: by id).
        assert_eq!(ids, vec!["c", "a", "b"]);
        assert_eq!(fused[0].vector_rank, Some(3));
        assert_eq!(fused[0].bm25_rank, Some(1));
        assert!((fused[0].score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
    }

    #[test]
    fn the_global_top_k_orders_distances_up_and_scores_down() {
        let hits = |scores: &[(&str, f64)]| -> Vec<Hit> {
            scores.iter().map(|(id, s)| hit(id, *s)).collect()
        };
        let near = top(hits(&[("x", 0.5), ("y", 0.1), ("z", 0.1)]), 2, false);
        assert_eq!(
            near.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
            ["y", "z"]
        );
        let best = top(hits(&[("x", 0.5), ("y", 0.1), ("z", 2.0)]), 2, true);
        assert_eq!(
            best.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
            ["z", "x"]
        );
    }
}
