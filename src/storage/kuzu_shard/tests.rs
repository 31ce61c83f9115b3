//! The storage on its own: upserts through the log and the applier, stubs, idempotent re-sends,
//! updates, deletes, embeddings, and redo after a crash.

use super::*;
use crate::graph::model::{Batch, Relation};

fn config(dim: usize) -> StoreConfig {
    StoreConfig::for_budget(256, 1, 1, dim)
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
    }
}

fn upsert(entities: Vec<Entity>, relations: Vec<Relation>) -> WriteOp {
    WriteOp::Upsert(Batch {
        entities,
        relations,
        ..Batch::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_are_idempotent_and_updates_win() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-0.kz");
    let shard = KuzuShard::open(&path, 0, &config(4)).unwrap();
    let first = upsert(
        vec![entity("a", "A", 4), entity("b", "B", 4)],
        vec![relation("r1", "a", "b", 1.0), relation("r2", "a", "ghost", 2.0)],
    );
    shard.write(1, first.clone()).await.unwrap();
    // The same batch again (a client retry) and an update of r1 and of b.
    shard.write(2, first).await.unwrap();
    shard
        .write(
            3,
            upsert(vec![entity("b", "B2", 4)], vec![relation("r1", "a", "b", 5.0)]),
        )
        .await
        .unwrap();
    let a = shard.get_entity("a".into()).await.unwrap().unwrap();
    assert_eq!(a.entity.embedding, Some(vec![0.5; 4]));
    let weights: Vec<(String, f64)> = a.relations.iter().map(|r| (r.id.clone(), r.weight)).collect();
    assert_eq!(weights, vec![("r1".into(), 5.0), ("r2".into(), 2.0)]);
    assert_eq!(shard.get_entity("b".into()).await.unwrap().unwrap().entity.title, "B2");
    assert!(shard.get_entity("ghost".into()).await.unwrap().is_none(), "a stub is not an entity");
    let stats = shard.stats().await.unwrap();
    assert_eq!((stats.entities, stats.stubs, stats.relations), (2, 1, 2));
    assert_eq!((stats.applied_seq, stats.logged_seq, stats.failed_writes), (3, 3, 0));

    // The stub becomes an entity when it arrives; deleting it takes its relations.
    shard.write(4, upsert(vec![entity("ghost", "G", 4)], vec![])).await.unwrap();
    shard.write(5, WriteOp::DeleteEntity("a".into())).await.unwrap();
    assert!(shard.get_entity("a".into()).await.unwrap().is_none());
    let stats = shard.stats().await.unwrap();
    assert_eq!((stats.entities, stats.stubs, stats.relations), (2, 0, 0));
    // A relation deleted with its endpoint can be created again (its key went too).
    shard
        .write(6, upsert(vec![], vec![relation("r1", "a", "b", 1.0)]))
        .await
        .unwrap();
    let b = shard.get_entity("b".into()).await.unwrap().unwrap();
    assert_eq!(b.relations.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_writes_are_redone_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-7.kz");
    {
        let shard = KuzuShard::open(&path, 7, &config(0)).unwrap();
        shard.write(1, upsert(vec![entity("a", "A", 0)], vec![])).await.unwrap();
        shard.wait_visible(Duration::from_secs(10)).await.unwrap();
    }
    // A write that reached the log but not the database (the process died in between).
    {
        let (mut log, redo) = ShardLog::open(dir.path(), 7, 1).unwrap();
        assert!(redo.is_empty());
        let op = upsert(vec![entity("b", "B", 0)], vec![relation("r", "a", "b", 1.0)]);
        log.append(2, &shard_log::encode(2, &op).unwrap()).unwrap();
    }
    let shard = KuzuShard::open(&path, 7, &config(0)).unwrap();
    assert_eq!(shard.seq(), 2);
    let b = shard.get_entity("b".into()).await.unwrap().unwrap();
    assert_eq!(b.relations.len(), 1);
    assert_eq!(shard.visible_seq(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_embedding_dimension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-1.kz");
    drop(KuzuShard::open(&path, 1, &config(4)).unwrap());
    let err = KuzuShard::open(&path, 1, &config(8)).err().unwrap();
    assert!(err.contains("TORUA_EMBEDDING_DIM=8"), "{err}");
}
