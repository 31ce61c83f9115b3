//! The storage on its own: upserts through the log and the applier, stubs, idempotent re-sends,
//! updates, deletes, embeddings, and redo after a crash.

use super::*;
use crate::graph::model::{Batch, Relation};
use crate::storage::ReadScope;

fn gate() -> Arc<ApplyGate> {
    Arc::new(ApplyGate::new(2))
}

fn config(dim: usize) -> StoreConfig {
    StoreConfig::for_budget(256, 1, 1, dim)
}

fn config_in(dim: usize, insert_mode: InsertMode) -> StoreConfig {
    StoreConfig {
        insert_mode,
        ..config(dim)
    }
}

fn entity(id: &str, title: &str, dim: usize) -> Entity {
    Entity {
        id: id.into(),
        title: title.into(),
        kind: "PERSON".into(),
        description: format!("{title} is here"),
        text_unit_ids: vec!["t1".into()],
        frequency: 1,
        degree: 1,
        embedding: (dim > 0).then(|| vec![0.5; dim]),
        routing: None,
    }
}

fn relation(id: &str, source: &str, target: &str, weight: f64) -> Relation {
    Relation {
        id: id.into(),
        source: source.into(),
        target: target.into(),
        description: format!("{source} knows {target}"),
        weight,
        text_unit_ids: vec![],
        source_routing: None,
        target_routing: None,
    }
}

