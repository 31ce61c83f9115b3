//! Distributed reads: a question about the whole graph answered as if the graph lived in one
//! database. [`cypher`] checks and rewrites a user's query, [`scatter`] sends it to one copy of
//! every shard and accounts for what answered, [`merge`] combines the answers, and
//! [`traverse`] runs neighborhoods and shortest paths step by step across shards.

pub mod cypher;
pub mod merge;
pub mod scatter;
pub mod traverse;
