//! `torua import graphrag <DIR> --url <node>`: loads a Microsoft GraphRAG output folder (parquet)
//! through the ingest API, with a progress bar. Re-running it is harmless (ingest upserts by id).
//!
//! Mapping (only the columns named here are required; others are ignored):
//! - `entities`: id, title, type, description, text_unit_ids, frequency, degree.
//! - `relationships`: id, source, target (entity *titles*, mapped to entity ids; a title with no
//!   entity is kept as the id of a stub), description, weight, text_unit_ids.
//! - `text_units` → chunks: id, text, n_tokens, document_id (or the first of document_ids), entity_ids.
//! - `communities` + `community_reports` → communities: the id is the community number (GraphRAG's
//!   short id, which its prompts cite), parent the parent's number (empty for a root), the report's
//!   title, summary, full_content and rank.
//! - `documents`: id, title, text, text_unit_ids.
//!
//! `--update` loads the output of a GraphRAG incremental update (`graphrag update`: the output
//! folder holding the merged tables) over what an earlier import loaded: the documents are sent
//! first, so that a document stored before with other text units loses the old ones, and what
//! only they supported, before the new entities, relations, chunks and community reports arrive
//! (fresh reports are then not marked stale by that removal). Without `--update` documents are
//! sent last; a re-ingested document's old text units are removed either way. `--delete-missing`
//! then deletes the stored documents the folder does not hold (GraphRAG's update output keeps
//! documents removed from its input; this makes the cluster mirror the folder).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use clap::{Args, Subcommand};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::cmd::client::Connect;
use crate::graph::model::{Batch, Chunk, Community, Document, Entity, Relation};

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub format: ImportFormat,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ImportFormat {
    /// A Microsoft GraphRAG output folder (entities.parquet, relationships.parquet, ...).
    Graphrag(GraphragArgs),
}

#[derive(Debug, Clone, Args)]
pub struct GraphragArgs {
    /// The folder holding the parquet files.
    pub dir: PathBuf,
    #[command(flatten)]
    pub connect: Connect,
    /// Items per ingest request.
    #[arg(long, default_value_t = 2000)]
    pub batch: usize,
    /// No progress bar (e.g. in scripts).
    #[arg(long)]
    pub quiet: bool,
    /// Load a GraphRAG incremental-update output over an earlier import: documents first, so
    /// that re-ingested documents' old text units (and what only they supported) are removed
    /// before the new items arrive. Prints what was replaced.
    #[arg(long)]
    pub update: bool,
    /// After loading, delete (as `DELETE /graph/documents/{id}` does) every stored document the
    /// folder does not hold, with what only it supported: the cluster then holds the folder's
    /// documents and no others. Lists the stored documents with `POST /query`, so it needs an
    /// admin key when the cluster asks for keys.
    #[arg(long)]
    pub delete_missing: bool,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    match args.format {
        ImportFormat::Graphrag(a) => import(&a),
    }
}

fn import(args: &GraphragArgs) -> anyhow::Result<()> {
    let all = read_folder(&args.dir)?;
    let total = all.len();
    if total == 0 {
        bail!("{}: no GraphRAG items found", args.dir.display());
    }
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} items ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let failed_before = failed_writes(&args.connect)?;
    let in_folder: HashSet<String> = all.documents.iter().map(|d| d.id.clone()).collect();
    let counts = [
        ("entities", all.entities.len()),
        ("relations", all.relations.len()),
        ("chunks", all.chunks.len()),
        ("communities", all.communities.len()),
        ("documents", all.documents.len()),
    ];
    let mut replaced = Replaced::default();
    for batch in chunks(all, args.batch.max(1), args.update) {
        let n = batch.len();
        let answer = post(&args.connect, &batch)?;
        replaced.add(&answer["replaced"]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    wait_applied(&args.connect, args.quiet, failed_before)?;
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("loaded {} into {}", summary.join(", "), args.connect.url);
    if args.update || replaced.documents > 0 {
        println!("{}", replaced.line());
    }
    if args.delete_missing {
        let stored = stored_documents(&args.connect)?;
        let missing: Vec<&String> = stored
            .iter()
            .filter(|id| !in_folder.contains(*id))
            .collect();
        let mut removed = Replaced::default();
        for id in &missing {
            let path = format!("/graph/documents/{}", encode_path_segment(id));
            removed.add(&send(&args.connect, "DELETE", &path, None)?);
        }
        wait_applied(&args.connect, args.quiet, failed_before)?;
        println!(
            "deleted {} stored documents not in {}: {}",
            missing.len(),
            args.dir.display(),
            removed.removed_line()
        );
    }
    Ok(())
}

/// Document ids per page when listing the stored documents.
const LIST_PAGE: usize = 5000;

/// Every stored document's id, in pages ordered by id.
fn stored_documents(c: &Connect) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    loop {
        let after = ids.last().cloned().unwrap_or_default();
        let body = serde_json::json!({
            "cypher": format!(
                "MATCH (d:Document) WHERE d.id > $after RETURN d.id ORDER BY d.id LIMIT {LIST_PAGE}"
            ),
            "params": {"after": after},
            "allow_partial": false,
        });
        let answer = send(c, "POST", "/query", Some(&body))
            .context("listing the stored documents (--delete-missing)")?;
        let page: Vec<String> = answer["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r[0].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let full = page.len() == LIST_PAGE;
        ids.extend(page);
        if !full {
            return Ok(ids);
        }
    }
}

/// `id` as one URL path segment (percent-encoding what is not unreserved).
fn encode_path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the ingest answers' `replaced` (or the document deletes' answers) added up to.
#[derive(Default)]
struct Replaced {
    documents: u64,
    removed: [u64; 3],
    updated: [u64; 3],
}

