//! Going on locally: a node that answers a traversal step also expands, by itself, the far ends
//! of the step's relations whose shards it holds in sync, for as many further levels as the
//! asker allows ([`Ahead`]), and sends those expansions back with the step ([`Traversed`]). The
//! asker keeps them per entity and does not ask for those entities again, so a search goes back
//! to the network only for the entities no node that already answered holds.
//!
//! An entity's expansion (its summary and its relations in one direction under one filter) is
//! the same whoever asks and whenever in the search, so reading it one level early changes no
//! answer; it only moves work from a later round into this one. A node reads whole levels only,
//! and stops before a level that would pass [`AHEAD_IDS`] entities, or once the answer passes
//! [`AHEAD_BYTES`]; what it did not read is asked later.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::other_end;
use super::step::{edge_bytes, summary_bytes};
use crate::cluster::shard_map::{in_sync_here, ShardMap};
use crate::error::Error;
use crate::graph::partition::shard_of;
use crate::node::context::NodeContext;
use crate::query::scatter::join_in_order;
use crate::storage::{Direction, Edge, EntitySummary, ReadScope, RelationFilter, Step};

/// Most entities one node expands ahead for one request.
pub const AHEAD_IDS: usize = 20_000;
/// Most bytes (estimated) of expansions ahead in one answer (less when the step's own answer
/// leaves less room below [`super::step::MAX_STEP_BYTES`]).
pub const AHEAD_BYTES: usize = 4 << 20;

/// How far a node answering a traversal step goes on by itself over the copies it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ahead {
    /// Further levels whose relations it expands.
    pub hops: u32,
    /// After those, whether it reads the summaries of the last level's far ends.
    pub summaries: bool,
    /// The shards (sorted) whose entities it may read ahead: those the asker would send to this
    /// node anyway, so that no two nodes read the same entity ahead.
    pub shards: Vec<u32>,
}

impl Ahead {
    pub fn is_none(&self) -> bool {
        (self.hops == 0 && !self.summaries) || self.shards.is_empty()
    }
}

/// One entity read ahead: its summary (`None`: not an entity of the graph, or a stub) and, when
/// its level expanded relations, its relations in the step's direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AheadItem {
    pub id: String,
    pub shard: u32,
    pub summary: Option<EntitySummary>,
    pub edges: Option<Vec<Edge>>,
}

/// A node's answer to one traversal step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traversed {
    /// Per part asked, in the order asked: what it found or why it could not.
    pub parts: Vec<(u32, Result<Step, Error>)>,
    /// What the node read ahead, per entity.
    pub ahead: Vec<AheadItem>,
}

/// Relations a traversal followed, by whether the node that expanded a relation's near end
/// also holds its far end's shard (`local`: the search could go on there) or not (`remote`).
/// A relation counts once per end the search expanded it from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Followed {
    pub local: u64,
    pub remote: u64,
}

/// What a traversal's answer says about how it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TraversalStats {
    /// Relations followed where the node that expanded the near end also holds the far end's
    /// shard (the search went on there without the network, or could have).
    pub relations_local: u64,
    /// Relations followed to a far end whose shard the expanding node does not hold.
    pub relations_remote: u64,
    /// Network rounds of steps (each one request per node that answers).
    pub rounds: u64,
}

impl Followed {
    /// Counts `edges`, expanded from `starts` (in `direction`) on `node`.
    pub fn count(
        &mut self,
        map: &ShardMap,
        node: &str,
        starts: &HashSet<&str>,
        edges: &[Edge],
        direction: Direction,
    ) {
        for (edge, far) in followed_ends(starts, edges, direction) {
            let held = map
                .assignment(edge.shard_of_end(far, map.shards))
                .is_some_and(|a| a.is_in_sync(node));
            if held {
                self.local += 1;
            } else {
                self.remote += 1;
            }
        }
    }
}

/// The far end of each relation of `edges` followed from one of `starts` in `direction`, once
/// per start it was followed from.
fn followed_ends<'e>(
    starts: &'e HashSet<&str>,
    edges: &'e [Edge],
    direction: Direction,
) -> impl Iterator<Item = (&'e Edge, &'e str)> {
    edges.iter().flat_map(move |edge| {
        [&edge.source, &edge.target]
            .into_iter()
            .filter(|start| starts.contains(start.as_str()))
            .filter_map(move |start| other_end(edge, start, direction))
            .map(move |far| (edge, far))
    })
}

/// The shards of entities placed by routing keys, learnt from the relations that name them (an
/// entity not in it lives in the shard of its id).
#[derive(Debug, Default)]
pub struct Homes(HashMap<String, u32>);

