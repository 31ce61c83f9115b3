//! One step of a traversal across shards: the frontier grouped by shard and by the node that
//! answers for each (its own copies first), sent as one request per node, failed units retried on
//! other copies; and the answering side, which runs the step on its copies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crate::cluster::shard_map::{in_sync_here, ShardMap};
use crate::error::Error;
use crate::graph::partition::{ids_by_shard, shard_of};
use crate::node::context::NodeContext;
use crate::query::read::{ask, ReadRequest, ReadResponse};
use crate::query::scatter::{
    attempt_timeout, copies, join_in_order, suspect, Prefer, ShardsReport,
};
use crate::storage::{Direction, ReadScope, RelationFilter, Step};

/// Relations one traversal may collect before it is refused as too large.
pub const MAX_TRAVERSED_RELATIONS: usize = 2_000_000;
/// Largest answer of one traversal step from one node (below the transport's message limit).
const MAX_STEP_BYTES: usize = 12 << 20;

/// Most frontier ids in one request (keeps answers well below the transport's message limit).
const STEP_IDS: usize = 1000;

/// A shard's ids to expand in one request, and the copies to try.
struct Unit {
    shard: u32,
    ids: Vec<String>,
    copies: Vec<String>,
    last_error: Option<(String, String)>,
}

/// Why a traversal stopped without an answer.
#[derive(Debug)]
pub enum TraverseError {
    /// Input or size problem: 4xx.
    TooLarge(String),
    /// Shards missing and partial answers refused: 503.
    Unavailable(String),
    /// Ran past its time limit: 504.
    Timeout(String),
}

/// Where a traversal runs: the map, the deadline, partial-answer policy, how fresh its reads
/// must be, and what it covered.
pub struct Traversal<'a> {
    pub ctx: &'a Arc<NodeContext>,
    pub map: ShardMap,
    pub deadline: Instant,
    pub allow_partial: bool,
    pub direction: Direction,
    pub filter: RelationFilter,
    pub scope: ReadScope,
    touched: BTreeSet<u32>,
    failed: BTreeMap<u32, (Option<String>, String)>,
}

impl<'a> Traversal<'a> {
    pub fn new(
        ctx: &'a Arc<NodeContext>,
        map: ShardMap,
        deadline: Instant,
        allow_partial: bool,
        direction: Direction,
        filter: RelationFilter,
        scope: ReadScope,
    ) -> Self {
        Traversal {
            ctx,
            map,
            deadline,
            allow_partial,
            direction,
            filter,
            scope,
            touched: BTreeSet::new(),
            failed: BTreeMap::new(),
        }
    }

    /// The shards this traversal asked, and which of them did not answer.
    pub fn report(&self) -> ShardsReport {
        let mut r = ShardsReport::new(self.touched.len());
        for (shard, (node, reason)) in &self.failed {
            r.fail(*shard, node.clone(), reason.clone());
        }
        r.successful = r.total - r.failed;
        r.behind = self.scope.lags();
        r
    }

