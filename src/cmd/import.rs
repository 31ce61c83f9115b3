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
//!
//! Placement (`--routing`, `--routing-level`): by default each entity's routing key is its
//! GraphRAG community, so that a community's entities share a shard and the traversals and
//! retrievals that stay in a community stay in one shard. [`assign_routing`] picks, for each
//! entity, the community at `--routing-level` that lists it (level 0, the default, is the
//! coarsest: the fewest, largest communities); an entity that level does not reach (its community
//! is not split that deep) takes its deepest community above it, as GraphRAG's own queries at a
//! community level do, and an entity in no community keeps no key (placed by id). The key is
//! `community:<number>`. A community larger than 1.5 × the folder's entities per shard (the
//! shard count is the cluster's, from `GET /cluster/shards`) and than `--min-split` entities
//! (default [`MIN_SPLIT`]: below that a shard's extra entities cost nothing worth the relations
//! a cut sends to other shards) would make its shard much larger than the others: it is split
//! into the fewest parts of at most that size, keyed
//! `community:<number>/<part>`, cut from its entities ordered by a breadth-first walk over the
//! relationships inside the community, so that related entities mostly stay together. The keys
//! depend only on the folder, the level and the shard count: importing the same folder again
//! moves nothing. Relations carry their ends' keys (`source_routing`, `target_routing`).
//! `--routing none` sends no keys: entities are placed by id (and entities an earlier import
//! keyed move back to their id's shard).

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

/// The shard count assumed when `GET /cluster/shards` does not say (`TORUA_SHARDS`' default).
const DEFAULT_SHARDS: u32 = 16;

/// A community larger than this many times the entities per shard is split (see the module doc),
/// as a fraction: 3/2.
const SPLIT_ABOVE: (usize, usize) = (3, 2);

/// Communities of at most this many entities are never split (`--min-split`).
pub const MIN_SPLIT: usize = 1000;

/// How the importer keys entities (`--routing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Routing {
    /// Each entity's GraphRAG community (at `--routing-level`) is its routing key.
    Community,
    /// No routing keys: entities are placed by id.
    #[value(name = "none")]
    ById,
}

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
    /// Routing keys: `community` keys each entity by its GraphRAG community, so that a
    /// community's entities share a shard (communities much larger than a shard's share are
    /// split); `none` places entities by id.
    #[arg(long, value_enum, default_value_t = Routing::Community)]
    pub routing: Routing,
    /// The community level whose communities key the entities: 0 is the coarsest (fewest,
    /// largest communities); an entity the level does not reach takes its deepest community
    /// above it.
    #[arg(long, default_value_t = 0)]
    pub routing_level: u32,
    /// Communities of at most this many entities are never split, however small the shards'
    /// share.
    #[arg(long, default_value_t = MIN_SPLIT as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_split: u64,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    match args.format {
        ImportFormat::Graphrag(a) => import(&a),
    }
}

fn import(args: &GraphragArgs) -> anyhow::Result<()> {
    let mut all = read_folder(&args.dir)?;
    let total = all.len();
    if total == 0 {
        bail!("{}: no GraphRAG items found", args.dir.display());
    }
    let shards = cluster_shards(&args.connect)?;
    let failed_before = failed_in(&shards);
    let placement = match args.routing {
        Routing::Community => {
            let count = shards["shards"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_SHARDS);
            let min_split = usize::try_from(args.min_split).unwrap_or(usize::MAX);
            assign_routing(&mut all, args.routing_level, count, min_split).line()
        }
        Routing::ById => "placed entities by id (--routing none)".to_string(),
    };
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
    println!("{placement}");
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

/// The cluster's `GET /cluster/shards` answer: its shard count and its copies' refused writes.
fn cluster_shards(c: &Connect) -> anyhow::Result<serde_json::Value> {
    c.call("GET", "/cluster/shards", None, Duration::from_secs(30))?
        .ok(&format!("GET {}", c.url("/cluster/shards")))
}

/// The writes the copies' databases refused so far, over every copy, in a `/cluster/shards`
/// answer (`failed_writes`; a copy that does not answer counts 0).
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

/// What [`assign_routing`] did, for the import's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The community level asked for.
    pub level: u32,
    /// The shard count the sizes were balanced for.
    pub shards: u32,
    /// The most entities one key may hold before its community is split.
    pub max_per_key: usize,
    /// Communities whose entities got keys (whole or split).
    pub communities: usize,
    /// Of those, the communities split.
    pub split: usize,
    /// The keys the split communities became.
    pub parts: usize,
    /// Entities in no community at or above the level: placed by id.
    pub unkeyed: usize,
}