/// Two tests of one body taking the insert mode: `$create` runs it in create mode, `$copy` in
/// copy mode.
macro_rules! in_both_modes {
    ($body:ident: $create:ident, $copy:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $create() {
            $body(InsertMode::Create).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $copy() {
            $body(InsertMode::Copy).await
        }
    };
}

/// Opens copy `shard` (file `shard-<shard>.kz` in `dir`) with embeddings of `dim` in `mode`.
fn open_in(dir: &Path, shard: u32, dim: usize, mode: InsertMode) -> KuzuShard {
    let path = dir.join(format!("shard-{shard}.kz"));
    KuzuShard::open(&path, shard, &config_in(dim, mode), gate()).unwrap()
}

fn upsert(entities: Vec<Entity>, relations: Vec<Relation>) -> WriteOp {
    WriteOp::Upsert(Batch {
        entities,
        relations,
        ..Batch::default()
    })
}

in_both_modes!(upserts_are_idempotent_and_updates_win_in: upserts_are_idempotent_and_updates_win, upserts_are_idempotent_and_updates_win_with_copy);

async fn upserts_are_idempotent_and_updates_win_in(mode: InsertMode) {
    let dir = tempfile::tempdir().unwrap();
    let shard = open_in(dir.path(), 0, 4, mode);
    let first = upsert(
        vec![entity("a", "A", 4), entity("b", "B", 4)],
        vec![
            relation("r1", "a", "b", 1.0),
            relation("r2", "a", "ghost", 2.0),
        ],
    );
    shard.write(1, first.clone()).await.unwrap();
    // The same batch again (a client retry) and an update of r1 and of b.
    shard.write(2, first).await.unwrap();
    shard
        .write(
            3,
            upsert(
                vec![entity("b", "B2", 4)],
                vec![relation("r1", "a", "b", 5.0)],
            ),
        )
        .await
        .unwrap();
    let a = shard.entity_now("a").await.unwrap();
    assert_eq!(a.entity.embedding, Some(vec![0.5; 4]));
    let weights: Vec<(String, f64)> = a
        .relations
        .iter()
        .map(|r| (r.id.clone(), r.weight))
        .collect();
    assert_eq!(weights, vec![("r1".into(), 5.0), ("r2".into(), 2.0)]);
    assert_eq!(shard.entity_now("b").await.unwrap().entity.title, "B2");
    assert!(
        shard.entity_now("ghost").await.is_none(),
        "a stub is not an entity"
    );
    let stats = shard.stats().await.unwrap();
    let c = stats.counts;
    assert_eq!((c.entities, c.stubs, c.relations), (2, 1, 2));
    assert_eq!(
        (stats.applied_seq, stats.logged_seq, stats.failed_writes),
        (3, 3, 0)
    );

    // The stub becomes an entity when it arrives; deleting it takes its relations.
    shard
        .write(4, upsert(vec![entity("ghost", "G", 4)], vec![]))
        .await
        .unwrap();
    shard
        .write(5, WriteOp::DeleteEntity("a".into()))
        .await
        .unwrap();
    assert!(shard.entity_now("a").await.is_none());
    let stats = shard.stats().await.unwrap();
    let c = stats.counts;
    assert_eq!((c.entities, c.stubs, c.relations), (2, 0, 0));
    // A relation deleted with its endpoint can be created again (its key went too).
    shard
        .write(6, upsert(vec![], vec![relation("r1", "a", "b", 1.0)]))
        .await
        .unwrap();
    let b = shard.entity_now("b").await.unwrap();
    assert_eq!(b.relations.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_writes_are_redone_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-7.kz");
    {
        let shard = KuzuShard::open(&path, 7, &config(0), gate()).unwrap();
        shard
            .write(1, upsert(vec![entity("a", "A", 0)], vec![]))
            .await
            .unwrap();
        shard.wait_visible(Duration::from_secs(10)).await.unwrap();
    }
    // A write that reached the log but not the database (the process died in between).
    {
        let (mut log, redo) = ShardLog::open(dir.path(), 7, 1).unwrap();
        assert!(redo.is_empty());
        let op = upsert(
            vec![entity("b", "B", 0)],
            vec![relation("r", "a", "b", 1.0)],
        );
        log.append(2, &shard_log::encode(2, &op).unwrap()).unwrap();
    }
    let shard = KuzuShard::open(&path, 7, &config(0), gate()).unwrap();
    assert_eq!(shard.seq(), 2);
    let b = shard.entity_now("b").await.unwrap();
    assert_eq!(b.relations.len(), 1);
    assert_eq!(shard.visible_seq(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_embedding_dimension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-1.kz");
    drop(KuzuShard::open(&path, 1, &config(4), gate()).unwrap());
    let err = KuzuShard::open(&path, 1, &config(8), gate()).err().unwrap();
    assert!(matches!(err, crate::storage::Error::Invalid(_)), "{err}");
    assert!(err.to_string().contains("TORUA_EMBEDDING_DIM=8"), "{err}");
}

in_both_modes!(many_relations_in_many_writes_are_all_stored_in: many_relations_in_many_writes_are_all_stored, many_relations_in_many_writes_are_all_stored_with_copy);

async fn many_relations_in_many_writes_are_all_stored_in(mode: InsertMode) {
    let dir = tempfile::tempdir().unwrap();
    let shard = open_in(dir.path(), 2, 0, mode);
    let n = 2000u64;
    let entities: Vec<Entity> = (0..n).map(|i| entity(&format!("e{i}"), "E", 0)).collect();
    shard.write(1, upsert(entities, vec![])).await.unwrap();
    let mut seq = 1;
    let mut expected = 0;
    for w in 0..10u64 {
        let relations: Vec<Relation> = (0..2000u64)
            .map(|j| {
                let k = w * 2000 + j;
                // Some endpoints are not entities here (stubs), as in a shard.
                relation(
                    &format!("r{k}"),
                    &format!("e{}", (k * 7919) % (n + 500)),
                    &format!("e{}", (k * 104729 + 13) % n),
                    1.0,
                )
            })
            .collect();
        expected += relations.len() as u64;
        seq += 1;
        shard.write(seq, upsert(vec![], relations)).await.unwrap();
    }
    shard.wait_visible(Duration::from_secs(60)).await.unwrap();
    let stats = shard.stats().await.unwrap();
    assert_eq!(stats.failed_writes, 0);
    assert_eq!(stats.counts.relations, expected, "{stats:?}");
}

/// A write its database cannot hold in its buffer pool makes the copy stop applying (Kuzu 0.11 can
/// crash at the next write after such a failure) and count the write as refused, so that it is
/// rebuilt from another copy; the process goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_out_of_buffer_pool_stops_applying_and_asks_for_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        insert_mode: InsertMode::Copy,
        buffer_pool_bytes: 32 << 20,
        ..config(0)
    };
    let shard = KuzuShard::open(&dir.path().join("shard-0.kz"), 0, &config, gate()).unwrap();
    let big: Vec<Entity> = (0..40_000)
        .map(|i| Entity {
            description: format!("{i} {}", "x".repeat(2000)),
            ..entity(&format!("e{i}"), "E", 0)
        })
        .collect();
    shard.write(1, upsert(big, vec![])).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while shard.refused_writes() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        shard.refused_writes() > 0,
        "the oversized write was applied or is still applying"
    );
    assert!(shard.needs_rebuild());
    let why = shard
        .damage()
        .expect("the copy goes on applying after running out of memory");
    assert!(why.contains("TORUA_MEMORY_MB"), "{why}");
    // Nor is a later write applied: it is refused too, and stays in the log for the rebuilt copy.
    // (Written once the failed round has left the queue: before, it would be refused as busy.)
    while shard.pending_writes() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shard
        .write(2, upsert(vec![entity("small", "S", 0)], vec![]))
        .await
        .unwrap();
    shard.wait_visible(Duration::from_secs(30)).await.unwrap();
    assert_eq!(shard.refused_writes(), 2);
}

/// For the probes below: a database with torua's schema and `n` stub entities `e0..`.
fn probe_database(path: &Path, n: usize) -> Database {
    let db = Database::new(
        path,
        SystemConfig::default()
            .buffer_pool_size(1 << 30)
            .max_num_threads(2)
            .max_db_size(1 << 34),
    )
    .unwrap();
    let conn = Connection::new(&db).unwrap();
    for ddl in super::schema(0) {
        conn.query(&ddl).unwrap();
    }
    let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    run(&conn, "COPY Entity(id, title, type, description, text_unit_ids, frequency, degree, stub, hash) FROM (UNWIND $ids AS i RETURN i, '' AS a, '' AS b, '' AS c, [] AS d, 0 AS e, 0 AS f, true AS g, 0 AS h)", vec![("ids", kuzu::Value::List(kuzu::LogicalType::String, ids.iter().map(|x| s(x)).collect()))]).unwrap();
    drop(conn);
    db
}

/// Not a test: compares Kuzu's COPY from a parameter list with COPY from a parquet file.
/// `cargo test --release --lib copy_paths -- --ignored --nocapture`
#[test]
#[ignore]
fn copy_paths() {
    use arrow_array::{
        builder::{ListBuilder, StringBuilder},
        Float64Array, RecordBatch, StringArray,
    };
    use std::sync::Arc as A;
    let dir = tempfile::tempdir().unwrap();
    for mode in ["param", "parquet"] {
        let n = 20000usize;
        let db = probe_database(&dir.path().join(format!("{mode}.kz")), n);
        let conn = Connection::new(&db).unwrap();
        for round in 0..3 {
            let m = 25000usize;
            let src: Vec<String> = (0..m)
                .map(|j| format!("e{}", (j * 7919 + round) % n))
                .collect();
            let dst: Vec<String> = (0..m)
                .map(|j| format!("e{}", (j * 104729 + 13 + round) % n))
                .collect();
            let rid: Vec<String> = (0..m).map(|j| format!("r{round}-{j}")).collect();
            let t = std::time::Instant::now();
            run(&conn, "BEGIN TRANSACTION", vec![]).unwrap();
            if mode == "param" {
                let vals = (0..m)
                    .map(|j| {
                        relation_row(&Relation {
                            description: "some description of it".into(),
                            text_unit_ids: vec!["t1".into()],
                            ..relation(&rid[j], &src[j], &dst[j], 1.0)
                        })
                    })
                    .collect();
                run(&conn, "COPY RELATED FROM (UNWIND $rows AS r RETURN r.source, r.target, r.id, r.description, r.weight, r.text_unit_ids)", vec![("rows", rows(&relation_fields(), vals))]).unwrap();
            } else {
                let mut tu = ListBuilder::new(StringBuilder::new());
                for _ in 0..m {
                    tu.values().append_value("t1");
                    tu.append(true);
                }
                let batch = RecordBatch::try_from_iter(vec![
                    (
                        "from",
                        A::new(StringArray::from(src.clone())) as arrow_array::ArrayRef,
                    ),
                    ("to", A::new(StringArray::from(dst.clone())) as _),
                    ("id", A::new(StringArray::from(rid.clone())) as _),
                    (
                        "description",
                        A::new(StringArray::from(vec!["some description of it"; m])) as _,
                    ),
                    ("weight", A::new(Float64Array::from(vec![1.0; m])) as _),
                    ("text_unit_ids", A::new(tu.finish()) as _),
                ])
                .unwrap();
                let path = dir.path().join(format!("r{round}.parquet"));
                let f = std::fs::File::create(&path).unwrap();
                let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
                w.write(&batch).unwrap();
                w.close().unwrap();
                run(
                    &conn,
                    &format!("COPY RELATED FROM '{}'", path.display()),
                    vec![],
                )
                .unwrap();
            }
            let t_copy = t.elapsed();
            run(&conn, "COMMIT", vec![]).unwrap();
            eprintln!(
                "{mode} round {round}: copy {:?} total {:?}",
                t_copy,
                t.elapsed()
            );
        }
    }
}

/// Where a traversal step's time goes (run by hand: `STEP_COSTS_ENTITIES=100000 cargo test
/// --release --lib step_costs -- --ignored --nocapture`). At 100k entities / 1M relations in one
/// copy, 10 frontier ids (on a loaded machine): `UNWIND $ids .. {id: i}` with relations
/// 128-209 ms (a join over every relation), `f.id IN $ids` 6-10 ms (a scan of every entity),
/// one cached primary-key lookup per id 4.0 ms with relations and 0.66 ms for properties only;
/// a whole `traverse_step` went from 15.8 ms (IN) to 4.6 ms (per id). Reading the far end's id
/// through its node instead of the relation's `target` cost another join over the node table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn step_costs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-0.kz");
    let shard = KuzuShard::open(&path, 0, &StoreConfig::for_budget(2048, 1, 8, 0), gate()).unwrap();
    let n: usize = std::env::var("STEP_COSTS_ENTITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let entities: Vec<Entity> = (0..n).map(|i| entity(&format!("e{i}"), "T", 0)).collect();
    let relations: Vec<Relation> = (0..n * 10)
        .map(|i| {
            relation(
                &format!("r{i}"),
                &format!("e{}", i % n),
                &format!("e{}", (i * 7919) % n),
                1.0,
            )
        })
        .collect();
    shard.write(1, upsert(entities, vec![])).await.unwrap();
    for (i, chunk) in relations.chunks(100_000).enumerate() {
        shard
            .write(2 + i as u64, upsert(vec![], chunk.to_vec()))
            .await
            .unwrap();
    }
    shard.wait_visible(Duration::from_secs(600)).await.unwrap();
    assert_eq!(shard.stats().await.unwrap().failed_writes, 0);
    let ids: Vec<String> = (0..10).map(|i| format!("e{}", i * 37)).collect();
    let db = shard.db.clone();
    tokio::task::spawn_blocking(move || {
        let conn = Connection::new(&db).unwrap();
        let time = |label: &str, f: &mut dyn FnMut() -> usize| {
            let t = std::time::Instant::now();
            let mut rows = 0;
            for _ in 0..5 {
                rows += f();
            }
            println!("{:>10.3?} {:>5} rows  {label}", t.elapsed() / 5, rows / 5);
        };
        for q in [
            "UNWIND $ids AS i MATCH (a:Entity {id: i})-[r:RELATED]->(b:Entity) RETURN r.id, a.id, b.id, r.description, r.weight",
            "MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE a.id IN $ids RETURN r.id, a.id, b.id, r.description, r.weight",
            "MATCH (f:Entity)-[r:RELATED]-() WHERE f.id IN $ids RETURN r.id, r.source, r.target, r.description, r.weight",
            "MATCH (e:Entity) WHERE e.id IN $ids RETURN e.id, e.title, e.type, e.description, e.degree, e.frequency",
            "MATCH (f:Entity)-[r:RELATED]-() WHERE f.id IN $ids RETURN r.id",
            "MATCH (f:Entity)-[r:RELATED]-() WHERE f.id IN $ids RETURN r.id, r.source, r.target",
            "MATCH (f:Entity)-[r:RELATED]->() WHERE f.id IN $ids RETURN r.id, r.source, r.target, r.description, r.weight",
            "MATCH (f:Entity) WHERE f.id IN $ids RETURN f.id",
        ] {
            let mut p = conn.prepare(q).unwrap();
            time(q, &mut || conn.execute(&mut p, vec![("ids", strings(&ids))]).unwrap().count());
        }
        for q in [
            "UNWIND $ids AS i MATCH (e:Entity {id: i}) RETURN e.id, e.title, e.type, e.description, e.degree, e.frequency",
            "UNWIND $ids AS i MATCH (f:Entity {id: i})-[r:RELATED]-() RETURN r.id, r.source, r.target, r.description, r.weight",
        ] {
            let mut p = conn.prepare(q).unwrap();
            time(q, &mut || conn.execute(&mut p, vec![("ids", strings(&ids))]).unwrap().count());
        }
        for q in [
            "MATCH (f:Entity {id: $id})-[r:RELATED]-() RETURN r.id, r.source, r.target, r.description, r.weight",
            "MATCH (e:Entity {id: $id}) RETURN e.id, e.title, e.type, e.description, e.degree, e.frequency",
        ] {
            let mut p = conn.prepare(q).unwrap();
            time(&format!("per id: {q}"), &mut || {
                ids.iter()
                    .map(|id| conn.execute(&mut p, vec![("id", s(id))]).unwrap().count())
                    .sum()
            });
        }
        // Large frontiers: the `IN` list is searched per row.
        for k in [10usize, 100, 1000] {
            let many: Vec<String> = (0..k).map(|i| format!("e{}", (i * 97) % n)).collect();
            for q in [
                "MATCH (e:Entity) WHERE e.id IN $ids RETURN e.id, e.title",
                "UNWIND $ids AS i MATCH (e:Entity {id: i}) RETURN e.id, e.title",
                "MATCH (f:Entity)-[r:RELATED]-() WHERE f.id IN $ids RETURN r.id, r.source, r.target",
            ] {
                let mut p = conn.prepare(q).unwrap();
                time(&format!("k={k}: {q}"), &mut || conn.execute(&mut p, vec![("ids", strings(&many))]).unwrap().count());
            }
            let mut p = conn.prepare("MATCH (f:Entity {id: $id})-[r:RELATED]-() RETURN r.id, r.source, r.target").unwrap();
            time(&format!("k={k}: per id expand"), &mut || {
                many.iter().map(|id| conn.execute(&mut p, vec![("id", s(id))]).unwrap().count()).sum()
            });
            let mut p = conn.prepare("MATCH (e:Entity {id: $id}) RETURN e.id, e.title").unwrap();
            time(&format!("k={k}: per id summary"), &mut || {
                many.iter().map(|id| conn.execute(&mut p, vec![("id", s(id))]).unwrap().count()).sum()
            });
        }
    })
    .await
    .unwrap();
    let ids: Vec<String> = (0..10).map(|i| format!("e{}", i * 37)).collect();
    let t = std::time::Instant::now();
    let mut rows = 0;
    for _ in 0..50 {
        let step = shard
            .traverse_step(
                ids.clone(),
                1,
                Direction::Both,
                RelationFilter::default(),
                true,
                &ReadScope::strict(),
            )
            .await
            .unwrap();
        rows += step.edges.len() + step.entities.len();
    }
    println!(
        "{:>10.3?} {:>5} rows  traverse_step (reader thread, cached statements)",
        t.elapsed() / 50,
        rows / 50
    );
}

/// The merge sorts rows from many shards the way Kuzu sorts them in one (nulls included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merge_orders_values_like_kuzu() {
    let dir = tempfile::tempdir().unwrap();
    let shard = KuzuShard::open(&dir.path().join("shard-0.kz"), 0, &config(0), gate()).unwrap();
    for list in [
        "[3, null, 1, -2, 10]",
        "['b', null, 'B', 'a', '']",
        "[2.5, null, -1.0, 2.0]",
    ] {
        for desc in [false, true] {
            let q = format!(
                "UNWIND {list} AS x RETURN x ORDER BY x{}",
                if desc { " DESC" } else { "" }
            );
            let kuzu: Vec<serde_json::Value> = (cypher_rows(&shard, &q).await.into_iter())
                .map(|r| r[0].clone())
                .collect();
            let mut ours = kuzu.clone();
            ours.reverse();
            ours.sort_by(|a, b| {
                let c = crate::query::merge::compare(a, b);
                if desc {
                    c.reverse()
                } else {
                    c
                }
            });
            assert_eq!(ours, kuzu, "{q}");
        }
    }
}