    /// One step: the summaries of `ids` and, when `relations`, their relations in `direction`.
    /// The ids are grouped by shard and cut into units of at most [`STEP_IDS`]; each attempt
    /// sends the units still open to the copy that attempt picks, one request per node per
    /// [`STEP_IDS`] ids, and a unit that fails moves to the shard's next copy.
    pub async fn step(
        &mut self,
        ids: &[String],
        direction: Direction,
        relations: bool,
    ) -> Result<Step, TraverseError> {
        let by_shard = ids_by_shard(ids, self.map.shards);
        self.touched.extend(by_shard.keys().copied());
        // Units of work: (shard, ids), with the copies to try; failed shards are not asked again.
        let mut open: Vec<Unit> = Vec::new();
        for (shard, ids) in by_shard {
            if self.failed.contains_key(&shard) {
                continue;
            }
            match copies(self.ctx, &self.map, shard, Prefer::Local) {
                Ok(c) => {
                    for chunk in ids.chunks(STEP_IDS) {
                        open.push(Unit {
                            shard,
                            ids: chunk.to_vec(),
                            copies: c.clone(),
                            last_error: None,
                        });
                    }
                }
                Err(e) => {
                    self.failed.insert(shard, (None, e.to_string()));
                }
            }
        }
        let mut out = Step::default();
        let mut attempt = 0;
        while !open.is_empty() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TraverseError::Timeout(
                    "the traversal ran past its time limit (timeout_ms)".into(),
                ));
            }
            // Requests: per node, units packed up to STEP_IDS ids each.
            let mut per_node: BTreeMap<String, Vec<Vec<usize>>> = BTreeMap::new();
            for (u, unit) in open.iter().enumerate() {
                let target = unit.copies[attempt.min(unit.copies.len() - 1)].clone();
                let batches = per_node.entry(target).or_default();
                let fits = batches.last().is_some_and(|b| {
                    b.iter().map(|&i| open[i].ids.len()).sum::<usize>() + unit.ids.len() <= STEP_IDS
                });
                if fits {
                    batches.last_mut().expect("a batch").push(u);
                } else {
                    batches.push(vec![u]);
                }
            }
            let mut calls = tokio::task::JoinSet::new();
            for (node, batches) in per_node {
                for batch in batches {
                    let more = batch.iter().any(|&u| attempt + 1 < open[u].copies.len());
                    let limit = attempt_timeout(left, more);
                    let req = ReadRequest::Traverse {
                        parts: batch
                            .iter()
                            .map(|&u| (open[u].shard, open[u].ids.clone()))
                            .collect(),
                        direction,
                        filter: self.filter.clone(),
                        relations,
                    };
                    let (ctx, node, scope) = (self.ctx.clone(), node.clone(), self.scope.clone());
                    calls.spawn(async move {
                        let answer = ask(&ctx, &node, req, &scope, limit).await;
                        if answer.as_ref().is_err_and(Error::is_no_answer) {
                            suspect(&ctx, &node);
                        }
                        (node, batch, answer)
                    });
                }
            }
            let mut done = vec![false; open.len()];
            while let Some(joined) = calls.join_next().await {
                let Ok((node, batch, answer)) = joined else {
                    continue;
                };
                let fail_all = |open: &mut Vec<Unit>, e: String| {
                    for &u in &batch {
                        open[u].last_error = Some((node.clone(), e.clone()));
                    }
                };
                match answer {
                    Ok(ReadResponse::Traversed(results)) => {
                        // Answers come per part, in the order sent.
                        if results.len() != batch.len() {
                            fail_all(&mut open, "answered a different number of parts".into());
                            continue;
                        }
                        for (&u, (_, result)) in batch.iter().zip(results) {
                            match result {
                                Ok(step) => {
                                    done[u] = true;
                                    out.entities.extend(step.entities);
                                    out.edges.extend(step.edges);
                                }
                                Err(Error::Invalid(e)) => return Err(TraverseError::TooLarge(e)),
                                Err(e) => open[u].last_error = Some((node.clone(), e.to_string())),
                            }
                        }
                    }
                    Ok(other) => fail_all(&mut open, format!("unexpected answer {other:?}")),
                    Err(e) => fail_all(&mut open, e.to_string()),
                }
            }
            attempt += 1;
            let mut still_open = Vec::new();
            for (u, unit) in open.into_iter().enumerate() {
                if done[u] {
                    continue;
                }
                if attempt >= unit.copies.len() {
                    let (node, reason) = unit
                        .last_error
                        .unwrap_or_else(|| (String::new(), "no answer".into()));
                    self.failed.insert(unit.shard, (Some(node), reason));
                } else {
                    still_open.push(unit);
                }
            }
            // A shard that failed on its last copy takes its other units with it.
            still_open.retain(|u| !self.failed.contains_key(&u.shard));
            open = still_open;
        }
        if !self.allow_partial && !self.failed.is_empty() {
            return Err(TraverseError::Unavailable(self.report().summary()));
        }
        Ok(out)
    }
}

/// On the node holding the copies: one step for each `(shard, ids)`, the shards in parallel.
pub async fn step_here(
    ctx: &Arc<NodeContext>,
    parts: Vec<(u32, Vec<String>)>,
    direction: Direction,
    filter: RelationFilter,
    relations: bool,
    scope: &ReadScope,
) -> Vec<(u32, Result<Step, Error>)> {
    let me = ctx.node_id().as_str().to_string();
    let map = ctx.shard_map.get();
    let out = join_in_order(parts.into_iter().map(|(shard, ids)| {
        let (ctx, filter, map, me) = (ctx.clone(), filter.clone(), map.clone(), me.clone());
        let scope = scope.clone();
        async move {
            if let Err(e) = in_sync_here(map.as_ref(), shard, &me, ctx.cluster.generation()) {
                return (shard, Err(e));
            }
            let result = match ctx.storage.open(shard).await {
                Ok(store) => {
                    store
                        .traverse_step(ids, direction, filter, relations, &scope)
                        .await
                }
                Err(e) => Err(e),
            };
            (shard, result.map_err(Error::from))
        }
    }))
    .await;
    let bytes: usize = out
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(step_bytes)
        .sum();
    if bytes > MAX_STEP_BYTES {
        let shards: Vec<u32> = out.iter().map(|(s, _)| *s).collect();
        return shards
            .into_iter()
            .map(|s| {
                (s, Err(Error::Invalid(format!(
                    "too large: one step of this traversal passed {} MiB on one node; lower hops or max_nodes, or add a relation_filter",
                    MAX_STEP_BYTES >> 20
                ))))
            })
            .collect();
    }
    out
}

fn step_bytes(step: &Step) -> usize {
    step.edges
        .iter()
        .map(|e| e.id.len() + e.source.len() + e.target.len() + e.description.len() + 16)
        .sum::<usize>()
        + step
            .entities
            .iter()
            .map(|e| e.id.len() + e.title.len() + e.kind.len() + e.description.len() + 24)
            .sum::<usize>()
}

impl Traversal<'_> {
    pub(crate) fn failed_shard_of(&self, id: &str) -> bool {
        self.failed.contains_key(&shard_of(id, self.map.shards))
    }
}
