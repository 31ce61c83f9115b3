//! Graph algorithms over the whole sharded graph (`POST /graph/algorithms/{name}`): PageRank,
//! weakly connected components and degree, run as bulk-synchronous supersteps across shards.
//!
//! - [`part`]: one shard's vertices, edges and values, and one superstep of each algorithm.
//!   Pure computation, checked in-process against embedded Kuzu's `algo` functions.
//! - [`worker`]: a node's side: it loads parts from its in-sync copies, exchanges values with
//!   the other workers over QUIC, and answers for results.
//! - [`task`]: the driver (the node the request came to): it picks a copy of every shard, runs
//!   the supersteps with a barrier between them, gathers results, writes back, and keeps the
//!   task's state for `GET /tasks/{id}`, with cancellation.
//! - [`publish`]: writing results back all or nothing: staged in every shard, published once the
//!   cluster decided so (in the shard map), finished by the shards' primaries if the driver dies.
//!
//! What a run sees: each shard as its copy held it when the task loaded it (writes after that are
//! not in the result). Vertices are every entity, stubs of relations' far ends included;
//! relations are directed edges (PageRank) or undirected ones (components, degree).

pub mod louvain;
pub mod part;
pub mod publish;
pub mod task;
pub mod worker;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use task::{AlgorithmRequest, TaskView, Tasks};
pub use worker::{AlgoRequest, AlgoResponse, Workers};

/// An algorithm and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Algorithm {
    /// Kuzu's PageRank: ranks start at 1/N; each iteration a vertex's rank becomes
    /// `(1 − damping)/N + damping · Σ rank(u)/outdegree(u)` over its in-edges (no teleport of
    /// dangling vertices' rank); stops after `iterations` or once the sum of changes is below
    /// `tolerance`.
    PageRank {
        damping: f64,
        iterations: u32,
        tolerance: f64,
    },
    /// Weakly connected components: relations as undirected edges.
    Components,
    /// The number of relations at each entity (a self-loop counts twice).
    Degree,
    /// Louvain community detection: relations as undirected edges of weight 1; `rounds` of
    /// moves at most on the first level (across shards), then the rest on the contracted graph.
    Louvain { rounds: u32 },
}

/// Most supersteps of a components run (each lowers some label, so it ends long before).
const MAX_COMPONENT_STEPS: u32 = 100_000;

/// What follows a superstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Step,
    /// The run is over; PageRank says whether it stopped on its tolerance.
    Done {
        converged: Option<bool>,
    },
}

impl Algorithm {
    /// Whether the algorithm runs supersteps at all (degree is read off each part).
    pub fn has_supersteps(&self) -> bool {
        matches!(self, Algorithm::PageRank { .. } | Algorithm::Components)
    }

    /// What follows superstep `step`, given what the parts reported in it (summed).
    pub fn after(&self, step: u32, report: &part::StepReport) -> Next {
        match self {
            Algorithm::PageRank {
                iterations,
                tolerance,
                ..
            } => {
                if step > 0 && report.delta < *tolerance {
                    Next::Done {
                        converged: Some(true),
                    }
                } else if step >= *iterations {
                    Next::Done {
                        converged: Some(false),
                    }
                } else {
                    Next::Step
                }
            }
            Algorithm::Components => {
                if (step > 0 && report.changed == 0) || step >= MAX_COMPONENT_STEPS {
                    Next::Done { converged: None }
                } else {
                    Next::Step
                }
            }
            Algorithm::Degree | Algorithm::Louvain { .. } => Next::Done { converged: None },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::PageRank { .. } => "pagerank",
            Algorithm::Components => "wcc",
            Algorithm::Degree => "degree",
            Algorithm::Louvain { .. } => "louvain",
        }
    }
}

/// A node's graph algorithm state: the tasks it drives and the parts it works on.
#[derive(Default)]
pub struct Algorithms {
    pub tasks: Tasks,
    pub workers: Workers,
}