/// A snapshot is a database file holding exactly the writes up to its sequence number, with its
/// indexes; the log keeps what came after it while pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_copies_the_database_at_a_round_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-0.kz");
    let shard = KuzuShard::open(&path, 0, &config(4), gate()).unwrap();
    for seq in 1..=20u64 {
        let e = entity(&format!("e{seq}"), &format!("E{seq}"), 4);
        let r = relation(&format!("r{seq}"), &format!("e{seq}"), "e1", 1.0);
        shard.write(seq, upsert(vec![e], vec![r])).await.unwrap();
    }
    let (seq_before, sum_before) = shard.checksum().await.unwrap();
    assert_eq!(seq_before, 20);
    let copy_dir = tempfile::tempdir().unwrap();
    let copy_path = copy_dir.path().join("shard-0.kz");
    let seq = shard.snapshot(copy_path.clone(), 7).await.unwrap();
    assert_eq!(seq, 20);
    // Writes after the snapshot stay in the source's log for the catch-up.
    for seq in 21..=25u64 {
        let e = entity(&format!("e{seq}"), &format!("E{seq}"), 4);
        shard.write(seq, upsert(vec![e], vec![])).await.unwrap();
    }
    shard.wait_visible(Duration::from_secs(10)).await.unwrap();
    let after = shard.records_after(20, 1 << 20).await.unwrap();
    assert_eq!(
        after.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (21..=25).collect::<Vec<_>>()
    );
    shard.unpin(7);

    let copy = KuzuShard::open(&copy_path, 0, &config(4), gate()).unwrap();
    assert_eq!(copy.seq(), 20, "the copy knows which writes it holds");
    let (_, sum_copy) = copy.checksum().await.unwrap();
    assert_eq!(sum_copy, sum_before, "same content");
    let rec = copy.entity_now("e5").await.expect("e5 in the copy");
    assert_eq!(rec.relations.len(), 1);
    // Replaying the rest makes the copy equal to the source.
    for (seq, op) in after {
        copy.write(seq, op).await.unwrap();
    }
    assert_eq!(
        copy.checksum().await.unwrap().1,
        shard.checksum().await.unwrap().1
    );
}

