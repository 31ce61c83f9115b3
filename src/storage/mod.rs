//! Storage: the shard copies this node holds, one embedded graph database file each, behind a
//! small interface (open, write with a sequence number, read an entity, typed retrieval reads
//! ([`retrieval`]), the document cascade's reads and steps ([`cascade`]), stats) so the engine can change (e.g. to LadybugDB) without touching the
//! rest. The engine's query language and table names stay here: the only Cypher that comes in
//! from outside is a user's own query. The Kuzu implementation is in [`kuzu_shard`].
//!
//! Files: `<TORUA_DATA_DIR>/shards/shard-<n>.kz` (+ Kuzu's `.wal`) and the copy's write log
//! `shard-<n>.log.<first seq>` ([`shard_log`]). Memory: the node's budget
//! (`TORUA_MEMORY_MB`) is split between the copies it holds, never Kuzu's defaults (80 % of RAM
//! and every core per database).

pub mod cascade;
pub mod cypher;
mod error;
pub mod freshness;
mod kuzu_apply;
mod kuzu_cascade;
mod kuzu_index;
pub mod kuzu_read;
mod kuzu_readers;
mod kuzu_retrieval;
pub mod kuzu_shard;
mod kuzu_stage;
pub mod kuzu_values;
mod pending_items;
pub mod retrieval;
pub mod shard_log;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::graph::model::{Batch, Entity};
pub use cascade::{CascadeRead, CascadeRows, Prune, RelationKey, TextUnitUse};
pub use error::Error;
pub use freshness::{Freshness, Lag, ReadScope};
pub use kuzu_read::{
    Direction, Edge, EntitySummary, QueryFailure, RelationFilter, Rows, ShardQuery,
};
pub use kuzu_shard::{ApplierTiming, KuzuShard};
pub use retrieval::{
    ChunkItem, CommunityReport, EntityItem, ItemKind, RetrievalRead, RetrievalRows, RetrievedItem,
    ScoredItem, TextIndex, VectorHit,
};

/// What one traversal step found in one shard copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub entities: Vec<EntitySummary>,
    pub edges: Vec<Edge>,
    /// Ids asked for that live in another shard (this copy holds their pointer), with their
    /// routing keys: they are neither summarised nor expanded here.
    pub moved: Vec<(String, String)>,
}

/// How a copy holds an entity id (see [`KuzuShard::placements`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub id: String,
    /// Held as a stub: a relation's far end, or a pointer to where the entity lives.
    pub stub: bool,
    /// The routing key stored with it.
    pub routing: Option<String>,
}

/// A write to one shard copy; ordered by the shard's sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    Upsert(Batch),
    /// Delete an entity (in its own shard) with its relations.
    DeleteEntity(String),
    /// In another shard: delete the stub of this entity and the relation copies attached to it.
    DeleteRelationsOf(String),
    /// One step of removing text units (a document's) and what only they support.
    Prune(Prune),
    /// Sets `property` of these entities; ids this copy holds only as stubs, or not at all, are
    /// left alone. Graph algorithms wrote their results so before they staged them
    /// ([`WriteOp::Stage`]); kept to apply such writes from older logs.
    SetProperty {
        property: EntityProperty,
        values: Vec<(String, PropertyValue)>,
    },
    /// In the shard of each entity's id, when its routing key places it in another shard: the
    /// entity's pointer (a stub carrying the key), by which reads by id find it. `(id, routing)`.
    /// An entity this copy owns becomes a pointer (it moved).
    Point(Vec<(String, String)>),
    /// Stages a graph algorithm's results under `write` (one task's write-back,
    /// `<task>/<nonce>`): kept aside in the copy, invisible to reads, until the cluster decides
    /// to publish or discard them (`query::algorithms::publish`).
    Stage {
        write: String,
        property: EntityProperty,
        values: Vec<(String, PropertyValue)>,
    },
    /// Sets what `write` staged as entity properties (ids this copy holds only as stubs, or not
    /// at all, are left alone) and forgets it. Nothing staged: nothing changes.
    Publish {
        write: String,
    },
    /// Forgets what `write` staged.
    Discard {
        write: String,
    },
}

