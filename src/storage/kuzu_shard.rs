//! One shard copy in one embedded Kuzu database file. The only file that speaks Kuzu.
//!
//! Threads: Kuzu calls block, so none runs on the async runtime. Each database has one writer
//! thread (Kuzu allows one write transaction at a time, and a second writer fails instead of
//! waiting): writes queue to it, and writes that queue up meanwhile are committed together in one
//! transaction. Reads run on tokio's blocking pool, each with its own connection, concurrently.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use kuzu::{Connection, Database, LogicalType, SystemConfig, Value};
use tokio::sync::oneshot;

use super::{EntityRecord, RelationRecord, ShardStats, StoreConfig, WriteOp};
use crate::graph::model::{Batch, Chunk, Entity};

/// Writes waiting in a database's queue before callers get "busy" (backpressure).
pub const WRITE_QUEUE: usize = 256;
/// Queued writes committed together at most.
const GROUP_COMMIT: usize = 64;

struct WriteJob {
    seq: u64,
    op: WriteOp,
    reply: oneshot::Sender<Result<(), String>>,
}

pub struct KuzuShard {
    path: PathBuf,
    db: Arc<Database>,
    writer: mpsc::SyncSender<WriteJob>,
    applied: Arc<AtomicU64>,
}

fn err(e: kuzu::Error) -> String {
    e.to_string()
}

impl KuzuShard {
    /// Opens (creating if needed) the database at `path`, with the schema.
    pub fn open(path: &Path, config: &StoreConfig) -> Result<KuzuShard, String> {
        let system = SystemConfig::default()
            .buffer_pool_size(config.buffer_pool_bytes)
            .max_num_threads(config.threads)
            .max_db_size(config.max_db_size)
            .enable_compression(true);
        let db = Database::new(path, system)
            .map_err(|e| format!("cannot open the Kuzu database {}: {e}", path.display()))?;
        let db = Arc::new(db);
        let applied = {
            let conn = Connection::new(&db).map_err(err)?;
            for ddl in schema(config.embedding_dim) {
                conn.query(&ddl).map_err(|e| format!("schema: {e}"))?;
            }
            read_applied(&conn)?
        };
        let applied = Arc::new(AtomicU64::new(applied));
        let (tx, rx) = mpsc::sync_channel::<WriteJob>(WRITE_QUEUE);
        let thread_db = db.clone();
        let thread_applied = applied.clone();
        let name = format!(
            "kuzu-writer-{}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        std::thread::Builder::new()
            .name(name)
            .spawn(move || writer_loop(thread_db, rx, thread_applied))
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(KuzuShard {
            path: path.to_path_buf(),
            db,
            writer: tx,
            applied,
        })
    }

    /// Highest sequence number committed to this copy.
    pub fn applied_seq(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Queues a write and waits for its commit. `Err("busy...")` when the queue is full.
    pub async fn write(&self, seq: u64, op: WriteOp) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        match self.writer.try_send(WriteJob { seq, op, reply }) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                return Err(format!(
                    "busy: {WRITE_QUEUE} writes already queued for this shard; retry later"
                ))
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                return Err("the shard's writer has stopped".into())
            }
        }
        done.await
            .map_err(|_| "the shard's writer stopped before committing".to_string())?
    }

    pub async fn get_entity(&self, id: String) -> Result<Option<EntityRecord>, String> {
        self.read(move |conn| get_entity(conn, &id)).await
    }

    pub async fn get_chunk(&self, id: String) -> Result<Option<Chunk>, String> {
        self.read(move |conn| get_chunk(conn, &id)).await
    }

    pub async fn stats(&self) -> Result<ShardStats, String> {
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(self.path.with_extension("kz.wal"))
                .map(|m| m.len())
                .unwrap_or(0);
        let applied = self.applied_seq();
        self.read(move |conn| {
            let count = |q: &str| -> Result<u64, String> {
                let mut r = conn.query(q).map_err(err)?;
                Ok(r.next().and_then(|row| as_i64(&row[0])).unwrap_or(0) as u64)
            };
            Ok(ShardStats {
                entities: count("MATCH (e:Entity) WHERE e.stub = false RETURN count(*)")?,
                stubs: count("MATCH (e:Entity) WHERE e.stub = true RETURN count(*)")?,
                relations: count("MATCH ()-[r:RELATED]->() RETURN count(*)")?,
                chunks: count("MATCH (c:Chunk) RETURN count(*)")?,
                communities: count("MATCH (c:Community) RETURN count(*)")?,
                documents: count("MATCH (d:Document) RETURN count(*)")?,
                size_bytes: size,
                applied_seq: applied,
            })
        })
        .await
    }

    /// Runs a read on the blocking pool with its own connection.
    async fn read<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, String> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let conn = Connection::new(&db).map_err(err)?;
            f(&conn)
        })
        .await
        .map_err(|e| format!("read task failed: {e}"))?
    }
}

