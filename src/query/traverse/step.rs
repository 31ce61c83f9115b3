//! One step of a traversal across shards: the frontier grouped by shard and by the node that
//! answers for each (its own copies first), sent as one request per node, failed units retried on
//! other copies; and the answering side, which runs the step on its copies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::cluster::shard_map::{in_sync_here, ShardMap};
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::query::read::{ask, ReadRequest, ReadResponse};
use crate::query::scatter::{
    attempt_timeout, copies, join_in_order, suspect, Prefer, ShardsReport,
};
use crate::storage::{Direction, Edge, EntitySummary, ReadScope, RelationFilter, Step};

use super::ahead::{
    follow_pointers, read_ahead, Ahead, AheadItem, Followed, Homes, TraversalStats, Traversed,
    AHEAD_BYTES,
};

/// Relations one traversal may collect before it is refused as too large.
pub const MAX_TRAVERSED_RELATIONS: usize = 2_000_000;
/// Largest answer of one traversal step from one node (below the transport's message limit).
pub const MAX_STEP_BYTES: usize = 12 << 20;

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
/// must be, how far answering nodes may go on by themselves, and what it covered.
pub struct Traversal<'a> {
    pub ctx: &'a Arc<NodeContext>,
    pub map: ShardMap,
    pub deadline: Instant,
    pub allow_partial: bool,
    pub direction: Direction,
    pub filter: RelationFilter,
    pub scope: ReadScope,
    /// What the next steps that follow relations let answering nodes read ahead; set by the
    /// search before each step.
    pub ahead: Ahead,
    touched: BTreeSet<u32>,
    failed: BTreeMap<u32, (Option<String>, String)>,
    /// Expansions nodes read ahead, by entity, until a step asks for them.
    read_ahead: HashMap<String, ReadAhead>,
    /// Per node, the shards this traversal sends to it first (its read-ahead shards).
    designated: Option<BTreeMap<String, Vec<u32>>>,
    followed: Followed,
    rounds: u64,
    /// Where routed entities live, as learnt from relations and pointers.
    homes: Homes,
}

