//! The torua cluster a graph benchmark measures: sized by the benchmark's flags, started, and
//! waited for until it is green.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use torua_testkit::{ClusterOptions, TestCluster};

/// How a benchmark's cluster is sized (its `--shards`, `--memory-mb`, `--max-shard-gb` flags).
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    pub shards: u32,
    pub replicas: usize,
    pub memory_mb: u64,
    pub max_shard_gb: u64,
}

/// Starts `nodes` nodes with `sizing` over `env` (and `extra` settings), the map created once
/// all are ready; waits until every node reports green.
pub fn start_green(
    nodes: usize,
    sizing: Sizing,
    env: &BTreeMap<String, String>,
    extra: &[(&str, String)],
    log: &str,
) -> Result<TestCluster> {
    let mut env = env.clone();
    for (k, v) in [
        ("TORUA_SHARDS", sizing.shards.to_string()),
        ("TORUA_REPLICAS", sizing.replicas.to_string()),
        ("TORUA_BOOTSTRAP_EXPECT", nodes.to_string()),
        ("TORUA_MEMORY_MB", sizing.memory_mb.to_string()),
        ("TORUA_MAX_SHARD_GB", sizing.max_shard_gb.to_string()),
    ]
    .into_iter()
    .chain(extra.iter().map(|(k, v)| (*k, v.clone())))
    {
        env.insert(k.to_string(), v);
    }
    let options = ClusterOptions {
        env,
        log: log.to_string(),
        start_timeout: Duration::from_secs(60),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(nodes, options)?;
    cluster
        .wait_green(Duration::from_secs(120))
        .context("the cluster did not turn green")?;
    Ok(cluster)
}