fn schema(dim: usize) -> Vec<String> {
    let emb = if dim > 0 {
        format!(", embedding FLOAT[{dim}]")
    } else {
        String::new()
    };
    vec![
        format!(
            "CREATE NODE TABLE IF NOT EXISTS Entity(id STRING, title STRING, type STRING, description STRING, \
             text_unit_ids STRING[], frequency INT64, degree INT64, stub BOOLEAN{emb}, PRIMARY KEY(id))"
        ),
        "CREATE REL TABLE IF NOT EXISTS RELATED(FROM Entity TO Entity, id STRING, description STRING, \
         weight DOUBLE, text_unit_ids STRING[])"
            .to_string(),
        format!(
            "CREATE NODE TABLE IF NOT EXISTS Chunk(id STRING, text STRING, n_tokens INT64, document_id STRING, \
             entity_ids STRING[]{emb}, PRIMARY KEY(id))"
        ),
        "CREATE NODE TABLE IF NOT EXISTS Community(id STRING, level INT64, parent STRING, title STRING, \
         entity_ids STRING[], summary STRING, full_content STRING, rank DOUBLE, PRIMARY KEY(id))"
            .to_string(),
        "CREATE NODE TABLE IF NOT EXISTS Document(id STRING, title STRING, text STRING, text_unit_ids STRING[], \
         PRIMARY KEY(id))"
            .to_string(),
        "CREATE NODE TABLE IF NOT EXISTS Meta(key STRING, value INT64, PRIMARY KEY(key))".to_string(),
    ]
}

fn read_applied(conn: &Connection) -> Result<u64, String> {
    let mut r = conn
        .query("MATCH (m:Meta) WHERE m.key = 'applied_seq' RETURN m.value")
        .map_err(err)?;
    Ok(r.next().and_then(|row| as_i64(&row[0])).unwrap_or(0) as u64)
}

fn writer_loop(db: Arc<Database>, rx: mpsc::Receiver<WriteJob>, applied: Arc<AtomicU64>) {
    let conn = match Connection::new(&db) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot open a writer connection; this shard refuses writes");
            for job in rx {
                let _ = job
                    .reply
                    .send(Err(format!("shard writer unavailable: {e}")));
            }
            return;
        }
    };
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_COMMIT {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // One transaction for the group; if it fails, retry each alone so one bad write does not
        // fail its neighbours.
        let result = commit(&conn, &group, &applied);
        if result.is_ok() || group.len() == 1 {
            for job in group {
                let _ = job.reply.send(result.clone());
            }
            continue;
        }
        for job in group {
            let result = commit(&conn, std::slice::from_ref(&job), &applied);
            let _ = job.reply.send(result);
        }
    }
}

