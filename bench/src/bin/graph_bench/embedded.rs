//! The embedded-Kuzu baseline: the schema, `COPY FROM` CSV and `UNWIND` batch ingest into a
//! Kuzu database opened in this process.

use super::*;

/// torua's schema, as in src/storage/kuzu_shard.rs (no embeddings).
pub(crate) const SCHEMA: [&str; 6] = [
    "CREATE NODE TABLE IF NOT EXISTS Entity(id STRING, title STRING, type STRING, description STRING, \
     text_unit_ids STRING[], frequency INT64, degree INT64, stub BOOLEAN, PRIMARY KEY(id))",
    "CREATE REL TABLE IF NOT EXISTS RELATED(FROM Entity TO Entity, id STRING, description STRING, \
     weight DOUBLE, text_unit_ids STRING[], source STRING, target STRING)",
    "CREATE NODE TABLE IF NOT EXISTS Chunk(id STRING, text STRING, n_tokens INT64, document_id STRING, \
     entity_ids STRING[], PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Community(id STRING, level INT64, parent STRING, title STRING, \
     entity_ids STRING[], summary STRING, full_content STRING, rank DOUBLE, PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Document(id STRING, title STRING, text STRING, text_unit_ids STRING[], \
     PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Meta(key STRING, value INT64, PRIMARY KEY(key))",
];

pub(crate) fn open_graph_db(path: &Path, memory_mb: u64) -> Result<Database> {
    let db = open_embedded(path, memory_mb, 1 << 36)?;
    {
        let conn = Connection::new(&db)?;
        for ddl in SCHEMA {
            conn.query(ddl).with_context(|| format!("schema: {ddl}"))?;
        }
    }
    Ok(db)
}

/// Writes entities.csv and relations.csv in the column order of the schema.
pub(crate) fn write_csv(dir: &Path, g: &Graph) -> Result<(PathBuf, PathBuf)> {
    let ep = dir.join("entities.csv");
    let rp = dir.join("relations.csv");
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&ep)?);
    writeln!(w, "{ENTITY_CSV_HEADER},stub")?;
    for e in &g.entities {
        writeln!(w, "{},false", EntityCsv(e))?;
    }
    w.flush()?;
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&rp)?);
    writeln!(w, "{RELATION_CSV_HEADER}")?;
    for r in &g.relations {
        writeln!(w, "{}", RelationCsv(r))?;
    }
    w.flush()?;
    Ok((ep, rp))
}

pub(crate) fn count(conn: &Connection, q: &str) -> Result<u64> {
    let mut r = conn.query(q)?;
    Ok(match r.next().as_ref().and_then(|row| row.first()) {
        Some(KValue::Int64(n)) => *n as u64,
        Some(KValue::UInt64(n)) => *n,
        _ => 0,
    })
}

pub(crate) fn check_counts(db: &Database, g: &Graph) -> Result<()> {
    let conn = Connection::new(db)?;
    let e = count(&conn, "MATCH (e:Entity) RETURN count(*)")?;
    let r = count(&conn, "MATCH ()-[r:RELATED]->() RETURN count(*)")?;
    if e as usize != g.entities.len() || r as usize != g.relations.len() {
        bail!(
            "embedded database holds {e} entities and {r} relations; expected {} and {}",
            g.entities.len(),
            g.relations.len()
        );
    }
    Ok(())
}

pub(crate) struct IngestResult {
    pub(crate) target: String,
    pub(crate) wall: Duration,
    pub(crate) entities_s: f64,
    pub(crate) relations_s: f64,
    /// Items acknowledged (all of them unless the run hit --max-minutes).
    pub(crate) entities_done: usize,
    pub(crate) relations_done: usize,
    pub(crate) complete: bool,
    pub(crate) retries: usize,
    pub(crate) extra: Value,
}

impl IngestResult {
    /// `target`'s load of `done` (entities, relations) of `g`'s items in `wall`, the entities
    /// taking `secs.0` and the relations `secs.1`; complete when every item is done. No retries,
    /// no extra fields.
    pub(crate) fn new(
        target: impl Into<String>,
        g: &Graph,
        wall: Duration,
        secs: (f64, f64),
        done: (usize, usize),
    ) -> Self {
        IngestResult {
            target: target.into(),
            wall,
            entities_s: secs.0,
            relations_s: secs.1,
            entities_done: done.0,
            relations_done: done.1,
            complete: done == (g.entities.len(), g.relations.len()),
            retries: 0,
            extra: json!({}),
        }
    }
    pub(crate) fn rate(&self) -> f64 {
        (self.entities_done + self.relations_done) as f64 / self.wall.as_secs_f64()
    }
    pub(crate) fn entity_rate(&self) -> f64 {
        self.entities_done as f64 / self.entities_s.max(1e-9)
    }
    pub(crate) fn relation_rate(&self) -> f64 {
        self.relations_done as f64 / self.relations_s.max(1e-9)
    }
}