impl WriteOp {
    /// Whether the write stores a routing key (an entity's, a relation end's, or a pointer).
    pub fn carries_routing(&self) -> bool {
        match self {
            WriteOp::Upsert(b) => {
                b.entities.iter().any(|e| e.routing.is_some())
                    || (b.relations.iter())
                        .any(|r| r.source_routing.is_some() || r.target_routing.is_some())
            }
            WriteOp::Point(_) => true,
            _ => false,
        }
    }

    /// Whether the write inserts or overwrites items (rounds fold these together) rather than
    /// deleting or rewriting what is there.
    pub fn is_insert(&self) -> bool {
        matches!(self, WriteOp::Upsert(_) | WriteOp::Point(_))
    }
}

/// An entity property graph algorithms write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntityProperty {
    Degree,
    PageRank,
    /// The weakly connected component (named by one of its entities).
    Component,
    /// The Louvain community (named by one of its entities).
    Community,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PropertyValue {
    Int(i64),
    Float(f64),
    Text(String),
}

/// One shard copy's part of the whole graph, as a graph algorithm reads it: every entity row the
/// copy holds (its own entities and the stubs of its relations' far ends), and every relation
/// held, as positions in that list. Ids travel once per entity, not once per relation end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphPart {
    pub entities: Vec<GraphEntity>,
    /// `(source, target)`: positions in `entities`.
    pub relations: Vec<(u32, u32)>,
}

/// An entity row as a graph algorithm needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphEntity {
    pub id: String,
    /// A stub: a far end that may live in another shard.
    pub stub: bool,
    /// The entity's routing key: the row's own, else one a relation names for it.
    pub routing: Option<String>,
}

impl GraphEntity {
    /// The shard this entity lives in, of `shards`.
    pub fn home(&self, shards: u32) -> u32 {
        crate::graph::partition::home_shard(&self.id, self.routing.as_deref(), shards)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RelationRecord {
    pub id: String,
    pub source: String,
    pub target: String,
    pub description: String,
    pub weight: f64,
    pub text_unit_ids: Vec<String>,
    /// The routing keys of routed endpoints.
    #[schema(required = true)]
    pub source_routing: Option<String>,
    #[schema(required = true)]
    pub target_routing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRecord {
    pub entity: Entity,
    pub relations: Vec<RelationRecord>,
}

/// What a copy holds, counted by the applier after each round (so that stats never hold a read
/// transaction open against the next commit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub entities: u64,
    pub stubs: u64,
    pub relations: u64,
    pub chunks: u64,
    pub communities: u64,
    pub documents: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    pub counts: Counts,
    /// Database and log files.
    pub size_bytes: u64,
    /// Highest sequence number applied to the database (visible to reads).
    pub applied_seq: u64,
    /// Highest sequence number in the copy's log (durable, acknowledged).
    pub logged_seq: u64,
    /// Logged writes waiting to be applied.
    pub pending_writes: u64,
    /// Logged writes the database refused (should stay 0; see the node's log).
    pub failed_writes: u64,
}

/// How the applier inserts new rows (`TORUA_INSERT_MODE`: `auto`, `create` or `copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertMode {
    /// `create` when shards have one copy (`TORUA_REPLICAS=1`), else `copy`.
    Auto,
    /// `UNWIND … CREATE`: in Kuzu's write-ahead log, so a copy killed with kill -9 keeps every
    /// write it applied, even when it is a shard's only copy.
    Create,
    /// Kuzu's bulk `COPY`: ingest ~2.5x faster, but Kuzu 0.11 does not log COPY in its WAL and a
    /// copy killed during the commit can come back damaged. torua then rebuilds it from another
    /// in-sync copy, so this mode keeps acknowledged writes only with TORUA_REPLICAS >= 2 and
    /// not when every copy of a shard is killed at once.
    Copy,
}

impl std::str::FromStr for InsertMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<InsertMode, Error> {
        match s {
            "auto" => Ok(InsertMode::Auto),
            "create" => Ok(InsertMode::Create),
            "copy" => Ok(InsertMode::Copy),
            other => Err(Error::Invalid(format!(
                "unknown insert mode {other:?}: use auto, create or copy"
            ))),
        }
    }
}