/// Not a test: what inserting relations costs by COPY and by WAL-logged `UNWIND … CREATE` (Kuzu
/// does not log COPY in its WAL; README, known limits), in rounds into a growing table.
/// `cargo test --release --lib insert_paths -- --ignored --nocapture`
#[test]
#[ignore]
fn insert_paths() {
    use kuzu::Value;
    let dir = tempfile::tempdir().unwrap();
    // copy, create, match_unwind (torua's form), create_node, create_node_each.
    let modes = std::env::var("INSERT_PATHS_MODES").unwrap_or("copy,create,match_unwind".into());
    for mode in modes.split(',') {
        let n = 20000usize;
        let db = probe_database(&dir.path().join(format!("{mode}.kz")), n);
        let conn = Connection::new(&db).unwrap();
        let total = std::time::Instant::now();
        for round in 0..10 {
            let m = 2500usize;
            // Rows of relation_fields(): id, source, target, description, ...
            let vals: Vec<Vec<Value>> = (0..m)
                .map(|j| {
                    let source = format!("e{}", (j * 7919 + round) % n);
                    let target = format!("e{}", (j * 104729 + 13 + round) % n);
                    relation_row(&Relation {
                        description: "some description of it".into(),
                        text_unit_ids: vec!["t1".into()],
                        ..relation(&format!("r{round}-{j}"), &source, &target, 1.0)
                    })
                })
                .collect();
            let t = std::time::Instant::now();
            run(&conn, "BEGIN TRANSACTION", vec![]).unwrap();
            if mode == "create_node_each" {
                let mut stmt = conn
                    .prepare("CREATE (n:Entity {id: $id, title: $t, type: '', description: $d, text_unit_ids: [], frequency: 0, degree: 0, stub: false, hash: 0})")
                    .unwrap();
                for v in &vals {
                    conn.execute(
                        &mut stmt,
                        vec![
                            ("id", v[0].clone()),
                            ("t", v[1].clone()),
                            ("d", v[3].clone()),
                        ],
                    )
                    .unwrap();
                }
                run(&conn, "COMMIT", vec![]).unwrap();
                eprintln!("{mode} round {round}: total {:?}", t.elapsed());
                continue;
            }
            let q = match mode {
                "copy" => "COPY RELATED FROM (UNWIND $rows AS r RETURN r.source, r.target, r.id, r.description, r.weight, r.text_unit_ids, r.source AS source2, r.target AS target2)",
                "create" => "UNWIND $rows AS r MATCH (a:Entity {id: r.source}), (b:Entity {id: r.target}) CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, text_unit_ids: r.text_unit_ids, source: r.source, target: r.target}]->(b)",
                "match_unwind" => "UNWIND $rows AS r MATCH (a:Entity {id: r.source}) WITH a, r UNWIND [r.target] AS t MATCH (b:Entity {id: t}) CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, text_unit_ids: r.text_unit_ids, source: r.source, target: r.target}]->(b)",
                "create_node" => "UNWIND $rows AS r CREATE (n:RelKey {key: r.id, hash: 1})",
                other => panic!("unknown mode {other}"),
            };
            run(&conn, q, vec![("rows", rows(&relation_fields(), vals))]).unwrap();
            let t_insert = t.elapsed();
            run(&conn, "COMMIT", vec![]).unwrap();
            eprintln!(
                "{mode} round {round}: insert {:?} total {:?}",
                t_insert,
                t.elapsed()
            );
        }
        eprintln!("{mode}: 10 rounds of 2500 in {:?}", total.elapsed());
    }
}

