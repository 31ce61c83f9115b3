//! Retrieval's typed reads on a real copy: nearest items in distance order, full-text top k with
//! the items' properties, lookups by id (missing ids left out), community reports by matches and
//! rank, and the answer-size limit.

use super::*;
use crate::graph::model::{Batch, Chunk, Community};
use crate::storage::ReadScope;
use crate::storage::{
    ChunkItem, CommunityReport, EntityItem, ItemKind, RetrievalRead, RetrievalRows, RetrievedItem,
    TextIndex, VectorHit,
};

const BIG: usize = 1 << 20;
const TIMEOUT_MS: u64 = 30_000;

fn entity(id: &str, title: &str, description: &str, embedding: Option<Vec<f32>>) -> Entity {
    Entity {
        id: id.into(),
        title: title.into(),
        kind: "PERSON".into(),
        description: description.into(),
        text_unit_ids: vec![format!("{id}-t1"), format!("{id}-t2")],
        frequency: 1,
        degree: id.len() as i64,
        embedding,
        routing: None,
    }
}

fn chunk(id: &str, text: &str, embedding: Vec<f32>) -> Chunk {
    Chunk {
        id: id.into(),
        text: text.into(),
        n_tokens: text.split(' ').count() as i64,
        document_id: "doc".into(),
        entity_ids: vec![],
        embedding: Some(embedding),
    }
}

fn community(id: &str, level: i64, entity_ids: &[&str], rank: f64, full: &str) -> Community {
    Community {
        id: id.into(),
        level,
        parent: String::new(),
        title: format!("title of {id}"),
        entity_ids: entity_ids.iter().map(|e| e.to_string()).collect(),
        summary: format!("summary of {id}"),
        full_content: full.into(),
        rank,
    }
}

/// A copy (dimension 4) holding entities, chunks and communities, in a temporary directory that
/// lasts as long as the returned guard.
async fn filled() -> (tempfile::TempDir, KuzuShard) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::for_budget(256, 1, 1, 4);
    let shard = KuzuShard::open(
        &dir.path().join("shard-0.kz"),
        0,
        &config,
        Arc::new(ApplyGate::new(2)),
    )
    .unwrap();
    let batch = Batch {
        entities: vec![
            entity(
                "a",
                "Ada Baker",
                "a lighthouse keeper",
                Some(vec![1.0, 0.0, 0.0, 0.0]),
            ),
            entity(
                "bb",
                "Bo",
                "a baker of bread",
                Some(vec![1.0, 1.0, 0.0, 0.0]),
            ),
            entity("ccc", "Cy", "a sailor", Some(vec![0.0, 1.0, 0.0, 0.0])),
            entity("dddd", "Di Baker Baker", "no vector", None),
        ],
        chunks: vec![
            chunk(
                "t1",
                "the lighthouse stood on the cliff",
                vec![0.0, 0.0, 1.0, 0.0],
            ),
            chunk("t2", "bread and a lighthouse", vec![0.0, 0.0, 1.0, 1.0]),
            chunk("t3", "nothing here", vec![0.0, 0.0, 0.0, 1.0]),
        ],
        communities: vec![
            community("c1", 0, &["a", "bb"], 5.0, "full report one"),
            community("c2", 1, &["a"], 9.0, ""),
            community("c3", 0, &["ccc"], 1.0, "full report three"),
        ],
        ..Batch::default()
    };
    shard.write(1, WriteOp::Upsert(batch)).await.unwrap();
    shard
        .wait_visible(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    (dir, shard)
}

async fn ask(shard: &KuzuShard, read: RetrievalRead) -> RetrievalRows {
    shard
        .bounded_read(read, TIMEOUT_MS, BIG, &ReadScope::strict())
        .await
        .unwrap()
}

/// The items a lookup answers.
async fn items(shard: &KuzuShard, read: RetrievalRead) -> Vec<RetrievedItem> {
    ask(shard, read).await.into_items().expect("items")
}

/// The scored items a search answers.
async fn scored(shard: &KuzuShard, read: RetrievalRead) -> Vec<crate::storage::ScoredItem> {
    ask(shard, read).await.into_scored().expect("scored items")
}

/// The `k` nearest `items` to `embedding`, nearest first.
async fn nearest(
    shard: &KuzuShard,
    items: ItemKind,
    embedding: Vec<f32>,
    k: usize,
) -> Vec<VectorHit> {
    let read = RetrievalRead::Nearest {
        items,
        embedding,
        k,
    };
    let mut hits = ask(shard, read).await.into_nearest().unwrap();
    hits.sort_by(|x, y| x.distance.total_cmp(&y.distance));
    hits
}