impl std::fmt::Display for InsertMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InsertMode::Auto => "auto",
            InsertMode::Create => "create",
            InsertMode::Copy => "copy",
        })
    }
}

impl InsertMode {
    /// `Auto` decided by the number of copies per shard.
    pub fn resolve(self, replicas: u32) -> InsertMode {
        match self {
            InsertMode::Auto if replicas <= 1 => InsertMode::Create,
            InsertMode::Auto => InsertMode::Copy,
            other => other,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub insert_mode: InsertMode,
    pub buffer_pool_bytes: u64,
    pub max_db_size: u64,
    pub threads: u64,
    pub embedding_dim: usize,
    /// Logged-but-unapplied bytes at which writes get "busy" (backpressure).
    pub pending_bytes: usize,
}

/// Smallest buffer pool a database gets, whatever the budget.
const MIN_POOL: u64 = 64 << 20;

impl StoreConfig {
    /// Splits `memory_mb` between `copies` databases.
    pub fn for_budget(
        memory_mb: u64,
        copies: usize,
        max_db_gb: u64,
        embedding_dim: usize,
    ) -> StoreConfig {
        let per = (memory_mb << 20) / copies.max(1) as u64;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1)
            .min(2);
        StoreConfig {
            insert_mode: InsertMode::Create,
            buffer_pool_bytes: per.max(MIN_POOL),
            max_db_size: (max_db_gb.max(1) << 30).next_power_of_two(),
            threads,
            embedding_dim,
            // A quarter of the copy's share of memory, within [16, 256] MiB.
            pending_bytes: ((per / 4) as usize).clamp(16 << 20, 256 << 20),
        }
    }
}

/// Limits how many copies apply a round at the same time. Sixteen appliers fighting over two
/// cores each took ~10x longer per round; queued writes wait instead, so rounds grow and Kuzu's
/// per-commit cost is paid less often.
pub struct ApplyGate {
    running: Mutex<usize>,
    freed: std::sync::Condvar,
    limit: usize,
}

impl ApplyGate {
    pub fn new(limit: usize) -> ApplyGate {
        ApplyGate {
            running: Mutex::new(0),
            freed: std::sync::Condvar::new(),
            limit: limit.max(1),
        }
    }

    /// Blocks until a slot is free; the slot is held until the guard drops.
    pub fn enter(&self) -> ApplySlot<'_> {
        let mut running = self.running.lock().expect("gate lock");
        while *running >= self.limit {
            running = self.freed.wait(running).expect("gate lock");
        }
        *running += 1;
        ApplySlot(self)
    }
}

pub struct ApplySlot<'a>(&'a ApplyGate);

impl Drop for ApplySlot<'_> {
    fn drop(&mut self) {
        *self.0.running.lock().expect("gate lock") -= 1;
        self.0.freed.notify_one();
    }
}

/// The shard copies on this node.
pub struct Storage {
    dir: PathBuf,
    memory_mb: u64,
    max_db_gb: u64,
    embedding_dim: usize,
    insert_mode: InsertMode,
    /// Expected number of copies (from the shard map), to size buffer pools.
    expected_copies: Mutex<usize>,
    /// One cell per shard, filled once its copy is open. The map's lock is only held to find the
    /// cell: opening takes a while (and async callers of `get` must never wait for it).
    open: Mutex<BTreeMap<u32, Arc<tokio::sync::OnceCell<Arc<KuzuShard>>>>>,
    gate: Arc<ApplyGate>,
    /// Shards whose copy is being removed or replaced: not opened meanwhile.
    busy: Mutex<std::collections::BTreeSet<u32>>,
    /// Per shard: held while its copy is opened, removed or replaced.
    life: Mutex<BTreeMap<u32, Arc<tokio::sync::Mutex<()>>>>,
}

