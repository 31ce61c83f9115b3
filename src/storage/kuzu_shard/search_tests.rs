//! The search indexes follow every write: inserts, updates (a new embedding, a new description),
//! deletes, a large load, a reopened database.

use super::*;
use crate::graph::model::{Batch, Chunk};
use crate::storage::ReadScope;

fn config(dim: usize) -> StoreConfig {
    StoreConfig::for_budget(256, 1, 1, dim)
}

fn gate() -> Arc<ApplyGate> {
    Arc::new(ApplyGate::new(2))
}

/// A unit vector along axis `axis` (dimension 4), slightly tilted towards axis 3.
fn axis(axis: usize) -> Vec<f32> {
    let mut v = vec![0.0; 4];
    v[axis] = 1.0;
    v[3] += 0.1;
    v
}

/// `i` written in letters (Kuzu's full-text tokenizer keeps letters only).
fn letters(mut i: usize) -> String {
    let mut s = String::from("x");
    loop {
        s.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return s;
        }
    }
}

fn entity(id: &str, description: &str, embedding: Option<Vec<f32>>) -> Entity {
    Entity {
        id: id.into(),
        title: id.to_uppercase(),
        kind: "THING".into(),
        description: description.into(),
        text_unit_ids: vec![],
        frequency: 0,
        degree: 0,
        embedding,
        routing: None,
    }
}

fn upsert_entities(entities: Vec<Entity>) -> WriteOp {
    WriteOp::Upsert(Batch {
        entities,
        ..Batch::default()
    })
}

async fn ids(shard: &KuzuShard, cypher: String) -> Vec<String> {
    // The query waits for pending writes only up to the copy's read wait; a large write applied
    // row by row on a loaded machine can take longer, so wait for it here (with a deadline).
    shard
        .wait_visible(std::time::Duration::from_secs(180))
        .await
        .unwrap();
    let rows = shard
        .user_query(
            ShardQuery {
                cypher,
                params_json: "{}".into(),
                // Generous: the query first waits for the write (2,500 rows created one by one).
                timeout_ms: 30_000,
                names_cypher: None,
                prepare_only: false,
            },
            1 << 20,
            &ReadScope::strict(),
        )
        .await
        .unwrap();
    let rows: Vec<Vec<serde_json::Value>> = serde_json::from_str(&rows.rows_json).unwrap();
    rows.iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

/// The indexes searched: (table, index).
const ENTITY_VEC: (&str, &str) = ("EntityVec", "entity_vec");
const CHUNK_VEC: (&str, &str) = ("ChunkVec", "chunk_vec");
const ENTITY_TEXT: (&str, &str) = ("Entity", "entity_text");
const CHUNK_TEXT: (&str, &str) = ("Chunk", "chunk_text");

fn nearest((table, index): (&str, &str), v: &[f32], k: usize) -> String {
    let list: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!(
        "CALL QUERY_VECTOR_INDEX('{table}', '{index}', [{}], {k}) RETURN node.id, distance ORDER BY distance, node.id",
        list.join(", ")
    )
}

fn words((table, index): (&str, &str), q: &str) -> String {
    format!("CALL QUERY_FTS_INDEX('{table}', '{index}', '{q}', top := 10) RETURN node.id, score ORDER BY score DESC, node.id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_follow_inserts_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let shard = KuzuShard::open(&dir.path().join("shard-0.kz"), 0, &config(4), gate()).unwrap();
    shard
        .write(
            1,
            upsert_entities(vec![
                entity("a", "a lighthouse keeper", Some(axis(0))),
                entity("b", "a baker of bread", Some(axis(1))),
                entity("c", "no vector here", None),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(ids(&shard, nearest(ENTITY_VEC, &axis(0), 1)).await, ["a"]);
    assert_eq!(ids(&shard, words(ENTITY_TEXT, "baker")).await, ["b"]);
    // New embedding and description for a (its vector row is replaced, not SET); c gets a vector.
    shard
        .write(
            2,
            upsert_entities(vec![
                entity("a", "now a baker too", Some(axis(2))),
                entity("c", "still no bread", Some(axis(0))),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(ids(&shard, nearest(ENTITY_VEC, &axis(2), 1)).await, ["a"]);
    assert_eq!(ids(&shard, nearest(ENTITY_VEC, &axis(0), 1)).await, ["c"]);
    let bakers = ids(&shard, words(ENTITY_TEXT, "baker")).await;
    assert_eq!(bakers.len(), 2, "{bakers:?}");
    assert!(ids(&shard, words(ENTITY_TEXT, "lighthouse"))
        .await
        .is_empty());
    // Deleted: gone from both indexes. An entity updated to have no embedding leaves the index.
    shard
        .write(3, WriteOp::DeleteEntity("a".into()))
        .await
        .unwrap();
    shard
        .write(
            4,
            upsert_entities(vec![entity("c", "still no bread", None)]),
        )
        .await
        .unwrap();
    assert_eq!(ids(&shard, words(ENTITY_TEXT, "baker")).await, ["b"]);
    assert_eq!(ids(&shard, nearest(ENTITY_VEC, &axis(0), 3)).await, ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_read_back_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let shard = KuzuShard::open(&dir.path().join("shard-0.kz"), 0, &config(4), gate()).unwrap();
    let odd = vec![1e-8_f32, -3.4e38, 0.1, 1.0 / 3.0];
    shard
        .write(
            1,
            upsert_entities(vec![entity("a", "x", Some(odd.clone()))]),
        )
        .await
        .unwrap();
    let got = shard.entity_now("a").await.unwrap();
    assert_eq!(got.entity.embedding, Some(odd));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_load_is_searchable_and_later_writes_grow_the_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-0.kz");
    let shard = KuzuShard::open(&path, 0, &config(4), gate()).unwrap();
    let n = 2500;
    let many: Vec<Chunk> = (0..n)
        .map(|i| Chunk {
            id: format!("t{i}"),
            text: format!("chunk number {} of the load", letters(i)),
            n_tokens: 5,
            document_id: "d".into(),
            entity_ids: vec![],
            embedding: Some(vec![1.0, (i % 7) as f32, (i % 11) as f32, 0.5]),
        })
        .collect();
    shard
        .write(
            1,
            WriteOp::Upsert(Batch {
                chunks: many,
                ..Batch::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&shard, words(CHUNK_TEXT, &letters(1234))).await,
        ["t1234"]
    );
    let probe = [1.0, 3.0, 5.0, 0.5];
    let hit = ids(&shard, nearest(CHUNK_VEC, &probe, 1)).await;
    assert_eq!(hit.len(), 1);
    // One more chunk after the load goes into the existing indexes.
    let one = Chunk {
        id: "late".into(),
        text: "a latecomer".into(),
        n_tokens: 2,
        document_id: "d".into(),
        entity_ids: vec![],
        embedding: Some(vec![-1.0, 0.0, 0.0, 0.0]),
    };
    shard
        .write(
            2,
            WriteOp::Upsert(Batch {
                chunks: vec![one],
                ..Batch::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(ids(&shard, words(CHUNK_TEXT, "latecomer")).await, ["late"]);
    assert_eq!(
        ids(&shard, nearest(CHUNK_VEC, &[-1.0, 0.0, 0.0, 0.0], 1)).await,
        ["late"]
    );
    // Reopened: the indexes are still there.
    drop(shard);
    let shard = KuzuShard::open(&path, 0, &config(4), gate()).unwrap();
    assert_eq!(ids(&shard, words(CHUNK_TEXT, "latecomer")).await, ["late"]);
}
