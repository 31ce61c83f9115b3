//! Traversals across shards: neighborhoods (breadth-first search) and shortest paths
//! (bidirectional breadth-first search). Kuzu traverses only inside one database, but every
//! relation is stored in the shards of both its endpoints, so the relations of an entity are
//! all in the entity's own shard: one step of a search is "the relations of these entities",
//! answered by their shards. Each step groups the frontier by the node that will answer for
//! each shard (this node's copies first) and sends one request per node; the receiving node
//! deduplicates and builds the next frontier.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::context::NodeContext;
use crate::graph::partition::shard_of;
use crate::peer::wire::{PeerRequest, PeerResponse};
use crate::shard_map::ShardMap;
use crate::storage::{Direction, Edge, EntitySummary, RelationFilter, Step};

use super::scatter::{attempt_timeout, copies, suspect, ShardsReport};

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
    copies: Vec<(String, String)>,
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

/// Where a traversal runs: the map, the deadline, partial-answer policy, and what it covered.
pub struct Traversal<'a> {
    pub ctx: &'a Arc<NodeContext>,
    pub map: ShardMap,
    pub deadline: Instant,
    pub allow_partial: bool,
    pub direction: Direction,
    pub filter: RelationFilter,
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
    ) -> Self {
        Traversal {
            ctx,
            map,
            deadline,
            allow_partial,
            direction,
            filter,
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
        let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for id in ids {
            by_shard
                .entry(shard_of(id, self.map.shards))
                .or_default()
                .push(id.clone());
        }
        self.touched.extend(by_shard.keys().copied());
        // Units of work: (shard, ids), with the copies to try; failed shards are not asked again.
        let mut open: Vec<Unit> = Vec::new();
        for (shard, ids) in by_shard {
            if self.failed.contains_key(&shard) {
                continue;
            }
            match copies(self.ctx, &self.map, shard, true) {
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
                    self.failed.insert(shard, (None, e));
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
            let mut per_node: BTreeMap<(String, String), Vec<Vec<usize>>> = BTreeMap::new();
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
            for ((node, addr), batches) in per_node {
                for batch in batches {
                    let more = batch.iter().any(|&u| attempt + 1 < open[u].copies.len());
                    let limit = attempt_timeout(left, more);
                    let req = PeerRequest::Traverse {
                        parts: batch
                            .iter()
                            .map(|&u| (open[u].shard, open[u].ids.clone()))
                            .collect(),
                        direction,
                        filter: self.filter.clone(),
                        relations,
                    };
                    let (ctx, node, addr) = (self.ctx.clone(), node.clone(), addr.clone());
                    calls.spawn(async move {
                        let answer = crate::peer::call(&ctx, &node, &addr, &req, limit).await;
                        if answer.is_err() {
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
                    Ok(PeerResponse::Traversed(results)) => {
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
                                Err(e) if e.starts_with("too large:") => {
                                    return Err(TraverseError::TooLarge(e))
                                }
                                Err(e) => open[u].last_error = Some((node.clone(), e)),
                            }
                        }
                    }
                    Ok(PeerResponse::Failed(e)) => fail_all(&mut open, e),
                    Ok(other) => fail_all(&mut open, format!("unexpected answer {other:?}")),
                    Err(e) => fail_all(&mut open, e),
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
) -> Vec<(u32, Result<Step, String>)> {
    let me = ctx.node_id().as_str().to_string();
    let map = ctx.shard_map.get();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, (shard, ids)) in parts.into_iter().enumerate() {
        let (ctx, filter, map, me) = (ctx.clone(), filter.clone(), map.clone(), me.clone());
        tasks.spawn(async move {
            if let Err(e) = in_sync_here(map.as_ref(), shard, &me) {
                return (n, shard, Err(e));
            }
            let result = match ctx.storage.open(shard).await {
                Ok(store) => store.traverse_step(ids, direction, filter, relations).await,
                Err(e) => Err(e),
            };
            (n, shard, result)
        });
    }
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(joined) = tasks.join_next().await {
        if let Ok((n, shard, result)) = joined {
            if let Ok(step) = &result {
                bytes += step_bytes(step);
            }
            out.push((n, shard, result));
        }
    }
    // In the order asked (the asker matches answers to parts by position).
    out.sort_by_key(|(n, _, _)| *n);
    let out: Vec<(u32, Result<Step, String>)> = out.into_iter().map(|(_, s, r)| (s, r)).collect();
    if bytes > MAX_STEP_BYTES {
        let shards: Vec<u32> = out.iter().map(|(s, _)| *s).collect();
        return shards
            .into_iter()
            .map(|s| {
                (s, Err(format!(
                    "too large: one step of this traversal passed {} MiB on one node; lower hops or max_nodes, or add a relation_filter",
                    MAX_STEP_BYTES >> 20
                )))
            })
            .collect();
    }
    out
}

/// Reads are answered only by a copy its own map calls in sync (a copy that just fell out may
/// miss acknowledged writes); the asker then tries another copy.
pub fn in_sync_here(map: Option<&ShardMap>, shard: u32, me: &str) -> Result<(), String> {
    match map.and_then(|m| m.assignment(shard)) {
        Some(a) if a.is_in_sync(me) => Ok(()),
        Some(_) => Err(format!("this node's copy of shard {shard} is not in sync")),
        None => Err(format!("this node has no shard map with shard {shard}")),
    }
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

/// The other end of `edge` from `start`, when `direction` lets the search go from `start`
/// along it.
fn other_end<'e>(edge: &'e Edge, start: &str, direction: Direction) -> Option<&'e str> {
    match direction {
        Direction::Out if edge.source == start => Some(&edge.target),
        Direction::In if edge.target == start => Some(&edge.source),
        Direction::Both if edge.source == start => Some(&edge.target),
        Direction::Both if edge.target == start => Some(&edge.source),
        _ => None,
    }
}

pub fn reverse(d: Direction) -> Direction {
    match d {
        Direction::Out => Direction::In,
        Direction::In => Direction::Out,
        Direction::Both => Direction::Both,
    }
}

pub struct Neighborhood {
    /// With their hop distance, sorted by (hop, id).
    pub entities: Vec<(EntitySummary, u32)>,
    /// Sorted by (id, source, target).
    pub relations: Vec<Edge>,
    pub truncated: bool,
    pub missing_seeds: Vec<String>,
}

type EdgeKey = (String, String, String);

fn key(e: &Edge) -> EdgeKey {
    (e.id.clone(), e.source.clone(), e.target.clone())
}

/// Breadth-first search from `seeds` up to `hops`. The answer is the whole neighborhood cut
/// down: entities to the first `max_nodes` by (hop, id), relations to those between kept
/// entities, then to the first `max_relations` by (id, source, target). The search stops early
/// once `max_nodes` entities are known (every later one would be cut), after one more step over
/// the kept entities of the last layer for the relations between kept entities.
pub async fn neighborhood(
    t: &mut Traversal<'_>,
    seeds: &[String],
    hops: u32,
    max_nodes: usize,
    max_relations: usize,
) -> Result<Neighborhood, TraverseError> {
    let seeds: Vec<String> = seeds
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut dist: HashMap<String, u32> = HashMap::new();
    let mut info: HashMap<String, EntitySummary> = HashMap::new();
    let mut edges: BTreeMap<EdgeKey, Edge> = BTreeMap::new();
    let mut frontier = seeds.clone();
    let mut missing_seeds = Vec::new();
    let mut hop = 0;
    while hop < hops && !frontier.is_empty() {
        let step = t.step(&frontier, t.direction, true).await?;
        let next = absorb(step, &frontier, t.direction, &mut info, &mut edges, &dist);
        if hop == 0 {
            for s in &seeds {
                if info.contains_key(s) || t.failed_shard_of(s) {
                    dist.insert(s.clone(), 0);
                } else {
                    missing_seeds.push(s.clone());
                }
            }
        }
        if edges.len() > MAX_TRAVERSED_RELATIONS {
            return Err(TraverseError::TooLarge(format!(
                "the neighborhood has more than {MAX_TRAVERSED_RELATIONS} relations; lower hops or max_nodes, or add a relation_filter"
            )));
        }
        hop += 1;
        for n in &next {
            dist.insert(n.clone(), hop);
        }
        frontier = next;
        if dist.len() >= max_nodes {
            break;
        }
    }
    // Keep the first max_nodes by (hop, id).
    let mut ranked: Vec<(u32, String)> = dist.iter().map(|(id, d)| (*d, id.clone())).collect();
    ranked.sort();
    let mut truncated = ranked.len() > max_nodes;
    ranked.truncate(max_nodes);
    let kept: HashSet<String> = ranked.iter().map(|(_, id)| id.clone()).collect();
    if hop < hops && !frontier.is_empty() {
        // Stopped early: the kept entities of the last layer still have relations to follow
        // (to each other, or back, for `out`/`in`), and whatever else they reach is cut.
        let last: Vec<String> = frontier.iter().filter(|id| kept.contains(*id)).cloned().collect();
        if !last.is_empty() {
            let step = t.step(&last, t.direction, true).await?;
            let beyond = absorb(step, &last, t.direction, &mut info, &mut edges, &dist);
            truncated |= !beyond.is_empty();
        }
    }
    let unknown: Vec<String> = ranked
        .iter()
        .filter(|(_, id)| !info.contains_key(id))
        .map(|(_, id)| id.clone())
        .collect();
    if !unknown.is_empty() {
        for e in t.step(&unknown, t.direction, false).await?.entities {
            info.insert(e.id.clone(), e);
        }
    }
    let mut relations: Vec<Edge> = edges
        .into_values()
        .filter(|e| kept.contains(&e.source) && kept.contains(&e.target))
        .collect();
    if relations.len() > max_relations {
        relations.truncate(max_relations);
        truncated = true;
    }
    let entities = ranked
        .iter()
        .map(|(d, id)| {
            let summary = info.get(id).cloned().unwrap_or_else(|| placeholder(id));
            (summary, *d)
        })
        .collect();
    Ok(Neighborhood {
        entities,
        relations,
        truncated,
        missing_seeds,
    })
}

/// Takes in one step's answer from `frontier`: entity properties, the relations followed from
/// the frontier in `direction`; returns the entities reached that `dist` does not know, sorted.
fn absorb(
    step: Step,
    frontier: &[String],
    direction: Direction,
    info: &mut HashMap<String, EntitySummary>,
    edges: &mut BTreeMap<EdgeKey, Edge>,
    dist: &HashMap<String, u32>,
) -> Vec<String> {
    for e in step.entities {
        info.insert(e.id.clone(), e);
    }
    let in_frontier: HashSet<&String> = frontier.iter().collect();
    let mut next = BTreeSet::new();
    for edge in step.edges {
        let mut followed = false;
        for start in [&edge.source, &edge.target] {
            if !in_frontier.contains(start) {
                continue;
            }
            if let Some(other) = other_end(&edge, start, direction) {
                followed = true;
                if !dist.contains_key(other) && !in_frontier.contains(&other.to_string()) {
                    next.insert(other.to_string());
                }
            }
        }
        if followed {
            edges.entry(key(&edge)).or_insert(edge);
        }
    }
    next.into_iter().collect()
}

impl Traversal<'_> {
    fn failed_shard_of(&self, id: &str) -> bool {
        self.failed.contains_key(&shard_of(id, self.map.shards))
    }
}

/// An entity whose properties could not be read (its shard did not answer).
fn placeholder(id: &str) -> EntitySummary {
    EntitySummary {
        id: id.to_string(),
        title: String::new(),
        kind: String::new(),
        description: String::new(),
        degree: 0,
        frequency: 0,
    }
}

pub enum PathAnswer {
    Found {
        entities: Vec<EntitySummary>,
        relations: Vec<Edge>,
    },
    NotFound,
    /// `from` or `to` is not in the graph.
    Missing(String),
}

/// One side of a bidirectional search.
struct Side {
    dist: HashMap<String, u32>,
    /// Entity → (the entity one step closer to this side's start, the relation between them).
    parent: HashMap<String, (String, Edge)>,
    frontier: Vec<String>,
    depth: u32,
    direction: Direction,
}

impl Side {
    fn new(start: &str, direction: Direction) -> Side {
        Side {
            dist: HashMap::from([(start.to_string(), 0)]),
            parent: HashMap::new(),
            frontier: vec![start.to_string()],
            depth: 0,
            direction,
        }
    }

    /// Adds one layer from a step's relations; returns the new frontier.
    fn grow(&mut self, mut edges: Vec<Edge>) {
        // Deterministic parents: the smallest (start, relation) reaches a node first.
        let in_frontier: HashSet<String> = self.frontier.iter().cloned().collect();
        let mut moves: Vec<(String, String, Edge)> = Vec::new();
        for e in edges.drain(..) {
            for start in [&e.source, &e.target] {
                if in_frontier.contains(start) {
                    if let Some(other) = other_end(&e, start, self.direction) {
                        moves.push((start.clone(), other.to_string(), e.clone()));
                    }
                }
            }
        }
        moves.sort_by(|a, b| (&a.0, &a.2.id, &a.2.source, &a.2.target).cmp(&(&b.0, &b.2.id, &b.2.source, &b.2.target)));
        let mut next = BTreeSet::new();
        for (start, other, edge) in moves {
            if !self.dist.contains_key(&other) {
                self.dist.insert(other.clone(), self.depth + 1);
                self.parent.insert(other.clone(), (start, edge));
                next.insert(other);
            }
        }
        self.depth += 1;
        self.frontier = next.into_iter().collect();
    }

    /// The chain from `node` back to this side's start: entities (from `node`) and relations.
    fn chain(&self, node: &str) -> (Vec<String>, Vec<Edge>) {
        let mut ids = vec![node.to_string()];
        let mut rels = Vec::new();
        let mut at = node.to_string();
        while let Some((prev, edge)) = self.parent.get(&at) {
            rels.push(edge.clone());
            ids.push(prev.clone());
            at = prev.clone();
        }
        (ids, rels)
    }
}

/// A shortest path from `from` to `to` of at most `max_hops` relations: breadth-first from both
/// ends, always growing the smaller frontier by a whole layer, until the layers meet.
pub async fn shortest_path(
    t: &mut Traversal<'_>,
    from: &str,
    to: &str,
    max_hops: u32,
) -> Result<PathAnswer, TraverseError> {
    let ends: Vec<String> = if from == to {
        vec![from.to_string()]
    } else {
        vec![from.to_string(), to.to_string()]
    };
    let found = t.step(&ends, t.direction, false).await?;
    // An end whose shard did not answer (partial answers allowed) may still be reached: its
    // relations are also stored with their other endpoints.
    for end in &ends {
        if !found.entities.iter().any(|e| &e.id == end) && !t.failed_shard_of(end) {
            return Ok(PathAnswer::Missing(end.clone()));
        }
    }
    if from == to {
        return Ok(PathAnswer::Found {
            entities: vec![found.entities.into_iter().next().unwrap_or_else(|| placeholder(from))],
            relations: vec![],
        });
    }
    let mut fwd = Side::new(from, t.direction);
    let mut bwd = Side::new(to, reverse(t.direction));
    while fwd.depth + bwd.depth < max_hops && !fwd.frontier.is_empty() && !bwd.frontier.is_empty() {
        let grow_fwd = fwd.frontier.len() <= bwd.frontier.len();
        let (side, other) = if grow_fwd {
            (&mut fwd, &bwd)
        } else {
            (&mut bwd, &fwd)
        };
        let step = t.step(&side.frontier.clone(), side.direction, true).await?;
        side.grow(step.edges);
        if side.dist.len() > MAX_TRAVERSED_RELATIONS {
            return Err(TraverseError::TooLarge(
                "the search reached too many entities; lower max_hops".into(),
            ));
        }
        let meet = side
            .frontier
            .iter()
            .filter_map(|n| other.dist.get(n).map(|d| (side.depth + d, n.clone())))
            .min();
        if let Some((_, node)) = meet {
            let (mut ids, mut rels) = fwd.chain(&node);
            ids.reverse();
            rels.reverse();
            let (bids, brels) = bwd.chain(&node);
            ids.extend(bids.into_iter().skip(1));
            rels.extend(brels);
            let step = t.step(&ids, t.direction, false).await?;
            let mut info: HashMap<String, EntitySummary> =
                step.entities.into_iter().map(|e| (e.id.clone(), e)).collect();
            let entities = ids
                .iter()
                .map(|id| info.remove(id).unwrap_or_else(|| placeholder(id)))
                .collect();
            return Ok(PathAnswer::Found {
                entities,
                relations: rels,
            });
        }
    }
    Ok(PathAnswer::NotFound)
}