impl Storage {
    pub fn new(
        data_dir: &Path,
        memory_mb: u64,
        max_db_gb: u64,
        embedding_dim: usize,
        insert_mode: InsertMode,
    ) -> anyhow::Result<Storage> {
        let dir = data_dir.join("shards");
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        Ok(Storage {
            dir,
            memory_mb,
            max_db_gb,
            embedding_dim,
            insert_mode,
            expected_copies: Mutex::new(1),
            open: Mutex::new(BTreeMap::new()),
            gate: Arc::new(ApplyGate::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            busy: Mutex::new(Default::default()),
            life: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    fn path(&self, shard: u32) -> PathBuf {
        self.dir.join(format!("shard-{shard}.kz"))
    }

    /// Whether the copy of `shard` is being removed or rebuilt right now (opening it waits until
    /// that is done).
    pub fn is_busy(&self, shard: u32) -> bool {
        self.busy.lock().expect("storage lock").contains(&shard)
    }

    /// Shards with a database file on disk (what this node holds, across restarts).
    pub fn on_disk(&self) -> Vec<u32> {
        self.shards_named(|name| {
            name.strip_prefix("shard-")?
                .strip_suffix(".kz")?
                .parse()
                .ok()
        })
    }

    /// Shards with any file here (a database, or log segments left by an interrupted open).
    pub fn with_files(&self) -> Vec<u32> {
        self.shards_named(|name| {
            let rest = name.strip_prefix("shard-")?;
            rest[..rest.find('.')?].parse().ok()
        })
    }

    /// The shards of the files in this directory whose names `shard` reads, sorted, once each.
    fn shards_named(&self, shard: impl Fn(&str) -> Option<u32>) -> Vec<u32> {
        let mut shards: Vec<u32> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| shard(&e.file_name().to_string_lossy()))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        shards
    }

    pub fn set_expected_copies(&self, copies: usize) {
        *self.expected_copies.lock().expect("storage lock") = copies.max(1);
    }

    /// The longest lag among the last rounds of this node's open copies (see
    /// [`ApplierTiming::last_round_lag`]): the copies share the node's apply slots, so one copy's
    /// next round waits about as long as the others' did.
    pub fn slowest_round_lag(&self) -> std::time::Duration {
        let copies: Vec<Arc<KuzuShard>> = (self.open.lock().expect("storage lock").values())
            .filter_map(|cell| cell.get().cloned())
            .collect();
        (copies.iter())
            .map(|c| c.applier_timing().last_round_lag)
            .max()
            .unwrap_or_default()
    }

    /// The open copy of `shard`, if this node has opened it.
    pub fn get(&self, shard: u32) -> Option<Arc<KuzuShard>> {
        let cell = self
            .open
            .lock()
            .expect("storage lock")
            .get(&shard)
            .cloned()?;
        cell.get().cloned()
    }

    fn cell(&self, shard: u32) -> Arc<tokio::sync::OnceCell<Arc<KuzuShard>>> {
        self.open
            .lock()
            .expect("storage lock")
            .entry(shard)
            .or_default()
            .clone()
    }

    /// Opens (creating if needed) the copy of `shard`. Blocking: call from a blocking context.
    fn open_now(&self, shard: u32) -> Result<Arc<KuzuShard>, Error> {
        let copies = *self.expected_copies.lock().expect("storage lock");
        let config = StoreConfig {
            insert_mode: self.insert_mode,
            ..StoreConfig::for_budget(self.memory_mb, copies, self.max_db_gb, self.embedding_dim)
        };
        let store = Arc::new(KuzuShard::open(
            &self.path(shard),
            shard,
            &config,
            self.gate.clone(),
        )?);
        tracing::info!(
            shard,
            pool_mb = config.buffer_pool_bytes >> 20,
            "opened shard copy"
        );
        Ok(store)
    }

    /// Opens `shard` off the async runtime (once; concurrent callers wait for the same open).
    ///
    /// The open runs in its own task, so a caller that gives up (a peer request cancelled by its
    /// sender's timeout) does not abandon it half-way: the blocking open would go on without the
    /// per-shard lock, and the next caller would open a second database on the same files (seen
    /// under CPU load: "not closed cleanly" on a healthy copy, then unreadable shadow files).
    pub async fn open(self: &Arc<Self>, shard: u32) -> Result<Arc<KuzuShard>, Error> {
        if let Some(store) = self.cell(shard).get() {
            return Ok(store.clone());
        }
        let me = self.clone();
        run_to_end(format!("opening shard {shard}"), async move {
            me.open_uncancelled(shard).await
        })
        .await
    }

    async fn open_uncancelled(self: &Arc<Self>, shard: u32) -> Result<Arc<KuzuShard>, Error> {
        // Opening, removing and replacing a copy exclude each other: a removal must not delete
        // files under an open in progress (two databases on one file, or a log left behind).
        let life = self.life_lock(shard);
        let _life = life.lock().await;
        if self.busy.lock().expect("storage lock").contains(&shard) {
            return Err(Error::Closing(format!(
                "this node's copy of shard {shard} is being removed or rebuilt; retry"
            )));
        }
        let cell = self.cell(shard);
        let me = self.clone();
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || me.open_now(shard))
                .await
                .map_err(|e| Error::Engine(format!("open task failed: {e}")))?
        })
        .await
        .cloned()
    }

