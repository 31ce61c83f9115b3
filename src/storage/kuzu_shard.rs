//! One shard copy: its write log and its embedded Kuzu database file. With the other `kuzu_*`
//! modules, the only code that speaks Kuzu.
//!
//! A write is acknowledged once it is in the copy's log (`shard_log`); an applier thread moves
//! logged writes into Kuzu, everything that queued up in one transaction (`kuzu_apply`). Reads
//! first wait until the writes logged before they arrived are applied, so a read sees every write
//! acknowledged before it started.
//!
//! Threads: Kuzu calls block, so none runs on the async runtime. Kuzu allows one write
//! transaction at a time (a second writer fails instead of waiting): the applier thread is the only
//! writer. Reads run on tokio's blocking pool, each with its own connection, concurrently.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kuzu::{Connection, Database, SystemConfig};
use tokio::sync::watch;

use super::freshness::{Freshness, Lag, ReadScope};
use super::kuzu_apply::{
    apply_round, checkpoint, counts, migrate, read_applied, schema, ApplyState, Target,
};
use super::kuzu_index;
use super::kuzu_read::{
    entity_summaries, expand, run_bounded, run_user_query, BoundedRead, Direction, QueryFailure,
    RelationFilter, Rows, ShardQuery,
};
use super::kuzu_readers::{Readers, Session};
use super::kuzu_values::*;
use super::pending_items::PendingItems;
use super::shard_log::{self, ShardLog};
use super::{
    ApplyGate, Counts, EntityRecord, Error, GraphPart, InsertMode, Placement, RelationRecord,
    ShardStats, Step, StoreConfig, WriteOp,
};
use crate::graph::model::{Chunk, Document, Entity};
use crate::graph::partition::shard_of;

/// Items (entities, relations, ...) applied in one transaction at most. Large: a commit's cost
/// grows with the size of the relation table more than with the rows it adds (100k entities / 1M
/// relations on one node: rounds of 50k items took 150 s in all).
const ROUND_ITEMS: usize = 200_000;
/// The same with `TORUA_INSERT_MODE=create`: Kuzu holds a transaction's created rows in the
/// buffer pool until COMMIT, and 0.11 crashed in a COMMIT that ran out of it (rounds of up to
/// 200k items into copies with ~190 MB pools each). Created rows cost no per-commit rewrite, so
/// small rounds lose little.
const CREATE_ROUND_ITEMS: usize = 20_000;
/// The applier checkpoints (folds Kuzu's WAL into the database file) past this WAL size.
const CHECKPOINT_WAL_BYTES: u64 = 64 << 20;
/// Time without writes after which a copy whose full-text indexes are due rebuilds them.
const TEXT_REBUILD_IDLE: Duration = Duration::from_secs(2);
/// How long a read waits for the writes logged before it to be applied.
pub const READ_WAIT: Duration = Duration::from_secs(8);
/// Reader threads per copy for traversal steps (a node holds many copies; these idle cheaply).
const READER_THREADS: usize = 2;

/// Logged writes not yet applied.
#[derive(Default)]
struct Pending {
    ops: VecDeque<Queued>,
    /// Bytes of the queued ops plus the round being applied.
    bytes: usize,
    /// Writes in the round being applied.
    in_flight: usize,
    /// Snapshots asked for, taken between rounds.
    snapshots: Vec<SnapshotJob>,
    stop: bool,
    /// What the queued ops and the round being applied touch.
    items: PendingItems,
    /// When the oldest write of the round being applied was logged.
    round_since: Option<Instant>,
    /// How long the applier's work takes (see [`ApplierTiming`]).
    timing: Timing,
}

/// The applier's spells of work: rounds, snapshots, full-text index rebuilds.
#[derive(Default)]
struct Timing {
    busy_since: Option<Instant>,
    waiting_for_slot: bool,
    last_round_lag: Duration,
    longest: Duration,
}

impl Timing {
    fn begin(&mut self) {
        self.busy_since = Some(Instant::now());
    }

    /// Ends the current spell; `round_since`: it applied writes, the oldest logged then.
    fn end(&mut self, round_since: Option<Instant>) {
        if let Some(since) = self.busy_since.take() {
            self.longest = self.longest.max(since.elapsed());
        }
        if let Some(oldest) = round_since {
            self.last_round_lag = oldest.elapsed();
        }
    }
}

/// How long a copy's applier works, to tell a long round from a stuck applier and to admit as
/// many writes as one round takes to apply (see `replication::write` and `cluster::reporter`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ApplierTiming {
    /// How long it has been busy with its current round, snapshot or full-text index rebuild;
    /// `None` while it waits for writes or for an apply slot.
    pub busy_for: Option<Duration>,
    /// It waits for one of the node's apply slots (`ApplyGate`), held by other copies.
    pub waiting_for_slot: bool,
    /// How long the oldest write of its last round waited from logged to visible (the wait for
    /// the round before, for an apply slot, and the round itself).
    pub last_round_lag: Duration,
    /// The longest spell of work it finished since the copy was opened.
    pub longest: Duration,
}

/// A logged write waiting to be applied.
struct Queued {
    seq: u64,
    op: Arc<WriteOp>,
    /// Its size in the log.
    size: usize,
    logged_at: Instant,
}

impl Pending {
    /// Queues write `seq` (`size` bytes in the log), logged now.
    fn push(&mut self, seq: u64, op: WriteOp, size: usize) {
        self.bytes += size;
        self.items.add(&op);
        self.ops.push_back(Queued {
            seq,
            op: Arc::new(op),
            size,
            logged_at: Instant::now(),
        });
    }
}

/// A request to copy the database file (at a round boundary) to `to`, keeping the log from the
/// snapshot's sequence number on (pinned under `pin`) until [`KuzuShard::unpin`].
struct SnapshotJob {
    to: PathBuf,
    pin: u64,
    done: tokio::sync::oneshot::Sender<Result<u64, Error>>,
}