/// Not a test: whether Kuzu's full-text index sees rows inserted by `UNWIND … CREATE`.
/// `cargo test --release --lib fts_probe -- --ignored --nocapture`
#[test]
#[ignore]
fn fts_probe() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["unwind", "unwind_tx", "single", "copy"] {
        let db = Database::new(
            dir.path().join(format!("{mode}.kz")),
            SystemConfig::default(),
        )
        .unwrap();
        let conn = Connection::new(&db).unwrap();
        conn.query(
            "CREATE NODE TABLE E(id STRING, title STRING, description STRING, PRIMARY KEY(id))",
        )
        .unwrap();
        conn.query("CALL CREATE_FTS_INDEX('E', 'e_text', ['title', 'description'])")
            .unwrap();
        let rows = "[{id: 'a', t: 'a', d: 'a lighthouse keeper'}, {id: 'b', t: 'b', d: 'a baker of bread'}, {id: 'c', t: 'c', d: 'no vector here'}]";
        match mode {
            "unwind" => {
                conn.query(&format!(
                    "UNWIND {rows} AS r CREATE (n:E {{id: r.id, title: r.t, description: r.d}})"
                ))
                .unwrap();
            }
            "unwind_tx" => {
                conn.query("BEGIN TRANSACTION").unwrap();
                conn.query(&format!(
                    "UNWIND {rows} AS r CREATE (n:E {{id: r.id, title: r.t, description: r.d}})"
                ))
                .unwrap();
                conn.query("COMMIT").unwrap();
            }
            "single" => {
                for (i, d) in [
                    ("a", "a lighthouse keeper"),
                    ("b", "a baker of bread"),
                    ("c", "no vector here"),
                ] {
                    conn.query(&format!(
                        "CREATE (n:E {{id: '{i}', title: '{i}', description: '{d}'}})"
                    ))
                    .unwrap();
                }
            }
            _ => {
                conn.query(&format!(
                    "COPY E FROM (UNWIND {rows} AS r RETURN r.id, r.t, r.d)"
                ))
                .unwrap();
            }
        }
        let search = |stage: &str| {
            for q in ["baker", "lighthouse", "vector", "sailor", "painter"] {
                let got: Vec<String> = conn
                    .query(&format!(
                        "CALL QUERY_FTS_INDEX('E', 'e_text', '{q}') RETURN node.id"
                    ))
                    .unwrap()
                    .map(|r| r[0].to_string())
                    .collect();
                eprintln!("{mode} {stage}: {q} -> {got:?}");
            }
        };
        search("inserted");
        if mode.starts_with("unwind") {
            // SET on rows a batch CREATE mis-indexed kills the process (SIGSEGV in Kuzu 0.11).
            continue;
        }
        // A batch SET, by contrast, re-indexes each row with its own text.
        conn.query("UNWIND [{id: 'a', d: 'a sailor'}, {id: 'b', d: 'a painter'}] AS r MATCH (n:E {id: r.id}) SET n.description = r.d").unwrap();
        search("after SET");
    }
}

/// Not a test: which tables lose the rows a transaction wrote when it also `CREATE`s rows in a
/// vector-indexed table. Kuzu 0.11 adds such rows to the HNSW graph at commit, which inserts into
/// the index's relation tables while the commit walks the hash map of changed tables; when the
/// map rehashes, the walk skips tables, and their rows vanish without an error (seen here with 12
/// and with 28 other tables; `apply_round` gives vector rows transactions of their own).
/// `cargo test --release --lib vector_commit_probe -- --ignored --nocapture`
#[test]
#[ignore]
fn vector_commit_probe() {
    let count = |conn: &Connection, table: &str| -> i64 {
        let rows: Vec<Vec<kuzu::Value>> = conn
            .query(&format!("MATCH (n:{table}) RETURN count(*)"))
            .unwrap()
            .collect();
        match rows[0][0] {
            kuzu::Value::Int64(n) => n,
            _ => -1,
        }
    };
    for others in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let db = probe_db(dir.path());
        let conn = probe_conn(
            &db,
            &[
                "CREATE NODE TABLE V(id STRING, embedding FLOAT[4], PRIMARY KEY(id))",
                "CALL CREATE_VECTOR_INDEX('V', 'v_idx', 'embedding', metric := 'cosine')",
            ],
        );
        for i in 0..others {
            conn.query(&format!(
                "CREATE NODE TABLE T{i}(id STRING, PRIMARY KEY(id))"
            ))
            .unwrap();
        }
        conn.query("BEGIN TRANSACTION").unwrap();
        for i in 0..others {
            conn.query(&format!("CREATE (:T{i} {{id: 'a'}})")).unwrap();
        }
        // Several rows: the first one alone gives the graph no edge.
        conn.query(
            "UNWIND ['a', 'b', 'c', 'd'] AS i CREATE (:V {id: i, embedding: [0.1, 0.2, 0.3, 0.4]})",
        )
        .unwrap();
        conn.query("COMMIT").unwrap();
        let lost: Vec<usize> = (0..others)
            .filter(|i| count(&conn, &format!("T{i}")) != 1)
            .collect();
        eprintln!(
            "{others} other tables: V has {} of 4 rows; tables that lost their row: {lost:?}",
            count(&conn, "V")
        );
    }
}