impl Replaced {
    fn add(&mut self, v: &serde_json::Value) {
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        self.documents += n(&v["documents"]);
        for (i, k) in ["chunks", "entities", "relations"].iter().enumerate() {
            self.removed[i] += n(&v["removed"][k]);
        }
        for (i, k) in ["entities", "relations", "communities"].iter().enumerate() {
            self.updated[i] += n(&v["updated"][k]);
        }
    }

    fn line(&self) -> String {
        format!(
            "replaced the old text units of {} documents: {}",
            self.documents,
            self.removed_line()
        )
    }

    fn removed_line(&self) -> String {
        let [c, e, r] = self.removed;
        let [ue, ur, uc] = self.updated;
        format!(
            "removed {c} chunks, {e} entities, {r} relations; updated {ue} entities, {ur} relations, {uc} communities (reports marked stale)"
        )
    }
}

/// Writes the copies' databases refused so far, over every copy (`failed_writes` in
/// `/cluster/shards`; a copy that does not answer counts 0).
fn failed_writes(c: &Connect) -> anyhow::Result<u64> {
    let shards = c
        .call("GET", "/cluster/shards", None, Duration::from_secs(30))?
        .ok(&format!("GET {}", c.url("/cluster/shards")))?;
    Ok(failed_in(&shards))
}