impl Homes {
    /// Notes the homes of the routed ends of `edges`.
    pub fn learn<'e>(&mut self, edges: impl IntoIterator<Item = &'e Edge>, shards: u32) {
        for e in edges {
            for (end, key) in [
                (&e.source, &e.source_routing),
                (&e.target, &e.target_routing),
            ] {
                if let Some(key) = key {
                    self.0.insert(end.clone(), shard_of(key, shards));
                }
            }
        }
    }

    /// Notes that `id` lives under routing key `key`.
    pub fn learn_key(&mut self, id: &str, key: &str, shards: u32) {
        self.place(id, shard_of(key, shards));
    }

    /// Notes that `id` lives in `shard`.
    pub fn place(&mut self, id: &str, shard: u32) {
        self.0.insert(id.to_string(), shard);
    }

    /// The shard entity `id` lives in.
    pub fn of(&self, id: &str, shards: u32) -> u32 {
        self.0
            .get(id)
            .copied()
            .unwrap_or_else(|| shard_of(id, shards))
    }
}

/// The far ends of `edges` from `starts` in `direction` that are not in `seen`.
pub fn far_ends(
    starts: &HashSet<&str>,
    edges: &[Edge],
    direction: Direction,
    seen: &HashSet<String>,
) -> Vec<String> {
    let far = followed_ends(starts, edges, direction)
        .map(|(_, far)| far)
        .filter(|far| !seen.contains(*far));
    let out: std::collections::BTreeSet<&str> = far.collect();
    out.into_iter().map(str::to_string).collect()
}

/// Splits one shard's step over `ids` into one item per id.
fn items_of(
    shard: u32,
    ids: &[String],
    step: Step,
    direction: Direction,
    relations: bool,
) -> Vec<AheadItem> {
    // An id that lives in another shard is left to the asker.
    let moved: HashSet<&str> = step.moved.iter().map(|(id, _)| id.as_str()).collect();
    let mut items: BTreeMap<&str, AheadItem> = ids
        .iter()
        .filter(|id| !moved.contains(id.as_str()))
        .map(|id| {
            let item = AheadItem {
                id: id.clone(),
                shard,
                summary: None,
                edges: relations.then(Vec::new),
            };
            (id.as_str(), item)
        })
        .collect();
    for e in step.entities {
        if let Some(item) = items.get_mut(e.id.as_str()) {
            item.summary = Some(e);
        }
    }
    for edge in step.edges {
        // A self-loop belongs to its entity once.
        let ends = if edge.source == edge.target {
            &[&edge.source][..]
        } else {
            &[&edge.source, &edge.target][..]
        };
        for start in ends {
            if other_end(&edge, start, direction).is_none() {
                continue;
            }
            if let Some(edges) = items.get_mut(start.as_str()).and_then(|i| i.edges.as_mut()) {
                edges.push(edge.clone());
            }
        }
    }
    items.into_values().collect()
}

fn item_bytes(item: &AheadItem) -> usize {
    let summary = item.summary.as_ref().map_or(0, summary_bytes);
    let edges = item.edges.iter().flatten().map(edge_bytes);
    item.id.len() + summary + edges.sum::<usize>()
}

/// What one node reads ahead after answering a step over `asked` (the ids of the parts) whose
/// relations were `edges`: levels of expansions over the copies it holds in sync, as `ahead`
/// allows, within [`AHEAD_IDS`] entities and `budget` bytes. A copy that fails is left to the
/// asker.
#[allow(clippy::too_many_arguments)]
pub async fn read_ahead(
    ctx: &Arc<NodeContext>,
    asked: &[String],
    edges: &[Edge],
    direction: Direction,
    filter: &RelationFilter,
    ahead: Ahead,
    scope: &ReadScope,
    budget: usize,
) -> Vec<AheadItem> {
    let me = ctx.node_id().as_str().to_string();
    let Some(map) = ctx.shard_map.get() else {
        return Vec::new();
    };
    let generation = ctx.cluster.generation();
    let mut seen: HashSet<String> = asked.iter().cloned().collect();
    let starts: HashSet<&str> = asked.iter().map(String::as_str).collect();
    let mut next = far_ends(&starts, edges, direction, &seen);
    let mut homes = Homes::default();
    homes.learn(edges, map.shards);
    let (mut out, mut ids, mut bytes) = (Vec::new(), 0, 0);
    for level in 0..=ahead.hops {
        let relations = level < ahead.hops;
        if next.is_empty() || (!relations && !ahead.summaries) {
            break;
        }
        // This level: the far ends held here, in shards; a whole level or none, since a level
        // read in part costs a shard a second pass (often a scan) when the rest is asked.
        let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for id in next {
            let shard = homes.of(&id, map.shards);
            let mine = ahead.shards.binary_search(&shard).is_ok()
                && in_sync_here(Some(&map), shard, &me, generation).is_ok();
            if mine {
                by_shard.entry(shard).or_default().push(id);
            }
        }
        let level_size: usize = by_shard.values().map(Vec::len).sum();
        if ids + level_size > AHEAD_IDS {
            break;
        }
        ids += level_size;
        seen.extend(by_shard.values().flatten().cloned());
        let started = std::time::Instant::now();
        let shards = by_shard.len();
        let level_items = expand_here(
            ctx, by_shard, map.shards, direction, filter, relations, scope,
        )
        .await;
        tracing::debug!(
            level,
            relations,
            entities = level_size,
            shards,
            read_ms = started.elapsed().as_secs_f64() * 1000.0,
            "read ahead"
        );
        let mut level_edges = Vec::new();
        let mut level_ids = Vec::new();
        for item in level_items {
            bytes += item_bytes(&item);
            if bytes > budget {
                return out;
            }
            level_ids.push(item.id.clone());
            level_edges.extend(item.edges.iter().flatten().cloned());
            out.push(item);
        }
        let starts: HashSet<&str> = level_ids.iter().map(String::as_str).collect();
        homes.learn(&level_edges, map.shards);
        next = far_ends(&starts, &level_edges, direction, &seen);
    }
    out
}

