//! The document lifecycle across shards: deleting a document with its text units and whatever
//! only they support ([`delete_document`]), and, when a document is ingested again with other
//! text units, removing the old ones the same way ([`replace_text_units`]).
//!
//! A text unit (chunk) lives in its own id's shard; the entities and relations citing it can be
//! anywhere, and a relation is stored in both endpoints' shards. The cascade runs in this order,
//! so that a failure anywhere leaves what a retry needs to find the rest:
//!
//! 1. read the document (its `text_unit_ids`) and, from every shard, the chunks naming it;
//! 2. read, from every shard, what cites those text units: entities citing nothing else
//!    (*emptied*: they go), other entities, relation copies (citing nothing else: they go),
//!    and the relation copies attached to emptied entities; then the communities holding
//!    emptied entities;
//! 3. write [`Prune::Relations`] to every shard holding such a relation copy or a stub of an
//!    emptied entity, then [`Prune::Communities`] to every shard holding such a community, then
//!    [`Prune::Entities`] to every shard holding such an entity: an emptied entity is deleted
//!    only after every copy of its relations elsewhere is gone (so nothing dangles) and every
//!    community has let go of it (so a retry, which no longer sees the entity, has nothing left
//!    to do there);
//! 4. delete the chunks, in their shards;
//! 5. delete the document, last.
//!
//! Until step 5 the document still lists its text units, and until step 4 the chunks still name
//! it, so a retry finds the same text units; every step is idempotent, so a retry redoes what
//! was done and finishes what was not. Until step 3 nothing is written: a delete that fails in
//! steps 1-2 changed nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::{route_write, WRITE_DEADLINE};
use crate::cluster::shard_map::ShardMap;
use crate::error::Error;
use crate::graph::model::{Batch, MAX_ID_BYTES};
use crate::graph::partition::{home_shard, shard_of};
use crate::node::context::NodeContext;
use crate::query::read::route_get_document;
use crate::query::scatter::{scatter, Cascade, Prefer};
use crate::storage::{
    CascadeRead, CascadeRows, Prune, ReadScope, RelationKey, TextUnitUse, WriteOp,
};

/// Most text units one delete or one ingest batch removes.
pub const MAX_TEXT_UNITS: usize = crate::graph::model::MAX_LIST;
/// Text units pruned per pass (each pass's writes carry them; passes run one after the other and
/// converge to what one pass over all of them would do).
const UNITS_PER_PASS: usize = 10_000;
/// Entity ids per write of a step (keeps each logged write far below the transport's limit).
const ENTITIES_PER_WRITE: usize = 5_000;
/// Time limit of each of the cascade's reads on a shard.
const READ_TIMEOUT_MS: u64 = 30_000;

/// What a cascade removed, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Removed {
    pub documents: usize,
    pub chunks: usize,
    pub entities: usize,
    /// Relations (each stored in both endpoints' shards, counted once).
    pub relations: usize,
}

/// What a cascade changed without removing it, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Updated {
    /// Entities that lost text units but cite others.
    pub entities: usize,
    /// Relations that lost text units but cite others.
    pub relations: usize,
    /// Communities that lost entities (their reports are now marked `stale`).
    pub communities: usize,
}

impl Removed {
    fn add(&mut self, o: Removed) {
        self.documents += o.documents;
        self.chunks += o.chunks;
        self.entities += o.entities;
        self.relations += o.relations;
    }
}

impl Updated {
    fn add(&mut self, o: Updated) {
        self.entities += o.entities;
        self.relations += o.relations;
        self.communities += o.communities;
    }
}

/// `DELETE /graph/documents/{id}`: what the delete removed and changed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DocumentDeleted {
    /// The document's id.
    pub document: String,
    /// Whether there was anything to delete: the document or chunks naming it. `false` (with
    /// zero counts) for a document already deleted: deleting again is harmless.
    pub found: bool,
    pub removed: Removed,
    pub updated: Updated,
    pub took_ms: u64,
}

