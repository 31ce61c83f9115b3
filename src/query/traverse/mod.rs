//! Traversals across shards: neighborhoods (breadth-first search) and shortest paths
//! (bidirectional breadth-first search). Kuzu traverses only inside one database, but every
//! relation is stored in the shards of both its endpoints, so the relations of an entity are
//! all in the entity's own shard: one step of a search is "the relations of these entities",
//! answered by their shards. Each step groups the frontier by the node that will answer for
//! each shard (this node's copies first) and sends one request per node; the receiving node
//! deduplicates and builds the next frontier. Answering nodes may go on over the copies they hold
//! (`ahead`, behind `TORUA_TRAVERSE_LOCALLY`), and every traversal counts the relations it
//! followed locally and remotely.

mod ahead;
mod neighborhood;
mod path;
mod step;

use crate::storage::{Direction, Edge, EntitySummary};

pub use ahead::{Ahead, AheadItem, TraversalStats, Traversed};
pub use neighborhood::{neighborhood, Neighborhood};
pub use path::{shortest_path, PathAnswer};
pub use step::{step_here, Traversal, TraverseError, MAX_TRAVERSED_RELATIONS};

/// The other end of `edge` from `start`, when `direction` lets the search go from `start`
/// along it.
pub(crate) fn other_end<'e>(edge: &'e Edge, start: &str, direction: Direction) -> Option<&'e str> {
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

/// An entity whose properties could not be read (its shard did not answer).
pub(crate) fn placeholder(id: &str) -> EntitySummary {
    EntitySummary {
        id: id.to_string(),
        title: String::new(),
        kind: String::new(),
        description: String::new(),
        degree: 0,
        frequency: 0,
    }
}