struct Shared {
    pending: Mutex<Pending>,
    ready: Condvar,
    /// Highest sequence number in the log (durable).
    logged: AtomicU64,
    /// Highest sequence number applied to Kuzu (visible to reads).
    visible: watch::Sender<u64>,
    /// Writes that could not be applied (acknowledged, so this is an alarm; see the logs).
    failed: AtomicU64,
    /// Reads hold it shared; a commit holds it exclusively (see `apply_round`).
    commit_gate: std::sync::RwLock<()>,
    /// Whether the copy may hold routing keys (set before a write that carries one is logged,
    /// never cleared): without them, [`KuzuShard::placements`] need not read the database.
    routed: std::sync::atomic::AtomicBool,
    /// What the database holds, as of the last round.
    counts: Mutex<Counts>,
    /// Copies of the log's figures, for async callers that must not wait on the log's lock
    /// (a catch-up may hold it while reading segments).
    log_bytes: AtomicU64,
    last_logged: Mutex<Option<(u64, u32)>>,
    /// Snapshots being sent to other nodes: id -> sequence number. The log keeps every record
    /// after the lowest, for the catch-up that follows the copy.
    pins: Mutex<std::collections::BTreeMap<u64, u64>>,
    /// Why the applier stopped applying to this copy's database, once it has.
    damage: Mutex<Option<&'static str>>,
}

pub struct KuzuShard {
    shard: u32,
    path: PathBuf,
    db: Arc<Database>,
    log: Arc<Mutex<ShardLog>>,
    shared: Arc<Shared>,
    pending_limit: usize,
    /// Embedding dimension (0 = none), as checked against the database at open.
    dim: usize,
    applier: Option<std::thread::JoinHandle<()>>,
    /// Threads with cached statements for traversal steps (dropped before the applier stops).
    readers: Option<Readers>,
    /// The same for user queries.
    query_readers: Option<Readers>,
    /// Whether the database was found not closed cleanly (kill -9, crash, power loss).
    crashed: bool,
    /// Whether anti-entropy found this copy's content differing from the other copies' at the
    /// same write, or an operator asked for a rebuild (`replication::anti_entropy`): it is rebuilt
    /// from another copy.
    diverged: std::sync::atomic::AtomicBool,
    /// What the last anti-entropy check of this shard (by this copy, as primary) found when the
    /// copies differ and no majority tells which is right.
    dispute: Mutex<Option<String>>,
}

/// The marker of a database closed cleanly, next to it; removed while the database is open.
fn clean_marker(db: &Path) -> PathBuf {
    db.with_extension("kz.clean")
}

