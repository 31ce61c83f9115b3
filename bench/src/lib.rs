//! What the benchmark programs share beyond the test kit (`torua_testkit`): the command line
//! ([`flags`]), the JSON-lines output ([`out`]), latency statistics ([`stats`]), readings of the
//! machine ([`sys`]), the cluster a graph benchmark starts ([`cluster`]) and the embedded-Kuzu
//! baseline's database ([`kuzu`]).

pub mod cluster;
pub mod flags;
pub mod kuzu;
pub mod out;
pub mod stats;
pub mod sys;