/// Kuzu 0.11's `DETACH DELETE` of a node one of whose relations was already deleted (here: with
/// its neighbour) left its other relations in the far ends' lists: `c` kept `a→c` after `b` and
/// then `a` were deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_leaves_no_relation_behind() {
    for mode in [InsertMode::Copy, InsertMode::Create] {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_in(dir.path(), 0, 0, mode);
        let first = upsert(
            vec![
                entity("a", "A", 0),
                entity("b", "B", 0),
                entity("c", "C", 0),
            ],
            vec![
                relation("r1", "a", "b", 1.0),
                relation("r4", "a", "c", 1.0),
                relation("r9", "a", "a", 1.0),
            ],
        );
        shard.write(1, first).await.unwrap();
        shard
            .write(2, WriteOp::DeleteEntity("b".into()))
            .await
            .unwrap();
        shard
            .write(3, WriteOp::DeleteEntity("a".into()))
            .await
            .unwrap();
        let c = shard.entity_now("c").await.unwrap();
        assert_eq!(c.relations, vec![], "{mode}");
        let stats = shard.stats().await.unwrap();
        assert_eq!(
            (
                stats.counts.entities,
                stats.counts.relations,
                stats.failed_writes
            ),
            (1, 0, 0),
            "{mode}"
        );
    }
}

/// A small database for the probes of Kuzu's own behaviour below: one thread, 256 MiB of
/// buffer pool, 1 GiB at most.
fn probe_db(dir: &Path) -> Database {
    Database::new(
        dir.join("probe.kz"),
        SystemConfig::default()
            .max_db_size(1 << 30)
            .buffer_pool_size(1 << 28)
            .max_num_threads(1),
    )
    .unwrap()
}