/// The `failed_writes` of every copy in a `/cluster/shards` answer, added up.
fn failed_in(shards: &serde_json::Value) -> u64 {
    shards["copies"]
        .as_array()
        .map(|copies| {
            copies
                .iter()
                .filter_map(|copy| copy["failed_writes"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// Acknowledged writes are durable at once and visible once applied; waits (at most 10 min) until
/// `/cluster/shards` reports none pending, so that what the import prints is also readable. Fails
/// when the copies refused more writes than `failed_before` (what they had refused before the
/// import): acknowledged items that no read will see.
fn wait_applied(c: &Connect, quiet: bool, failed_before: u64) -> anyhow::Result<()> {
    let shards = c.url("/cluster/shards");
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let mut said = false;
    loop {
        let answer = c
            .call("GET", "/cluster/shards", None, Duration::from_secs(30))?
            .ok(&format!("GET {shards}"))
            .ok();
        match answer.as_ref().and_then(|v| v["pending_writes"].as_u64()) {
            Some(0) => {
                let failed = answer
                    .as_ref()
                    .map_or(0, failed_in)
                    .saturating_sub(failed_before);
                if failed > 0 {
                    bail!(
                        "the items are acknowledged, but shard copies could not apply {failed} \
                         writes to their databases: those items are not readable (see \
                         failed_writes in {shards}, and \"an acknowledged write cannot be \
                         applied\" in the nodes' logs)"
                    );
                }
                return Ok(());
            }
            Some(n) if !quiet && !said => {
                eprintln!("all items acknowledged; waiting for {n} writes to be applied");
                said = true;
            }
            _ => {}
        }
        if std::time::Instant::now() > deadline {
            bail!("the items are acknowledged (durable) but still being applied after 10 minutes; check {shards}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends one batch, retrying while the cluster says it is busy or forming; returns the answer.
fn post(c: &Connect, batch: &Batch) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::to_value(batch)?;
    let answer = send(c, "POST", "/graph/ingest", Some(&body))?;
    if answer["errors"] == true {
        bail!("the cluster refused some items: {}", answer["items"]);
    }
    Ok(answer)
}

/// Sends a request, retrying while the cluster says it is busy, forming or healing (429, 503);
/// returns the answer's body.
fn send(
    c: &Connect,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let url = c.url(path);
    for attempt in 1..=30 {
        let answer = c.call(method, path, body, Duration::from_secs(60))?;
        if (answer.status == 429 || answer.status == 503) && attempt < 30 {
            std::thread::sleep(Duration::from_secs(answer.retry_after.unwrap_or(1).min(10)));
            continue;
        }
        return answer.ok(&format!("{method} {url}"));
    }
    bail!("{method} {url}: the cluster stayed busy; try again later")
}

/// Splits everything into batches of at most `size` items, entities first so that relations
/// usually find their endpoints (they need not: stubs stand in); documents last, or first in
/// their own batches with `documents_first` (see `--update`).
fn chunks(mut all: Batch, size: usize, documents_first: bool) -> Vec<Batch> {
    let mut batches = Batches {
        size,
        out: Vec::new(),
        current: Batch::default(),
    };
    if documents_first {
        batches.add(std::mem::take(&mut all.documents), |b| &mut b.documents);
        batches.cut();
    }
    batches.add(all.entities, |b| &mut b.entities);
    batches.add(all.relations, |b| &mut b.relations);
    batches.add(all.chunks, |b| &mut b.chunks);
    batches.add(all.communities, |b| &mut b.communities);
    batches.add(all.documents, |b| &mut b.documents);
    batches.cut();
    batches.out
}

/// Batches of at most `size` items, filled in order.
struct Batches {
    size: usize,
    out: Vec<Batch>,
    current: Batch,
}

impl Batches {
    /// Adds `items` to the list `list` picks in the current batch, cutting it when full.
    fn add<T>(&mut self, items: Vec<T>, list: impl Fn(&mut Batch) -> &mut Vec<T>) {
        for item in items {
            list(&mut self.current).push(item);
            if self.current.len() >= self.size {
                self.cut();
            }
        }
    }

    /// Ends the current batch, if it holds anything.
    fn cut(&mut self) {
        if !self.current.is_empty() {
            self.out.push(std::mem::take(&mut self.current));
        }
    }
}

/// Reads every table of the folder into one batch.
pub fn read_folder(dir: &Path) -> anyhow::Result<Batch> {
    if !dir.is_dir() {
        bail!(
            "{} is not a folder; give the GraphRAG output folder holding entities.parquet",
            dir.display()
        );
    }
    let mut batch = Batch::default();
    let entities = read_table(dir, "entities", true)?;
    let mut title_to_id = HashMap::new();
    for t in &entities {
        let (id, title) = (t.string("id")?, t.string("title")?);
        let (kind, desc) = (t.string_opt("type")?, t.string_opt("description")?);
        let units = t.list_opt("text_unit_ids")?;
        let (frequency, degree) = (t.int_opt("frequency")?, t.int_opt("degree")?);
        for i in 0..t.rows() {
            title_to_id.insert(title[i].clone(), id[i].clone());
            batch.entities.push(Entity {
                id: id[i].clone(),
                title: title[i].clone(),
                kind: kind.at(i),
                description: desc.at(i),
                text_unit_ids: units.at(i),
                frequency: frequency.at(i),
                degree: degree.at(i),
                embedding: None,
            });
        }
    }
    let endpoint = |title: &String| title_to_id.get(title).unwrap_or(title).clone();
    for t in read_table(dir, "relationships", false)? {
        let (id, source, target) = (t.string("id")?, t.string("source")?, t.string("target")?);
        let (weight, desc) = (t.float_opt("weight")?, t.string_opt("description")?);
        let units = t.list_opt("text_unit_ids")?;
        for i in 0..t.rows() {
            batch.relations.push(Relation {
                id: id[i].clone(),
                source: endpoint(&source[i]),
                target: endpoint(&target[i]),
                description: desc.at(i),
                weight: weight.at_or(i, 1.0),
                text_unit_ids: units.at(i),
            });
        }
    }
    for t in read_table(dir, "text_units", false)? {
        let (id, text, tokens) = (
            t.string("id")?,
            t.string_opt("text")?,
            t.int_opt("n_tokens")?,
        );
        let (doc, docs) = (t.string_opt("document_id")?, t.list_opt("document_ids")?);
        let ents = t.list_opt("entity_ids")?;
        for i in 0..t.rows() {
            // Older GraphRAG outputs name the document in a list.
            let document_id = match &doc.0 {
                Some(v) => v[i].clone(),
                None => docs.at(i).into_iter().next().unwrap_or_default(),
            };
            batch.chunks.push(Chunk {
                id: id[i].clone(),
                text: text.at(i),
                n_tokens: tokens.at(i),
                document_id,
                entity_ids: ents.at(i),
                embedding: None,
            });
        }
    }
    let mut reports: HashMap<i64, (String, String, String, f64)> = HashMap::new();
    for t in read_table(dir, "community_reports", false)? {
        let (community, title) = (t.int("community")?, t.string_opt("title")?);
        let (summary, full) = (t.string_opt("summary")?, t.string_opt("full_content")?);
        let rank = t.float_opt("rank")?;
        for (i, community) in community.into_iter().enumerate() {
            let report = (title.at(i), summary.at(i), full.at(i), rank.at(i));
            reports.insert(community, report);
        }
    }
    for t in read_table(dir, "communities", false)? {
        let (community, level) = (t.int("community")?, t.int_opt("level")?);
        let (parent, title) = (t.int_opt("parent")?, t.string_opt("title")?);
        let ents = t.list_opt("entity_ids")?;
        for i in 0..t.rows() {
            let (report_title, summary, full_content, rank) =
                reports.remove(&community[i]).unwrap_or_default();
            let parent = parent.0.as_ref().map(|v| v[i]).filter(|p| *p >= 0);
            batch.communities.push(Community {
                id: community[i].to_string(),
                level: level.at(i),
                parent: parent.map(|p| p.to_string()).unwrap_or_default(),
                title: if report_title.is_empty() {
                    title.at(i)
                } else {
                    report_title
                },
                entity_ids: ents.at(i),
                summary,
                full_content,
                rank,
            });
        }
    }
    for t in read_table(dir, "documents", false)? {
        let (id, title, text) = (
            t.string("id")?,
            t.string_opt("title")?,
            t.string_opt("text")?,
        );
        let units = t.list_opt("text_unit_ids")?;
        for (i, id) in id.into_iter().enumerate() {
            batch.documents.push(Document {
                id,
                title: title.at(i),
                text: text.at(i),
                text_unit_ids: units.at(i),
            });
        }
    }
    Ok(batch)
}

/// One record batch of a table, with typed column access by name.
/// A column a table may lack: then every row reads as the default value.
struct Column<T>(Option<Vec<T>>);

impl<T: Clone + Default> Column<T> {
    /// Row `i`'s value, or `T`'s default when the table has no such column.
    fn at(&self, i: usize) -> T {
        self.at_or(i, T::default())
    }

    /// Row `i`'s value, or `absent` when the table has no such column.
    fn at_or(&self, i: usize, absent: T) -> T {
        self.0.as_ref().map_or(absent, |v| v[i].clone())
    }
}

struct Table {
    name: String,
    batch: RecordBatch,
}

fn read_table(dir: &Path, name: &str, required: bool) -> anyhow::Result<Vec<Table>> {
    let path = dir.join(format!("{name}.parquet"));
    if !path.exists() {
        if required {
            bail!(
                "{} is missing; is {} a GraphRAG output folder?",
                path.display(),
                dir.display()
            );
        }
        return Ok(Vec::new());
    }
    let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable parquet file", path.display()))?
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        out.push(Table {
            name: name.to_string(),
            batch: batch.with_context(|| format!("reading {}", path.display()))?,
        });
    }
    Ok(out)
}

impl Table {
    fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    fn column(&self, name: &str) -> Option<&ArrayRef> {
        self.batch.column_by_name(name)
    }

    fn cast(&self, name: &str, to: &DataType) -> anyhow::Result<Option<ArrayRef>> {
        let Some(col) = self.column(name) else {
            return Ok(None);
        };
        let cast = arrow_cast::cast(col, to)
            .with_context(|| format!("{}.{name}: cannot read as {to}", self.name))?;
        Ok(Some(cast))
    }

    /// Column `name` cast to `to`, read as an `A` array: each value by `value`, a null as
    /// `null`. `None` when the table has no such column.
    fn values<A: arrow_array::Array + 'static, T: Clone>(
        &self,
        name: &str,
        to: DataType,
        null: T,
        value: impl Fn(&A, usize) -> T,
    ) -> anyhow::Result<Column<T>> {
        let Some(col) = self.cast(name, &to)? else {
            return Ok(Column(None));
        };
        let col = col
            .as_any()
            .downcast_ref::<A>()
            .with_context(|| format!("{}.{name}: not a {to} column", self.name))?;
        Ok(Column(Some(
            (0..col.len())
                .map(|i| {
                    if col.is_null(i) {
                        null.clone()
                    } else {
                        value(col, i)
                    }
                })
                .collect(),
        )))
    }

    /// A column the table must have.
    fn required<T>(&self, name: &str, column: Option<T>) -> anyhow::Result<T> {
        column.with_context(|| format!("{}.parquet has no column {name:?}", self.name))
    }

    fn string(&self, name: &str) -> anyhow::Result<Vec<String>> {
        self.required(name, self.string_opt(name)?.0)
    }

    fn string_opt(&self, name: &str) -> anyhow::Result<Column<String>> {
        self.values(
            name,
            DataType::Utf8,
            String::new(),
            |c: &arrow_array::StringArray, i| c.value(i).to_string(),
        )
    }

    fn int(&self, name: &str) -> anyhow::Result<Vec<i64>> {
        self.required(name, self.int_opt(name)?.0)
    }

    fn int_opt(&self, name: &str) -> anyhow::Result<Column<i64>> {
        self.values(
            name,
            DataType::Int64,
            0,
            |c: &arrow_array::Int64Array, i| c.value(i),
        )
    }

    fn float_opt(&self, name: &str) -> anyhow::Result<Column<f64>> {
        self.values(
            name,
            DataType::Float64,
            0.0,
            |c: &arrow_array::Float64Array, i| c.value(i),
        )
    }

    fn list_opt(&self, name: &str) -> anyhow::Result<Column<Vec<String>>> {
        let Some(col) = self.column(name) else {
            return Ok(Column(None));
        };
        let to = DataType::List(std::sync::Arc::new(arrow_schema::Field::new(
            "item",
            DataType::Utf8,
            true,
        )));
        let cast = arrow_cast::cast(col, &to)
            .with_context(|| format!("{}.{name}: not a list of strings", self.name))?;
        let list = cast
            .as_any()
            .downcast_ref::<arrow_array::ListArray>()
            .context("list column")?;
        let mut out = Vec::with_capacity(list.len());
        for i in 0..list.len() {
            if list.is_null(i) {
                out.push(Vec::new());
                continue;
            }
            let items = list.value(i);
            let items = items
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .context("list of utf8")?;
            out.push(
                (0..items.len())
                    .filter(|j| !items.is_null(*j))
                    .map(|j| items.value(j).to_string())
                    .collect(),
            );
        }
        Ok(Column(Some(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dulce_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/graphrag-operation-dulce");
        let b = read_folder(&dir).unwrap();
        assert_eq!(b.entities.len(), 39);
        assert_eq!(b.relations.len(), 107);
        assert_eq!(b.chunks.len(), 5);
        assert_eq!(b.communities.len(), 10);
        assert_eq!(b.documents.len(), 1);
        assert!(b.validate(0).is_empty(), "{:?}", b.validate(0));
        let ids: std::collections::HashSet<&str> =
            b.entities.iter().map(|e| e.id.as_str()).collect();
        let resolved = b
            .relations
            .iter()
            .filter(|r| ids.contains(r.source.as_str()) && ids.contains(r.target.as_str()))
            .count();
        // Two relationships of this index name a title that is no entity: they point at stubs.
        assert_eq!(resolved, 105, "relationship titles map to entity ids");
        assert!(
            b.communities.iter().any(|c| !c.full_content.is_empty()),
            "reports merged into communities"
        );
    }

    #[test]
    fn update_sends_the_documents_first_and_in_batches_of_their_own() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/graphrag-operation-dulce");
        let all = read_folder(&dir).unwrap();
        let total = all.len();
        let plain = chunks(all.clone(), 50, false);
        assert!(plain.last().unwrap().documents.len() == 1);
        assert!(plain[0].documents.is_empty());
        let update = chunks(all, 50, true);
        assert_eq!(update[0].documents.len(), 1);
        assert_eq!(update[0].len(), 1, "the documents go alone");
        assert!(update[1..].iter().all(|b| b.documents.is_empty()));
        assert_eq!(update.iter().map(Batch::len).sum::<usize>(), total);
        assert!(update.iter().all(|b| b.len() <= 50));
    }
}