/// What re-ingested documents' old text units took with them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Replaced {
    /// Documents whose stored text units included some their new version does not list.
    pub documents: usize,
    /// What the old text units took with them (`documents` stays 0: the documents are rewritten).
    pub removed: Removed,
    pub updated: Updated,
}

/// Deletes document `id`, its text units and whatever only they support (see the module's
/// steps). Idempotent; after a failure, send it again.
pub async fn delete_document(ctx: &Arc<NodeContext>, id: &str) -> Result<DocumentDeleted, Error> {
    let started = Instant::now();
    check_id(id)?;
    let map = current_map(ctx)?;
    // 1. The document and its text units.
    let document_shard = shard_of(id, map.shards);
    let document = route_get_document(ctx, document_shard, id, &ReadScope::strict())
        .await
        .map_err(|e| e.context(format!("reading document {id:?}")))?;
    let listed = document
        .as_ref()
        .map(|d| d.text_unit_ids.clone())
        .unwrap_or_default();
    if listed.len() > MAX_TEXT_UNITS {
        return Err(too_many(id, listed.len()));
    }
    let read = CascadeRead::ChunksOf {
        document_id: Some(id.to_string()),
        ids: listed.clone(),
    };
    let mut chunks = BTreeSet::new();
    for (_, rows) in read_every_shard(ctx, &map, read).await? {
        if let CascadeRows::Chunks(ids) = rows {
            chunks.extend(ids);
        }
    }
    let mut answer = DocumentDeleted {
        document: id.to_string(),
        found: document.is_some() || !chunks.is_empty(),
        removed: Removed::default(),
        updated: Updated::default(),
        took_ms: 0,
    };
    if !answer.found {
        answer.took_ms = started.elapsed().as_millis() as u64;
        return Ok(answer);
    }
    let units: BTreeSet<String> = listed.into_iter().chain(chunks.iter().cloned()).collect();
    if units.len() > MAX_TEXT_UNITS {
        return Err(too_many(id, units.len()));
    }
    // 2-3. What cites them.
    let tally = prune_all(ctx, &map, units.into_iter().collect()).await?;
    (answer.removed, answer.updated) = tally.counts();
    // 4. The chunks, in their shards.
    remove_chunks(ctx, &map, &chunks).await?;
    answer.removed.chunks = chunks.len();
    // 5. The document, last.
    if document.is_some() {
        write_each(
            ctx,
            vec![(
                document_shard,
                Prune::Remove {
                    chunks: vec![],
                    documents: vec![id.to_string()],
                },
            )],
        )
        .await?;
        answer.removed.documents = 1;
    }
    answer.took_ms = started.elapsed().as_millis() as u64;
    Ok(answer)
}