/// A connection to a probe database with `setup`'s statements run, in order.
fn probe_conn<'a>(db: &'a Database, setup: &[&str]) -> Connection<'a> {
    let conn = Connection::new(db).unwrap();
    for statement in setup {
        conn.query(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    conn
}

/// Not a test (it crashes the process): Kuzu 0.11 on its own, a relation inserted and deleted
/// again between two checkpoints, twice, then one more inserted: the next checkpoint dies with
/// SIGSEGV (in `CSRNodeGroup::collectInMemRegionChangesAndUpdateHeaderLength`). When a checkpoint
/// finds that a relation node group with data on disk gained nothing and lost nothing on disk
/// (every row inserted since the last checkpoint was deleted again), it returns early
/// (`CSRNodeGroup::checkpointInMemAndOnDisk`) without clearing the group's in-memory rows, whose
/// index it has just marked invalid; the next checkpoint of the group reads those invalid row
/// numbers. Full-text indexes keep their postings in such relation tables, so entities written
/// and deleted again between checkpoints hit it too. `apply_round` never deletes rows inserted
/// since the last checkpoint (the applier checkpoints before a round that deletes).
/// `cargo test --release --lib csr_checkpoint_probe -- --ignored --nocapture`
#[test]
#[ignore]
fn csr_checkpoint_probe() {
    let dir = tempfile::tempdir().unwrap();
    let db = probe_db(dir.path());
    let conn = probe_conn(
        &db,
        &[
            "CREATE NODE TABLE N(id STRING, PRIMARY KEY(id))",
            "CREATE REL TABLE R(FROM N TO N)",
            "CREATE (:N {id: 'a'}), (:N {id: 'b'})",
        ],
    );
    for step in [
        "insert",
        "delete",
        "checkpoint",
        "insert",
        "delete",
        "checkpoint",
        "insert",
        "checkpoint",
    ] {
        eprintln!("{step}");
        let q = match step {
            "insert" => "MATCH (a:N {id: 'a'}), (b:N {id: 'b'}) CREATE (a)-[:R]->(b)",
            "delete" => "MATCH (:N {id: 'a'})-[r:R]->() DELETE r",
            _ => "CHECKPOINT",
        };
        conn.query(q).unwrap();
    }
    eprintln!("survived");
}

/// Not a test: Kuzu 0.11's full-text index after a `SET` of an indexed column. The update
/// re-indexes the row and records "rows indexed up to here" as that row's offset + 1; the next
/// `COPY` into the table indexes every row from there on again, and fails on the first that is
/// already indexed ("Found duplicated primary key value 1" in the index's document table).
/// `kuzu_apply::anchor_text_indexes` resets the mark after such a `SET`.
/// `cargo test --release --lib fts_copy_after_set_probe -- --ignored --nocapture`
#[test]
#[ignore]
fn fts_copy_after_set_probe() {
    let dir = tempfile::tempdir().unwrap();
    let db = probe_db(dir.path());
    let conn = probe_conn(
        &db,
        &[
            "CREATE NODE TABLE E(id STRING, title STRING, PRIMARY KEY(id))",
            "CALL CREATE_FTS_INDEX('E', 'e_title', ['title'])",
            "COPY E FROM (UNWIND ['a', 'b', 'c'] AS i RETURN i, 'word ' + i)",
            "MATCH (n:E {id: 'a'}) SET n.title = 'word changed'",
        ],
    );
    let copied = conn.query("COPY E FROM (UNWIND ['d'] AS i RETURN i, 'word ' + i)");
    eprintln!(
        "COPY after SET: {}",
        copied.map_or_else(|e| e.to_string(), |_| "ok".into())
    );
}

/// Not a test: Kuzu 0.11's full-text search after deletes. 3,000 rows share a word; 300 of them
/// are deleted; a search for the word then misses some of the 2,700 that stay (without an
/// error), while a relation table with the same shape loses nothing. Not worked around (see the
/// known limits).
/// `cargo test --release --lib fts_delete_probe -- --ignored --nocapture`
#[test]
#[ignore]
fn fts_delete_probe() {
    let dir = tempfile::tempdir().unwrap();
    let db = probe_db(dir.path());
    let conn = probe_conn(
        &db,
        &[
            "CREATE NODE TABLE E(id INT64, text STRING, PRIMARY KEY(id))",
            "CALL CREATE_FTS_INDEX('E', 'e_text', ['text'])",
            "COPY E FROM (UNWIND range(0, 2999) AS i RETURN i, 'lighthouse keeper ' + CAST(i AS STRING))",
            "MATCH (n:E) WHERE n.id < 300 DELETE n",
        ],
    );
    let found: Vec<Vec<kuzu::Value>> = conn
        .query("CALL QUERY_FTS_INDEX('E', 'e_text', 'lighthouse', top := 10000) RETURN count(*)")
        .unwrap()
        .collect();
    eprintln!(
        "the search finds {} of the 2700 rows that stay",
        found[0][0]
    );
}

fn routed(mut e: Entity, key: &str) -> Entity {
    e.routing = Some(key.into());
    e
}

/// A key whose shard (of 8) is not 3, the shard the routing tests' copy holds.
const ELSEWHERE: &str = "far-away";

in_both_modes!(routing_keys_in: routing_keys_and_pointers_are_stored_and_read, routing_keys_and_pointers_are_stored_and_read_with_copy);

/// Routing keys in one copy (shard 3 of 8): an entity's key and a relation's ends' keys are
/// stored and read back; a pointer is a stub with the key, found by `placements`, reported as
/// moved by a traversal step and left out of the graph part; an entity stored here that gets a
/// pointer becomes one.
async fn routing_keys_in(mode: InsertMode) {
    assert_ne!(shard_of(ELSEWHERE, 8), 3);
    let dir = tempfile::tempdir().unwrap();
    let shard = open_in(dir.path(), 3, 0, mode);
    let mut to_far = relation("r1", "a", "x", 1.0);
    to_far.target_routing = Some(ELSEWHERE.into());
    shard
        .write(
            1,
            upsert(
                vec![routed(entity("a", "A", 0), "k"), entity("q", "Q", 0)],
                vec![to_far, relation("r2", "q", "a", 1.0)],
            ),
        )
        .await
        .unwrap();
    shard
        .write(
            2,
            WriteOp::Point(vec![
                ("p".into(), ELSEWHERE.into()),
                ("q".into(), ELSEWHERE.into()),
            ]),
        )
        .await
        .unwrap();
    shard.wait_visible(Duration::from_secs(30)).await.unwrap();
    let scope = ReadScope::strict();
    let a = shard.get_entity("a".into(), &scope).await.unwrap().unwrap();
    assert_eq!(a.entity.routing.as_deref(), Some("k"));
    let r1 = a.relations.iter().find(|r| r.id == "r1").unwrap();
    assert_eq!(
        (r1.source_routing.as_deref(), r1.target_routing.as_deref()),
        (None, Some(ELSEWHERE))
    );
    assert!(shard
        .get_entity("p".into(), &scope)
        .await
        .unwrap()
        .is_none());
    assert!(
        shard
            .get_entity("q".into(), &scope)
            .await
            .unwrap()
            .is_none(),
        "q moved: only its pointer is left"
    );
    let mut placed = shard
        .placements(
            vec!["a".into(), "p".into(), "q".into(), "x".into()],
            vec!["none".into()],
        )
        .await
        .unwrap();
    placed.sort_by(|a, b| a.id.cmp(&b.id));
    let placed: Vec<(&str, bool, Option<&str>)> = placed
        .iter()
        .map(|p| (p.id.as_str(), p.stub, p.routing.as_deref()))
        .collect();
    assert_eq!(
        placed,
        vec![
            ("a", false, Some("k")),
            ("p", true, Some(ELSEWHERE)),
            ("q", true, Some(ELSEWHERE)),
            ("x", true, Some(ELSEWHERE)),
        ]
    );
    let step = shard
        .traverse_step(
            vec!["a".into(), "p".into()],
            8,
            Direction::Both,
            RelationFilter::default(),
            true,
            &scope,
        )
        .await
        .unwrap();
    assert_eq!(step.moved, vec![("p".to_string(), ELSEWHERE.to_string())]);
    assert_eq!(
        step.entities
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    let mut edges: Vec<&str> = step.edges.iter().map(|e| e.id.as_str()).collect();
    edges.sort_unstable();
    assert_eq!(edges, ["r1", "r2"]);
    let part = shard.graph_part().await.unwrap();
    let row = |id: &str| part.entities.iter().find(|e| e.id == id).unwrap();
    let stored: Vec<&str> = (part.entities.iter())
        .filter(|e| !e.stub)
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(stored, ["a"]);
    assert_eq!(row("x").home(8), shard_of(ELSEWHERE, 8));
    assert_eq!(row("a").routing.as_deref(), Some("k"));
    assert_eq!(part.relations.len(), 2, "{part:?}");
    for &(a, b) in &part.relations {
        assert!(a < part.entities.len() as u32 && b < part.entities.len() as u32);
    }
    assert_eq!(shard.stats().await.unwrap().failed_writes, 0);
}

/// A copy that never held a routing key answers placements without reading its database: of
/// the ids only those asked for `all` are listed (and what unapplied writes place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_without_routing_keys_lists_only_what_must_be_found() {
    let dir = tempfile::tempdir().unwrap();
    {
        let shard = open_in(dir.path(), 0, 0, InsertMode::Copy);
        let batch = upsert(vec![entity("a", "A", 0), entity("b", "B", 0)], vec![]);
        shard.write(1, batch).await.unwrap();
        shard.wait_visible(Duration::from_secs(30)).await.unwrap();
        // A second round: once it is visible the first is no longer pending.
        shard
            .write(2, upsert(vec![entity("z", "Z", 0)], vec![]))
            .await
            .unwrap();
        shard.wait_visible(Duration::from_secs(30)).await.unwrap();
        let placed = shard
            .placements(vec!["a".into()], vec!["b".into()])
            .await
            .unwrap();
        let ids: Vec<&str> = placed.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["b"]);
        // A write with a key: from then on every id is read.
        let batch = upsert(vec![routed(entity("c", "C", 0), "k")], vec![]);
        shard.write(3, batch).await.unwrap();
        shard.wait_visible(Duration::from_secs(30)).await.unwrap();
        let placed = shard
            .placements(vec!["a".into(), "c".into()], vec![])
            .await
            .unwrap();
        let mut ids: Vec<&str> = placed.iter().map(|p| p.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["a", "c"]);
    }
    // Reopened, the copy finds its keys in the database.
    let shard = open_in(dir.path(), 0, 0, InsertMode::Copy);
    let placed = shard.placements(vec!["a".into()], vec![]).await.unwrap();
    assert_eq!(placed.len(), 1);
}

