//! Distributed reads: a question about the whole graph answered as if the graph lived in one
//! database. [`cypher`] reads a user's query and refuses writes, [`plan`] decides whether and
//! how its per-shard answers merge, [`scatter`] sends it to one copy of every shard and accounts
//! for what answered, [`merge`] combines the answers, and [`traverse`] runs neighborhoods and
//! shortest paths step by step across shards. [`run`] drives a `/query` through these steps.
//! [`read`] answers other nodes' reads of this node's copies and routes point reads to an
//! in-sync copy; [`state`] is what the read side keeps between requests. [`algorithms`] runs
//! graph algorithms (PageRank, components, degree) across shards as tasks.

pub use crate::storage::cypher;
pub mod algorithms;
pub mod merge;
pub mod plan;
pub mod read;
pub mod run;
pub mod scatter;
pub mod state;
pub mod traverse;
