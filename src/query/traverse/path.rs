//! Shortest paths: bidirectional breadth-first search across shards.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::step::{Traversal, TraverseError, MAX_TRAVERSED_RELATIONS};
use super::{other_end, placeholder, reverse};
use crate::storage::{Direction, Edge, EntitySummary};

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

    /// Adds one layer from a step's relations: the next depth and its frontier.
    fn grow(&mut self, edges: Vec<Edge>) {
        // Deterministic parents: the smallest (start, relation) reaches a node first.
        let in_frontier: HashSet<&str> = self.frontier.iter().map(String::as_str).collect();
        let mut moves: Vec<(String, String, Edge)> = Vec::new();
        for e in edges {
            for start in [&e.source, &e.target] {
                if in_frontier.contains(start.as_str()) {
                    if let Some(other) = other_end(&e, start, self.direction) {
                        moves.push((start.clone(), other.to_string(), e.clone()));
                    }
                }
            }
        }
        moves.sort_by(|a, b| {
            (&a.0, &a.2.id, &a.2.source, &a.2.target).cmp(&(
                &b.0,
                &b.2.id,
                &b.2.source,
                &b.2.target,
            ))
        });
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
            entities: vec![found
                .entities
                .into_iter()
                .next()
                .unwrap_or_else(|| placeholder(from))],
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
            let mut info: HashMap<String, EntitySummary> = step
                .entities
                .into_iter()
                .map(|e| (e.id.clone(), e))
                .collect();
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