/// Before `batch` is written: for each of its documents already stored, removes the text units
/// the stored version lists and the new one does not (unless the batch writes them again), with
/// whatever only they support. Returns what that removed, and the documents whose old text units
/// could not be removed (with why): those must not be written, so that a retry finds the old
/// text units again.
pub async fn replace_text_units(
    ctx: &Arc<NodeContext>,
    batch: &Batch,
    shards: u32,
) -> (Replaced, Vec<(String, Error)>) {
    let mut replaced = Replaced::default();
    let mut failed = Vec::new();
    if batch.documents.is_empty() {
        return (replaced, failed);
    }
    // Text units the batch keeps: listed by one of its documents, or written by it.
    let kept: HashSet<&str> = batch
        .documents
        .iter()
        .flat_map(|d| d.text_unit_ids.iter())
        .chain(batch.chunks.iter().map(|c| &c.id))
        .map(String::as_str)
        .collect();
    let stored = read_documents(ctx, batch, shards).await;
    let mut old: BTreeSet<String> = BTreeSet::new();
    let mut replacing = Vec::new();
    for (id, found) in stored {
        match found {
            Err(e) => failed.push((id, e)),
            Ok(None) => {}
            Ok(Some(units)) => {
                let dropped: Vec<String> = units
                    .into_iter()
                    .filter(|u| !kept.contains(u.as_str()))
                    .collect();
                if !dropped.is_empty() {
                    old.extend(dropped);
                    replacing.push(id);
                }
            }
        }
    }
    if old.is_empty() {
        return (replaced, failed);
    }
    let fail_all = |failed: &mut Vec<(String, Error)>, replacing: Vec<String>, e: Error| {
        failed.extend(replacing.into_iter().map(|id| (id, e.clone())));
    };
    if old.len() > MAX_TEXT_UNITS {
        let e = Error::Invalid(format!(
            "the documents of this batch drop {} text units their stored versions list; at most {MAX_TEXT_UNITS} can be removed per batch: send fewer documents per batch",
            old.len()
        ));
        fail_all(&mut failed, replacing, e);
        return (replaced, failed);
    }
    let map = match current_map(ctx) {
        Ok(m) => m,
        Err(e) => {
            fail_all(&mut failed, replacing, e);
            return (replaced, failed);
        }
    };
    let units: Vec<String> = old.iter().cloned().collect();
    let result = async {
        let (removed, updated) = prune_all(ctx, &map, units.clone()).await?.counts();
        // The old chunks themselves, in their shards (the documents are rewritten by the batch).
        let chunks = count_chunks(ctx, &map, &units).await?;
        remove_chunks(ctx, &map, &units).await?;
        Ok::<_, Error>((removed, updated, chunks))
    }
    .await;
    match result {
        Ok((mut removed, updated, chunks)) => {
            removed.chunks = chunks;
            replaced.documents = replacing.len();
            replaced.removed.add(removed);
            replaced.updated.add(updated);
        }
        Err(e) => fail_all(
            &mut failed,
            replacing,
            e.context("removing the old text units of a re-ingested document"),
        ),
    }
    (replaced, failed)
}

/// Point reads of the batch's documents in flight at once.
const READS_AT_ONCE: usize = 32;

/// The stored `text_unit_ids` of the batch's documents (`None`: not stored), read
/// [`READS_AT_ONCE`] at a time.
async fn read_documents(
    ctx: &Arc<NodeContext>,
    batch: &Batch,
    shards: u32,
) -> Vec<(String, Result<Option<Vec<String>>, Error>)> {
    let mut ids: Vec<String> = batch.documents.iter().map(|d| d.id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::with_capacity(ids.len());
    for group in ids.chunks(READS_AT_ONCE) {
        let mut tasks = tokio::task::JoinSet::new();
        for id in group {
            let (ctx, id) = (ctx.clone(), id.clone());
            tasks.spawn(async move {
                let found =
                    route_get_document(&ctx, shard_of(&id, shards), &id, &ReadScope::strict())
                        .await
                        .map(|d| d.map(|d| d.text_unit_ids));
                (id, found)
            });
        }
        let mut answered = HashSet::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(read) = done {
                answered.insert(read.0.clone());
                out.push(read);
            }
        }
        for id in group.iter().filter(|id| !answered.contains(*id)) {
            let e = Error::Internal(format!("reading the stored document {id:?} failed"));
            out.push((id.clone(), Err(e)));
        }
    }
    out
}

/// How many of `ids` are stored chunks.
async fn count_chunks(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    ids: &[String],
) -> Result<usize, Error> {
    let read = CascadeRead::ChunksOf {
        document_id: None,
        ids: ids.to_vec(),
    };
    let mut found = BTreeSet::new();
    for (_, rows) in read_every_shard(ctx, map, read).await? {
        if let CascadeRows::Chunks(ids) = rows {
            found.extend(ids);
        }
    }
    Ok(found.len())
}

/// What the passes of a cascade found and removed.
#[derive(Default)]
struct Tally {
    /// Entities deleted.
    emptied: BTreeSet<String>,
    /// Entities that lost text units.
    pruned: BTreeSet<String>,
    /// Relations deleted.
    gone: BTreeSet<RelationKey>,
    /// Relations that lost text units.
    cited: BTreeSet<RelationKey>,
    /// Communities that lost entities.
    communities: BTreeSet<String>,
}