fn ids_of(items: &[RetrievedItem]) -> Vec<&str> {
    items.iter().map(RetrievedItem::id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_items_come_with_their_distances() {
    let (_dir, shard) = filled().await;
    let hits = nearest(&shard, ItemKind::Entities, vec![1.0, 0.0, 0.0, 0.0], 2).await;
    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["a", "bb"]);
    // Cosine distances: 0 for the same direction, 1 - 1/sqrt(2) at 45 degrees.
    assert!(hits[0].distance.abs() < 1e-5, "{hits:?}");
    assert!(
        (hits[1].distance - (1.0 - 0.5f64.sqrt())).abs() < 1e-4,
        "{hits:?}"
    );
    // Chunks have their own index; k larger than what is held returns everything held.
    let chunks = nearest(&shard, ItemKind::Chunks, vec![0.0, 0.0, 1.0, 0.0], 10).await;
    let ids: Vec<&str> = chunks.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["t1", "t2", "t3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_search_returns_the_top_k_with_properties() {
    let (_dir, shard) = filled().await;
    let search = |index, words: &str, k| RetrievalRead::TextSearch {
        index,
        words: words.into(),
        k,
    };
    // By title: "baker" is in the titles of a and dddd only (bb has it in its description);
    // dddd's title says it twice in fewer other words, so it scores higher.
    let mut by_title = scored(&shard, search(TextIndex::EntityTitle, "baker", 10)).await;
    by_title.sort_by(|x, y| y.score.total_cmp(&x.score));
    let items: Vec<RetrievedItem> = by_title.iter().map(|h| h.item.clone()).collect();
    assert_eq!(ids_of(&items), ["dddd", "a"]);
    assert!(by_title[0].score > by_title[1].score && by_title[1].score > 0.0);
    assert_eq!(
        by_title[1].item,
        RetrievedItem::Entity(EntityItem {
            id: "a".into(),
            title: "Ada Baker".into(),
            kind: "PERSON".into(),
            description: "a lighthouse keeper".into(),
            degree: 1,
            text_unit_ids: vec!["a-t1".into(), "a-t2".into()],
        })
    );
    // Title and description: bb too; k = 1 keeps the best only.
    let by_text = scored(&shard, search(TextIndex::EntityText, "baker", 10)).await;
    let mut ids: Vec<&str> = by_text.iter().map(|h| h.item.id()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a", "bb", "dddd"]);
    let best = scored(&shard, search(TextIndex::EntityText, "baker", 1)).await;
    assert_eq!(best.len(), 1);
    assert_eq!(best[0].item.id(), "dddd");
    // Chunks by text.
    let chunks = scored(&shard, search(TextIndex::ChunkText, "bread", 10)).await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0].item,
        RetrievedItem::Chunk(ChunkItem {
            id: "t2".into(),
            text: "bread and a lighthouse".into(),
            n_tokens: 4,
            document_id: "doc".into(),
        })
    );
    assert!(scored(&shard, search(TextIndex::ChunkText, "zebra", 10))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_return_the_ids_held_and_skip_the_rest() {
    let (_dir, shard) = filled().await;
    let lookup = |items, ids: &[&str]| RetrievalRead::Lookup {
        items,
        ids: ids.iter().map(|i| i.to_string()).collect(),
    };
    let found = items(&shard, lookup(ItemKind::Entities, &["ccc", "nope", "a"])).await;
    assert_eq!(ids_of(&found), ["ccc", "a"]);
    assert_eq!(
        found[0],
        RetrievedItem::Entity(EntityItem {
            id: "ccc".into(),
            title: "Cy".into(),
            kind: "PERSON".into(),
            description: "a sailor".into(),
            degree: 3,
            text_unit_ids: vec!["ccc-t1".into(), "ccc-t2".into()],
        })
    );
    let chunks = items(&shard, lookup(ItemKind::Chunks, &["t3", "a"])).await;
    assert_eq!(
        chunks,
        [RetrievedItem::Chunk(ChunkItem {
            id: "t3".into(),
            text: "nothing here".into(),
            n_tokens: 2,
            document_id: "doc".into(),
        })]
    );
    assert!(items(&shard, lookup(ItemKind::Chunks, &[]))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_come_by_matches_then_rank() {
    let (_dir, shard) = filled().await;
    let reports_of = |ids: &[&str], level| RetrievalRead::ReportsOf {
        entity_ids: ids.iter().map(|i| i.to_string()).collect(),
        level,
        limit: 200,
    };
    let found = ask(&shard, reports_of(&["a", "bb", "nope"], None))
        .await
        .into_reports()
        .unwrap();
    // c1 holds two of them, c2 one (with a higher rank); c3 none.
    assert_eq!(
        found,
        [
            CommunityReport {
                id: "c1".into(),
                title: "title of c1".into(),
                level: 0,
                rank: 5.0,
                full_content: "full report one".into(),
                summary: "summary of c1".into(),
                stale: false,
                matches: Some(2),
            },
            CommunityReport {
                id: "c2".into(),
                title: "title of c2".into(),
                level: 1,
                rank: 9.0,
                full_content: String::new(),
                summary: "summary of c2".into(),
                stale: false,
                matches: Some(1),
            },
        ]
    );
    let level_one = ask(&shard, reports_of(&["a", "bb"], Some(1)))
        .await
        .into_reports()
        .unwrap();
    assert_eq!(
        level_one.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["c2"]
    );
    assert!(ask(&shard, reports_of(&[], None))
        .await
        .into_reports()
        .unwrap()
        .is_empty());

    let all = |level, limit| RetrievalRead::AllReports { level, limit };
    let ids = |rows: RetrievalRows| -> Vec<String> {
        rows.into_reports()
            .unwrap()
            .into_iter()
            .map(|r| {
                assert_eq!(r.matches, None);
                r.id
            })
            .collect()
    };
    assert_eq!(ids(ask(&shard, all(None, 200)).await), ["c2", "c1", "c3"]);
    assert_eq!(ids(ask(&shard, all(Some(0), 200)).await), ["c1", "c3"]);
    assert_eq!(ids(ask(&shard, all(None, 1)).await), ["c2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_past_the_size_limit_is_refused() {
    let (_dir, shard) = filled().await;
    let read = RetrievalRead::AllReports {
        level: None,
        limit: 200,
    };
    let refused = shard
        .bounded_read(read.clone(), TIMEOUT_MS, 16, &ReadScope::strict())
        .await;
    assert!(
        matches!(refused, Err(QueryFailure::TooLarge(_))),
        "{refused:?}"
    );
    assert!(shard
        .bounded_read(read, TIMEOUT_MS, BIG, &ReadScope::strict())
        .await
        .is_ok());
}