impl KuzuShard {
    /// Opens (creating if needed) the copy of `shard` whose database is `path` and whose log
    /// lives next to it, and starts applying what the log holds beyond the database.
    pub fn open(
        path: &Path,
        shard: u32,
        config: &StoreConfig,
        gate: Arc<ApplyGate>,
    ) -> Result<KuzuShard, Error> {
        // The database is opened on the applier's own thread, at a lower CPU priority: Kuzu's
        // worker threads are created with the database and inherit it. Under a heavy ingest the
        // node's gossip, QUIC and HTTP then still get the CPU (without this, three loaded nodes on
        // two cores missed heartbeats, were declared dead and their primaries were replaced).
        // Kuzu 0.11 can come back from kill -9 during a bulk-load commit with rows missing while
        // its primary-key index still lists them (the chaos suite and a one-node kill -9 loop
        // reproduce it). Such a copy is rebuilt from another copy when one exists (see
        // `cluster::coordinator::rejoin`).
        let crashed = path.exists() && !clean_marker(path).exists();
        let _ = std::fs::remove_file(clean_marker(path));
        if crashed {
            tracing::warn!(
                shard,
                "this copy was not closed cleanly (kill -9 or a crash)"
            );
        }
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let (start_tx, start_rx) =
            std::sync::mpsc::channel::<(Arc<Shared>, Arc<Mutex<ShardLog>>)>();
        let (thread_path, thread_config) = (path.to_path_buf(), config.clone());
        let dim = config.embedding_dim;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let stage = (dir.join(format!("stage-{shard}")), config.insert_mode);
        let wal_path = path.with_extension("kz.wal");
        let applier = std::thread::Builder::new()
            .name(format!("kuzu-apply-{shard}"))
            .spawn(move || {
                lower_this_threads_priority();
                let db = match open_database(&thread_path, &thread_config) {
                    Ok(opened) => {
                        let db = opened.0.clone();
                        let _ = opened_tx.send(Ok(opened));
                        db
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                let Ok((shared, log)) = start_rx.recv() else {
                    return; // opening failed after the database (the log)
                };
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    applier_loop(
                        shard,
                        db,
                        shared,
                        log,
                        dim,
                        gate,
                        stage,
                        (thread_path, wal_path),
                        crashed,
                    )
                }));
                if applied.is_err() {
                    // Without its applier the copy would take writes into its log and never
                    // apply them while the node looks healthy. Exiting lets a restart redo the
                    // log (and the cluster serve from the other copies meanwhile).
                    // Written directly: the log thread may not get to it before the abort.
                    eprintln!(
                        "shard {shard}: the applier thread panicked; the node exits so that a restart redoes the shard's log"
                    );
                    std::process::abort();
                }
            })
            .map_err(|e| Error::Engine(format!("cannot start the applier thread: {e}")))?;
        let (db, applied, initial_counts) = opened_rx.recv().map_err(|_| {
            Error::Engine("the applier thread died while opening the database".into())
        })??;
        let (log, redo) = ShardLog::open(&dir, shard, applied)?;
        if !redo.is_empty() {
            tracing::info!(
                shard,
                writes = redo.len(),
                "redoing logged writes not yet in the database"
            );
        }
        let logged = log.last_seq().max(applied);
        let routed = redo.iter().any(|(_, op)| op.carries_routing()) || holds_routing(&db)?;
        let mut pending = Pending::default();
        for (seq, op) in redo {
            let size = op_size(&op);
            pending.push(seq, op, size);
        }
        let shared = Arc::new(Shared {
            pending: Mutex::new(pending),
            ready: Condvar::new(),
            logged: AtomicU64::new(logged),
            visible: watch::Sender::new(applied),
            failed: AtomicU64::new(0),
            commit_gate: std::sync::RwLock::new(()),
            routed: std::sync::atomic::AtomicBool::new(routed),
            counts: Mutex::new(initial_counts),
            log_bytes: AtomicU64::new(log.bytes()),
            last_logged: Mutex::new(log.last()),
            pins: Mutex::new(Default::default()),
            damage: Mutex::new(None),
        });
        let log = Arc::new(Mutex::new(log));
        // Before the applier gets going: if this fails, the applier sees the start channel close
        // and stops.
        let readers = Readers::start(shard, "read", db.clone(), READER_THREADS)?;
        let query_readers = Readers::start(shard, "query", db.clone(), READER_THREADS)?;
        start_tx
            .send((shared.clone(), log.clone()))
            .map_err(|_| Error::Engine("the applier thread stopped".into()))?;
        Ok(KuzuShard {
            shard,
            path: path.to_path_buf(),
            db,
            log,
            shared,
            pending_limit: config.pending_bytes,
            dim: config.embedding_dim,
            applier: Some(applier),
            readers: Some(readers),
            query_readers: Some(query_readers),
            crashed,
            diverged: Default::default(),
            dispute: Default::default(),
        })
    }

    /// Highest sequence number durable in this copy (logged; maybe not yet visible).
    pub fn seq(&self) -> u64 {
        self.shared.logged.load(Ordering::SeqCst)
    }

    /// Copies the database, as of a round boundary, to `to` (the applier pauses meanwhile, reads
    /// wait) and returns the sequence number it holds. The log keeps the records after it until
    /// `unpin(pin)`, so the copy can be brought level by sequence number afterwards.
    pub async fn snapshot(&self, to: PathBuf, pin: u64) -> Result<u64, Error> {
        let (done, result) = tokio::sync::oneshot::channel();
        {
            let mut pending = self.shared.pending.lock().expect("pending lock");
            if pending.stop {
                return Err(Error::Closing("the copy is closing".into()));
            }
            pending.snapshots.push(SnapshotJob { to, pin, done });
        }
        self.shared.ready.notify_all();
        result
            .await
            .map_err(|_| Error::Closing("the applier stopped before taking the snapshot".into()))?
    }

    /// Ends what `snapshot(.., pin)` kept of the log.
    pub fn unpin(&self, pin: u64) {
        self.shared.pins.lock().expect("pins lock").remove(&pin);
    }

    /// The database, without keeping it open: `Storage` waits for it to be gone before it
    /// deletes or replaces the copy's files.
    pub fn database_weak(&self) -> std::sync::Weak<Database> {
        Arc::downgrade(&self.db)
    }

    /// Whether the database was not closed cleanly before this open: its content may be
    /// damaged (see `open`).
    pub fn recovered_from_crash(&self) -> bool {
        self.crashed
    }

    /// Acknowledged writes this copy's database refused since it was opened: the copy misses
    /// them, and is rebuilt from another copy (see `cluster::coordinator`).
    pub fn refused_writes(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// How long the oldest write not applied yet has waited (zero when none waits).
    pub fn apply_lag(&self) -> Duration {
        let p = self.shared.pending.lock().expect("pending lock");
        p.round_since
            .or_else(|| p.ops.front().map(|q| q.logged_at))
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Why this copy's applier stopped applying writes to its database (it is rebuilt from
    /// another copy), if it has.
    pub fn damage(&self) -> Option<&'static str> {
        *self.shared.damage.lock().expect("damage lock")
    }

    /// How long this copy's applier works (see [`ApplierTiming`]).
    pub fn applier_timing(&self) -> ApplierTiming {
        let p = self.shared.pending.lock().expect("pending lock");
        ApplierTiming {
            busy_for: p.timing.busy_since.map(|t| t.elapsed()),
            waiting_for_slot: p.timing.waiting_for_slot,
            last_round_lag: p.timing.last_round_lag,
            longest: p.timing.longest,
        }
    }

    /// Logged writes waiting to be applied (the round being applied included).
    pub fn pending_writes(&self) -> u64 {
        let p = self.shared.pending.lock().expect("pending lock");
        (p.ops.len() + p.in_flight) as u64
    }

    /// Records what the last anti-entropy check found undecidable (`None`: nothing).
    pub fn set_dispute(&self, dispute: Option<String>) {
        *self.dispute.lock().expect("dispute lock") = dispute;
    }

    /// What the last anti-entropy check found undecidable, if anything.
    pub fn dispute(&self) -> Option<String> {
        self.dispute.lock().expect("dispute lock").clone()
    }

    /// Records that this copy must be rebuilt: it differs from the other copies at the same write,
    /// or an operator asked.
    pub fn mark_diverged(&self) {
        self.diverged.store(true, Ordering::SeqCst);
    }

    /// Whether this copy must be rebuilt from another copy: its database refused writes it holds
    /// in its log, or it was marked ([`Self::mark_diverged`]).
    pub fn needs_rebuild(&self) -> bool {
        self.refused_writes() > 0 || self.diverged.load(Ordering::SeqCst)
    }

    /// Highest sequence number visible to reads.
    pub fn visible_seq(&self) -> u64 {
        *self.shared.visible.borrow()
    }

    /// Makes write `seq` durable in this copy's log; it is applied to the database soon after.
    /// [`Error::Busy`] when too much is waiting to be applied (backpressure).
    pub async fn write(&self, seq: u64, op: WriteOp) -> Result<(), Error> {
        let record = shard_log::encode(seq, &op)?;
        if op.carries_routing() {
            self.shared.routed.store(true, Ordering::SeqCst);
        }
        let size = record.len();
        {
            let pending = self.shared.pending.lock().expect("pending lock");
            if pending.bytes > 0 && pending.bytes + size > self.pending_limit {
                return Err(Error::Busy(format!(
                    "shard {} has {} MiB of writes waiting to be applied; retry later",
                    self.shard,
                    pending.bytes >> 20
                )));
            }
        }
        let (log, shared) = (self.log.clone(), self.shared.clone());
        tokio::task::spawn_blocking(move || {
            let mut log = log.lock().expect("log lock");
            log.append(seq, &record)?;
            shared.log_bytes.store(log.bytes(), Ordering::SeqCst);
            *shared.last_logged.lock().expect("last lock") = log.last();
            // Queued under the log's lock, so the applier sees writes in log order.
            let mut pending = shared.pending.lock().expect("pending lock");
            pending.push(seq, op, size);
            shared.logged.fetch_max(seq, Ordering::SeqCst);
            shared.ready.notify_one();
            Ok(())
        })
        .await
        .map_err(|e| Error::Io(format!("log task failed: {e}")))?
    }

    /// Sequence number and checksum of the newest logged write (to detect a diverged copy).
    pub fn last_logged(&self) -> Option<(u64, u32)> {
        *self.shared.last_logged.lock().expect("last lock")
    }

    /// Checksum of logged write `seq`, if the log still holds it.
    pub async fn crc_at(&self, seq: u64) -> Result<Option<u32>, Error> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let view = log.lock().expect("log lock").segments_after(seq);
            view.crc_at(seq)
        })
        .await
        .map_err(|e| Error::Io(format!("log task failed: {e}")))?
    }

    /// Logged writes after `seq` (about `max_bytes` at most), to catch up another copy.
    pub async fn records_after(
        &self,
        seq: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, WriteOp)>, Error> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let view = log.lock().expect("log lock").segments_after(seq);
            view.records_after(seq, max_bytes)
        })
        .await
        .map_err(|e| Error::Io(format!("log task failed: {e}")))?
    }

    /// Before a read: waits for the writes logged so far as `scope` asks. A `Bounded` read
    /// that runs out of its wait answers from the applied writes and notes this copy's lag.
    async fn catch_up(&self, scope: &ReadScope) -> Result<(), Error> {
        let wait_ms = match scope.freshness {
            Freshness::Strict => return self.wait_visible(READ_WAIT).await,
            Freshness::Bounded { wait_ms } => wait_ms,
        };
        let logged = self.seq();
        match self
            .wait_visible(Duration::from_millis(wait_ms.into()))
            .await
        {
            Err(Error::Busy(_)) => {
                scope.note(Lag {
                    shard: self.shard,
                    node: None,
                    applied_seq: self.visible_seq(),
                    logged_seq: logged,
                });
                Ok(())
            }
            other => other,
        }
    }

    /// [`Self::catch_up`] for a read of `ids` alone: no wait when no unapplied write touches
    /// them (see [`PendingItems`]).
    async fn catch_up_on(&self, scope: &ReadScope, ids: &[String]) -> Result<(), Error> {
        let touched = {
            let pending = self.shared.pending.lock().expect("pending lock");
            pending.items.touch_any(ids.iter().map(String::as_str))
        };
        if touched {
            self.catch_up(scope).await
        } else {
            Ok(())
        }
    }

    /// Waits until every write logged so far is visible, at most `timeout`.
    pub async fn wait_visible(&self, timeout: Duration) -> Result<(), Error> {
        let target = self.seq();
        let mut rx = self.shared.visible.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|v| *v >= target))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Closing(format!(
                "shard {}: the applier has stopped",
                self.shard
            ))),
            Err(_) => Err(Error::Busy(format!(
                "shard {}: writes up to {target} are acknowledged but not applied after {} s \
                 (applied up to {}); the copy is overloaded, retry",
                self.shard,
                timeout.as_secs(),
                self.visible_seq()
            ))),
        }
    }

    /// Reads the item `id` with `read` (given the embedding dimension), after catching up on the
    /// writes that touch it.
    async fn read_item<T: Send + 'static>(
        &self,
        id: String,
        scope: &ReadScope,
        read: fn(&Connection, &str, usize) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.catch_up_on(scope, std::slice::from_ref(&id)).await?;
        let dim = self.dim;
        self.read(move |conn| read(conn, &id, dim)).await
    }

    pub async fn get_entity(
        &self,
        id: String,
        scope: &ReadScope,
    ) -> Result<Option<EntityRecord>, Error> {
        self.read_item(id, scope, get_entity).await
    }

    pub async fn get_document(
        &self,
        id: String,
        scope: &ReadScope,
    ) -> Result<Option<Document>, Error> {
        self.read_item(id, scope, |conn, id, _| get_document(conn, id))
            .await
    }

    /// Answers a typed read (a retrieval's, or one of the document cascade's) on this copy,
    /// after catching up as `scope` asks, on the user queries' readers and like a user query:
    /// cut off by Kuzu after `timeout_ms`, refused past `max_bytes`.
    pub async fn bounded_read<R: BoundedRead>(
        &self,
        read: R,
        timeout_ms: u64,
        max_bytes: usize,
        scope: &ReadScope,
    ) -> Result<R::Rows, QueryFailure> {
        self.query_read(scope, move |session| {
            run_bounded(session, &read, timeout_ms, max_bytes)
        })
        .await
    }

    pub async fn get_chunk(&self, id: String, scope: &ReadScope) -> Result<Option<Chunk>, Error> {
        self.read_item(id, scope, get_chunk).await
    }

    /// Runs a user's read-only Cypher on this copy (after catching up as `scope` asks), cut
    /// off by Kuzu after its time limit.
    pub async fn user_query(
        &self,
        query: ShardQuery,
        max_bytes: usize,
        scope: &ReadScope,
    ) -> Result<Rows, QueryFailure> {
        self.query_read(scope, move |session| {
            run_user_query(session, &query, max_bytes)
        })
        .await
    }

    /// One traversal step: the properties of `ids` held here and, when `relations`, their
    /// relations in `direction` that pass `filter`.
    ///
    /// An id this copy holds as a pointer (a stub whose routing key places it in another of the
    /// `shards`) is only reported in [`Step::moved`].
    pub async fn traverse_step(
        &self,
        ids: Vec<String>,
        shards: u32,
        direction: Direction,
        filter: RelationFilter,
        relations: bool,
        scope: &ReadScope,
    ) -> Result<Step, Error> {
        self.catch_up_on(scope, &ids).await?;
        let rows = {
            let c = self.shared.counts.lock().expect("counts lock");
            c.entities + c.stubs
        };
        let shard = self.shard;
        self.read_cached(move |session| {
            let mut step = Step::default();
            let mut moved = HashSet::new();
            for (summary, stub_routing) in entity_summaries(session, rows, &ids)? {
                match stub_routing {
                    Some(key) if shard_of(&key, shards) != shard => {
                        moved.insert(summary.id.clone());
                        step.moved.push((summary.id, key));
                    }
                    _ => step.entities.push(summary),
                }
            }
            if relations {
                let mut ids = ids;
                ids.retain(|id| !moved.contains(id));
                step.edges = expand(session, rows, &ids, direction, &filter)?;
            }
            Ok(step)
        })
        .await
    }

    /// How this copy holds the ids of `ids` and `all` it holds at all: owned or as a stub, with
    /// its routing key (a stub's key says where the entity lives). Of `ids` only those stored
    /// with a key are sure to be listed: a copy that never held a key answers without reading
    /// its database. Acknowledged writes not yet applied count without being waited for.
    pub async fn placements(
        &self,
        ids: Vec<String>,
        all: Vec<String>,
    ) -> Result<Vec<Placement>, Error> {
        let pending = {
            let pending = self.shared.pending.lock().expect("pending lock");
            pending
                .items
                .placed(ids.iter().chain(&all).map(String::as_str))
        };
        let ids = if self.shared.routed.load(Ordering::SeqCst) {
            ids.into_iter().chain(all).collect()
        } else {
            all
        };
        if ids.is_empty() {
            return Ok(pending);
        }
        let mut found = self
            .read(move |conn| {
                let found = run(
                    conn,
                    "UNWIND $ids AS i MATCH (e:Entity {id: i}) RETURN e.id, e.stub, e.routing",
                    vec![("ids", strings(&ids))],
                )?;
                Ok(found
                    .iter()
                    .map(|r| Placement {
                        id: as_string(&r[0]),
                        stub: as_bool(&r[1]),
                        routing: as_optional_string(&r[2]),
                    })
                    .collect::<Vec<Placement>>())
            })
            .await?;
        let newer: HashSet<&str> = pending.iter().map(|p| p.id.as_str()).collect();
        found.retain(|p| !newer.contains(p.id.as_str()));
        found.extend(pending);
        Ok(found)
    }

    /// This copy's part of the whole graph for a graph algorithm, read after every write logged
    /// so far is applied.
    pub async fn graph_part(&self) -> Result<GraphPart, Error> {
        self.wait_visible(READ_WAIT).await?;
        self.read(super::kuzu_read::graph_part).await
    }

    /// The graph algorithm writes with results staged in this copy (at most `limit`), as of the
    /// last applied round.
    pub async fn staged_writes(&self, limit: usize) -> Result<Vec<String>, Error> {
        self.read(move |conn| super::kuzu_apply::staged_writes(conn, limit))
            .await
    }

    /// A checksum of what the copy holds (entities with their descriptions, relations, chunks,
    /// communities, in id order) after every logged write is applied, with the sequence number it
    /// is taken at: copies holding the same writes have the same checksum. Reads everything:
    /// for checks and tests, not for hot paths.
    pub async fn checksum(&self) -> Result<(u64, String), Error> {
        self.wait_visible(READ_WAIT).await?;
        let seq = self.visible_seq();
        let sum = self
            .read(|conn| {
                let mut h = crc32fast::Hasher::new();
                for q in [
                    "MATCH (e:Entity) WHERE e.stub = false RETURN e.id, e.title, e.description ORDER BY e.id",
                    "MATCH (a:Entity)-[x:RELATED]->(b:Entity) RETURN x.id, a.id, b.id, x.description ORDER BY x.id, a.id, b.id",
                    "MATCH (c:Chunk) RETURN c.id, c.text ORDER BY c.id",
                    "MATCH (c:Community) RETURN c.id, c.title ORDER BY c.id",
                ] {
                    for row in run(conn, q, vec![])? {
                        for v in &row {
                            h.update(as_string(v).as_bytes());
                            h.update(&[0]);
                        }
                        h.update(&[1]);
                    }
                    h.update(&[2]);
                }
                Ok(format!("{:08x}", h.finalize()))
            })
            .await?;
        Ok((seq, sum))
    }

    /// Counts of what is visible (as of the last applied round), with the log's position; does
    /// not wait for pending writes.
    pub async fn stats(&self) -> Result<ShardStats, Error> {
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(self.path.with_extension("kz.wal"))
                .map(|m| m.len())
                .unwrap_or(0);
        let log_bytes = self.shared.log_bytes.load(Ordering::SeqCst);
        let (logged, visible) = (self.seq(), self.visible_seq());
        let pending_writes = self.pending_writes();
        let failed = self.refused_writes();
        Ok(ShardStats {
            counts: *self.shared.counts.lock().expect("counts lock"),
            size_bytes: size + log_bytes,
            applied_seq: visible,
            logged_seq: logged,
            pending_writes,
            failed_writes: failed,
        })
    }

    /// Runs a read on one of the copy's traversal reader threads (cached statements).
    async fn read_cached<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'s, 'c> FnOnce(&'s mut Session<'c>) -> Result<T, Error> + Send + 'static,
    {
        self.read_on(&self.readers, f).await
    }

    /// Runs a read that answers like a user query on the user queries' readers, after the writes
    /// logged before it; a failure to read at all is `QueryFailure::Other`.
    async fn query_read<T, F>(&self, scope: &ReadScope, f: F) -> Result<T, QueryFailure>
    where
        T: Send + 'static,
        F: for<'s, 'c> FnOnce(&'s mut Session<'c>) -> Result<T, QueryFailure> + Send + 'static,
    {
        let other = |e: Error| QueryFailure::Other(e.to_string());
        self.catch_up(scope).await.map_err(other)?;
        let answer = self.read_on(&self.query_readers, move |session| Ok(f(session)));
        answer.await.map_err(other)?
    }

    /// Runs a read on a thread of `pool`, holding the commit gate shared.
    async fn read_on<T, F>(&self, pool: &Option<Readers>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'s, 'c> FnOnce(&'s mut Session<'c>) -> Result<T, Error> + Send + 'static,
    {
        let shared = self.shared.clone();
        pool.as_ref()
            .ok_or_else(|| Error::Closing("the copy is closing".into()))?
            .read(move |session| {
                let _reading = shared.commit_gate.read().expect("commit gate");
                f(session)
            })
            .await
    }

    /// Runs a read on the blocking pool with its own connection.
    async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let (db, shared) = (self.db.clone(), self.shared.clone());
        tokio::task::spawn_blocking(move || {
            let _reading = shared.commit_gate.read().expect("commit gate");
            let conn = Connection::new(&db).map_err(err)?;
            f(&conn)
        })
        .await
        .map_err(|e| Error::Engine(format!("read task failed: {e}")))?
    }
}

