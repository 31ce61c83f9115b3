//! The test kit shared by `tests/` and `bench/`: real `torua serve` processes on loopback
//! ([`cluster`]), JSON over HTTP ([`http`]) and raw bodies ([`raw`]), health answers and
//! cluster-wide waits ([`health`]), polling with a deadline ([`wait`]), shards as answers report
//! them ([`answers`]), a seeded generator ([`rng`]), GraphRAG items ([`graphrag`]) and pieces of
//! synthetic data ([`gen`]), batched ingest ([`ingest`]), progress lines ([`log`]), failure
//! tallies ([`failures`]), Kuzu parameter values for embedded baselines ([`kuzu_values`]) and
//! the graph algorithms' embedded oracle ([`algo`]).

pub mod algo;
pub mod answers;
pub mod cluster;
pub mod failures;
pub mod gen;
pub mod graphrag;
pub mod health;
pub mod http;
pub mod ingest;
pub mod kuzu_values;
pub mod log;
pub mod raw;
pub mod rng;
pub mod wait;

pub use cluster::{
    dulce_dir, import_graphrag, import_graphrag_with, target_dir, torua_bin, ClusterOptions,
    NodeProc, TestCluster, GOSSIP_PORT, HTTP_PORT, PEER_PORT,
};
pub use failures::Failures;
pub use health::{agreed_coordinator, member_ids, ready_ids, summarize};
pub use http::{get_json, post_json};
pub use ingest::{Writer, Written};
pub use log::log;
pub use rng::Rng;
