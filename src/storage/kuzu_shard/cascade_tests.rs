//! The document cascade on a real copy: what its reads find, what each step removes and keeps
//! (relation copies, stubs, entities with their relations, communities marked stale, chunks out
//! of the full-text index), that steps applied again change nothing, that a pruned item is
//! rewritten by the next upsert, and that an older database gains the `stale` column.

use super::*;
use crate::graph::model::{Batch, Community, Document, Relation};
use crate::storage::ReadScope;
use crate::storage::{
    CascadeRead, CascadeRows, CommunityReport, ItemKind, Prune, RetrievalRead, RetrievalRows,
    TextIndex, TextUnitUse,
};

const BIG: usize = 1 << 20;
const TIMEOUT_MS: u64 = 30_000;

fn units(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn entity(id: &str, text_units: &[&str], dim: usize) -> Entity {
    Entity {
        id: id.into(),
        title: id.to_uppercase(),
        kind: "PERSON".into(),
        description: format!("{id} is here"),
        text_unit_ids: units(text_units),
        frequency: 1,
        degree: 1,
        embedding: (dim > 0).then(|| vec![0.5; dim]),
        routing: None,
    }
}

fn relation(id: &str, source: &str, target: &str, text_units: &[&str]) -> Relation {
    Relation {
        id: id.into(),
        source: source.into(),
        target: target.into(),
        description: format!("{source} knows {target}"),
        weight: 1.0,
        text_unit_ids: units(text_units),
        source_routing: None,
        target_routing: None,
    }
}

fn chunk(id: &str, document: &str, text: &str, dim: usize) -> Chunk {
    Chunk {
        id: id.into(),
        text: text.into(),
        n_tokens: 4,
        document_id: document.into(),
        entity_ids: vec![],
        embedding: (dim > 0).then(|| vec![0.25; dim]),
    }
}

fn community(id: &str, entity_ids: &[&str]) -> Community {
    Community {
        id: id.into(),
        level: 0,
        parent: String::new(),
        title: format!("title of {id}"),
        entity_ids: units(entity_ids),
        summary: format!("summary of {id}"),
        full_content: format!("report of {id}"),
        rank: 1.0,
    }
}

/// One copy standing for a shard of a larger graph: `x` and `y` (and `far`, `far2`) are stubs,
/// entities of other shards.
///
/// - a [t1], b [t1, t2], c [t2], d [] ;
/// - r1 a→b [t1], r2 b→c [t1, t2], r3 c→far [t2], r4 a→c [], r5 d→far2 [], r6 x→b [t1],
///   r7 y→c [t2] ;
/// - chunks t1 (doc1), t2 (doc2); documents doc1 [t1], doc2 [t2]; communities k1 [a, b], k2 [c].
fn graph(dim: usize) -> Batch {
    Batch {
        entities: vec![
            entity("a", &["t1"], dim),
            entity("b", &["t1", "t2"], dim),
            entity("c", &["t2"], dim),
            entity("d", &[], dim),
        ],
        relations: vec![
            relation("r1", "a", "b", &["t1"]),
            relation("r2", "b", "c", &["t1", "t2"]),
            relation("r3", "c", "far", &["t2"]),
            relation("r4", "a", "c", &[]),
            relation("r5", "d", "far2", &[]),
            relation("r6", "x", "b", &["t1"]),
            relation("r7", "y", "c", &["t2"]),
        ],
        chunks: vec![
            chunk("t1", "doc1", "the lighthouse keeper", dim),
            chunk("t2", "doc2", "the baker of bread", dim),
        ],
        communities: vec![community("k1", &["a", "b"]), community("k2", &["c"])],
        documents: vec![
            Document {
                id: "doc1".into(),
                title: "one".into(),
                text: "the lighthouse keeper".into(),
                text_unit_ids: units(&["t1"]),
            },
            Document {
                id: "doc2".into(),
                title: "two".into(),
                text: "the baker of bread".into(),
                text_unit_ids: units(&["t2"]),
            },
        ],
    }
}

async fn open(path: &Path, dim: usize, mode: InsertMode) -> KuzuShard {
    let config = StoreConfig {
        insert_mode: mode,
        ..StoreConfig::for_budget(256, 1, 1, dim)
    };
    KuzuShard::open(path, 0, &config, Arc::new(ApplyGate::new(2))).unwrap()
}

/// A strict bounded read of everything the copy holds that `read` asks for.
async fn read<R: BoundedRead>(shard: &KuzuShard, read: R) -> R::Rows {
    shard
        .bounded_read(read, TIMEOUT_MS, BIG, &ReadScope::strict())
        .await
        .unwrap()
}

/// Every community report of the copy (at most 10), with its `stale` flag.
async fn all_reports(shard: &KuzuShard) -> Vec<CommunityReport> {
    let all = RetrievalRead::AllReports {
        level: None,
        limit: 10,
    };
    read(shard, all).await.into_reports().unwrap()
}

/// Writes `communities` alone as write `seq`.
async fn write_communities(shard: &KuzuShard, seq: u64, communities: Vec<Community>) {
    let batch = Batch {
        communities,
        ..Batch::default()
    };
    shard.write(seq, WriteOp::Upsert(batch)).await.unwrap();
}

/// (relation id, text units) of an entity's relations, sorted.
async fn relations_of(shard: &KuzuShard, id: &str) -> Vec<(String, Vec<String>)> {
    let rec = shard.entity_now(id).await.unwrap();
    rec.relations
        .into_iter()
        .map(|r| (r.id, r.text_unit_ids))
        .collect()
}

/// The cascade's write steps for `text_units` of `document`, whose `entities` they emptied.
fn steps(text_units: &[String], entities: &[String], document: &str) -> Vec<WriteOp> {
    let (t, e) = (text_units.to_vec(), entities.to_vec());
    vec![
        WriteOp::Prune(Prune::Relations {
            text_unit_ids: t.clone(),
            entities: e.clone(),
        }),
        WriteOp::Prune(Prune::Communities {
            entities: e.clone(),
        }),
        WriteOp::Prune(Prune::Entities {
            text_unit_ids: t.clone(),
            entities: e,
        }),
        WriteOp::Prune(Prune::Remove {
            chunks: t,
            documents: vec![document.to_string()],
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cascade_removes_what_only_the_text_units_support() {
    the_cascade_in(4, InsertMode::Create).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cascade_removes_what_only_the_text_units_support_with_copy_and_no_vectors() {
    the_cascade_in(0, InsertMode::Copy).await
}

async fn the_cascade_in(dim: usize, mode: InsertMode) {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(&dir.path().join("shard-0.kz"), dim, mode).await;
    // In one round: every kind of item together (see
    // `create_mode_with_vectors_keeps_the_entities_of_a_round_of_every_kind`).
    shard.write(1, WriteOp::Upsert(graph(dim))).await.unwrap();

    // The reads.
    let chunks = read(
        &shard,
        CascadeRead::ChunksOf {
            document_id: Some("doc1".into()),
            ids: units(&["t1", "missing"]),
        },
    )
    .await;
    assert_eq!(chunks, CascadeRows::Chunks(units(&["t1"])));
    let CascadeRows::Use(mut found) = read(
        &shard,
        CascadeRead::UseOf {
            text_unit_ids: units(&["t1"]),
        },
    )
    .await
    else {
        panic!("not a use answer")
    };
    found.relations.sort();
    found.relations_of_emptied.sort();
    let key = |id: &str, s: &str, t: &str| (id.to_string(), s.to_string(), t.to_string());
    assert_eq!(
        found,
        TextUnitUse {
            emptied_entities: units(&["a"]),
            pruned_entities: units(&["b"]),
            relations: vec![
                (key("r1", "a", "b"), true),
                (key("r2", "b", "c"), false),
                (key("r6", "x", "b"), true),
            ],
            relations_of_emptied: vec![key("r1", "a", "b"), key("r4", "a", "c")],
            routed_ends: vec![],
        }
    );
    let communities = read(
        &shard,
        CascadeRead::CommunitiesOf {
            entity_ids: units(&["a", "nobody"]),
        },
    )
    .await;
    assert_eq!(communities, CascadeRows::Communities(units(&["k1"])));

    // The steps; `y` stands for an entity emptied in another shard (a stub here).
    let mut seq = 1;
    for op in steps(&units(&["t1"]), &units(&["a", "y"]), "doc1") {
        seq += 1;
        shard.write(seq, op).await.unwrap();
    }
    let check = || async {
        assert!(shard.entity_now("a").await.is_none());
        let b = shard.entity_now("b").await.unwrap();
        assert_eq!(b.entity.text_unit_ids, units(&["t2"]));
        assert_eq!(
            relations_of(&shard, "b").await,
            vec![("r2".to_string(), units(&["t2"]))]
        );
        assert_eq!(
            relations_of(&shard, "c").await,
            vec![
                ("r2".to_string(), units(&["t2"])),
                ("r3".to_string(), units(&["t2"]))
            ],
            "r4 went with a, r7 with the stub y"
        );
        let d = shard.entity_now("d").await.unwrap();
        assert_eq!(
            d.relations.len(),
            1,
            "an item citing no text unit is untouched"
        );
        let stats = shard.stats().await.unwrap();
        let c = stats.counts;
        assert_eq!(
            (c.entities, c.stubs, c.relations, c.chunks, c.documents),
            (3, 2, 3, 1, 1),
            "stubs x and y are gone, far and far2 stay: {c:?}"
        );
        assert_eq!(stats.failed_writes, 0);
        assert!(shard
            .get_chunk("t1".into(), &ReadScope::strict())
            .await
            .unwrap()
            .is_none());
        assert!(shard
            .get_document("doc1".into(), &ReadScope::strict())
            .await
            .unwrap()
            .is_none());
        assert!(shard
            .get_document("doc2".into(), &ReadScope::strict())
            .await
            .unwrap()
            .is_some());
        let reports = read(
            &shard,
            RetrievalRead::ReportsOf {
                entity_ids: units(&["a", "b", "c"]),
                level: None,
                limit: 10,
            },
        )
        .await
        .into_reports()
        .unwrap();
        let stale: Vec<(&str, bool, Option<i64>)> = reports
            .iter()
            .map(|r| (r.id.as_str(), r.stale, r.matches))
            .collect();
        assert_eq!(stale, vec![("k1", true, Some(1)), ("k2", false, Some(1))]);
        let hits = read(
            &shard,
            RetrievalRead::TextSearch {
                index: TextIndex::ChunkText,
                words: "lighthouse keeper".into(),
                k: 5,
            },
        )
        .await;
        assert_eq!(hits, RetrievalRows::Scored(vec![]), "t1 left the index");
    };
    check().await;

    // Every step again (a retried cascade, a replayed log) changes nothing.
    for op in steps(&units(&["t1"]), &units(&["a", "y"]), "doc1") {
        seq += 1;
        shard.write(seq, op).await.unwrap();
    }
    check().await;

    // A pruned entity is rewritten by an upsert identical to what was stored before, and a
    // community written again has a fresh report.
    seq += 1;
    shard
        .write(
            seq,
            WriteOp::Upsert(Batch {
                entities: vec![entity("b", &["t1", "t2"], dim)],
                relations: vec![relation("r2", "b", "c", &["t1", "t2"])],
                communities: vec![community("k1", &["a", "b"])],
                ..Batch::default()
            }),
        )
        .await
        .unwrap();
    let b = shard.entity_now("b").await.unwrap();
    assert_eq!(b.entity.text_unit_ids, units(&["t1", "t2"]));
    assert_eq!(
        b.relations
            .iter()
            .map(|r| r.text_unit_ids.clone())
            .collect::<Vec<_>>(),
        vec![units(&["t1", "t2"])]
    );
    let reports = all_reports(&shard).await;
    assert!(reports.iter().all(|r| !r.stale), "{reports:?}");
    assert_eq!(shard.stats().await.unwrap().failed_writes, 0);
}

/// A larger copy for [`entities_deleted_and_written_again_many_times_stay_writable`]: `n`
/// entities `e{i}` citing text units of `docA` (`a0`..`a9`) and `docB` (`b0`..`b9`), in four
/// batches. `e{i}` cites `a{i%10}` alone when `i % 3 == 0` (the cascade deletes it), `a{i%10}`
/// and `b{i%10}` when `i % 3 == 1` (it loses `a{i%10}`), `b{i%10}` alone otherwise. Each entity
/// has a relation to the next one (so batches name entities of later batches: stubs that become
/// entities) and one to a stub `x{i%50}` of another shard.
fn large_graph(n: usize) -> Vec<Batch> {
    let (a, b) = (
        |i: usize| format!("a{}", i % 10),
        |i: usize| format!("b{}", i % 10),
    );
    let cites = |i: usize| match i % 3 {
        0 => vec![a(i)],
        1 => vec![a(i), b(i)],
        _ => vec![b(i)],
    };
    let mut batches: Vec<Batch> = (0..4).map(|_| Batch::default()).collect();
    for i in 0..n {
        let batch = &mut batches[i * 4 / n];
        let units: Vec<&str> = Vec::new();
        let mut e = entity(&format!("e{i}"), &units, 0);
        e.title = format!("keeper {i}");
        e.description = format!("lighthouse keeper number {i} of the northern coast");
        e.text_unit_ids = cites(i);
        batch.entities.push(e);
        let mut r = relation(
            &format!("n{i}"),
            &format!("e{i}"),
            &format!("e{}", (i + 1) % n),
            &[],
        );
        r.text_unit_ids = vec![a(i)];
        batch.relations.push(r);
        let mut r = relation(
            &format!("x{i}"),
            &format!("e{i}"),
            &format!("x{}", i % 50),
            &[],
        );
        r.text_unit_ids = vec![b(i)];
        batch.relations.push(r);
    }
    for i in 0..10 {
        batches[0].chunks.push(chunk(
            &format!("a{i}"),
            "docA",
            &format!("the lighthouse part {i}"),
            0,
        ));
        batches[0].chunks.push(chunk(
            &format!("b{i}"),
            "docB",
            &format!("the bakery part {i}"),
            0,
        ));
    }
    batches[0].communities = vec![community("k1", &["e0", "e1", "e2"])];
    batches[0].documents = ["docA", "docB"]
        .iter()
        .map(|d| Document {
            id: d.to_string(),
            title: d.to_string(),
            text: d.to_string(),
            text_unit_ids: (0..10)
                .map(|i| format!("{}{i}", &d[3..].to_lowercase()))
                .collect(),
        })
        .collect();
    batches
}

/// The ids the entity full-text index finds for `word` (each id once), and how many hits it gave.
async fn text_hits(shard: &KuzuShard, word: &str) -> (Vec<String>, usize) {
    let hits = read(
        shard,
        RetrievalRead::TextSearch {
            index: TextIndex::EntityText,
            words: word.into(),
            k: 100_000,
        },
    )
    .await
    .into_scored()
    .unwrap();
    let mut ids: Vec<String> = hits.iter().map(|h| h.item.id().to_string()).collect();
    ids.sort_unstable();
    ids.dedup();
    (ids, hits.len())
}

/// Waits (at most 180 s: the rebuild waits for an idle copy and a share of its time) until the
/// entity full-text index finds `n` entities, each once.
async fn text_finds_all(shard: &KuzuShard, n: usize, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (ids, hits) = text_hits(shard, "lighthouse").await;
        assert_eq!(hits, ids.len(), "{what}: an entity found twice");
        if hits == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the text index finds {hits} of {n} entities"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deleting a document's entities and writing them again, several times over, with checkpoints
/// (snapshots) and reopenings of the database in between: every round applies (no failed write)
/// and the graph is whole after each. Kuzu 0.11 failed this in two ways: a full-text index whose
/// column was `SET` re-indexed rows it already held at the next `COPY` (copy mode: "duplicated
/// primary key" in the index's internal table, `fts_copy_after_set_probe`), and a checkpoint
/// after relation rows were inserted and deleted again between two checkpoints crashed the next
/// checkpoint (create mode: SIGSEGV, `csr_checkpoint_probe`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_deleted_and_written_again_many_times_stay_writable() {
    let n = 2000;
    let emptied: Vec<String> = (0..n)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("e{i}"))
        .collect();
    let doc_a: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    for mode in [InsertMode::Copy, InsertMode::Create] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-0.kz");
        let mut shard = open(&path, 0, mode).await;
        let mut seq = 0;
        for cycle in 0..4 {
            for batch in large_graph(n) {
                seq += 1;
                shard.write(seq, WriteOp::Upsert(batch)).await.unwrap();
                // One round per batch: each batch's stubs become entities in the next round.
                shard.wait_visible(Duration::from_secs(60)).await.unwrap();
            }
            let stats = shard.stats().await.unwrap();
            assert_eq!(stats.failed_writes, 0, "{mode} cycle {cycle}");
            let c = stats.counts;
            assert_eq!(
                (c.entities, c.stubs, c.relations, c.chunks, c.documents),
                (n as u64, 50, 2 * n as u64, 20, 2),
                "{mode} cycle {cycle}: {c:?}"
            );
            let found = shard.entity_now("e1").await.unwrap();
            assert_eq!(found.relations.len(), 3, "{mode} cycle {cycle}");
            // The full-text index finds every entity, each once, once the copy has rebuilt it
            // (Kuzu 0.11's index loses postings of rows that stay when others are updated or
            // deleted; the applier rebuilds it when idle).
            text_finds_all(&shard, n, &format!("{mode} cycle {cycle}")).await;
            for op in steps(&doc_a, &emptied, "docA") {
                seq += 1;
                shard.write(seq, op).await.unwrap();
            }
            shard.wait_visible(Duration::from_secs(60)).await.unwrap();
            let stats = shard.stats().await.unwrap();
            assert_eq!(stats.failed_writes, 0, "{mode} cycle {cycle}");
            let c = stats.counts;
            // Left: the relations to stubs of the entities that stay.
            let kept = (n - emptied.len()) as u64;
            assert_eq!(
                (c.entities, c.stubs, c.relations, c.chunks, c.documents),
                (kept, 50, kept, 10, 1),
                "{mode} cycle {cycle}: {c:?}"
            );
            text_finds_all(
                &shard,
                kept as usize,
                &format!("{mode} cycle {cycle}, after the cascade"),
            )
            .await;
            // A snapshot checkpoints the database (as when another copy is rebuilt from it).
            let to = dir.path().join(format!("snapshot-{cycle}.kz"));
            shard.snapshot(to, seq).await.unwrap();
            shard.unpin(seq);
            if cycle % 2 == 1 {
                drop(shard);
                shard = open(&path, 0, mode).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_the_stale_flag_gains_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-0.kz");
    {
        let shard = open(&path, 0, InsertMode::Create).await;
        write_communities(&shard, 1, vec![community("k1", &["a"])]).await;
        shard.wait_visible(Duration::from_secs(30)).await.unwrap();
    }
    {
        let db = Database::new(&path, SystemConfig::default().max_db_size(1 << 30)).unwrap();
        let conn = Connection::new(&db).unwrap();
        conn.query("ALTER TABLE Community DROP stale").unwrap();
    }
    let shard = open(&path, 0, InsertMode::Create).await;
    let reports = all_reports(&shard).await;
    assert_eq!(reports.len(), 1);
    assert!(!reports[0].stale);
    // And new communities are written with the column in its place.
    write_communities(&shard, 2, vec![community("k2", &["b"])]).await;
    shard
        .write(
            3,
            WriteOp::Prune(Prune::Communities {
                entities: units(&["b"]),
            }),
        )
        .await
        .unwrap();
    let reports = all_reports(&shard).await;
    let stale: Vec<(&str, bool)> = reports.iter().map(|r| (r.id.as_str(), r.stale)).collect();
    assert_eq!(stale, vec![("k1", false), ("k2", true)]);
    assert_eq!(shard.stats().await.unwrap().failed_writes, 0);
}

/// One round upserting entities, relations, chunks, communities and documents together, in
/// create mode with embeddings: its items, stubs and vector rows are all stored. Kuzu 0.11 used to
/// drop the entities, stubs and relations of such a round at commit without an error: the commit
/// skipped tables when the vector index's inserts made its table map grow (`vector_commit_probe`).
/// Vector rows now commit in transactions of their own (`apply_round`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_mode_with_vectors_keeps_the_entities_of_a_round_of_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(&dir.path().join("shard-0.kz"), 4, InsertMode::Create).await;
    shard.write(1, WriteOp::Upsert(graph(4))).await.unwrap();
    shard.wait_visible(Duration::from_secs(30)).await.unwrap();
    let stats = shard.stats().await.unwrap();
    let c = stats.counts;
    assert_eq!(
        (
            c.entities,
            c.stubs,
            c.relations,
            c.chunks,
            c.communities,
            c.documents
        ),
        (4, 4, 7, 2, 2, 2),
        "{c:?}"
    );
    assert_eq!(stats.failed_writes, 0);
    // The vector rows are there too: every entity and chunk is found by its embedding.
    for (items, k) in [(ItemKind::Entities, 4), (ItemKind::Chunks, 2)] {
        let hits = read(
            &shard,
            RetrievalRead::Nearest {
                items,
                embedding: vec![0.5; 4],
                k: 10,
            },
        )
        .await
        .into_nearest()
        .unwrap();
        assert_eq!(hits.len(), k, "{items:?}: {hits:?}");
    }
    // Sent again (a retry, a log replay), nothing changes and nothing fails.
    shard.write(2, WriteOp::Upsert(graph(4))).await.unwrap();
    shard.wait_visible(Duration::from_secs(30)).await.unwrap();
    let again = shard.stats().await.unwrap();
    assert_eq!(again.counts, c);
    assert_eq!(again.failed_writes, 0);
}