fn commit(conn: &Connection, jobs: &[WriteJob], applied: &AtomicU64) -> Result<(), String> {
    conn.query("BEGIN TRANSACTION").map_err(err)?;
    let result = (|| {
        let mut max_seq = applied.load(Ordering::SeqCst);
        for job in jobs {
            apply(conn, &job.op)?;
            max_seq = max_seq.max(job.seq);
        }
        run(
            conn,
            "MERGE (m:Meta {key: 'applied_seq'}) SET m.value = $v",
            vec![("v", Value::Int64(max_seq as i64))],
        )?;
        Ok(max_seq)
    })();
    match result {
        Ok(max_seq) => {
            conn.query("COMMIT").map_err(err)?;
            applied.fetch_max(max_seq, Ordering::SeqCst);
            Ok(())
        }
        Err(e) => {
            let _ = conn.query("ROLLBACK");
            Err(e)
        }
    }
}

fn apply(conn: &Connection, op: &WriteOp) -> Result<(), String> {
    match op {
        WriteOp::Upsert(batch) => upsert(conn, batch),
        WriteOp::DeleteEntity(id) => {
            // Relations go with it; a stub stays if the entity's relations live on (they do not: the
            // entity's relations are deleted in every shard by the same request).
            run(
                conn,
                "MATCH (e:Entity {id: $id}) DETACH DELETE e",
                vec![("id", s(id))],
            )?;
            Ok(())
        }
        WriteOp::DeleteRelationsOf(id) => {
            // In a shard where `id` is a stub: drop its relations and the stub.
            run(
                conn,
                "MATCH (e:Entity {id: $id}) WHERE e.stub = true DETACH DELETE e",
                vec![("id", s(id))],
            )?;
            Ok(())
        }
    }
}

fn run(
    conn: &Connection,
    query: &str,
    params: Vec<(&str, Value)>,
) -> Result<Vec<Vec<Value>>, String> {
    let mut stmt = conn
        .prepare(query)
        .map_err(|e| format!("{e} (in {query})"))?;
    let result = conn
        .execute(&mut stmt, params)
        .map_err(|e| format!("{e}"))?;
    Ok(result.collect())
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn strings(v: &[String]) -> Value {
    Value::List(LogicalType::String, v.iter().map(|x| s(x)).collect())
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int64(i) => Some(*i),
        Value::Int32(i) => Some(i64::from(*i)),
        Value::UInt64(i) => Some(*i as i64),
        _ => None,
    }
}

fn as_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

fn as_strings(v: &Value) -> Vec<String> {
    match v {
        Value::List(_, items) | Value::Array(_, items) => items.iter().map(as_string).collect(),
        _ => Vec::new(),
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Double(d) => *d,
        Value::Float(f) => f64::from(*f),
        _ => 0.0,
    }
}