impl Placement {
    /// The one-line summary the import prints.
    pub fn line(&self) -> String {
        format!(
            "placed entities by community (level {}): {} communities as routing keys, {} of them \
             split into {} keys of at most {} entities (1.5 × the entities per shard of {} shards, \
             at least --min-split); \
             {} entities in no community, placed by id",
            self.level,
            self.communities,
            self.split,
            self.parts,
            self.max_per_key,
            self.shards,
            self.unkeyed
        )
    }
}

/// Sets each entity's routing key to its community (see the module doc) and each relation's
/// `source_routing`/`target_routing` to its ends' keys, balancing for `shards` shards.
pub fn assign_routing(batch: &mut Batch, level: u32, shards: u32, min_split: usize) -> Placement {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for e in &batch.entities {
        let next = index.len();
        index.entry(e.id.as_str()).or_insert(next);
    }
    let n = index.len();
    // Each entity's community: the deepest at or above `level`, the first listed on a tie.
    let mut chosen: Vec<Option<(i64, usize)>> = vec![None; n];
    for (ci, c) in batch.communities.iter().enumerate() {
        if c.level > i64::from(level) {
            continue;
        }
        for id in &c.entity_ids {
            if let Some(&ei) = index.get(id.as_str()) {
                if chosen[ei].is_none_or(|(l, _)| c.level > l) {
                    chosen[ei] = Some((c.level, ci));
                }
            }
        }
    }
    // Each community's entities, in the order it lists them; `position` is an entity's place there.
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); batch.communities.len()];
    let mut position = vec![0usize; n];
    let mut listed = vec![false; n];
    for (ci, c) in batch.communities.iter().enumerate() {
        for id in &c.entity_ids {
            if let Some(&ei) = index.get(id.as_str()) {
                if chosen[ei].map(|(_, c)| c) == Some(ci) && !listed[ei] {
                    listed[ei] = true;
                    position[ei] = members[ci].len();
                    members[ci].push(ei);
                }
            }
        }
    }
    let shards = shards.max(1) as usize;
    let (num, den) = SPLIT_ABOVE;
    let max_per_key = (num * n).div_ceil(den * shards).max(min_split).max(1);
    let community_of = |ei: usize| chosen[ei].map(|(_, ci)| ci);
    // The relationships inside each community to split, as neighbours by position.
    let mut neighbours: Vec<Vec<usize>> = vec![Vec::new(); n];
    for r in &batch.relations {
        let (Some(&a), Some(&b)) = (index.get(r.source.as_str()), index.get(r.target.as_str()))
        else {
            continue;
        };
        match (community_of(a), community_of(b)) {
            (Some(ca), Some(cb)) if ca == cb && a != b && members[ca].len() > max_per_key => {
                neighbours[a].push(b);
                neighbours[b].push(a);
            }
            _ => {}
        }
    }
    let mut placement = Placement {
        level,
        shards: shards as u32,
        max_per_key,
        unkeyed: chosen.iter().filter(|c| c.is_none()).count(),
        ..Placement::default()
    };
    let mut key: Vec<Option<String>> = vec![None; n];
    for (ci, list) in members.iter().enumerate() {
        if list.is_empty() {
            continue;
        }
        placement.communities += 1;
        let name = format!("community:{}", batch.communities[ci].id);
        if list.len() <= max_per_key {
            for &ei in list {
                key[ei] = Some(name.clone());
            }
            continue;
        }
        let order = walk(list, &mut neighbours, &position);
        let parts = list.len().div_ceil(max_per_key);
        placement.split += 1;
        placement.parts += parts;
        let mut rest = order.as_slice();
        for part in 0..parts {
            // The first `len % parts` parts take one entity more.
            let size = list.len() / parts + usize::from(part < list.len() % parts);
            let (this, next) = rest.split_at(size);
            for &ei in this {
                key[ei] = Some(format!("{name}/{part}"));
            }
            rest = next;
        }
    }
    let key_of = |id: &str| index.get(id).and_then(|&ei| key[ei].clone());
    let entity_keys: Vec<Option<String>> = batch.entities.iter().map(|e| key_of(&e.id)).collect();
    let relation_keys: Vec<(Option<String>, Option<String>)> = (batch.relations.iter())
        .map(|r| (key_of(&r.source), key_of(&r.target)))
        .collect();
    for (e, key) in batch.entities.iter_mut().zip(entity_keys) {
        e.routing = key;
    }
    for (r, (source, target)) in batch.relations.iter_mut().zip(relation_keys) {
        r.source_routing = source;
        r.target_routing = target;
    }
    placement
}

