//! The search indexes of a shard copy: HNSW vector indexes over entity and chunk embeddings and
//! full-text (BM25) indexes over entity titles, entity title + description, and chunk text.
//!
//! Kuzu refuses `SET` on a column a vector index covers, and an entity cannot be deleted and
//! re-inserted without losing its relations. So each embedding lives twice: in its row (what
//! point reads return) and in a small derived table (`EntityVec`, `ChunkVec`: id + embedding)
//! that carries the vector index. The derived rows are rewritten (delete + insert) whenever their
//! item is upserted, and deleted with it: inside the write's transaction, except for the inserts
//! of create mode, which commit in transactions of their own right after it (see
//! `kuzu_apply::apply_round`). The full-text indexes follow `SET`, inserts and deletes by
//! themselves.
//!
//! Indexes grow row by row with every write. (Kuzu builds an HNSW index over existing rows ~4x
//! faster than it inserts into one, but in 0.11 a vector index dropped and created again crashes
//! the process, so bulk loads cannot rebuild them.)

use super::Error;
use kuzu::Connection;

use super::kuzu_values::*;
use super::InsertMode;

/// HNSW parameters (Kuzu's defaults are mu 30, ml 60, efc 200: ~2x slower to build, and not
/// needed for the recall a per-shard top-k merge reaches; see bench/RESULTS.md).
const HNSW_OPTIONS: &str = "metric := 'cosine', mu := 16, ml := 32, efc := 100";

/// Whether `table` carries a full-text index.
pub fn has_text_index(table: &str) -> bool {
    INDEXES
        .iter()
        .any(|d| d.table == table && d.text_columns.is_some())
}

/// The tables carrying a full-text index.
pub fn text_indexed_tables() -> Vec<&'static str> {
    let mut tables: Vec<&str> = INDEXES
        .iter()
        .filter(|d| d.text_columns.is_some())
        .map(|d| d.table)
        .collect();
    tables.dedup();
    tables
}

/// Drops and creates again every full-text index. Kuzu 0.11's full-text search stops finding
/// some rows that stay once other rows of the table are deleted or their indexed text is updated
/// (`fts_delete_probe`: 300 of 3,000 rows deleted, the search misses about 200 of the others);
/// an index built again over the table finds every row. Prepared searches of other connections
/// keep working across the rebuild. If creating fails, the index is missing until the next
/// rebuild or open (searches of it fail meanwhile; they never return wrong rows).
pub fn rebuild_text_indexes(conn: &Connection) -> Result<(), Error> {
    for d in INDEXES.iter().filter(|d| d.text_columns.is_some()) {
        ddl(
            conn,
            &format!("CALL DROP_FTS_INDEX('{}', '{}')", d.table, d.name),
        )?;
        ddl(conn, &d.create())?;
    }
    Ok(())
}

/// Which table's indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexed {
    Entity,
    Chunk,
}

/// One search index: its table, its name and what it covers.
struct IndexDef {
    table: &'static str,
    name: &'static str,
    /// `None`: an HNSW index over `embedding`; else a full-text index over these columns.
    text_columns: Option<&'static str>,
}

const INDEXES: [IndexDef; 5] = [
    IndexDef {
        table: "EntityVec",
        name: "entity_vec",
        text_columns: None,
    },
    IndexDef {
        table: "Entity",
        name: "entity_title",
        text_columns: Some("['title']"),
    },
    IndexDef {
        table: "Entity",
        name: "entity_text",
        text_columns: Some("['title', 'description']"),
    },
    IndexDef {
        table: "ChunkVec",
        name: "chunk_vec",
        text_columns: None,
    },
    IndexDef {
        table: "Chunk",
        name: "chunk_text",
        text_columns: Some("['text']"),
    },
];

impl IndexDef {
    fn create(&self) -> String {
        let (table, name) = (self.table, self.name);
        match self.text_columns {
            None => format!(
                "CALL CREATE_VECTOR_INDEX('{table}', '{name}', 'embedding', {HNSW_OPTIONS})"
            ),
            Some(columns) => format!("CALL CREATE_FTS_INDEX('{table}', '{name}', {columns})"),
        }
    }
}

fn defs(dim: usize) -> impl Iterator<Item = &'static IndexDef> {
    INDEXES
        .iter()
        .filter(move |d| dim > 0 || d.text_columns.is_some())
}

/// The derived vector tables (none without embeddings).
pub fn vector_tables(dim: usize) -> Vec<String> {
    if dim == 0 {
        return vec![];
    }
    ["EntityVec", "ChunkVec"]
        .iter()
        .map(|t| format!("CREATE NODE TABLE IF NOT EXISTS {t}(id STRING, embedding FLOAT[{dim}], PRIMARY KEY(id))"))
        .collect()
}

fn existing(conn: &Connection) -> Result<Vec<String>, Error> {
    Ok(run(conn, "CALL SHOW_INDEXES() RETURN index_name", vec![])?
        .iter()
        .map(|r| as_string(&r[0]))
        .collect())
}

