//! One retrieval stage: a typed storage read ([`RetrievalRead`]) sent to one copy of each chosen
//! shard (through the shared fan-out, a failed copy retried on the next), its typed rows
//! collected, and the shards that did not answer remembered for `_shards`. Retrieval asks each
//! shard's primary first: the copies' HNSW graphs differ, and every node must give the same
//! answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::cluster::shard_map::ShardMap;
use crate::node::context::NodeContext;
use crate::query::scatter::{scatter, Prefer, Retrieval, ShardsReport};
use crate::storage::{ReadScope, RetrievalRead, RetrievalRows};

/// What the stages of one retrieval share: where to ask, until when, and what failed.
pub struct Stages<'a> {
    pub ctx: &'a Arc<NodeContext>,
    pub map: ShardMap,
    pub deadline: Instant,
    /// Shards that failed in any stage, with the copy and reason of their last failure.
    failed: Mutex<BTreeMap<u32, (Option<String>, String)>>,
    /// How fresh every stage's reads must be, and the copies that answered behind.
    pub scope: ReadScope,
    /// The shard each item a search found lives in (an entity placed by a routing key is not
    /// in the shard of its id): later stages read it there.
    found_in: Mutex<HashMap<String, u32>>,
}

/// Why a stage produced nothing usable.
#[derive(Debug)]
pub enum StageError {
    /// Past the request's time limit.
    Timeout,
    /// Storage refused one of retrieval's reads as invalid: a bug, reported as such.
    Internal(String),
}

impl<'a> Stages<'a> {
    pub fn new(
        ctx: &'a Arc<NodeContext>,
        map: ShardMap,
        deadline: Instant,
        scope: ReadScope,
    ) -> Self {
        Stages {
            ctx,
            map,
            deadline,
            failed: Mutex::new(BTreeMap::new()),
            scope,
            found_in: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that a search found item `id` in `shard`.
    pub fn found_in(&self, id: &str, shard: u32) {
        let mut found = self.found_in.lock().expect("found_in lock");
        found.insert(id.to_string(), shard);
    }

    /// The shard a search found item `id` in.
    pub fn shard_found_in(&self, id: &str) -> Option<u32> {
        self.found_in
            .lock()
            .expect("found_in lock")
            .get(id)
            .copied()
    }

    pub fn all_shards(&self) -> Vec<u32> {
        (0..self.map.shards).collect()
    }

    /// Runs `read` on `shards`; returns every answering shard's rows, taken out of its answer
    /// by `pick` (an answer of another kind counts as the shard's failure). Stages may run
    /// concurrently.
    pub async fn run<T>(
        &self,
        shards: &[u32],
        read: RetrievalRead,
        pick: fn(RetrievalRows) -> Option<Vec<T>>,
    ) -> Result<Vec<T>, StageError> {
        let rows = self.run_by_shard(shards, read, pick).await?;
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    /// [`Stages::run`], each row with the shard that answered it.
    pub async fn run_by_shard<T>(
        &self,
        shards: &[u32],
        read: RetrievalRead,
        pick: fn(RetrievalRows) -> Option<Vec<T>>,
    ) -> Result<Vec<(u32, T)>, StageError> {
        if shards.is_empty() {
            return Ok(vec![]);
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StageError::Timeout);
        }
        let read = Retrieval {
            read,
            timeout_ms: (left.as_millis() as u64).max(1),
        };
        let (answers, report, invalid) = scatter(
            self.ctx,
            &self.map,
            shards,
            read,
            Prefer::Primary,
            &self.scope,
        )
        .await;
        if let Some(reason) = invalid {
            return Err(StageError::Internal(reason));
        }
        let mut failed = self.failed.lock().expect("failed lock");
        for f in report.failures {
            failed.insert(f.shard, (f.node, f.reason));
        }
        let mut rows = Vec::new();
        for a in answers {
            match pick(a.rows) {
                Some(r) => rows.extend(r.into_iter().map(|row| (a.shard, row))),
                None => {
                    failed.insert(
                        a.shard,
                        (
                            Some(a.node),
                            "unexpected answer: rows of another read".into(),
                        ),
                    );
                }
            }
        }
        Ok(rows)
    }

    /// Records shards a traversal could not reach.
    pub fn absorb(&self, report: ShardsReport) {
        let mut failed = self.failed.lock().expect("failed lock");
        for f in report.failures {
            failed.entry(f.shard).or_insert((f.node, f.reason));
        }
    }

    /// The `_shards` report of the whole retrieval: every shard of the graph counts once.
    pub fn report(&self) -> ShardsReport {
        let mut r = ShardsReport::new(self.map.shards as usize);
        for (shard, (node, reason)) in self.failed.lock().expect("failed lock").iter() {
            r.fail(*shard, node.clone(), reason.clone());
        }
        r.successful = r.total - r.failed;
        r.behind = self.scope.lags();
        r
    }
}