/// An entity's expansion a node read ahead.
struct ReadAhead {
    node: String,
    direction: Direction,
    item: AheadItem,
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
            ahead: Ahead::default(),
            touched: BTreeSet::new(),
            failed: BTreeMap::new(),
            read_ahead: HashMap::new(),
            designated: None,
            followed: Followed::default(),
            rounds: 0,
            homes: Homes::default(),
        }
    }

    /// Notes that entity `id` lives in `shard` (where a search found it).
    pub fn place(&mut self, id: &str, shard: u32) {
        self.homes.place(id, shard);
    }

    /// How this traversal ran: relations followed, local and remote, and network rounds.
    pub fn stats(&self) -> TraversalStats {
        TraversalStats {
            relations_local: self.followed.local,
            relations_remote: self.followed.remote,
            rounds: self.rounds,
        }
    }

    /// Counts `edges`, expanded from `starts` on `node`, as followed.
    fn follow(&mut self, node: &str, starts: &HashSet<&str>, edges: &[Edge], direction: Direction) {
        let before = self.followed;
        self.followed
            .count(&self.map, node, starts, edges, direction);
        self.ctx.metrics.followed(
            self.followed.local - before.local,
            self.followed.remote - before.remote,
        );
    }

    /// Per node, the shards whose steps go to it first (sorted).
    fn designated(&mut self) -> &BTreeMap<String, Vec<u32>> {
        let (ctx, map) = (self.ctx, &self.map);
        self.designated.get_or_insert_with(|| {
            let mut by_node: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for shard in 0..map.shards {
                if let Some(first) = copies(ctx, map, shard, Prefer::Local)
                    .ok()
                    .and_then(|c| c.into_iter().next())
                {
                    by_node.entry(first).or_default().push(shard);
                }
            }
            by_node
        })
    }

    /// Takes the expansions of `ids` read ahead (in `direction`, with relations when
    /// `relations`) into `out`; returns the ids still to ask for.
    fn take_read_ahead(
        &mut self,
        ids: &[String],
        direction: Direction,
        relations: bool,
        out: &mut Step,
    ) -> Vec<String> {
        let mut ask = Vec::new();
        for id in ids {
            let usable =
                |r: &ReadAhead| !relations || (r.direction == direction && r.item.edges.is_some());
            let Some(r) = self.read_ahead.remove(id).filter(usable) else {
                ask.push(id.clone());
                continue;
            };
            self.touched.insert(r.item.shard);
            out.entities.extend(r.item.summary);
            if relations {
                let edges = r.item.edges.unwrap_or_default();
                self.follow(&r.node, &HashSet::from([id.as_str()]), &edges, direction);
                out.edges.extend(edges);
            }
        }
        ask
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
    /// Expansions read ahead by earlier steps are taken as they are. The other ids are grouped
    /// by the shard they live in (of their id, or of the routing key a relation or a pointer
    /// named) and cut into units of at most [`STEP_IDS`]; each attempt sends the units still
    /// open to the copy that attempt picks, one request per node per [`STEP_IDS`] ids, and a
    /// unit that fails moves to the shard's next copy. With relations, answering nodes read
    /// ahead as [`Traversal::ahead`] allows. Ids that turn out to live elsewhere (their id's
    /// shard holds a pointer: a seed placed by a routing key) are asked again where they live.
    pub async fn step(
        &mut self,
        ids: &[String],
        direction: Direction,
        relations: bool,
    ) -> Result<Step, TraverseError> {
        let mut out = self.step_once(ids, direction, relations).await?;
        let moved = std::mem::take(&mut out.moved);
        if moved.is_empty() {
            return Ok(out);
        }
        for (id, key) in &moved {
            self.homes.learn_key(id, key, self.map.shards);
        }
        let again: Vec<String> = moved.into_iter().map(|(id, _)| id).collect();
        let more = self.step_once(&again, direction, relations).await?;
        out.entities.extend(more.entities);
        out.edges.extend(more.edges);
        Ok(out)
    }

    /// [`Traversal::step`] without following pointers: those come back in [`Step::moved`].
    async fn step_once(
        &mut self,
        ids: &[String],
        direction: Direction,
        relations: bool,
    ) -> Result<Step, TraverseError> {
        let started = Instant::now();
        let (asked, rounds) = (ids.len(), self.rounds);
        let mut out = Step::default();
        let ids = self.take_read_ahead(ids, direction, relations, &mut out);
        let read_ahead_hits = asked - ids.len();
        let read_ahead = relations && (self.ahead.hops > 0 || self.ahead.summaries);
        let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for id in ids {
            (by_shard.entry(self.homes.of(&id, self.map.shards)))
                .or_default()
                .push(id);
        }
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
            let ahead_shards = if read_ahead {
                self.designated().clone()
            } else {
                BTreeMap::new()
            };
            self.rounds += 1;
            self.ctx.metrics.traversal_round();
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
                        ahead: Ahead {
                            shards: ahead_shards.get(&node).cloned().unwrap_or_default(),
                            ..self.ahead.clone()
                        },
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
                    Ok(ReadResponse::Traversed(Traversed { parts, ahead })) => {
                        // Answers come per part, in the order sent.
                        if parts.len() != batch.len() {
                            fail_all(&mut open, "answered a different number of parts".into());
                            continue;
                        }
                        for item in ahead {
                            self.homes
                                .learn(item.edges.iter().flatten(), self.map.shards);
                            let r = ReadAhead {
                                node: node.clone(),
                                direction,
                                item,
                            };
                            self.read_ahead.insert(r.item.id.clone(), r);
                        }
                        for (&u, (_, result)) in batch.iter().zip(parts) {
                            match result {
                                Ok(step) => {
                                    done[u] = true;
                                    let starts = open[u].ids.iter().map(String::as_str).collect();
                                    self.follow(&node, &starts, &step.edges, direction);
                                    self.homes.learn(&step.edges, self.map.shards);
                                    out.entities.extend(step.entities);
                                    out.edges.extend(step.edges);
                                    out.moved.extend(step.moved);
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
        tracing::debug!(
            asked,
            read_ahead_hits,
            relations,
            rounds = self.rounds - rounds,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "traversal step"
        );
        Ok(out)
    }
}

/// On the node holding the copies: one step for each `(shard, ids)`, the shards in parallel,
/// then, when the step follows relations, what `ahead` lets this node read on by itself.
#[allow(clippy::too_many_arguments)]
pub async fn step_here(
    ctx: &Arc<NodeContext>,
    parts: Vec<(u32, Vec<String>)>,
    direction: Direction,
    filter: RelationFilter,
    relations: bool,
    ahead: Ahead,
    scope: &ReadScope,
) -> Traversed {
    let asked: Vec<String> = parts.iter().flat_map(|(_, ids)| ids.clone()).collect();
    let parts = step_parts(ctx, parts, direction, &filter, relations, scope).await;
    let used: usize = parts
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(step_bytes)
        .sum();
    let mut ahead = if relations && !ahead.is_none() {
        let edges: Vec<Edge> = parts
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flat_map(|s| s.edges.iter().cloned())
            .collect();
        let budget = AHEAD_BYTES.min(MAX_STEP_BYTES.saturating_sub(used));
        read_ahead(
            ctx, &asked, &edges, direction, &filter, ahead, scope, budget,
        )
        .await
    } else {
        Vec::new()
    };
    // Ids whose pointers this node holds, living in shards it also holds: expanded here.
    let moved: Vec<(String, String)> = (parts.iter())
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|s| s.moved.iter().cloned())
        .collect();
    ahead.extend(follow_pointers(ctx, &moved, direction, &filter, relations, scope).await);
    Traversed { parts, ahead }
}

/// One step for each `(shard, ids)` on this node's copies, the shards in parallel.
async fn step_parts(
    ctx: &Arc<NodeContext>,
    parts: Vec<(u32, Vec<String>)>,
    direction: Direction,
    filter: &RelationFilter,
    relations: bool,
    scope: &ReadScope,
) -> Vec<(u32, Result<Step, Error>)> {
    let me = ctx.node_id().as_str().to_string();
    let map = ctx.shard_map.get();
    let shards = map.as_ref().map_or(1, |m| m.shards);
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
                        .traverse_step(ids, shards, direction, filter, relations, &scope)
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
    step.edges.iter().map(edge_bytes).sum::<usize>()
        + step.entities.iter().map(summary_bytes).sum::<usize>()
}

/// The encoded size of a relation in a step's answer, estimated.
pub(super) fn edge_bytes(e: &Edge) -> usize {
    e.id.len() + e.source.len() + e.target.len() + e.description.len() + 16
}

/// The encoded size of an entity summary in a step's answer, estimated.
pub(super) fn summary_bytes(e: &EntitySummary) -> usize {
    e.id.len() + e.title.len() + e.kind.len() + e.description.len() + 24
}

impl Traversal<'_> {
    pub(crate) fn failed_shard_of(&self, id: &str) -> bool {
        (self.failed).contains_key(&self.homes.of(id, self.map.shards))
    }
}
