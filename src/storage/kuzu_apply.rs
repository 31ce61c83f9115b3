//! Applying logged writes to a Kuzu database: one transaction per round (create mode with
//! embeddings commits the round's vector rows after it, see `apply_round`), bulk statements only.
//!
//! A round is every write that queued up while the previous round ran. Consecutive upserts are
//! merged (last write of an id wins, as if applied one by one) and applied set-wise:
//! - ids are looked up by primary key (one `UNWIND ... MATCH` per table, a hash-index probe);
//! - new rows are inserted with `COPY <table> FROM (UNWIND $rows ...)` — Kuzu's bulk path, the
//!   only one that stays fast on relation tables (see `bench/RESULTS.md`);
//! - rows that exist are overwritten with `SET` — unless their content hash is unchanged, which
//!   makes re-sending a batch (a client retry, a log replay) nearly free.
//!
//! Relations have no primary key in Kuzu, and matching one by pattern costs a scan (seconds per
//! thousand rows). So each stored relation has a `RelKey` row, keyed by `id \x1f source \x1f
//! target`, carrying its content hash: the existence check is a primary-key probe. Only a relation
//! whose content really changed is updated by pattern, one prepared statement per row.

use super::Error;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use kuzu::{Connection, LogicalType, Value};

use super::kuzu_index::{self, Indexed};
use super::kuzu_values::*;
use super::{Counts, EntityProperty, InsertMode, PropertyValue, WriteOp};
use crate::graph::model::{Batch, Chunk, Community, Document, Entity, Relation, MAX_ID_BYTES};
use crate::graph::partition::fnv1a64;

/// The properties graph algorithms write to entities (`WriteOp::SetProperty`); ingest leaves
/// them alone. Null until an algorithm writes them.
const ALGORITHM_COLUMNS: &str = "pagerank DOUBLE, component STRING, community STRING";

/// Schema statements for a database whose embeddings have `dim` dimensions (0 = none).
pub fn schema(dim: usize) -> Vec<String> {
    let emb = if dim > 0 {
        format!(", embedding FLOAT[{dim}]")
    } else {
        String::new()
    };
    let mut statements = vec![
        // Column order matters: COPY FROM a subquery fills columns by position.
        format!(
            "CREATE NODE TABLE IF NOT EXISTS Entity(id STRING, title STRING, type STRING, description STRING, \
             text_unit_ids STRING[], frequency INT64, degree INT64, stub BOOLEAN, hash INT64{emb}, {ALGORITHM_COLUMNS}, \
             routing STRING, PRIMARY KEY(id))"
        ),
        // `source` and `target` repeat the endpoints' ids: a traversal then reads a relation
        // without looking its far end up (Kuzu joins over the whole node table to do that).
        "CREATE REL TABLE IF NOT EXISTS RELATED(FROM Entity TO Entity, id STRING, description STRING, \
         weight DOUBLE, text_unit_ids STRING[], source STRING, target STRING, source_routing STRING, \
         target_routing STRING)"
            .to_string(),
        "CREATE NODE TABLE IF NOT EXISTS RelKey(key STRING, hash INT64, PRIMARY KEY(key))".to_string(),
        format!(
            "CREATE NODE TABLE IF NOT EXISTS Chunk(id STRING, text STRING, n_tokens INT64, document_id STRING, \
             entity_ids STRING[]{emb}, PRIMARY KEY(id))"
        ),
        "CREATE NODE TABLE IF NOT EXISTS Community(id STRING, level INT64, parent STRING, title STRING, \
         entity_ids STRING[], summary STRING, full_content STRING, rank DOUBLE, stale BOOLEAN, PRIMARY KEY(id))"
            .to_string(),
        "CREATE NODE TABLE IF NOT EXISTS Document(id STRING, title STRING, text STRING, text_unit_ids STRING[], \
         PRIMARY KEY(id))"
            .to_string(),
        "CREATE NODE TABLE IF NOT EXISTS Meta(key STRING, value INT64, PRIMARY KEY(key))".to_string(),
        // A graph algorithm's results waiting for the cluster's decision to publish them: one
        // row per (write, property, entity), the value in the column its type takes. A write
        // logged twice (a retried request) stages the same rows twice, which publish the same.
        "CREATE NODE TABLE IF NOT EXISTS Staged(key SERIAL, task STRING, id STRING, property STRING, \
         number DOUBLE, whole INT64, text STRING, PRIMARY KEY(key))"
            .to_string(),
    ];
    statements.extend(kuzu_index::vector_tables(dim));
    statements
}

/// Brings a database written by an older version to the current schema: the graph algorithms'
/// entity columns, the routing keys of entities and of relations' ends, the `source`/`target`
/// columns of relations, the `stale` flag of communities (a report the document cascade changed
/// the community of).
pub fn migrate(conn: &Connection) -> Result<(), Error> {
    // Columns added since the first schema, each table's in the order of its CREATE (bulk loads
    // from files fill columns by position): (table, column, its type, what it is).
    let routing = "routing key";
    let added: [(&str, &str, &str, &str); 9] = [
        ("Entity", "pagerank", "DOUBLE", "graph algorithms'"),
        ("Entity", "component", "STRING", "graph algorithms'"),
        ("Entity", "community", "STRING", "graph algorithms'"),
        ("Entity", "routing", "STRING", routing),
        ("Community", "stale", "BOOLEAN DEFAULT false", "stale flag"),
        ("RELATED", "source", "STRING", "endpoint id"),
        ("RELATED", "target", "STRING", "endpoint id"),
        ("RELATED", "source_routing", "STRING", routing),
        ("RELATED", "target_routing", "STRING", routing),
    ];
    let mut columns: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut ends_added = false;
    for (table, column, ty, what) in &added {
        if !columns.contains_key(*table) {
            let q = format!("CALL TABLE_INFO('{table}') RETURN name");
            let names = run(conn, &q, vec![])?
                .iter()
                .map(|r| as_string(&r[0]))
                .collect();
            columns.insert(*table, names);
        }
        if columns[*table].contains(*column) {
            continue;
        }
        tracing::info!("adding the {what} column {table}.{column} to an older database");
        run(
            conn,
            &format!("ALTER TABLE {table} ADD {column} {ty}"),
            vec![],
        )?;
        ends_added |= *column == "source";
    }
    if ends_added {
        run(
            conn,
            "MATCH (a:Entity)-[r:RELATED]->(b:Entity) SET r.source = a.id, r.target = b.id",
            vec![],
        )?;
    }
    Ok(())
}