/// The entities `list` (one community's, in its order) in breadth-first order over
/// `neighbours`: from each entity not reached yet, in list order, its neighbours by their
/// `position` in the list.
fn walk(list: &[usize], neighbours: &mut [Vec<usize>], position: &[usize]) -> Vec<usize> {
    let mut reached = vec![false; list.len()];
    let mut order = Vec::with_capacity(list.len());
    let mut queue = std::collections::VecDeque::new();
    for &start in list {
        if reached[position[start]] {
            continue;
        }
        reached[position[start]] = true;
        queue.push_back(start);
        while let Some(ei) = queue.pop_front() {
            order.push(ei);
            let next = &mut neighbours[ei];
            next.sort_unstable_by_key(|&b| position[b]);
            for &b in next.iter() {
                if !reached[position[b]] {
                    reached[position[b]] = true;
                    queue.push_back(b);
                }
            }
        }
    }
    order
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
                routing: None,
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
                source_routing: None,
                target_routing: None,
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

    fn entity(id: &str) -> Entity {
        Entity {
            id: id.into(),
            title: id.into(),
            frequency: 1,
            ..Entity::default()
        }
    }

    fn relation(source: &str, target: &str) -> Relation {
        Relation {
            id: format!("{source}-{target}"),
            source: source.into(),
            target: target.into(),
            description: String::new(),
            weight: 1.0,
            text_unit_ids: vec![],
            source_routing: None,
            target_routing: None,
        }
    }

    fn community(id: u32, level: i64, entities: &[&str]) -> Community {
        Community {
            id: id.to_string(),
            level,
            parent: String::new(),
            title: String::new(),
            entity_ids: entities.iter().map(|e| e.to_string()).collect(),
            summary: String::new(),
            full_content: String::new(),
            rank: 0.0,
        }
    }

    fn keys(b: &Batch) -> Vec<(&str, Option<&str>)> {
        (b.entities.iter())
            .map(|e| (e.id.as_str(), e.routing.as_deref()))
            .collect()
    }

    /// Entities a..f; community 0 (level 0) holds a..d and splits at level 1 into 10 (a, b);
    /// community 1 (level 0) holds e; f is in none.
    fn small() -> Batch {
        Batch {
            entities: ["a", "b", "c", "d", "e", "f"].map(entity).to_vec(),
            relations: vec![relation("a", "e"), relation("f", "stub")],
            communities: vec![
                community(0, 0, &["a", "b", "c", "d"]),
                community(1, 0, &["e"]),
                community(10, 1, &["a", "b"]),
            ],
            ..Batch::default()
        }
    }

    #[test]
    fn each_entity_is_keyed_by_its_community_at_the_level() {
        let mut b = small();
        let p = assign_routing(&mut b, 0, 1, 1);
        let c0 = Some("community:0");
        let want = [("a", c0), ("b", c0), ("c", c0), ("d", c0)];
        assert_eq!(keys(&b)[..4], want);
        assert_eq!(keys(&b)[4..], [("e", Some("community:1")), ("f", None)]);
        let (communities, split, unkeyed) = (p.communities, p.split, p.unkeyed);
        assert_eq!((communities, split, unkeyed), (2, 0, 1), "{p:?}");
        // Relations carry their ends' keys; a stub and an unkeyed entity have none.
        let ends = |r: &Relation| (r.source_routing.clone(), r.target_routing.clone());
        assert_eq!(
            ends(&b.relations[0]),
            (Some("community:0".into()), Some("community:1".into()))
        );
        assert_eq!(ends(&b.relations[1]), (None, None));
    }

    #[test]
    fn a_deeper_level_keeps_the_deepest_community_above_it_for_entities_it_does_not_reach() {
        let mut b = small();
        let p = assign_routing(&mut b, 1, 1, 1);
        let got = keys(&b);
        assert_eq!(got[0], ("a", Some("community:10")));
        assert_eq!(got[1], ("b", Some("community:10")));
        assert_eq!(got[2], ("c", Some("community:0")));
        assert_eq!(got[4], ("e", Some("community:1")));
        assert_eq!(got[5], ("f", None));
        assert_eq!(p.communities, 3, "{p:?}");
        // Level 5 is deeper than any: the same keys.
        let mut deeper = small();
        assign_routing(&mut deeper, 5, 1, 1);
        assert_eq!(keys(&deeper), got);
    }

    #[test]
    fn a_community_much_larger_than_a_shards_share_is_cut_along_its_relationships() {
        // Community 7 lists 0..12 interleaving two chains, 0-2-4-..-10 and 1-3-5-..-11, plus
        // 12 outsiders in community 8: 24 entities on 4 shards, at most 9 per key.
        let inside: Vec<String> = (0..12).map(|i| format!("x{i}")).collect();
        let outside: Vec<String> = (0..12).map(|i| format!("y{i}")).collect();
        let mut b = Batch {
            entities: inside.iter().chain(&outside).map(|id| entity(id)).collect(),
            relations: (0..10)
                .map(|i| relation(&inside[i], &inside[i + 2]))
                .collect(),
            communities: vec![
                community(7, 0, &inside.iter().map(String::as_str).collect::<Vec<_>>()),
                community(
                    8,
                    0,
                    &outside.iter().map(String::as_str).collect::<Vec<_>>(),
                ),
            ],
            ..Batch::default()
        };
        let p = assign_routing(&mut b, 0, 4, 1);
        assert_eq!(p.max_per_key, 9);
        assert_eq!((p.communities, p.split, p.parts), (2, 2, 4), "{p:?}");
        let key = |id: &str| {
            b.entities
                .iter()
                .find(|e| e.id == id)
                .unwrap()
                .routing
                .clone()
                .unwrap()
        };
        // Each chain is walked whole before the next: the even chain is the first part.
        for (i, id) in inside.iter().enumerate() {
            assert_eq!(key(id), format!("community:7/{}", i % 2), "{id}");
        }
        // No relationships: cut in list order, the first part one larger when uneven.
        assert_eq!(key("y5"), "community:8/0");
        assert_eq!(key("y6"), "community:8/1");
        // The same input gives the same keys.
        let again = {
            let mut c = b.clone();
            assign_routing(&mut c, 0, 4, 1);
            c
        };
        assert_eq!(keys(&again), keys(&b));
        // With few shards nothing is split.
        assert_eq!(assign_routing(&mut b, 0, 1, 1).split, 0);
    }

    #[test]
    fn the_dulce_communities_key_every_entity_and_the_two_largest_split_on_8_shards() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/graphrag-operation-dulce");
        let mut b = read_folder(&dir).unwrap();
        let p = assign_routing(&mut b, 0, 8, 1);
        // 39 entities on 8 shards: at most 8 per key; communities 0 (10) and 3 (9) split in two.
        assert_eq!(p.max_per_key, 8);
        let want = (p.communities, p.split, p.parts, p.unkeyed);
        assert_eq!(want, (7, 2, 4, 0), "{p:?}");
        let mut per_key: HashMap<&str, usize> = HashMap::new();
        for e in &b.entities {
            *per_key.entry(e.routing.as_deref().unwrap()).or_default() += 1;
        }
        assert_eq!(per_key.len(), 9, "{per_key:?}");
        assert!(per_key.values().all(|n| *n <= 8), "{per_key:?}");
        assert_eq!(per_key["community:0/0"], 5);
        assert_eq!(per_key["community:3/1"], 4);
        assert!(b.validate(0).is_empty(), "{:?}", b.validate(0));
        let keyed = |r: &Relation| r.source_routing.is_some() && r.target_routing.is_some();
        // Every relation between two entities carries both keys (two have a stub end).
        assert_eq!(b.relations.iter().filter(|r| keyed(r)).count(), 105);
        // By default no community this small is split.
        let mut whole = read_folder(&dir).unwrap();
        let p = assign_routing(&mut whole, 0, 8, MIN_SPLIT);
        assert_eq!(
            (p.communities, p.split, p.max_per_key),
            (7, 0, MIN_SPLIT),
            "{p:?}"
        );
    }
}