fn as_floats(v: &Value) -> Option<Vec<f32>> {
    match v {
        Value::List(_, items) | Value::Array(_, items) => Some(
            items
                .iter()
                .map(|x| match x {
                    Value::Float(f) => *f,
                    Value::Double(d) => *d as f32,
                    _ => 0.0,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// A list of structs as one parameter (for `UNWIND $rows AS r`).
fn rows(fields: &[(&str, LogicalType)], values: Vec<Vec<Value>>) -> Value {
    let ty = LogicalType::Struct {
        fields: fields
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect(),
    };
    Value::List(
        ty,
        values
            .into_iter()
            .map(|vals| {
                Value::Struct(
                    fields
                        .iter()
                        .map(|(n, _)| n.to_string())
                        .zip(vals)
                        .collect(),
                )
            })
            .collect(),
    )
}

fn string_list() -> LogicalType {
    LogicalType::List {
        child_type: Box::new(LogicalType::String),
    }
}

fn float_list() -> LogicalType {
    LogicalType::List {
        child_type: Box::new(LogicalType::Float),
    }
}

fn embedding_value(e: &Option<Vec<f32>>) -> Value {
    match e {
        Some(v) => Value::List(
            LogicalType::Float,
            v.iter().map(|x| Value::Float(*x)).collect(),
        ),
        None => Value::Null(float_list()),
    }
}

/// Ids among `ids` that exist in `table` (optionally only non-stub entities).
fn existing(conn: &Connection, table: &str, ids: &[&str]) -> Result<HashSet<String>, String> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let list = Value::List(LogicalType::String, ids.iter().map(|i| s(i)).collect());
    let q = format!("UNWIND $ids AS i MATCH (n:{table} {{id: i}}) RETURN n.id");
    Ok(run(conn, &q, vec![("ids", list)])?
        .iter()
        .map(|r| as_string(&r[0]))
        .collect())
}

fn upsert(conn: &Connection, b: &Batch) -> Result<(), String> {
    upsert_entities(conn, &b.entities)?;
    upsert_relations(conn, b)?;
    upsert_simple(
        conn,
        "Chunk",
        &[
            ("id", LogicalType::String),
            ("text", LogicalType::String),
            ("n_tokens", LogicalType::Int64),
            ("document_id", LogicalType::String),
            ("entity_ids", string_list()),
            ("embedding", float_list()),
        ],
        b.chunks
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    vec![
                        s(&c.id),
                        s(&c.text),
                        Value::Int64(c.n_tokens),
                        s(&c.document_id),
                        strings(&c.entity_ids),
                        embedding_value(&c.embedding),
                    ],
                )
            })
            .collect(),
    )?;
    upsert_simple(
        conn,
        "Community",
        &[
            ("id", LogicalType::String),
            ("level", LogicalType::Int64),
            ("parent", LogicalType::String),
            ("title", LogicalType::String),
            ("entity_ids", string_list()),
            ("summary", LogicalType::String),
            ("full_content", LogicalType::String),
            ("rank", LogicalType::Double),
        ],
        b.communities
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    vec![
                        s(&c.id),
                        Value::Int64(c.level),
                        s(&c.parent),
                        s(&c.title),
                        strings(&c.entity_ids),
                        s(&c.summary),
                        s(&c.full_content),
                        Value::Double(c.rank),
                    ],
                )
            })
            .collect(),
    )?;
    upsert_simple(
        conn,
        "Document",
        &[
            ("id", LogicalType::String),
            ("title", LogicalType::String),
            ("text", LogicalType::String),
            ("text_unit_ids", string_list()),
        ],
        b.documents
            .iter()
            .map(|d| {
                (
                    d.id.as_str(),
                    vec![s(&d.id), s(&d.title), s(&d.text), strings(&d.text_unit_ids)],
                )
            })
            .collect(),
    )?;
    Ok(())
}

/// Creates the rows whose id is new and overwrites the others, in two set-wise statements
/// (per-row MERGE is two orders of magnitude slower in Kuzu).
fn upsert_simple(
    conn: &Connection,
    table: &str,
    fields: &[(&str, LogicalType)],
    items: Vec<(&str, Vec<Value>)>,
) -> Result<(), String> {
    if items.is_empty() {
        return Ok(());
    }
    let has_embedding_column = column_exists(conn, table, "embedding")?;
    let fields: Vec<(&str, LogicalType)> = fields
        .iter()
        .filter(|(n, _)| *n != "embedding" || has_embedding_column)
        .cloned()
        .collect();
    let ids: Vec<&str> = dedup_last(&items);
    let found = existing(conn, table, &ids)?;
    let mut new_rows = Vec::new();
    let mut old_rows = Vec::new();
    let mut seen = HashSet::new();
    for (id, vals) in items.into_iter().rev() {
        if !seen.insert(id) {
            continue; // an earlier duplicate in the same batch: the last one wins
        }
        let vals: Vec<Value> = vals.into_iter().take(fields.len()).collect();
        if found.contains(id) {
            old_rows.push(vals);
        } else {
            new_rows.push(vals);
        }
    }
    let assign = |prefix: &str| {
        fields
            .iter()
            .map(|(n, _)| format!("{prefix}{n}: r.{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !new_rows.is_empty() {
        let q = format!("UNWIND $rows AS r CREATE (:{table} {{{}}})", assign(""));
        run(conn, &q, vec![("rows", rows(&fields, new_rows))])?;
    }
    if !old_rows.is_empty() {
        let sets = fields
            .iter()
            .filter(|(n, _)| *n != "id")
            .map(|(n, _)| format!("n.{n} = r.{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let q = format!("UNWIND $rows AS r MATCH (n:{table} {{id: r.id}}) SET {sets}");
        run(conn, &q, vec![("rows", rows(&fields, old_rows))])?;
    }
    Ok(())
}

fn dedup_last<'a>(items: &[(&'a str, Vec<Value>)]) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    items
        .iter()
        .filter(|(id, _)| seen.insert(*id))
        .map(|(id, _)| *id)
        .collect()
}