/// A database written before routing keys gains their columns at open (at the end of the tables,
/// where bulk loads put them), and stores keys in both insert modes afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_routing_keys_gains_them() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [InsertMode::Copy, InsertMode::Create] {
        {
            let shard = open_in(dir.path(), 0, 0, mode);
            let batch = upsert(
                vec![entity("old", "OLD", 0)],
                vec![relation("r0", "old", "b", 1.0)],
            );
            shard.write(1, batch).await.unwrap();
            shard.wait_visible(Duration::from_secs(30)).await.unwrap();
        }
        {
            let path = dir.path().join("shard-0.kz");
            let db = Database::new(&path, SystemConfig::default().max_db_size(1 << 30)).unwrap();
            let conn = Connection::new(&db).unwrap();
            for q in [
                "ALTER TABLE Entity DROP routing",
                "ALTER TABLE RELATED DROP source_routing",
                "ALTER TABLE RELATED DROP target_routing",
            ] {
                conn.query(q).unwrap();
            }
        }
        let shard = open_in(dir.path(), 0, 0, mode);
        let mut rel = relation("r1", "new", "b", 1.0);
        rel.source_routing = Some("k".into());
        let batch = upsert(vec![routed(entity("new", "NEW", 0), "k")], vec![rel]);
        shard.write(2, batch).await.unwrap();
        shard.wait_visible(Duration::from_secs(30)).await.unwrap();
        let scope = ReadScope::strict();
        let old = shard
            .get_entity("old".into(), &scope)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (old.entity.title.as_str(), old.entity.routing),
            ("OLD", None)
        );
        let new = shard
            .get_entity("new".into(), &scope)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(new.entity.routing.as_deref(), Some("k"), "{mode:?}");
        assert_eq!(
            new.relations[0].source_routing.as_deref(),
            Some("k"),
            "{mode:?}"
        );
        assert_eq!(new.relations[0].target, "b");
        assert_eq!(shard.stats().await.unwrap().failed_writes, 0);
        drop(shard);
        std::fs::remove_dir_all(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
    }
}

/// A user query's rows on `shard`, as JSON values.
async fn cypher_rows(shard: &KuzuShard, cypher: &str) -> Vec<serde_json::Value> {
    let query = ShardQuery {
        cypher: cypher.into(),
        params_json: "{}".into(),
        timeout_ms: 5000,
        names_cypher: None,
        prepare_only: false,
    };
    let rows = shard
        .user_query(query, 1 << 20, &ReadScope::strict())
        .await
        .unwrap();
    serde_json::from_str(&rows.rows_json).unwrap()
}

/// Staged results stay out of the entities until published; a discard drops them; stubs are
/// never written; a publish with nothing staged changes nothing; staged rows survive a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_results_show_only_once_published() {
    use crate::storage::{EntityProperty, PropertyValue};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let ranks = |write: &str, rank: f64| WriteOp::Stage {
        write: write.into(),
        property: EntityProperty::PageRank,
        values: ["a", "b", "far"]
            .iter()
            .map(|id| (id.to_string(), PropertyValue::Float(rank)))
            .collect(),
    };
    let q = "MATCH (e:Entity) WHERE e.stub = false RETURN e.id, e.pagerank, e.degree, e.component ORDER BY e.id";
    {
        let shard = open_in(dir.path(), 0, 0, InsertMode::Copy);
        // "far" is only a relation's far end here (a stub).
        let batch = upsert(
            vec![entity("a", "A", 0), entity("b", "B", 0)],
            vec![relation("r", "a", "far", 1.0)],
        );
        shard.write(1, batch).await.unwrap();
        shard.write(2, ranks("t:1/x", 0.5)).await.unwrap();
        let degrees = WriteOp::Stage {
            write: "t:1/x".into(),
            property: EntityProperty::Degree,
            values: vec![("a".into(), PropertyValue::Int(7))],
        };
        shard.write(3, degrees).await.unwrap();
        shard.write(4, ranks("t:2/y", 0.25)).await.unwrap();
        shard.wait_visible(Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            cypher_rows(&shard, q).await,
            [json!(["a", null, 1, null]), json!(["b", null, 1, null])]
        );
        let mut staged = shard.staged_writes(10).await.unwrap();
        staged.sort();
        assert_eq!(staged, ["t:1/x", "t:2/y"]);
    }
    // Reopened (the staged rows are in the database), then published and discarded.
    let shard = open_in(dir.path(), 0, 0, InsertMode::Copy);
    assert_eq!(shard.staged_writes(10).await.unwrap().len(), 2);
    let publish = |w: &str| WriteOp::Publish { write: w.into() };
    shard.write(5, publish("t:1/x")).await.unwrap();
    shard
        .write(
            6,
            WriteOp::Discard {
                write: "t:2/y".into(),
            },
        )
        .await
        .unwrap();
    shard.write(7, publish("t:3/none")).await.unwrap();
    shard.wait_visible(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        cypher_rows(&shard, q).await,
        [json!(["a", 0.5, 7, null]), json!(["b", 0.5, 1, null])]
    );
    assert!(shard.staged_writes(10).await.unwrap().is_empty());
    let stubs = "MATCH (e:Entity) WHERE e.stub = true RETURN e.id, e.pagerank";
    assert_eq!(cypher_rows(&shard, stubs).await, [json!(["far", null])]);
}
