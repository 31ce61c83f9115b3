//! What the benchmark programs share beyond the test kit (`torua_testkit`): the JSON-lines
//! output ([`out`]), latency statistics ([`stats`]) and readings of the machine ([`sys`]).

pub mod out;
pub mod stats;
pub mod sys;
