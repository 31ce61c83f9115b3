//! The embedded-Kuzu baselines' database: opened in this process with the threads torua gives
//! each database, so that both sides get the same CPU; the CSV lines its `COPY FROM` reads; the
//! rows of a lookup by ids, by one statement over the set or one per id.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use kuzu::{Connection, Database, PreparedStatement, SystemConfig, Value};
use torua_testkit::graphrag::{Entity, Relation};
use torua_testkit::kuzu_values::{string, strings};

/// Kuzu's threads per database in torua (`src/storage`): the cores, at most 2.
pub fn kuzu_threads() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
        .min(2)
}

/// Opens (or creates) a compressed database with a `memory_mb` buffer pool and room for
/// `max_db_size` bytes.
pub fn open_embedded(path: &Path, memory_mb: u64, max_db_size: u64) -> Result<Database> {
    let config = SystemConfig::default()
        .buffer_pool_size(memory_mb << 20)
        .max_num_threads(kuzu_threads())
        .max_db_size(max_db_size)
        .enable_compression(true);
    Database::new(path, config).with_context(|| format!("cannot open {}", path.display()))
}

/// The relations out of entity `$id`. Like torua's shards, the baseline reads the endpoints' ids
/// stored on the relation (reading them through the far node costs Kuzu a join over the node
/// table: ~1.4 ms instead of ~0.35 ms per id).
pub const RELATIONS_OUT: &str = "MATCH (a:Entity {id: $id})-[r:RELATED]->() \
                                 RETURN r.source, r.target, r.id, r.description, r.weight";

/// The relations into entity `$id`, read as [`RELATIONS_OUT`] reads them.
pub const RELATIONS_IN: &str = "MATCH (b:Entity {id: $id})<-[r:RELATED]-() \
                                RETURN r.source, r.target, r.id, r.description, r.weight";

/// The columns of [`EntityCsv`]'s lines.
pub const ENTITY_CSV_HEADER: &str = "id,title,type,description,text_unit_ids,frequency,degree";

/// The columns of [`RelationCsv`]'s lines: the `RELATED` table's from and to, then its
/// properties.
pub const RELATION_CSV_HEADER: &str = "from,to,id,description,weight,text_unit_ids,source,target";

/// A list column: `"[a,b]"`.
pub fn csv_list(items: &[String]) -> String {
    format!("\"[{}]\"", items.join(","))
}

/// Writes `fields` as one CSV line (no newline), as they display.
fn csv_line(f: &mut fmt::Formatter<'_>, fields: &[&dyn fmt::Display]) -> fmt::Result {
    for (i, field) in fields.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        write!(f, "{comma}{field}")?;
    }
    Ok(())
}

/// An entity as a CSV line (no newline). The generated text has no commas or quotes.
pub struct EntityCsv<'a>(pub &'a Entity);

impl fmt::Display for EntityCsv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        let units = csv_list(&e.text_unit_ids);
        csv_line(
            f,
            &[
                &e.id,
                &e.title,
                &e.kind,
                &e.description,
                &units,
                &e.frequency,
                &e.degree,
            ],
        )
    }
}

/// A relation as a CSV line (no newline): the endpoints first (the `RELATED` table's from and
/// to), then its properties. The generated text has no commas or quotes.
pub struct RelationCsv<'a>(pub &'a Relation);

impl fmt::Display for RelationCsv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        let (from, to) = (&r.source, &r.target);
        let units = csv_list(&r.text_unit_ids);
        csv_line(
            f,
            &[from, to, &r.id, &r.description, &r.weight, &units, from, to],
        )
    }
}

/// The rows for `ids`: one statement over the whole set (`set`, parameter `$ids`) when
/// `whole_set`, else one statement per id (`one`, parameter `$id`). `executed` counts the ids
/// looked up one by one and the set statements.
pub fn rows_for_ids(
    conn: &Connection,
    set: &mut PreparedStatement,
    one: &mut PreparedStatement,
    ids: &[String],
    whole_set: bool,
    executed: &mut (usize, usize),
) -> Result<Vec<Vec<Value>>> {
    if whole_set {
        executed.1 += 1;
        Ok(conn.execute(set, vec![("ids", strings(ids))])?.collect())
    } else {
        executed.0 += ids.len();
        let mut rows = Vec::new();
        for id in ids {
            rows.extend(conn.execute(one, vec![("id", string(id))])?);
        }
        Ok(rows)
    }
}