impl Tally {
    /// Counts by kind; an item pruned in one pass and deleted in a later one counts as deleted.
    fn counts(&self) -> (Removed, Updated) {
        (
            Removed {
                documents: 0,
                chunks: 0,
                entities: self.emptied.len(),
                relations: self.gone.len(),
            },
            Updated {
                entities: self.pruned.difference(&self.emptied).count(),
                relations: self.cited.difference(&self.gone).count(),
                communities: self.communities.len(),
            },
        )
    }
}

/// Steps 2 and 3 for `units`, [`UNITS_PER_PASS`] at a time.
async fn prune_all(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    units: Vec<String>,
) -> Result<Tally, Error> {
    let mut tally = Tally::default();
    for part in units.chunks(UNITS_PER_PASS) {
        prune(ctx, map, part.to_vec(), &mut tally).await?;
    }
    Ok(tally)
}

/// Steps 2 and 3: finds what cites `units` and removes them from it, in every shard.
async fn prune(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    units: Vec<String>,
    tally: &mut Tally,
) -> Result<(), Error> {
    let shards = map.shards;
    let uses: Vec<(u32, TextUnitUse)> = read_every_shard(
        ctx,
        map,
        CascadeRead::UseOf {
            text_unit_ids: units.clone(),
        },
    )
    .await?
    .into_iter()
    .filter_map(|(shard, rows)| match rows {
        CascadeRows::Use(u) => Some((shard, u)),
        _ => None,
    })
    .collect();
    let mut emptied: BTreeSet<String> = BTreeSet::new();
    let mut relation_shards: BTreeSet<u32> = BTreeSet::new();
    let mut entity_shards: BTreeSet<u32> = BTreeSet::new();
    for (shard, u) in uses {
        if !u.emptied_entities.is_empty() || !u.pruned_entities.is_empty() {
            entity_shards.insert(shard);
        }
        emptied.extend(u.emptied_entities);
        tally.pruned.extend(u.pruned_entities);
        for (key, only) in u.relations {
            relation_shards.insert(shard);
            if only {
                tally.gone.insert(key);
            } else {
                tally.cited.insert(key);
            }
        }
        let routed: HashMap<String, String> = u.routed_ends.into_iter().collect();
        for key in u.relations_of_emptied {
            // Both copies: the emptied entity's shard and the far end's, where it is a stub.
            for end in [&key.1, &key.2] {
                let routing = routed.get(end).map(String::as_str);
                relation_shards.insert(home_shard(end, routing, shards));
            }
            tally.gone.insert(key);
        }
    }
    let emptied: Vec<String> = emptied.into_iter().collect();
    let mut community_shards: BTreeSet<u32> = BTreeSet::new();
    if !emptied.is_empty() {
        let read = CascadeRead::CommunitiesOf {
            entity_ids: emptied.clone(),
        };
        for (shard, rows) in read_every_shard(ctx, map, read).await? {
            if let CascadeRows::Communities(ids) = rows {
                if !ids.is_empty() {
                    community_shards.insert(shard);
                }
                tally.communities.extend(ids);
            }
        }
    }
    tally.emptied.extend(emptied.iter().cloned());
    // Each step to its shards, every entity list cut into writes of at most ENTITIES_PER_WRITE
    // (each write carries all of `units`; applying them twice is harmless).
    let parts: Vec<Vec<String>> = if emptied.is_empty() {
        vec![vec![]]
    } else {
        emptied
            .chunks(ENTITIES_PER_WRITE)
            .map(<[String]>::to_vec)
            .collect()
    };
    let step = |shards: &BTreeSet<u32>, make: &dyn Fn(Vec<String>) -> Prune| -> Vec<(u32, Prune)> {
        shards
            .iter()
            .flat_map(|&shard| parts.iter().map(move |part| (shard, make(part.clone()))))
            .collect()
    };
    write_each(
        ctx,
        step(&relation_shards, &|entities: Vec<String>| {
            Prune::Relations {
                text_unit_ids: units.clone(),
                entities,
            }
        }),
    )
    .await?;
    if !emptied.is_empty() {
        write_each(
            ctx,
            step(&community_shards, &|entities: Vec<String>| {
                Prune::Communities { entities }
            }),
        )
        .await?;
    }
    write_each(
        ctx,
        step(&entity_shards, &|entities: Vec<String>| Prune::Entities {
            text_unit_ids: units.clone(),
            entities,
        }),
    )
    .await
}