impl Drop for KuzuShard {
    fn drop(&mut self) {
        self.readers.take();
        self.query_readers.take();
        self.shared.pending.lock().expect("pending lock").stop = true;
        self.shared.ready.notify_all();
        // The database must be closed before the file can be opened again in this process.
        if let Some(t) = self.applier.take() {
            let _ = t.join();
        }
        // Every logged write is applied and committed; the database closes right after.
        let _ = std::fs::write(clean_marker(&self.path), b"");
    }
}

/// Opens the database with the schema; returns it with its applied sequence number and counts.
fn open_database(path: &Path, config: &StoreConfig) -> Result<(Arc<Database>, u64, Counts), Error> {
    let system = SystemConfig::default()
        .buffer_pool_size(config.buffer_pool_bytes)
        .max_num_threads(config.threads)
        .max_db_size(config.max_db_size)
        .enable_compression(true)
        // Kuzu checkpoints at commit when the WAL is large, and that checkpoint waits for every
        // open read; when reads keep it waiting the COMMIT reports an error. The applier
        // checkpoints itself between rounds instead (see `CHECKPOINT_WAL_BYTES`).
        .auto_checkpoint(false);
    let db = Database::new(path, system).map_err(|e| {
        Error::Engine(format!(
            "cannot open the Kuzu database {}: {e}",
            path.display()
        ))
    })?;
    let db = Arc::new(db);
    let conn = Connection::new(&db).map_err(err)?;
    for ddl in schema(config.embedding_dim) {
        conn.query(&ddl)
            .map_err(|e| Error::Engine(format!("schema: {e}")))?;
    }
    check_embedding_column(&conn, config.embedding_dim)?;
    migrate(&conn)?;
    kuzu_index::ensure(&conn, config.embedding_dim)?;
    let applied = read_applied(&conn)?;
    let counts = counts(&conn)?;
    drop(conn);
    Ok((db, applied, counts))
}

