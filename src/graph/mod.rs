//! The graph as clients see it: the GraphRAG-shaped data model ([`model`]) and where each item
//! lives ([`partition`]).

pub mod model;
pub mod partition;