pub fn counts(conn: &Connection) -> Result<Counts, Error> {
    let count = |q: &str| -> Result<u64, Error> {
        Ok(run(conn, q, vec![])?
            .first()
            .and_then(|row| as_i64(&row[0]))
            .unwrap_or(0) as u64)
    };
    Ok(Counts {
        entities: count("MATCH (e:Entity) WHERE e.stub = false RETURN count(*)")?,
        stubs: count("MATCH (e:Entity) WHERE e.stub = true RETURN count(*)")?,
        relations: count("MATCH ()-[r:RELATED]->() RETURN count(*)")?,
        chunks: count("MATCH (c:Chunk) RETURN count(*)")?,
        communities: count("MATCH (c:Community) RETURN count(*)")?,
        documents: count("MATCH (d:Document) RETURN count(*)")?,
    })
}

/// Reads the highest applied sequence number.
pub fn read_applied(conn: &Connection) -> Result<u64, Error> {
    let rows = run(
        conn,
        "MATCH (m:Meta) WHERE m.key = 'applied_seq' RETURN m.value",
        vec![],
    )?;
    Ok(rows.first().and_then(|r| as_i64(&r[0])).unwrap_or(0) as u64)
}

/// What the applier carries from round to round to keep clear of two Kuzu 0.11 faults (see
/// `apply_round`). A new state (at open) assumes the worst of both.
pub struct ApplyState {
    /// Relation rows may have been inserted since the last checkpoint.
    inserted_since_checkpoint: bool,
    /// The full-text indexes' "indexed up to" marks may be off (see `anchor_text_indexes`).
    text_marks_unsure: bool,
    /// Rows were deleted, or indexed text set, since the full-text indexes were last built: their
    /// searches may miss rows (see `kuzu_index::rebuild_text_indexes`).
    text_indexes_stale: bool,
    /// When the full-text indexes may be rebuilt again: a rebuild holds reads back, so a copy
    /// spends at most a tenth of its time on them (at least a second apart).
    text_rebuild_not_before: Option<std::time::Instant>,
}

impl Default for ApplyState {
    fn default() -> Self {
        ApplyState {
            inserted_since_checkpoint: true,
            text_marks_unsure: true,
            text_indexes_stale: false,
            text_rebuild_not_before: None,
        }
    }
}