/// Nice 10 for the calling thread (Linux keeps the nice value per thread).
fn lower_this_threads_priority() {
    // SAFETY: plain syscalls on the calling thread's id; failure only leaves the priority as is.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 10) != 0 {
            tracing::debug!("cannot lower the applier thread's priority");
        }
    }
}

fn op_size(op: &WriteOp) -> usize {
    postcard::to_stdvec(op).map(|v| v.len()).unwrap_or(0)
}

fn op_items(op: &WriteOp) -> usize {
    match op {
        WriteOp::Upsert(b) => b.len().max(1),
        WriteOp::Point(p) => p.len().max(1),
        _ => 1,
    }
}

/// Refuses a database created with another TORUA_EMBEDDING_DIM (its vectors would not fit).
fn check_embedding_column(conn: &Connection, dim: usize) -> Result<(), Error> {
    let rows = run(conn, "CALL TABLE_INFO('Entity') RETURN name, type", vec![])?;
    let found = rows
        .iter()
        .find(|r| as_string(&r[0]) == "embedding")
        .map(|r| as_string(&r[1]));
    let expected = (dim > 0).then(|| format!("FLOAT[{dim}]"));
    if found != expected {
        return Err(Error::Invalid(format!(
            "this shard's database has embedding column {} but TORUA_EMBEDDING_DIM={dim} asks for {};              start with the dimension the data was created with, or use a new TORUA_DATA_DIR",
            found.as_deref().unwrap_or("none"),
            expected.as_deref().unwrap_or("none")
        )));
    }
    Ok(())
}