/// One expansion per id of `by_shard`, read on this node's copies of those shards (of `shards`),
/// the shards in parallel. A copy that fails is left to the asker.
async fn expand_here(
    ctx: &Arc<NodeContext>,
    by_shard: BTreeMap<u32, Vec<String>>,
    shards: u32,
    direction: Direction,
    filter: &RelationFilter,
    relations: bool,
    scope: &ReadScope,
) -> Vec<AheadItem> {
    let steps = join_in_order(by_shard.into_iter().map(|(shard, ids)| {
        let (ctx, filter, scope) = (ctx.clone(), filter.clone(), scope.clone());
        async move {
            let step = match ctx.storage.open(shard).await {
                Ok(store) => {
                    let (d, r) = (direction, relations);
                    (store.traverse_step(ids.clone(), shards, d, filter, r, &scope)).await
                }
                Err(e) => Err(e),
            };
            (shard, ids, step)
        }
    }))
    .await;
    let mut items = Vec::new();
    for (shard, ids, step) in steps {
        if let Ok(step) = step {
            items.extend(items_of(shard, &ids, step, direction, relations));
        }
    }
    items
}

/// The expansions of the ids a step found to live in another shard (`moved`: their pointers'
/// routing keys) whose shard this node holds in sync, read here at once: the asker takes them
/// as read ahead instead of asking again.
pub async fn follow_pointers(
    ctx: &Arc<NodeContext>,
    moved: &[(String, String)],
    direction: Direction,
    filter: &RelationFilter,
    relations: bool,
    scope: &ReadScope,
) -> Vec<AheadItem> {
    let Some(map) = ctx.shard_map.get().filter(|_| !moved.is_empty()) else {
        return Vec::new();
    };
    let me = ctx.node_id().as_str().to_string();
    let generation = ctx.cluster.generation();
    let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (id, key) in moved {
        let shard = shard_of(key, map.shards);
        if in_sync_here(Some(&map), shard, &me, generation).is_ok() {
            by_shard.entry(shard).or_default().push(id.clone());
        }
    }
    expand_here(
        ctx, by_shard, map.shards, direction, filter, relations, scope,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(id: &str, source: &str, target: &str) -> Edge {
        Edge {
            id: id.into(),
            source: source.into(),
            target: target.into(),
            description: String::new(),
            weight: 1.0,
            source_routing: None,
            target_routing: None,
        }
    }

    #[test]
    fn a_step_splits_into_the_expansion_of_each_entity() {
        let step = Step {
            entities: vec![super::super::placeholder("a")],
            edges: vec![
                edge("r1", "a", "b"),
                edge("r2", "b", "c"),
                edge("r3", "c", "a"),
                edge("r4", "x", "x"),
            ],
            moved: vec![],
        };
        let ids = ["a".to_string(), "b".to_string(), "x".to_string()];
        let items = items_of(7, &ids, step.clone(), Direction::Out, true);
        let by_id: BTreeMap<&str, &AheadItem> = items.iter().map(|i| (i.id.as_str(), i)).collect();
        assert!(by_id["a"].summary.is_some());
        assert!(
            by_id["b"].summary.is_none(),
            "no summary: not an entity here"
        );
        assert_eq!(by_id["a"].edges, Some(vec![edge("r1", "a", "b")]));
        assert_eq!(by_id["b"].edges, Some(vec![edge("r2", "b", "c")]));
        assert_eq!(
            by_id["x"].edges,
            Some(vec![edge("r4", "x", "x")]),
            "a self-loop once"
        );
        let both = items_of(7, &ids, step, Direction::Both, false);
        assert!(both.iter().all(|i| i.edges.is_none()), "summaries only");
    }

    #[test]
    fn far_ends_follow_the_direction_and_skip_what_was_seen() {
        let edges = [
            edge("r1", "a", "b"),
            edge("r2", "c", "a"),
            edge("r3", "a", "d"),
        ];
        let starts = HashSet::from(["a"]);
        let seen = HashSet::from(["d".to_string()]);
        assert_eq!(far_ends(&starts, &edges, Direction::Out, &seen), ["b"]);
        assert_eq!(far_ends(&starts, &edges, Direction::In, &seen), ["c"]);
        assert_eq!(
            far_ends(&starts, &edges, Direction::Both, &seen),
            ["b", "c"]
        );
    }
}