/// Least time between two rebuilds of a copy's full-text indexes.
const TEXT_REBUILD_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl ApplyState {
    /// The database was just checkpointed (a snapshot, the WAL's size).
    pub fn checkpointed(&mut self) {
        self.inserted_since_checkpoint = false;
    }

    /// How long until the full-text indexes should be rebuilt (`None`: they need not be).
    pub fn text_rebuild_due_in(&self) -> Option<std::time::Duration> {
        if !self.text_indexes_stale {
            return None;
        }
        Some(
            self.text_rebuild_not_before
                .map(|at| at.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or_default(),
        )
    }

    /// Rebuilds the full-text indexes (reads wait meanwhile: a search between the drop and the
    /// create would fail); returns how long that took.
    pub fn rebuild_text_indexes(
        &mut self,
        conn: &Connection,
        commit_gate: &std::sync::RwLock<()>,
    ) -> Result<std::time::Duration, Error> {
        let _no_reads = commit_gate.write().expect("commit gate");
        let started = std::time::Instant::now();
        let rebuilt = kuzu_index::rebuild_text_indexes(conn);
        let took = started.elapsed();
        self.text_rebuild_not_before =
            Some(std::time::Instant::now() + (took * 10).max(TEXT_REBUILD_MIN_INTERVAL));
        rebuilt?;
        self.text_indexes_stale = false;
        self.inserted_since_checkpoint = true;
        self.text_marks_unsure = true;
        Ok(took)
    }
}

/// The database a round is applied to, and how.
#[derive(Clone, Copy)]
pub struct Target<'a, 'db> {
    pub conn: &'a Connection<'db>,
    /// The embedding dimension (0: no embeddings).
    pub dim: usize,
    /// Where `COPY` stages its files.
    pub stage: &'a Path,
    pub mode: InsertMode,
    /// Held for writing while a checkpoint or a commit must not overlap reads.
    pub commit_gate: &'a std::sync::RwLock<()>,
}

/// Applies `ops` (in order) and records `max_seq`, in one transaction — except for the derived
/// vector rows of create mode, which follow in transactions of their own. In `ops`, no delete
/// comes after an upsert (the applier ends a round before a delete that follows an upsert).
///
/// Kuzu 0.11 adds rows inserted one by one (`CREATE`) into a vector-indexed table to the HNSW
/// graph only at commit, and that inserts the graph's edges into its internal relation tables.
/// The commit walks the transaction's changed tables in a hash map while those inserts add entries
/// to the same map; when an entry makes the map grow (rehash), the walk goes on in the new order
/// and skips tables it had not reached yet: their rows are dropped without an error
/// (`vector_commit_probe`). So a transaction that creates vector rows changes no other node
/// table: the round's items and deletes commit first; then the missing `EntityVec` rows, the
/// missing `ChunkVec` rows, and `max_seq`, each in its own transaction. The vector rows to write
/// are found from what is stored (items of the round with an embedding and no vector row), so a
/// round cut short after its first commit, and applied again from the log, completes them.
/// `Copy` adds its rows to the HNSW graph while the `COPY` runs, not at commit: one transaction.
///
/// Two more Kuzu 0.11 faults shape a round:
/// - When every relation row inserted into a relation node group since the last checkpoint has
///   been deleted again (and nothing else in the group changed), the next checkpoint leaves the
///   group's in-memory rows behind, marked invalid, and the checkpoint after it crashes the
///   process (`csr_checkpoint_probe`). Relations, and the postings of the full-text indexes
///   (entities, chunks), are such rows. So a round that deletes starts with a checkpoint when
///   rows were inserted since the last one, and holds no upsert before its deletes: a round
///   never deletes a relation row that is not on disk yet.
/// - A `SET` of a full-text indexed column (an entity's title or description, a chunk's text)
///   moves the index's "indexed up to" mark back to that row, and the next `COPY` into the table
///   indexes the rows after it again: it fails with a duplicated primary key in the index's
///   document table (`fts_copy_after_set_probe`). A rolled-back round can leave the mark off as
///   well. So before a copy-mode round that upserts, the marks are reset
///   (`anchor_text_indexes`) when a round since the last reset set indexed text or failed, and
///   when the database was just opened.
pub fn apply_round(
    db: Target<'_, '_>,
    ops: &[&WriteOp],
    max_seq: u64,
    state: &mut ApplyState,
) -> Result<(), Error> {
    let Target {
        conn,
        mode,
        commit_gate,
        ..
    } = db;
    let is_upsert = |op: &&WriteOp| op.is_insert();
    let first_upsert = ops.iter().position(is_upsert);
    if let Some(first) = first_upsert {
        if !ops[first..].iter().all(is_upsert) {
            return Err(Error::Invalid(
                "a round must not delete after it upserts (the applier ends rounds there)".into(),
            ));
        }
    }
    let deletes = !ops.is_empty() && first_upsert != Some(0);
    if deletes && state.inserted_since_checkpoint {
        let _no_reads = commit_gate.write().expect("commit gate");
        checkpoint(conn)?;
        state.inserted_since_checkpoint = false;
    }
    if first_upsert.is_some() {
        // Set before applying: a round that fails may have committed some of its rows.
        state.inserted_since_checkpoint = true;
        if mode != InsertMode::Create && state.text_marks_unsure {
            anchor_text_indexes(conn, commit_gate)?;
            state.text_marks_unsure = false;
        }
    }
    let mut text_set = false;
    let applied = apply_ops(db, ops, max_seq, &mut text_set);
    if text_set || applied.is_err() {
        state.text_marks_unsure = true;
    }
    if text_set || deletes {
        state.text_indexes_stale = true;
    }
    applied
}

/// `apply_round` without its checks; sets `text_set` when it `SET` a full-text indexed column.
fn apply_ops(
    db: Target<'_, '_>,
    ops: &[&WriteOp],
    max_seq: u64,
    text_set: &mut bool,
) -> Result<(), Error> {
    let Target {
        conn,
        dim,
        stage,
        mode,
        commit_gate,
    } = db;
    let late_vectors = mode == InsertMode::Create && dim > 0;
    let mut late = LateVectors::default();
    let missing = in_transaction(conn, commit_gate, || {
        let mut i = 0;
        while i < ops.len() {
            match ops[i] {
                WriteOp::Upsert(_) | WriteOp::Point(_) => {
                    let mut merged = Merged::default();
                    while let Some(op) = ops.get(i) {
                        match op {
                            WriteOp::Upsert(b) => merged.add(b),
                            WriteOp::Point(p) => merged.point(p),
                            _ => break,
                        }
                        i += 1;
                    }
                    *text_set |=
                        merged.apply(conn, dim, stage, mode, late_vectors.then_some(&mut late))?;
                }
                WriteOp::DeleteEntity(id) => {
                    delete_entity(conn, id, false)?;
                    if dim > 0 {
                        kuzu_index::delete_vectors(conn, Indexed::Entity, &[id])?;
                    }
                    i += 1;
                }
                WriteOp::DeleteRelationsOf(id) => {
                    delete_entity(conn, id, true)?;
                    i += 1;
                }
                WriteOp::Prune(prune) => {
                    super::kuzu_cascade::apply(conn, prune, dim)?;
                    i += 1;
                }
                WriteOp::SetProperty { property, values } => {
                    set_property(conn, *property, values)?;
                    i += 1;
                }
                WriteOp::Stage {
                    write,
                    property,
                    values,
                } => {
                    stage_property(conn, write, *property, values)?;
                    i += 1;
                }
                WriteOp::Publish { write } => {
                    publish_staged(conn, write)?;
                    i += 1;
                }
                WriteOp::Discard { write } => {
                    discard_staged(conn, write)?;
                    i += 1;
                }
            }
        }
        let missing = late.missing(conn)?;
        if missing.iter().all(|(_, ids)| ids.is_empty()) {
            record_applied(conn, max_seq)?;
            return Ok(None);
        }
        Ok(Some(missing))
    })?;
    let Some(missing) = missing else {
        return Ok(());
    };
    for (of, ids) in &missing {
        if !ids.is_empty() {
            in_transaction(conn, commit_gate, || {
                kuzu_index::sync_vectors(conn, *of, &as_strs(ids), false, InsertMode::Create)
            })?;
        }
    }
    in_transaction(conn, commit_gate, || record_applied(conn, max_seq))
}

/// Runs `CHECKPOINT`, trying again for about a second while Kuzu refuses it (it waits for open
/// read transactions, and gives up after a while).
pub fn checkpoint(conn: &Connection) -> Result<(), Error> {
    let mut failure = String::new();
    for _ in 0..10 {
        match conn.query("CHECKPOINT") {
            Ok(_) => return Ok(()),
            Err(e) => {
                failure = e.to_string();
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    Err(Error::Engine(format!(
        "cannot checkpoint the database: {failure}"
    )))
}

/// An id no item can have: longer than any id ingest accepts.
fn anchor_id() -> String {
    format!("{}text-index-anchor", "\u{1f}".repeat(MAX_ID_BYTES))
}

/// Resets the "indexed up to" mark of the full-text indexes to the end of their tables.
///
/// Kuzu 0.11's full-text index records, on each insert into it, the inserted row's offset + 1 as
/// the rows it has indexed; a `COPY` then indexes the rows from that mark to the end of the
/// table. An update (`SET` of an indexed column) re-inserts its row, and so moves the mark back
/// to that row, and the next `COPY` fails on the rows after it, which are indexed already. A row
/// inserted (`CREATE`, always the table's last) and deleted again sets the mark to the end of the
/// table and leaves nothing behind but a deleted row. It has no text, so the index holds no
/// posting for it. In a transaction of its own: a `COPY` into a table in the same transaction
/// as a `CREATE` into it crashes Kuzu 0.11.
fn anchor_text_indexes(
    conn: &Connection,
    commit_gate: &std::sync::RwLock<()>,
) -> Result<(), Error> {
    let id = anchor_id();
    in_transaction(conn, commit_gate, || {
        for table in kuzu_index::text_indexed_tables() {
            run(
                conn,
                &format!("CREATE (n:{table} {{id: $id}})"),
                vec![("id", s(&id))],
            )?;
            run(
                conn,
                &format!("MATCH (n:{table} {{id: $id}}) DELETE n"),
                vec![("id", s(&id))],
            )?;
        }
        Ok(())
    })
}

/// Runs `f` in a transaction: commits if it succeeds, else rolls back and returns its error.
fn in_transaction<T>(
    conn: &Connection,
    commit_gate: &std::sync::RwLock<()>,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    run(conn, "BEGIN TRANSACTION", vec![])?;
    match f() {
        Ok(value) => {
            // A commit that bulk-loaded checkpoints, and a checkpoint waits for every open read:
            // hold new reads back meanwhile so a steady stream of them cannot starve it.
            let _no_reads = commit_gate.write().expect("commit gate");
            run(conn, "COMMIT", vec![])?;
            Ok(value)
        }
        Err(e) => {
            let _ = conn.query("ROLLBACK");
            Err(e)
        }
    }
}

fn record_applied(conn: &Connection, max_seq: u64) -> Result<(), Error> {
    run(
        conn,
        "MERGE (m:Meta {key: 'applied_seq'}) SET m.value = $v",
        vec![("v", Value::Int64(max_seq as i64))],
    )
    .map(|_| ())
}

/// Entities and chunks a create-mode round upserted, whose derived vector rows `apply_round`
/// writes after the round's main transaction.
#[derive(Default)]
struct LateVectors<'a> {
    entities: BTreeSet<&'a str>,
    chunks: BTreeSet<&'a str>,
}

impl LateVectors<'_> {
    /// Per table, the ids among these that have an embedding but no vector row.
    fn missing(&self, conn: &Connection) -> Result<[(Indexed, Vec<String>); 2], Error> {
        let (entities, chunks): (Vec<&str>, Vec<&str>) = (
            self.entities.iter().copied().collect(),
            self.chunks.iter().copied().collect(),
        );
        Ok([
            (
                Indexed::Entity,
                kuzu_index::missing_vectors(conn, Indexed::Entity, &entities)?,
            ),
            (
                Indexed::Chunk,
                kuzu_index::missing_vectors(conn, Indexed::Chunk, &chunks)?,
            ),
        ])
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn content_hash<T: serde::Serialize>(item: &T) -> u64 {
    fnv1a64(&postcard::to_stdvec(item).unwrap_or_default())
}

fn rel_key(r: &Relation) -> String {
    key_of(&r.id, &r.source, &r.target)
}

/// Deletes the `RelKey` rows of `keys` (what keeps relation ids unique per endpoints).
pub(super) fn delete_rel_keys(conn: &Connection, keys: &[String]) -> Result<(), Error> {
    run_for_ids(
        conn,
        "UNWIND $ids AS k MATCH (n:RelKey {key: k}) DELETE n",
        keys,
    )
}

/// A relation's `RelKey` key: `id \x1f source \x1f target`.
pub(super) fn key_of(id: &str, source: &str, target: &str) -> String {
    format!("{id}\u{1f}{source}\u{1f}{target}")
}

/// Consecutive upserts folded together; the last write of an id wins.
#[derive(Default)]
struct Merged<'a> {
    entities: HashMap<&'a str, &'a Entity>,
    relations: HashMap<(&'a str, &'a str, &'a str), &'a Relation>,
    chunks: HashMap<&'a str, &'a Chunk>,
    communities: HashMap<&'a str, &'a Community>,
    documents: HashMap<&'a str, &'a Document>,
    /// Pointers to entities that live in other shards, by id: their routing keys.
    pointers: HashMap<&'a str, &'a str>,
}

impl<'a> Merged<'a> {
    fn add(&mut self, b: &'a Batch) {
        for e in &b.entities {
            self.pointers.remove(e.id.as_str());
            self.entities.insert(&e.id, e);
        }
        for r in &b.relations {
            self.relations.insert((&r.id, &r.source, &r.target), r);
        }
        for c in &b.chunks {
            self.chunks.insert(&c.id, c);
        }
        for c in &b.communities {
            self.communities.insert(&c.id, c);
        }
        for d in &b.documents {
            self.documents.insert(&d.id, d);
        }
    }

    fn point(&mut self, pointers: &'a [(String, String)]) {
        for (id, routing) in pointers {
            self.entities.remove(id.as_str());
            self.pointers.insert(id, routing);
        }
    }

    /// The routing key each stub to create carries: its pointer's, else the one a relation
    /// names for that end.
    fn stub_routing(&self) -> HashMap<&'a str, &'a str> {
        let mut keys = HashMap::new();
        for r in self.relations.values() {
            if let Some(k) = &r.source_routing {
                keys.insert(r.source.as_str(), k.as_str());
            }
            if let Some(k) = &r.target_routing {
                keys.insert(r.target.as_str(), k.as_str());
            }
        }
        keys.extend(self.pointers.iter().map(|(id, k)| (*id, *k)));
        keys
    }

    /// Applies the upserts; returns whether it overwrote (`SET`) full-text indexed columns (of
    /// entities or chunks). With `late`, the derived vector rows of the items are not written
    /// here (see `apply_round`): the rows of overwritten items are deleted, and every item is
    /// added to `late`.
    fn apply(
        &self,
        conn: &Connection,
        dim: usize,
        stage: &Path,
        mode: InsertMode,
        mut late: Option<&mut LateVectors<'a>>,
    ) -> Result<bool, Error> {
        let t = std::time::Instant::now();
        let entities_set = self.entities_and_stubs(conn, stage, dim, mode, late.as_deref_mut())?;
        let t_entities = t.elapsed();
        self.relations(conn, stage, mode)?;
        tracing::trace!(
            entities = self.entities.len(),
            relations = self.relations.len(),
            entities_ms = t_entities.as_millis() as u64,
            relations_ms = (t.elapsed() - t_entities).as_millis() as u64,
            "upserted"
        );
        let write = |table, fields| TableWrite {
            conn,
            table,
            fields,
            dim,
            mode,
        };
        let chunks = self.chunks.values().map(|c| chunk_row(c, dim)).collect();
        let (new_chunks, old_chunks) = write("Chunk", chunk_fields(dim)).upsert(chunks)?;
        if dim > 0 {
            match late {
                Some(late) => {
                    if !old_chunks.is_empty() {
                        kuzu_index::delete_vectors(conn, Indexed::Chunk, &as_strs(&old_chunks))?;
                    }
                    late.chunks.extend(self.chunks.keys().copied());
                }
                None => {
                    let new = as_strs(&new_chunks);
                    kuzu_index::sync_vectors(conn, Indexed::Chunk, &new, false, mode)?;
                    let old = as_strs(&old_chunks);
                    kuzu_index::sync_vectors(conn, Indexed::Chunk, &old, true, mode)?;
                }
            }
        }
        let communities = self.communities.values().map(|c| community_row(c));
        write("Community", community_fields()).upsert(communities.collect())?;
        let documents = self.documents.values().map(|d| document_row(d));
        write("Document", document_fields()).upsert(documents.collect())?;
        Ok(entities_set || !old_chunks.is_empty())
    }

    /// Inserts new entities and the stubs that relation endpoints need, in one COPY; overwrites
    /// entities whose content changed (or that were stubs), and returns whether there were any.
    /// `late`: as in `apply`.
    fn entities_and_stubs(
        &self,
        conn: &Connection,
        stage: &Path,
        dim: usize,
        mode: InsertMode,
        late: Option<&mut LateVectors<'a>>,
    ) -> Result<bool, Error> {
        let mut ids: Vec<&str> = self.entities.keys().copied().collect();
        ids.extend(self.relations.keys().flat_map(|(_, s, t)| [*s, *t]));
        ids.extend(self.pointers.keys().copied());
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(false);
        }
        let found: HashMap<String, (bool, i64, Option<String>)> = run(
            conn,
            "UNWIND $ids AS i MATCH (n:Entity {id: i}) RETURN n.id, n.stub, n.hash, n.routing",
            vec![("ids", string_list_of(&ids))],
        )?
        .iter()
        .map(|r| {
            let routing = as_optional_string(&r[3]);
            (
                as_string(&r[0]),
                (as_bool(&r[1]), as_i64(&r[2]).unwrap_or(0), routing),
            )
        })
        .collect();
        let stub_routing = self.stub_routing();
        let fields = shard_entity_fields(dim);
        let (mut new_rows, mut stubs) = (Vec::new(), Vec::new());
        let mut changed = Vec::new();
        let mut repointed = Vec::new();
        let (mut new_ids, mut changed_ids) = (Vec::new(), Vec::new());
        for id in &ids {
            match (self.entities.get(id), found.get(*id)) {
                (Some(e), None) => {
                    new_rows.push(shard_entity_row(e, dim));
                    new_ids.push(*id);
                }
                (Some(e), Some((stub, hash, _))) => {
                    if *stub || *hash != content_hash(e) as i64 {
                        changed.push(shard_entity_row(e, dim));
                        changed_ids.push(*id);
                    }
                }
                (None, None) => stubs.push((*id, stub_routing.get(id).copied())),
                (None, Some((stub, _, old))) => {
                    // An endpoint that is already here; a pointer may name a new key.
                    let Some(key) = self.pointers.get(id) else {
                        continue;
                    };
                    if !*stub || old.as_deref() != Some(*key) {
                        repointed.push(vec![s(id), s(key)]);
                    }
                }
            }
        }
        let write = TableWrite {
            conn,
            table: "Entity",
            fields,
            dim,
            mode,
        };
        write.insert(new_rows)?;
        insert_stubs(&write, stage, &stubs)?;
        let overwritten = !changed.is_empty();
        write.set(changed)?;
        if !repointed.is_empty() {
            // An entity stored here that now lives in another shard keeps only its pointer.
            let fields = [
                ("id", LogicalType::String),
                ("routing", LogicalType::String),
            ];
            run(
                conn,
                "UNWIND $rows AS r MATCH (n:Entity {id: r.id}) SET n.stub = true, n.hash = 0, n.routing = r.routing",
                vec![("rows", rows(&fields, repointed))],
            )?;
        }
        if dim > 0 {
            match late {
                Some(late) => {
                    if !changed_ids.is_empty() {
                        kuzu_index::delete_vectors(conn, Indexed::Entity, &changed_ids)?;
                    }
                    late.entities.extend(self.entities.keys().copied());
                }
                None => {
                    kuzu_index::sync_vectors(conn, Indexed::Entity, &new_ids, false, mode)?;
                    kuzu_index::sync_vectors(conn, Indexed::Entity, &changed_ids, true, mode)?;
                }
            }
        }
        Ok(overwritten)
    }

    fn relations(&self, conn: &Connection, stage: &Path, mode: InsertMode) -> Result<(), Error> {
        if self.relations.is_empty() {
            return Ok(());
        }
        let keyed: Vec<(String, i64, &Relation)> = self
            .relations
            .values()
            .map(|r| (rel_key(r), content_hash(r) as i64, *r))
            .collect();
        let keys: Vec<&str> = keyed.iter().map(|(k, _, _)| k.as_str()).collect();
        let t = std::time::Instant::now();
        let found: HashMap<String, i64> = run(
            conn,
            "UNWIND $keys AS k MATCH (n:RelKey {key: k}) RETURN n.key, n.hash",
            vec![("keys", string_list_of(&keys))],
        )?
        .iter()
        .map(|r| (as_string(&r[0]), as_i64(&r[1]).unwrap_or(0)))
        .collect();
        let mut new = Vec::new();
        let mut changed = Vec::new();
        for (key, hash, r) in &keyed {
            match found.get(key) {
                None => new.push((key, *hash, *r)),
                Some(h) if h != hash => changed.push((key, *hash, *r)),
                Some(_) => {}
            }
        }
        let t_lookup = t.elapsed();
        let t_copy = std::time::Instant::now();
        if !new.is_empty() {
            insert_relations(conn, stage, mode, &new)?;
        }
        tracing::trace!(
            lookup_ms = t_lookup.as_millis() as u64,
            copy_ms = t_copy.elapsed().as_millis() as u64,
            new = new.len(),
            "relations"
        );
        if !changed.is_empty() {
            let mut stmt = conn
                .prepare(
                    "MATCH (a:Entity {id: $source})-[x:RELATED]->(b:Entity {id: $target}) WHERE x.id = $id \
                     SET x.description = $description, x.weight = $weight, x.text_unit_ids = $text_unit_ids, \
                     x.source_routing = $source_routing, x.target_routing = $target_routing",
                )
                .map_err(err)?;
            for (_, _, r) in &changed {
                let params = relation_fields().map(|(n, _)| n).into_iter();
                conn.execute(&mut stmt, params.zip(relation_row(r)).collect())
                    .map_err(err)?;
            }
            run(
                conn,
                "UNWIND $rows AS r MATCH (n:RelKey {key: r.key}) SET n.hash = r.hash",
                vec![(
                    "rows",
                    rows(
                        &key_fields(),
                        changed.iter().map(|(k, h, _)| key_row(k, *h)).collect(),
                    ),
                )],
            )?;
        }
        Ok(())
    }
}

/// Sets `property` of the entities (not stubs) among `values` this copy holds.
fn set_property(
    conn: &Connection,
    property: EntityProperty,
    values: &[(String, PropertyValue)],
) -> Result<(), Error> {
    if values.is_empty() {
        return Ok(());
    }
    let (column, ty) = property_column(property);
    let fields = [("id", LogicalType::String), ("value", ty)];
    let list = values
        .iter()
        .map(|(id, v)| {
            let v = match v {
                PropertyValue::Int(i) => Value::Int64(*i),
                PropertyValue::Float(f) => Value::Double(*f),
                PropertyValue::Text(t) => s(t),
            };
            vec![s(id), v]
        })
        .collect();
    run(
        conn,
        &format!(
            "UNWIND $rows AS r MATCH (e:Entity {{id: r.id}}) WHERE e.stub = false SET e.{column} = r.value"
        ),
        vec![("rows", rows(&fields, list))],
    )?;
    Ok(())
}

/// Every property graph algorithms write.
const PROPERTIES: [EntityProperty; 4] = [
    EntityProperty::Degree,
    EntityProperty::PageRank,
    EntityProperty::Component,
    EntityProperty::Community,
];

/// The entity column a property is written to, and its type.
fn property_column(property: EntityProperty) -> (&'static str, LogicalType) {
    match property {
        EntityProperty::Degree => ("degree", LogicalType::Int64),
        EntityProperty::PageRank => ("pagerank", LogicalType::Double),
        EntityProperty::Component => ("component", LogicalType::String),
        EntityProperty::Community => ("community", LogicalType::String),
    }
}

/// Keeps `values` aside under `write`.
fn stage_property(
    conn: &Connection,
    write: &str,
    property: EntityProperty,
    values: &[(String, PropertyValue)],
) -> Result<(), Error> {
    if values.is_empty() {
        return Ok(());
    }
    let (column, _) = property_column(property);
    let fields = [
        ("id", LogicalType::String),
        ("number", LogicalType::Double),
        ("whole", LogicalType::Int64),
        ("text", LogicalType::String),
    ];
    let list = values
        .iter()
        .map(|(id, v)| {
            let (number, whole, text) = match v {
                PropertyValue::Int(i) => (0.0, *i, ""),
                PropertyValue::Float(f) => (*f, 0, ""),
                PropertyValue::Text(t) => (0.0, 0, t.as_str()),
            };
            vec![s(id), Value::Double(number), Value::Int64(whole), s(text)]
        })
        .collect();
    run(
        conn,
        "UNWIND $rows AS r CREATE (:Staged {task: $write, id: r.id, property: $property, \
         number: r.number, whole: r.whole, text: r.text})",
        vec![
            ("rows", rows(&fields, list)),
            ("write", s(write)),
            ("property", s(column)),
        ],
    )?;
    Ok(())
}

/// Sets every property `write` staged on the entities this copy owns (as `SetProperty` does:
/// one lookup by id per row), then forgets the rows.
fn publish_staged(conn: &Connection, write: &str) -> Result<(), Error> {
    let q =
        "MATCH (x:Staged) WHERE x.task = $write RETURN x.property, x.id, x.number, x.whole, x.text";
    // Values per property, in the order of PROPERTIES.
    let mut staged: [Vec<(String, PropertyValue)>; PROPERTIES.len()] = Default::default();
    for row in run(conn, q, vec![("write", s(write))])? {
        let name = as_string(&row[0]);
        let i = (PROPERTIES.iter())
            .position(|p| property_column(*p).0 == name)
            .ok_or_else(|| {
                Error::Invalid(format!("staged values of an unknown property {name:?}"))
            })?;
        let value = match property_column(PROPERTIES[i]).1 {
            LogicalType::Int64 => PropertyValue::Int(as_i64(&row[3]).unwrap_or(0)),
            LogicalType::Double => PropertyValue::Float(as_f64(&row[2])),
            _ => PropertyValue::Text(as_string(&row[4])),
        };
        staged[i].push((as_string(&row[1]), value));
    }
    for (property, values) in PROPERTIES.into_iter().zip(staged) {
        set_property(conn, property, &values)?;
    }
    discard_staged(conn, write)
}

fn discard_staged(conn: &Connection, write: &str) -> Result<(), Error> {
    run(
        conn,
        "MATCH (x:Staged) WHERE x.task = $write DELETE x",
        vec![("write", s(write))],
    )?;
    Ok(())
}

/// The writes with results staged in this copy (at most `limit`).
pub fn staged_writes(conn: &Connection, limit: usize) -> Result<Vec<String>, Error> {
    let q = format!("MATCH (x:Staged) RETURN DISTINCT x.task LIMIT {limit}");
    Ok(run(conn, &q, vec![])?
        .iter()
        .map(|r| as_string(&r[0]))
        .collect())
}

/// New relations and their keys. `Create`: one `UNWIND … CREATE` (each endpoint found by its
/// primary key; the second through its own `UNWIND`, else Kuzu joins it by scanning the node
/// table). `Copy`: through staged parquet files when the staging path can be quoted, else through
/// parameter lists (same result, slower).
fn insert_relations(
    conn: &Connection,
    stage: &Path,
    mode: InsertMode,
    new: &[(&String, i64, &Relation)],
) -> Result<(), Error> {
    let rels: Vec<&Relation> = new.iter().map(|(_, _, r)| *r).collect();
    let rel_rows = || {
        rows(
            &relation_fields(),
            rels.iter().map(|r| relation_row(r)).collect(),
        )
    };
    let keys: Vec<(&str, i64)> = new.iter().map(|(k, h, _)| (k.as_str(), *h)).collect();
    let key_rows = || keys.iter().map(|(k, h)| key_row(k, *h)).collect();
    if mode == InsertMode::Create {
        run(
            conn,
            "UNWIND $rows AS r MATCH (a:Entity {id: r.source}) WITH a, r UNWIND [r.target] AS t \
             MATCH (b:Entity {id: t}) CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, \
             text_unit_ids: r.text_unit_ids, source: r.source, target: r.target, \
             source_routing: r.source_routing, target_routing: r.target_routing}]->(b)",
            vec![("rows", rel_rows())],
        )?;
        let write = TableWrite {
            conn,
            table: "RelKey",
            fields: key_fields().to_vec(),
            dim: 0,
            mode,
        };
        return write.insert(key_rows());
    }
    let staged = super::kuzu_stage::relations(stage, &rels)?;
    if let Some(file) = staged.literal() {
        run(conn, &format!("COPY RELATED FROM {file}"), vec![])?;
        let staged = super::kuzu_stage::keys(stage, &keys)?;
        let file = staged.literal().expect("same directory");
        run(conn, &format!("COPY RelKey FROM {file}"), vec![])?;
        return Ok(());
    }
    run(
        conn,
        "COPY RELATED FROM (UNWIND $rows AS r RETURN r.source, r.target, r.id, r.description, r.weight, r.text_unit_ids, r.source AS source2, r.target AS target2, r.source_routing, r.target_routing)",
        vec![("rows", rel_rows())],
    )?;
    run(
        conn,
        "COPY RelKey FROM (UNWIND $rows AS r RETURN r.key, r.hash)",
        vec![("rows", rows(&key_fields(), key_rows()))],
    )?;
    Ok(())
}

/// The columns of a `RelKey` row ([`key_row`]).
fn key_fields() -> [(&'static str, LogicalType); 2] {
    [("key", LogicalType::String), ("hash", LogicalType::Int64)]
}

/// A relation's `RelKey` row: its key and content hash.
fn key_row(key: &str, hash: i64) -> Vec<Value> {
    vec![s(key), hash_value(hash as u64)]
}

/// The columns of an `Entity` row ([`entity_row`]).
fn shard_entity_fields(dim: usize) -> Vec<(&'static str, LogicalType)> {
    let mut f = entity_fields().to_vec();
    f.extend([
        ("stub", LogicalType::Bool),
        ("hash", LogicalType::Int64),
        ("routing", LogicalType::String),
    ]);
    if dim > 0 {
        f.push(("embedding", LogicalType::String));
    }
    f
}

fn shard_entity_row(e: &Entity, dim: usize) -> Vec<Value> {
    let mut v = entity_row(e);
    v.extend([
        Value::Bool(false),
        hash_value(content_hash(e)),
        optional_string(e.routing.as_deref()),
    ]);
    if dim > 0 {
        v.push(embedding_value(&e.embedding));
    }
    v
}

/// New stubs. Stubs have no text, so the full-text indexes' batch insert problem
/// (`TableWrite::insert`) cannot touch them: one statement for all. In copy mode through a
/// staged parquet file when its path can be quoted: a parameter list costs Kuzu a deep copy of
/// every value's type, most of a stub's insert time.
fn insert_stubs(
    write: &TableWrite<'_, '_>,
    stage: &Path,
    stubs: &[(&str, Option<&str>)],
) -> Result<(), Error> {
    if stubs.is_empty() {
        return Ok(());
    }
    if write.mode != InsertMode::Create {
        let staged = super::kuzu_stage::stubs(stage, stubs)?;
        if let Some(file) = staged.literal() {
            let columns = super::kuzu_stage::STUB_COLUMNS;
            run(
                write.conn,
                &format!("COPY Entity({columns}) FROM {file}"),
                vec![],
            )?;
            return Ok(());
        }
    }
    let rows = stubs
        .iter()
        .map(|(id, routing)| stub_row(id, *routing, write.dim))
        .collect();
    write.insert_text_free(rows)
}

/// A stub: an entity known here by id only (a relation's far end, or a pointer to where the
/// entity lives), with the routing key that places it when one is known.
fn stub_row(id: &str, routing: Option<&str>, dim: usize) -> Vec<Value> {
    let mut v = vec![
        s(id),
        s(""),
        s(""),
        s(""),
        strings(&[]),
        Value::Int64(0),
        Value::Int64(0),
        Value::Bool(true),
        Value::Int64(0),
        optional_string(routing),
    ];
    if dim > 0 {
        v.push(embedding_value(&None));
    }
    v
}

fn chunk_fields(dim: usize) -> Vec<(&'static str, LogicalType)> {
    let mut f = vec![
        ("id", LogicalType::String),
        ("text", LogicalType::String),
        ("n_tokens", LogicalType::Int64),
        ("document_id", LogicalType::String),
        ("entity_ids", string_list()),
    ];
    if dim > 0 {
        f.push(("embedding", LogicalType::String));
    }
    f
}

fn chunk_row(c: &Chunk, dim: usize) -> (String, Vec<Value>) {
    let mut v = vec![
        s(&c.id),
        s(&c.text),
        Value::Int64(c.n_tokens),
        s(&c.document_id),
        strings(&c.entity_ids),
    ];
    if dim > 0 {
        v.push(embedding_value(&c.embedding));
    }
    (c.id.clone(), v)
}

fn community_fields() -> Vec<(&'static str, LogicalType)> {
    vec![
        ("id", LogicalType::String),
        ("level", LogicalType::Int64),
        ("parent", LogicalType::String),
        ("title", LogicalType::String),
        ("entity_ids", string_list()),
        ("summary", LogicalType::String),
        ("full_content", LogicalType::String),
        ("rank", LogicalType::Double),
        // Last: a column added to an older database comes after the others, and COPY fills
        // columns by position.
        ("stale", LogicalType::Bool),
    ]
}

fn community_row(c: &Community) -> (String, Vec<Value>) {
    (
        c.id.clone(),
        vec![
            s(&c.id),
            Value::Int64(c.level),
            s(&c.parent),
            s(&c.title),
            strings(&c.entity_ids),
            s(&c.summary),
            s(&c.full_content),
            Value::Double(c.rank),
            // A report written by ingest is fresh.
            Value::Bool(false),
        ],
    )
}

fn document_fields() -> Vec<(&'static str, LogicalType)> {
    vec![
        ("id", LogicalType::String),
        ("title", LogicalType::String),
        ("text", LogicalType::String),
        ("text_unit_ids", string_list()),
    ]
}

fn document_row(d: &Document) -> (String, Vec<Value>) {
    (
        d.id.clone(),
        vec![s(&d.id), s(&d.title), s(&d.text), strings(&d.text_unit_ids)],
    )
}

/// One node table as a round writes it: through `conn`, in `mode`, rows of `fields` (in that
/// order) whose `embedding` column, if any, is cast to `FLOAT[dim]`.
struct TableWrite<'a, 'db> {
    conn: &'a Connection<'db>,
    table: &'static str,
    fields: Vec<(&'static str, LogicalType)>,
    dim: usize,
    mode: InsertMode,
}

impl TableWrite<'_, '_> {
    /// Column `n` of row `r`; the embedding is cast to the column's array type.
    fn value_of(&self, n: &str) -> String {
        if n == "embedding" {
            format!("CAST(r.embedding AS FLOAT[{}])", self.dim)
        } else {
            format!("r.{n}")
        }
    }

    /// `f(column, value)` for each column, joined by commas.
    fn each_column(&self, f: impl Fn(&str, String) -> String) -> String {
        let each = self.fields.iter().map(|(n, _)| f(n, self.value_of(n)));
        each.collect::<Vec<_>>().join(", ")
    }

    /// Inserts rows whose ids are new: `UNWIND … CREATE`, or one bulk COPY.
    fn insert(&self, new_rows: Vec<Vec<Value>>) -> Result<(), Error> {
        if self.mode == InsertMode::Create
            && kuzu_index::has_text_index(self.table)
            && !new_rows.is_empty()
        {
            // Kuzu 0.11 indexes every row of an `UNWIND … CREATE` under the first row's text in a
            // full-text index (`fts_probe` in the storage tests): one statement per row here.
            return self.create_one_by_one(new_rows);
        }
        self.insert_text_free(new_rows)
    }

    /// `insert` of each row by a statement of its own.
    fn create_one_by_one(&self, new_rows: Vec<Vec<Value>>) -> Result<(), Error> {
        let props = self
            .fields
            .iter()
            .map(|(n, _)| format!("{n}: ${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = self
            .conn
            .prepare(&format!("CREATE (n:{} {{{props}}})", self.table))
            .map_err(err)?;
        for row in new_rows {
            let params = self
                .fields
                .iter()
                .map(|(n, _)| *n)
                .zip(row)
                .map(|(n, v)| match (n, v) {
                    // The batch path casts the embedding's text in Cypher; a parameter must
                    // arrive as the column's array type.
                    ("embedding", v) => (n, embedding_array(v, self.dim)),
                    (n, v) => (n, v),
                })
                .collect();
            self.conn.execute(&mut stmt, params).map_err(err)?;
        }
        Ok(())
    }

    /// `insert` for rows whose table has no full-text index, or whose text is empty.
    fn insert_text_free(&self, new_rows: Vec<Vec<Value>>) -> Result<(), Error> {
        if new_rows.is_empty() {
            return Ok(());
        }
        let table = self.table;
        let q = if self.mode == InsertMode::Create {
            let props = self.each_column(|n, v| format!("{n}: {v}"));
            format!("UNWIND $rows AS r CREATE (n:{table} {{{props}}})")
        } else {
            // Named columns: the table may have more (filled with null), in any order.
            let names = self.each_column(|n, _| n.to_string());
            let returned = self.each_column(|_, v| v);
            format!("COPY {table}({names}) FROM (UNWIND $rows AS r RETURN {returned})")
        };
        self.run_rows(&q, new_rows)
    }

    /// Overwrites every column of rows that exist.
    fn set(&self, changed: Vec<Vec<Value>>) -> Result<(), Error> {
        if changed.is_empty() {
            return Ok(());
        }
        // Every column but the id, which the row is matched by.
        let sets = self.fields.iter().filter(|(n, _)| *n != "id");
        let sets: Vec<String> = sets
            .map(|(n, _)| format!("n.{n} = {}", self.value_of(n)))
            .collect();
        let sets = sets.join(", ");
        let q = format!(
            "UNWIND $rows AS r MATCH (n:{} {{id: r.id}}) SET {sets}",
            self.table
        );
        self.run_rows(&q, changed)
    }

    /// Runs `q` with `values` as its `$rows`.
    fn run_rows(&self, q: &str, values: Vec<Vec<Value>>) -> Result<(), Error> {
        run(self.conn, q, vec![("rows", rows(&self.fields, values))]).map(|_| ())
    }

    /// Chunks, communities, documents: COPY the new ids, SET the others. Returns the ids inserted
    /// and the ids overwritten.
    fn upsert(
        &self,
        items: Vec<(String, Vec<Value>)>,
    ) -> Result<(Vec<String>, Vec<String>), Error> {
        if items.is_empty() {
            return Ok(Default::default());
        }
        let ids: Vec<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
        let found: HashSet<String> = run(
            self.conn,
            &format!(
                "UNWIND $ids AS i MATCH (n:{} {{id: i}}) RETURN n.id",
                self.table
            ),
            vec![("ids", string_list_of(&ids))],
        )?
        .iter()
        .map(|r| as_string(&r[0]))
        .collect();
        let (old, new): (Vec<_>, Vec<_>) =
            items.into_iter().partition(|(id, _)| found.contains(id));
        let (new_ids, new_rows): (Vec<String>, Vec<Vec<Value>>) = new.into_iter().unzip();
        let (old_ids, old_rows): (Vec<String>, Vec<Vec<Value>>) = old.into_iter().unzip();
        self.insert(new_rows)?;
        self.set(old_rows)?;
        Ok((new_ids, old_ids))
    }
}

/// An embedding as `embedding_value` writes it (text, or null) as a `FLOAT[dim]` value.
fn embedding_array(v: Value, dim: usize) -> Value {
    let ty = LogicalType::Array {
        child_type: Box::new(LogicalType::Float),
        num_elements: dim as u64,
    };
    match v {
        Value::String(text) => Value::Array(
            LogicalType::Float,
            text.trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter_map(|x| x.trim().parse::<f32>().ok())
                .map(Value::Float)
                .collect(),
        ),
        _ => Value::Null(ty),
    }
}

/// Deletes an entity (or, with `only_stub`, only if it is a stub here) with its relations and
/// their keys.
pub(super) fn delete_entity(conn: &Connection, id: &str, only_stub: bool) -> Result<(), Error> {
    let cond = if only_stub { "WHERE e.stub = true" } else { "" };
    let q = format!(
        "MATCH (e:Entity {{id: $id}})-[x:RELATED]-() {cond} RETURN x.id, x.source, x.target"
    );
    // A self-loop is found from both of its ends: deduplicated below.
    let mut keys: Vec<String> = run(conn, &q, vec![("id", s(id))])?
        .iter()
        .map(|r| key_of(&as_string(&r[0]), &as_string(&r[1]), &as_string(&r[2])))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    delete_rel_keys(conn, &keys)?;
    // Relations first, one direction at a time, then the entity: once one of a node's relations
    // has been deleted (by pattern, or with a neighbour), Kuzu 0.11's `DETACH DELETE` of the node
    // can leave others behind in the far end's list (`delete_leaves_no_relation_behind`).
    for pattern in ["-[x:RELATED]->()", "<-[x:RELATED]-()"] {
        run(
            conn,
            &format!("MATCH (e:Entity {{id: $id}}){pattern} {cond} DELETE x"),
            vec![("id", s(id))],
        )?;
    }
    run(
        conn,
        &format!("MATCH (e:Entity {{id: $id}}) {cond} DELETE e"),
        vec![("id", s(id))],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuzu::{Database, SystemConfig};

    fn count(conn: &Connection, table: &str) -> i64 {
        run(conn, &format!("MATCH (n:{table}) RETURN count(*)"), vec![]).unwrap()[0]
            .first()
            .and_then(as_i64)
            .unwrap()
    }

    /// A create-mode round commits its items before their vector rows: if it stops in between,
    /// the same writes applied again from the log add the vector rows that are missing.
    #[test]
    fn a_round_applied_again_adds_the_missing_vector_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::new(
            dir.path().join("apply.kz"),
            SystemConfig::default()
                .max_db_size(1 << 30)
                .buffer_pool_size(1 << 28)
                .max_num_threads(1),
        )
        .unwrap();
        let conn = Connection::new(&db).unwrap();
        let dim = 4;
        for statement in schema(dim) {
            conn.query(&statement).unwrap();
        }
        kuzu_index::ensure(&conn, dim).unwrap();
        let entity = |id: &str| Entity {
            id: id.into(),
            title: id.into(),
            kind: "PERSON".into(),
            description: format!("{id} is here"),
            text_unit_ids: vec![],
            frequency: 1,
            degree: 1,
            embedding: Some(vec![0.5; dim]),
            routing: None,
        };
        let chunk = |id: &str| Chunk {
            id: id.into(),
            text: format!("text of {id}"),
            n_tokens: 3,
            document_id: "doc".into(),
            entity_ids: vec![],
            embedding: Some(vec![0.25; dim]),
        };
        let op = WriteOp::Upsert(Batch {
            entities: vec![entity("a"), entity("b")],
            chunks: vec![chunk("t1"), chunk("t2")],
            ..Batch::default()
        });
        let gate = std::sync::RwLock::new(());
        let apply = |seq| {
            let db = Target {
                conn: &conn,
                dim,
                stage: dir.path(),
                mode: InsertMode::Create,
                commit_gate: &gate,
            };
            apply_round(db, &[&op], seq, &mut ApplyState::default()).unwrap()
        };
        apply(1);
        assert_eq!(
            (count(&conn, "EntityVec"), count(&conn, "ChunkVec")),
            (2, 2)
        );
        // As if the round had stopped after its first commit.
        conn.query("MATCH (v:EntityVec {id: 'a'}) DELETE v")
            .unwrap();
        conn.query("MATCH (v:ChunkVec) DELETE v").unwrap();
        apply(1);
        assert_eq!(
            (count(&conn, "EntityVec"), count(&conn, "ChunkVec")),
            (2, 2)
        );
        assert_eq!((count(&conn, "Entity"), count(&conn, "Chunk")), (2, 2));
        assert_eq!(read_applied(&conn).unwrap(), 1);
    }
}