/// The applier: takes everything queued (up to a round's size), applies it in one transaction
/// (vector rows of create mode in their own, right after: `apply_round`),
/// makes it visible, forgets it from the log.
#[allow(clippy::too_many_arguments)]
fn applier_loop(
    shard: u32,
    db: Arc<Database>,
    shared: Arc<Shared>,
    log: Arc<Mutex<ShardLog>>,
    dim: usize,
    gate: Arc<ApplyGate>,
    (stage, mode): (PathBuf, InsertMode),
    files: (PathBuf, PathBuf),
    crashed: bool,
) {
    let conn = match Connection::new(&db) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(shard, error = %e, "cannot open the applier's connection; writes to this copy are logged but never applied");
            return;
        }
    };
    let (db_path, wal_path) = files;
    let mut damaged = false;
    let mut state = ApplyState::default();
    loop {
        // Wait for work, then for a slot; take the round only once running (it grew meanwhile).
        // While idle, the full-text indexes are rebuilt once they are due (see
        // `ApplyState::rebuild_text_indexes`): after TEXT_REBUILD_IDLE without writes.
        let (jobs, idle) = {
            let mut pending = shared.pending.lock().expect("pending lock");
            let mut idle = false;
            while pending.ops.is_empty() && pending.snapshots.is_empty() && !pending.stop {
                match state.text_rebuild_due_in().filter(|_| !damaged) {
                    None => pending = shared.ready.wait(pending).expect("pending lock"),
                    Some(due) => {
                        let wait = due.max(TEXT_REBUILD_IDLE);
                        let (p, timeout) = shared
                            .ready
                            .wait_timeout(pending, wait)
                            .expect("pending lock");
                        pending = p;
                        if timeout.timed_out() && pending.ops.is_empty() {
                            idle = state.text_rebuild_due_in() == Some(Duration::ZERO);
                            if idle {
                                break;
                            }
                        }
                    }
                }
            }
            (std::mem::take(&mut pending.snapshots), idle)
        };
        if idle {
            let _slot = gate.enter();
            shared.pending.lock().expect("pending lock").timing.begin();
            let rebuilt = state.rebuild_text_indexes(&conn, &shared.commit_gate);
            shared
                .pending
                .lock()
                .expect("pending lock")
                .timing
                .end(None);
            match rebuilt {
                Ok(took) => tracing::debug!(
                    shard,
                    ms = took.as_millis() as u64,
                    "rebuilt the full-text indexes"
                ),
                Err(e) => {
                    tracing::warn!(shard, error = %e, "cannot rebuild the full-text indexes; trying again later")
                }
            }
            continue;
        }
        if !jobs.is_empty() {
            shared.pending.lock().expect("pending lock").timing.begin();
        }
        for job in jobs {
            let taken = take_snapshot(&conn, &shared, &db_path, &job.to, job.pin);
            match &taken {
                Ok(_) => state.checkpointed(),
                Err(e) => tracing::warn!(shard, error = %e, "cannot take a snapshot"),
            }
            let _ = job.done.send(taken);
        }
        {
            let mut pending = shared.pending.lock().expect("pending lock");
            pending.timing.end(None);
            if pending.ops.is_empty() {
                if pending.stop {
                    return; // stopped and drained
                }
                continue;
            }
            pending.timing.waiting_for_slot = true;
        }
        let _slot = gate.enter();
        shared
            .pending
            .lock()
            .expect("pending lock")
            .timing
            .waiting_for_slot = false;
        let round_items = match mode {
            InsertMode::Create => CREATE_ROUND_ITEMS,
            InsertMode::Copy | InsertMode::Auto => ROUND_ITEMS,
        };
        let round: Vec<Queued> = {
            let mut pending = shared.pending.lock().expect("pending lock");
            if pending.ops.is_empty() {
                continue;
            }
            let mut round = Vec::new();
            let mut items = 0;
            let mut upserts = false;
            while let Some(front) = pending.ops.front() {
                let n = op_items(&front.op);
                if !round.is_empty() && items + n > round_items {
                    break;
                }
                // A delete after an upsert starts the next round (see `apply_round`).
                let upsert = front.op.is_insert();
                if upserts && !upsert {
                    break;
                }
                upserts |= upsert;
                items += n;
                round.push(pending.ops.pop_front().expect("front"));
            }
            pending.in_flight = round.len();
            pending.round_since = round.first().map(|q| q.logged_at);
            pending.timing.begin();
            round
        };
        let max_seq = round.iter().map(|q| q.seq).max().unwrap_or(0);
        let ops: Vec<&WriteOp> = round.iter().map(|q| q.op.as_ref()).collect();
        let started = std::time::Instant::now();
        fail::fail_point!(crate::node::failpoints::APPLY_STALL);
        let target = Target {
            conn: &conn,
            dim,
            stage: &stage,
            mode,
            commit_gate: &shared.commit_gate,
        };
        let applied = if damaged {
            Err(Error::Engine("the database is damaged".into()))
        } else if let Some(e) = injected_refusal() {
            Err(e)
        } else if injected_loss() {
            Ok(())
        } else {
            apply_round(target, &ops, max_seq, &mut state)
        };
        if let Err(e) = applied {
            let out_of_memory = matches!(e, Error::OutOfMemory(_));
            if damaged || out_of_memory || (crashed && mode == InsertMode::Copy) {
                // After kill -9 during a bulk-load commit, Kuzu 0.11 can reopen a table in a
                // state where a failed commit is followed by a crash of the whole process on the
                // next update (SIGSEGV in `UpdateInfo`). So can a commit that ran out of the
                // buffer pool (seen: a 250 MB copy with a 186 MB pool, its relation table
                // rewritten at the commit of a bulk load; the next write crashed the node in
                // `memcpy`). Such a copy applies nothing more: its writes stay in its log and
                // the copy is rebuilt from another copy (`rejoin` asks for a whole copy after a
                // crash).
                if !damaged {
                    let why = if out_of_memory {
                        "this copy's database ran out of its buffer pool (its share of \
                         TORUA_MEMORY_MB) applying writes, and Kuzu can crash at the next write \
                         after that; it applies no more writes until it is rebuilt from another \
                         copy. Raise TORUA_MEMORY_MB, or give the node fewer shard copies (more \
                         nodes or a lower TORUA_SHARDS)"
                    } else {
                        "this copy's database came back damaged from a crash; it applies no more \
                         writes until it is rebuilt from another copy"
                    };
                    tracing::error!(shard, error = %e, "{why}");
                    *shared.damage.lock().expect("damage lock") = Some(why);
                    damaged = true;
                    // Nor is it checkpointed again: it is replaced, not kept, and checkpointing
                    // it (Kuzu does on close) can crash the process (SIGSEGV in
                    // `NodeGroup::checkpointInMemAndOnDisk`, seen when it was closed for the
                    // rebuild).
                    if let Err(e) = conn.query("CALL force_checkpoint_on_close=false") {
                        tracing::warn!(shard, error = %e, "cannot turn off the checkpoint on close of a damaged copy");
                    }
                }
                shared
                    .failed
                    .fetch_add(round.len() as u64, Ordering::SeqCst);
            } else {
                tracing::warn!(shard, writes = ops.len(), error = %e, "applying a round failed; applying its writes one by one");
                for Queued { seq, op, .. } in &round {
                    let one = match injected_refusal() {
                        Some(e) => Err(e),
                        None => apply_round(target, &[op.as_ref()], *seq, &mut state),
                    };
                    if let Err(e) = one {
                        shared.failed.fetch_add(1, Ordering::SeqCst);
                        tracing::error!(shard, seq, error = %e, "an acknowledged write cannot be applied to the database; it stays in the log");
                    }
                }
            }
        }
        tracing::debug!(
            shard,
            writes = ops.len(),
            max_seq,
            ms = started.elapsed().as_millis() as u64,
            "applied a round"
        );
        match counts(&conn) {
            Ok(c) => *shared.counts.lock().expect("counts lock") = c,
            Err(e) => tracing::warn!(shard, error = %e, "cannot count the copy's contents"),
        }
        shared.visible.send_replace(max_seq);
        {
            // Only once visible: a read that finds its items untouched answers without waiting.
            let mut pending = shared.pending.lock().expect("pending lock");
            for q in &round {
                pending.bytes -= q.size;
                pending.items.remove(&q.op);
            }
            pending.in_flight = 0;
            let oldest = pending.round_since.take();
            pending.timing.end(oldest);
        }
        if shared.failed.load(Ordering::SeqCst) == 0 {
            let pinned = shared
                .pins
                .lock()
                .expect("pins lock")
                .values()
                .min()
                .copied();
            let mut log = log.lock().expect("log lock");
            log.trim(pinned.map_or(max_seq, |p| p.min(max_seq)));
            shared.log_bytes.store(log.bytes(), Ordering::SeqCst);
        }
        let wal = std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0);
        if wal > CHECKPOINT_WAL_BYTES && !damaged {
            let _no_reads = shared.commit_gate.write().expect("commit gate");
            match conn.query("CHECKPOINT") {
                Ok(_) => {
                    state.checkpointed();
                    tracing::debug!(shard, wal_mb = wal >> 20, "checkpointed");
                }
                // Reads kept it waiting; the next round tries again.
                Err(e) => tracing::debug!(shard, error = %e, "checkpoint postponed"),
            }
        }
    }
}