/// Runs `read` on one in-sync copy of every shard; fails (nothing is written by a read) when a
/// shard has no copy that answers, since the cascade must see everything.
async fn read_every_shard(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    read: CascadeRead,
) -> Result<Vec<(u32, CascadeRows)>, Error> {
    let shards: Vec<u32> = (0..map.shards).collect();
    let read = Cascade {
        read,
        timeout_ms: READ_TIMEOUT_MS,
    };
    let (answers, report, invalid) = scatter(
        ctx,
        map,
        &shards,
        read,
        Prefer::Primary,
        &ReadScope::strict(),
    )
    .await;
    if let Some(reason) = invalid {
        return Err(Error::Internal(format!(
            "a shard refused the document cascade's read: {reason}"
        )));
    }
    if report.failed > 0 {
        return Err(Error::Unavailable(format!(
            "{} of {} shards could not be read ({}); retry when every shard has a live copy",
            report.failed,
            report.total,
            report.failures_text(3)
        )));
    }
    Ok(answers.into_iter().map(|a| (a.shard, a.rows)).collect())
}

/// Deletes the text units `chunks`, each in its own shard.
async fn remove_chunks<'a>(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    chunks: impl IntoIterator<Item = &'a String>,
) -> Result<(), Error> {
    let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for c in chunks {
        by_shard
            .entry(shard_of(c, map.shards))
            .or_default()
            .push(c.clone());
    }
    let writes = by_shard
        .into_iter()
        .map(|(shard, chunks)| {
            (
                shard,
                Prune::Remove {
                    chunks,
                    documents: vec![],
                },
            )
        })
        .collect();
    write_each(ctx, writes).await
}

/// Writes each `(shard, step)` through the shard's primary, in parallel; waits for all of them
/// and returns the first failure.
async fn write_each(ctx: &Arc<NodeContext>, writes: Vec<(u32, Prune)>) -> Result<(), Error> {
    crate::node::failpoints::pause(crate::node::failpoints::DOCUMENT_CASCADE_STEP).await;
    let deadline = Instant::now() + WRITE_DEADLINE;
    let mut tasks = tokio::task::JoinSet::new();
    for (shard, step) in writes {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            route_write(&ctx, shard, &WriteOp::Prune(step), deadline)
                .await
                .map_err(|e| e.context(format!("shard {shard}")))
        });
    }
    let mut first = None;
    while let Some(done) = tasks.join_next().await {
        let result =
            done.unwrap_or_else(|e| Err(Error::Internal(format!("a write task failed: {e}"))));
        if let Err(e) = result {
            first.get_or_insert(e);
        }
    }
    match first {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

fn current_map(ctx: &NodeContext) -> Result<ShardMap, Error> {
    ctx.shard_map.get().ok_or_else(|| {
        Error::Unavailable("no shard map yet: the cluster is still forming; retry".into())
    })
}

fn check_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::Invalid(
            "give the id of the document to delete".into(),
        ));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::Invalid(format!(
            "a document id is at most {MAX_ID_BYTES} bytes; this one has {}",
            id.len()
        )));
    }
    Ok(())
}

fn too_many(id: &str, n: usize) -> Error {
    Error::Invalid(format!(
        "document {id:?} has {n} text units; at most {MAX_TEXT_UNITS} can be removed at once: delete chunks of it first (re-ingest it with fewer text units), then the document"
    ))
}