pub(crate) fn ingest_copy(
    dir: &Path,
    g: &Graph,
    memory_mb: u64,
) -> Result<(Database, IngestResult)> {
    let started = Instant::now();
    let (ep, rp) = write_csv(dir, g)?;
    let csv_s = started.elapsed().as_secs_f64();
    let db = open_graph_db(&dir.join("copy.kz"), memory_mb)?;
    let conn = Connection::new(&db)?;
    let t0 = Instant::now();
    let entities_s = copy_from(&conn, "Entity", &ep)?;
    let relations_s = copy_from(&conn, "RELATED", &rp)?;
    let wall = t0.elapsed();
    drop(conn);
    check_counts(&db, g)?;
    let csv_bytes = std::fs::metadata(&ep)?.len() + std::fs::metadata(&rp)?.len();
    let done = (g.entities.len(), g.relations.len());
    let mut r = IngestResult::new(
        "embedded Kuzu, COPY from CSV",
        g,
        wall,
        (entities_s, relations_s),
        done,
    );
    r.extra = json!({"csv_write_s": csv_s, "csv_bytes": csv_bytes,
                     "rate_with_csv_write": (done.0 + done.1) as f64 / (wall.as_secs_f64() + csv_s)});
    Ok((db, r))
}

/// Loads table `table` from the CSV file `csv` (with a header line); returns the seconds it took.
fn copy_from(conn: &Connection, table: &str, csv: &Path) -> Result<f64> {
    let t = Instant::now();
    conn.query(&format!(
        "COPY {table} FROM '{}' (HEADER=true)",
        csv.display()
    ))
    .with_context(|| format!("COPY {table}"))?;
    Ok(t.elapsed().as_secs_f64())
}

pub(crate) fn exec(conn: &Connection, q: &str, params: Vec<(&str, KValue)>) -> Result<()> {
    let mut stmt = conn.prepare(q).with_context(|| format!("prepare {q}"))?;
    conn.execute(&mut stmt, params)
        .with_context(|| format!("execute {q}"))?;
    Ok(())
}

/// Runs `cypher` (an `UNWIND $rows ...` over rows of `fields`) on `items` in batches of `batch`,
/// until `deadline` passes; returns how many items it sent.
fn unwind_in_batches<T>(
    conn: &Connection,
    cypher: &str,
    fields: &[(&str, LogicalType)],
    items: &[T],
    row: fn(&T) -> Vec<KValue>,
    batch: usize,
    deadline: Instant,
) -> Result<usize> {
    let mut done = 0;
    for chunk in items.chunks(batch) {
        if Instant::now() > deadline {
            break;
        }
        done += chunk.len();
        let rows = chunk.iter().map(row).collect();
        exec(conn, cypher, vec![("rows", struct_rows(fields, rows))])?;
    }
    Ok(done)
}

/// torua's statement-based path without distribution: the set-wise `UNWIND ... CREATE` statements of
/// src/storage/kuzu_shard.rs (without its existence checks), one transaction per batch.
pub(crate) fn ingest_unwind(
    dir: &Path,
    g: &Graph,
    memory_mb: u64,
    batch: usize,
    deadline: Instant,
) -> Result<IngestResult> {
    let db = open_graph_db(&dir.join("unwind.kz"), memory_mb)?;
    let conn = Connection::new(&db)?;
    let t0 = Instant::now();
    let entities_done = unwind_in_batches(
        &conn,
        "UNWIND $rows AS r CREATE (:Entity {id: r.id, title: r.title, type: r.type, description: r.description, \
         text_unit_ids: r.text_unit_ids, frequency: r.frequency, degree: r.degree, stub: false})",
        &entity_fields(),
        &g.entities,
        entity_row,
        batch,
        deadline,
    )?;
    let entities_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let relations_done = unwind_in_batches(
        &conn,
        "UNWIND $rows AS r MATCH (a:Entity {id: r.source}), (b:Entity {id: r.target}) \
         CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, text_unit_ids: r.text_unit_ids, source: r.source, target: r.target}]->(b)",
        &relation_fields(),
        &g.relations,
        relation_row,
        batch,
        deadline,
    )?;
    let relations_s = t1.elapsed().as_secs_f64();
    let wall = t0.elapsed();
    drop(conn);
    let r = IngestResult::new(
        "embedded Kuzu, torua's UNWIND CREATE",
        g,
        wall,
        (entities_s, relations_s),
        (entities_done, relations_done),
    );
    if r.complete {
        check_counts(&db, g)?;
    }
    Ok(r)
}