/// Checkpoints (so the database file alone holds everything applied), copies the file to `to`,
/// and pins the log after the copy's sequence number. Reads wait meanwhile (a checkpoint needs
/// no open transaction).
fn take_snapshot(
    conn: &Connection,
    shared: &Shared,
    db_path: &Path,
    to: &Path,
    pin: u64,
) -> Result<u64, Error> {
    let _no_reads = shared.commit_gate.write().expect("commit gate");
    checkpoint(conn).map_err(|e| Error::Engine(format!("before copying the database: {e}")))?;
    let seq = *shared.visible.borrow();
    shared.pins.lock().expect("pins lock").insert(pin, seq);
    if let Err(e) = std::fs::copy(db_path, to) {
        shared.pins.lock().expect("pins lock").remove(&pin);
        return Err(Error::Engine(format!(
            "cannot copy {} to {}: {e}",
            db_path.display(),
            to.display()
        )));
    }
    Ok(seq)
}

/// Whether any entity row of the database carries a routing key (a scan, at open).
fn holds_routing(db: &Database) -> Result<bool, Error> {
    let conn = Connection::new(db).map_err(err)?;
    let q = "MATCH (e:Entity) WHERE e.routing IS NOT NULL RETURN e.id LIMIT 1";
    Ok(!run(&conn, q, vec![])?.is_empty())
}