    /// Closes every open copy (at shutdown): each applies what it logged and marks its database
    /// closed cleanly, so the next start trusts it. Copies still in use are left to the exit.
    pub async fn close_all(self: &Arc<Self>) {
        let cells: Vec<_> = std::mem::take(&mut *self.open.lock().expect("storage lock"))
            .into_values()
            .collect();
        let stores: Vec<Arc<KuzuShard>> =
            cells.into_iter().filter_map(|c| c.get().cloned()).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for store in stores {
                match Arc::try_unwrap(store) {
                    Ok(store) => drop(store),
                    Err(_) => tracing::debug!("a shard copy is still in use at shutdown"),
                }
            }
        })
        .await;
    }

    fn life_lock(&self, shard: u32) -> Arc<tokio::sync::Mutex<()>> {
        self.life
            .lock()
            .expect("storage lock")
            .entry(shard)
            .or_default()
            .clone()
    }
}

/// Longest wait for the users of a copy to let go of it before it is closed.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Storage {
    /// Where snapshots for other nodes and incoming copies are written (same file system as the
    /// shards, so an incoming copy is renamed into place).
    pub fn transfer_dir(&self) -> PathBuf {
        self.dir.join("transfer")
    }

    /// Closes this node's copy of `shard` (waiting for its users, up to `CLOSE_WAIT`) and deletes
    /// its files: the map no longer assigns it here, or it is about to be replaced.
    /// Runs in its own task for the reason given at [`Storage::open`].
    pub async fn remove(self: &Arc<Self>, shard: u32) -> Result<(), Error> {
        let me = self.clone();
        run_to_end(format!("removing shard {shard}"), async move {
            me.remove_uncancelled(shard).await
        })
        .await
    }

    async fn remove_uncancelled(self: &Arc<Self>, shard: u32) -> Result<(), Error> {
        self.with_copy_held(shard, self.close_and_delete(shard))
            .await
    }

    /// Runs `work` (closing, deleting or replacing the copy's files) with the copy marked busy
    /// and its life lock held: opens wait for it, and a second removal or install is refused.
    async fn with_copy_held<T>(
        self: &Arc<Self>,
        shard: u32,
        work: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        if !self.busy.lock().expect("storage lock").insert(shard) {
            return Err(Error::Closing(format!(
                "shard {shard} is already being removed or rebuilt"
            )));
        }
        let life = self.life_lock(shard);
        let result = {
            let _life = life.lock().await;
            work.await
        };
        self.busy.lock().expect("storage lock").remove(&shard);
        result
    }

    async fn close_and_delete(self: &Arc<Self>, shard: u32) -> Result<(), Error> {
        let cell = self.open.lock().expect("storage lock").remove(&shard);
        if let Some(store) = cell.and_then(|c| c.get().cloned()) {
            let deadline = std::time::Instant::now() + CLOSE_WAIT;
            let mut warned = false;
            while Arc::strong_count(&store) > 1 {
                if !warned && deadline - std::time::Instant::now() < CLOSE_WAIT / 2 {
                    warned = true;
                    tracing::info!(
                        shard,
                        users = Arc::strong_count(&store) - 1,
                        "waiting for the users of a copy before closing it"
                    );
                }
                if std::time::Instant::now() > deadline {
                    // Put it back: it is still in use.
                    let cell = self.cell(shard);
                    let _ = cell.set(store);
                    return Err(Error::Closing(format!(
                        "shard {shard}'s copy is still in use after {CLOSE_WAIT:?}; retry"
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let database = store.database_weak();
            // Joins the applier thread: off the runtime.
            tokio::task::spawn_blocking(move || drop(store))
                .await
                .map_err(|e| Error::Engine(format!("closing shard {shard} failed: {e}")))?;
            // A read running on the blocking pool holds the database until it ends, even when
            // its caller gave up (a timed-out request). Deleting or replacing the files under a
            // database still open here would leave two databases on one file when the copy is
            // opened again (and the old one checkpoints into the new one's WAL when it closes).
            while database.strong_count() > 0 {
                if std::time::Instant::now() > deadline {
                    return Err(Error::Closing(format!(
                        "shard {shard}'s database is still used by a read after {CLOSE_WAIT:?}; retry"
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || delete_files(&dir, shard))
            .await
            .map_err(|e| Error::Io(format!("deleting shard {shard} failed: {e}")))?
    }

    /// Replaces this node's copy of `shard` by the database file `file` (a snapshot received from
    /// the primary) and opens it.
    /// Runs in its own task for the reason given at [`Storage::open`].
    pub async fn install(
        self: &Arc<Self>,
        shard: u32,
        file: &Path,
    ) -> Result<Arc<KuzuShard>, Error> {
        let (me, file) = (self.clone(), file.to_path_buf());
        run_to_end(format!("installing shard {shard}"), async move {
            me.install_uncancelled(shard, &file).await
        })
        .await
    }

    async fn install_uncancelled(
        self: &Arc<Self>,
        shard: u32,
        file: &Path,
    ) -> Result<Arc<KuzuShard>, Error> {
        self.with_copy_held(shard, async {
            self.close_and_delete(shard).await?;
            std::fs::rename(file, self.path(shard)).map_err(|e| {
                Error::Io(format!("cannot move {} into place: {e}", file.display()))
            })?;
            // A snapshot is a checkpointed, closed database file.
            let marker = self.path(shard).with_extension("kz.clean");
            std::fs::write(&marker, b"")
                .map_err(|e| Error::Io(format!("cannot write {}: {e}", marker.display())))
        })
        .await?;
        self.open(shard).await
    }
}

/// Runs `work` in its own task, so it finishes even if the caller's future is dropped.
async fn run_to_end<T: Send + 'static>(
    what: String,
    work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work)
        .await
        .map_err(|e| Error::Engine(format!("{what} failed: {e}")))?
}

/// Deletes a copy's database, Kuzu's side files, its log segments and its staging folder.
fn delete_files(dir: &Path, shard: u32) -> Result<(), Error> {
    let db = format!("shard-{shard}.kz");
    let log = format!("shard-{shard}.log.");
    let stage = format!("stage-{shard}");
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::Io(format!("cannot list {}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let ours = name == db
            || name
                .strip_prefix(&db)
                .is_some_and(|rest| rest.starts_with('.'))
            || name.starts_with(&log)
            || name == stage;
        if !ours {
            continue;
        }
        let path = e.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|err| Error::Io(format!("cannot delete {}: {err}", path.display())))?;
    }
    Ok(())
}