fn column_exists(conn: &Connection, table: &str, column: &str) -> Result<bool, String> {
    let rows = run(
        conn,
        &format!("CALL TABLE_INFO('{table}') RETURN name"),
        vec![],
    )?;
    Ok(rows.iter().any(|r| as_string(&r[0]) == column))
}

fn upsert_entities(conn: &Connection, entities: &[Entity]) -> Result<(), String> {
    let fields = [
        ("id", LogicalType::String),
        ("title", LogicalType::String),
        ("type", LogicalType::String),
        ("description", LogicalType::String),
        ("text_unit_ids", string_list()),
        ("frequency", LogicalType::Int64),
        ("degree", LogicalType::Int64),
        ("stub", LogicalType::Bool),
        ("embedding", float_list()),
    ];
    upsert_simple(
        conn,
        "Entity",
        &fields,
        entities
            .iter()
            .map(|e| {
                (
                    e.id.as_str(),
                    vec![
                        s(&e.id),
                        s(&e.title),
                        s(&e.kind),
                        s(&e.description),
                        strings(&e.text_unit_ids),
                        Value::Int64(e.frequency),
                        Value::Int64(e.degree),
                        Value::Bool(false),
                        embedding_value(&e.embedding),
                    ],
                )
            })
            .collect(),
    )
}

fn upsert_relations(conn: &Connection, b: &Batch) -> Result<(), String> {
    if b.relations.is_empty() {
        return Ok(());
    }
    // Endpoints that do not exist yet become stubs (filled in when the entity arrives).
    let mut endpoints: Vec<&str> = b
        .relations
        .iter()
        .flat_map(|r| [r.source.as_str(), r.target.as_str()])
        .collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    let found = existing(conn, "Entity", &endpoints)?;
    let stubs: Vec<Value> = endpoints
        .iter()
        .filter(|id| !found.contains(**id))
        .map(|id| s(id))
        .collect();
    if !stubs.is_empty() {
        run(
            conn,
            "UNWIND $ids AS i CREATE (:Entity {id: i, title: '', type: '', description: '', text_unit_ids: [], frequency: 0, degree: 0, stub: true})",
            vec![("ids", Value::List(LogicalType::String, stubs))],
        )?;
    }
    let fields = [
        ("id", LogicalType::String),
        ("source", LogicalType::String),
        ("target", LogicalType::String),
        ("description", LogicalType::String),
        ("weight", LogicalType::Double),
        ("text_unit_ids", string_list()),
    ];
    let mut seen = HashSet::new();
    let unique: Vec<&crate::graph::model::Relation> = b
        .relations
        .iter()
        .rev()
        .filter(|r| seen.insert((r.id.as_str(), r.source.as_str(), r.target.as_str())))
        .collect();
    let values = |r: &crate::graph::model::Relation| {
        vec![
            s(&r.id),
            s(&r.source),
            s(&r.target),
            s(&r.description),
            Value::Double(r.weight),
            strings(&r.text_unit_ids),
        ]
    };
    // A relation is identified by (id, source, target).
    let all = rows(&fields, unique.iter().map(|r| values(r)).collect());
    let present: HashSet<String> = run(
        conn,
        "UNWIND $rows AS r MATCH (a:Entity {id: r.source})-[x:RELATED]->(b:Entity {id: r.target}) WHERE x.id = r.id RETURN x.id",
        vec![("rows", all)],
    )?
    .iter()
    .map(|row| as_string(&row[0]))
    .collect();
    let (old, new): (Vec<_>, Vec<_>) = unique.into_iter().partition(|r| present.contains(&r.id));
    if !new.is_empty() {
        run(
            conn,
            "UNWIND $rows AS r MATCH (a:Entity {id: r.source}), (b:Entity {id: r.target}) \
             CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, text_unit_ids: r.text_unit_ids}]->(b)",
            vec![("rows", rows(&fields, new.iter().map(|r| values(r)).collect()))],
        )?;
    }
    if !old.is_empty() {
        run(
            conn,
            "UNWIND $rows AS r MATCH (a:Entity {id: r.source})-[x:RELATED]->(b:Entity {id: r.target}) WHERE x.id = r.id \
             SET x.description = r.description, x.weight = r.weight, x.text_unit_ids = r.text_unit_ids",
            vec![("rows", rows(&fields, old.iter().map(|r| values(r)).collect()))],
        )?;
    }
    Ok(())
}