/// `dim`: the embedding dimension the database was opened with (checked at open, so no per-read
/// schema lookup).
fn get_entity(conn: &Connection, id: &str, dim: usize) -> Result<Option<EntityRecord>, Error> {
    let has_embedding = dim > 0;
    let emb = if has_embedding { ", e.embedding" } else { "" };
    let q = format!(
        "MATCH (e:Entity {{id: $id}}) WHERE e.stub = false RETURN e.id, e.title, e.type, e.description, e.text_unit_ids, e.frequency, e.degree, e.routing{emb}"
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
        routing: as_optional_string(&row[7]),
        embedding: row.get(8).and_then(as_floats),
    };
    let rel = |q: &str| -> Result<Vec<RelationRecord>, Error> {
        Ok(run(conn, q, vec![("id", s(id))])?
            .iter()
            .map(|r| RelationRecord {
                id: as_string(&r[0]),
                source: as_string(&r[1]),
                target: as_string(&r[2]),
                description: as_string(&r[3]),
                weight: as_f64(&r[4]),
                text_unit_ids: as_strings(&r[5]),
                source_routing: as_optional_string(&r[6]),
                target_routing: as_optional_string(&r[7]),
            })
            .collect())
    };
    let mut relations = rel(
        "MATCH (a:Entity {id: $id})-[x:RELATED]-() RETURN x.id, x.source, x.target, x.description, x.weight, x.text_unit_ids, \
         x.source_routing, x.target_routing",
    )?;
    // Sorted by (id, source, target); a self-loop is found from both of its ends.
    relations.sort_by(|a, b| (&a.id, &a.source, &a.target).cmp(&(&b.id, &b.source, &b.target)));
    relations.dedup_by(|a, b| (&a.id, &a.source, &a.target) == (&b.id, &b.source, &b.target));
    Ok(Some(EntityRecord { entity, relations }))
}

fn get_document(conn: &Connection, id: &str) -> Result<Option<Document>, Error> {
    let q = "MATCH (d:Document {id: $id}) RETURN d.id, d.title, d.text, d.text_unit_ids";
    Ok(run(conn, q, vec![("id", s(id))])?
        .into_iter()
        .next()
        .map(|row| Document {
            id: as_string(&row[0]),
            title: as_string(&row[1]),
            text: as_string(&row[2]),
            text_unit_ids: as_strings(&row[3]),
        }))
}

fn get_chunk(conn: &Connection, id: &str, dim: usize) -> Result<Option<Chunk>, Error> {
    let emb = if dim > 0 { ", c.embedding" } else { "" };
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

/// Test shorthand: a strict read of one entity, failing the test on a read error.
#[cfg(test)]
impl KuzuShard {
    async fn entity_now(&self, id: &str) -> Option<EntityRecord> {
        self.get_entity(id.to_string(), &ReadScope::strict())
            .await
            .unwrap()
    }
}

#[cfg(test)]
mod cascade_tests;
#[cfg(test)]
mod cypher_fuzz_tests;
#[cfg(test)]
mod retrieval_tests;
#[cfg(test)]
mod search_tests;
#[cfg(test)]
mod tests;

/// A refusal injected by a test (`TORUA_FAILPOINTS`, point `apply-refused`) where the database
/// would refuse a round or one write.
fn injected_refusal() -> Option<Error> {
    fail::fail_point!(crate::node::failpoints::APPLY_REFUSED, |_| Some(
        Error::Engine("refused by the fault-injection point apply-refused".into())
    ));
    None
}

/// Whether a test (`TORUA_FAILPOINTS`, point `apply-lost`) makes this round vanish: counted as
/// applied, never written (a silent loss for anti-entropy to find).
fn injected_loss() -> bool {
    fail::fail_point!(crate::node::failpoints::APPLY_LOST, |_| true);
    false
}
