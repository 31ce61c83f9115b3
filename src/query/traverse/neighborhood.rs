//! Neighborhoods: breadth-first search from seeds across shards, cut by caps.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::ahead::Ahead;
use super::step::{Traversal, TraverseError, MAX_TRAVERSED_RELATIONS};
use super::{other_end, placeholder};
use crate::storage::{Direction, Edge, EntitySummary, Step};

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
        // Nodes go on by themselves for the levels left, then read the last level's summaries.
        if t.ctx.settings.traverse_locally {
            t.ahead = Ahead {
                hops: hops - hop - 1,
                summaries: true,
                shards: Vec::new(),
            };
        }
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
        let last: Vec<String> = frontier
            .iter()
            .filter(|id| kept.contains(*id))
            .cloned()
            .collect();
        if !last.is_empty() {
            t.ahead = Ahead::default();
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
    let in_frontier: HashSet<&str> = frontier.iter().map(String::as_str).collect();
    let mut next = BTreeSet::new();
    for edge in step.edges {
        let mut followed = false;
        for start in [&edge.source, &edge.target] {
            if !in_frontier.contains(start.as_str()) {
                continue;
            }
            if let Some(other) = other_end(&edge, start, direction) {
                followed = true;
                if !dist.contains_key(other) && !in_frontier.contains(other) {
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