fn get_entity(conn: &Connection, id: &str) -> Result<Option<EntityRecord>, String> {
    let has_embedding = column_exists(conn, "Entity", "embedding")?;
    let emb = if has_embedding { ", e.embedding" } else { "" };
    let q = format!(
        "MATCH (e:Entity {{id: $id}}) WHERE e.stub = false RETURN e.id, e.title, e.type, e.description, e.text_unit_ids, e.frequency, e.degree{emb}"
    );
    let found = run(conn, &q, vec![("id", s(id))])?;
    let Some(row) = found.into_iter().next() else {
        return Ok(None);
    };
    let entity = Entity {
        id: as_string(&row[0]),
        title: as_string(&row[1]),
        kind: as_string(&row[2]),
        description: as_string(&row[3]),
        text_unit_ids: as_strings(&row[4]),
        frequency: as_i64(&row[5]).unwrap_or(0),
        degree: as_i64(&row[6]).unwrap_or(0),
        embedding: row.get(7).and_then(as_floats),
    };
    let rel = |q: &str| -> Result<Vec<RelationRecord>, String> {
        Ok(run(conn, q, vec![("id", s(id))])?
            .iter()
            .map(|r| RelationRecord {
                id: as_string(&r[0]),
                source: as_string(&r[1]),
                target: as_string(&r[2]),
                description: as_string(&r[3]),
                weight: as_f64(&r[4]),
                text_unit_ids: as_strings(&r[5]),
            })
            .collect())
    };
    let mut relations = rel(
        "MATCH (a:Entity {id: $id})-[x:RELATED]->(b:Entity) RETURN x.id, a.id, b.id, x.description, x.weight, x.text_unit_ids",
    )?;
    relations.extend(rel(
        "MATCH (a:Entity)-[x:RELATED]->(b:Entity {id: $id}) WHERE a.id <> b.id RETURN x.id, a.id, b.id, x.description, x.weight, x.text_unit_ids",
    )?);
    relations.sort_by(|a, b| a.id.cmp(&b.id).then(a.source.cmp(&b.source)));
    Ok(Some(EntityRecord { entity, relations }))
}

fn get_chunk(conn: &Connection, id: &str) -> Result<Option<Chunk>, String> {
    let emb = if column_exists(conn, "Chunk", "embedding")? {
        ", c.embedding"
    } else {
        ""
    };
    let q = format!("MATCH (c:Chunk {{id: $id}}) RETURN c.id, c.text, c.n_tokens, c.document_id, c.entity_ids{emb}");
    Ok(run(conn, &q, vec![("id", s(id))])?
        .into_iter()
        .next()
        .map(|row| Chunk {
            id: as_string(&row[0]),
            text: as_string(&row[1]),
            n_tokens: as_i64(&row[2]).unwrap_or(0),
            document_id: as_string(&row[3]),
            entity_ids: as_strings(&row[4]),
            embedding: row.get(5).and_then(as_floats),
        }))
}