/// Index DDL expands to several statements, which Kuzu cannot prepare: it runs unprepared.
fn ddl(conn: &Connection, statement: &str) -> Result<(), Error> {
    conn.query(statement).map(drop).map_err(err)
}

/// Creates every missing index (at open: with a new shard, or for a database written before
/// them, after filling its derived vector tables). Returns how many indexes it built.
pub fn ensure(conn: &Connection, dim: usize) -> Result<usize, Error> {
    if dim > 0 {
        backfill_vectors(conn)?;
    }
    let have = existing(conn)?;
    let mut built = 0;
    for def in defs(dim) {
        if !have.iter().any(|n| n == def.name) {
            let t = std::time::Instant::now();
            ddl(conn, &def.create())
                .map_err(|e| Error::Engine(format!("building index {}: {e}", def.name)))?;
            tracing::info!(
                index = def.name,
                ms = t.elapsed().as_millis() as u64,
                "built a search index"
            );
            built += 1;
        }
    }
    Ok(built)
}

/// Fills the derived vector tables from their items when they are empty but the items have
/// embeddings (a database from before the derived tables).
fn backfill_vectors(conn: &Connection) -> Result<(), Error> {
    for (items, vecs) in [("Entity", "EntityVec"), ("Chunk", "ChunkVec")] {
        let count = |q: &str| -> Result<i64, Error> {
            Ok(run(conn, q, vec![])?
                .first()
                .and_then(|r| as_i64(&r[0]))
                .unwrap_or(0))
        };
        if count(&format!("MATCH (v:{vecs}) RETURN count(*)"))? > 0 {
            continue;
        }
        let with = count(&format!(
            "MATCH (n:{items}) WHERE n.embedding IS NOT NULL RETURN count(*)"
        ))?;
        if with > 0 {
            tracing::info!(
                table = items,
                rows = with,
                "filling the vector table of an older database"
            );
            run(
                conn,
                &format!("COPY {vecs} FROM (MATCH (n:{items}) WHERE n.embedding IS NOT NULL RETURN n.id, n.embedding)"),
                vec![],
            )?;
        }
    }
    Ok(())
}

/// Inside a transaction: rewrites the derived vector rows of `ids` (items of `of` just inserted
/// or overwritten) from their rows; `replaced` says whether any of them may already have one.
/// With `InsertMode::Create`, the transaction must change no other node table (see
/// `kuzu_apply::apply_round`).
pub fn sync_vectors(
    conn: &Connection,
    of: Indexed,
    ids: &[&str],
    replaced: bool,
    mode: InsertMode,
) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let (items, vecs) = match of {
        Indexed::Entity => ("Entity", "EntityVec"),
        Indexed::Chunk => ("Chunk", "ChunkVec"),
    };
    if replaced {
        delete_vectors(conn, of, ids)?;
    }
    if mode == InsertMode::Create {
        run(
            conn,
            &format!(
                "UNWIND $ids AS i MATCH (n:{items} {{id: i}}) WHERE n.embedding IS NOT NULL \
                 CREATE (v:{vecs} {{id: n.id, embedding: n.embedding}})"
            ),
            vec![("ids", string_list_of(ids))],
        )?;
        return Ok(());
    }
    run(
        conn,
        &format!(
            "COPY {vecs} FROM (UNWIND $ids AS i MATCH (n:{items} {{id: i}}) WHERE n.embedding IS NOT NULL RETURN n.id, n.embedding)"
        ),
        vec![("ids", string_list_of(ids))],
    )?;
    Ok(())
}

/// Of `ids` (items of `of`), those whose item has an embedding but no derived vector row.
pub fn missing_vectors(conn: &Connection, of: Indexed, ids: &[&str]) -> Result<Vec<String>, Error> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let (items, vecs) = match of {
        Indexed::Entity => ("Entity", "EntityVec"),
        Indexed::Chunk => ("Chunk", "ChunkVec"),
    };
    let ids_of = |q: String| -> Result<Vec<String>, Error> {
        Ok(run(conn, &q, vec![("ids", string_list_of(ids))])?
            .iter()
            .map(|r| as_string(&r[0]))
            .collect())
    };
    let have: std::collections::HashSet<String> = ids_of(format!(
        "UNWIND $ids AS i MATCH (v:{vecs} {{id: i}}) RETURN v.id"
    ))?
    .into_iter()
    .collect();
    let mut missing = ids_of(format!(
        "UNWIND $ids AS i MATCH (n:{items} {{id: i}}) WHERE n.embedding IS NOT NULL RETURN n.id"
    ))?;
    missing.retain(|id| !have.contains(id));
    Ok(missing)
}

/// Inside a write's transaction: deletes the derived vector rows of `ids`.
pub fn delete_vectors(conn: &Connection, of: Indexed, ids: &[&str]) -> Result<(), Error> {
    let vecs = match of {
        Indexed::Entity => "EntityVec",
        Indexed::Chunk => "ChunkVec",
    };
    run(
        conn,
        &format!("UNWIND $ids AS i MATCH (v:{vecs} {{id: i}}) DELETE v"),
        vec![("ids", string_list_of(ids))],
    )?;
    Ok(())
}
