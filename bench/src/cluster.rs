//! The torua cluster a graph benchmark measures: sized by the benchmark's flags, started,
//! waited for until it is green, and named in its reports.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use torua_testkit::{log, ClusterOptions, TestCluster};

use crate::flags::{Common, Value};
use crate::sys::{cluster_rss, mem_available_mb, memory_guard};

/// How a benchmark's cluster is sized (its `--replicas`, `--shards`, `--memory-mb`,
/// `--max-shard-gb` flags).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sizing {
    pub shards: u32,
    pub replicas: usize,
    pub memory_mb: u64,
    pub max_shard_gb: u64,
}

impl Default for Sizing {
    /// 16 shards, 2 copies each, 2 GiB per node, shards up to 16 GB.
    fn default() -> Self {
        Sizing {
            shards: 16,
            replicas: 2,
            memory_mb: 2048,
            max_shard_gb: 16,
        }
    }
}

impl Sizing {
    /// Takes `flag` if it is one of the sizing flags (with its value `v`); false for any other.
    pub fn take(&mut self, flag: &str, v: &Value) -> Result<bool> {
        match flag {
            "--replicas" => self.replicas = v.parse("a count")?,
            "--shards" => self.shards = v.parse("a count")?,
            "--memory-mb" => self.memory_mb = v.parse("megabytes")?,
            "--max-shard-gb" => self.max_shard_gb = v.parse("gigabytes")?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// How a report names a torua cluster: "torua 3 nodes R=2".
pub fn target_name(nodes: usize, replicas: usize) -> String {
    let s = if nodes == 1 { "" } else { "s" };
    format!("torua {nodes} node{s} R={replicas}")
}

/// Starts `nodes` nodes holding `replicas` copies of each shard, otherwise sized by `sizing`,
/// with the settings and log level of `common` (and `extra` settings), the map created once all
/// are ready; waits until every node reports green.
pub fn start_green(
    nodes: usize,
    replicas: usize,
    sizing: Sizing,
    common: &Common,
    extra: &[(&str, String)],
) -> Result<TestCluster> {
    let mut env = common.env.clone();
    for (k, v) in [
        ("TORUA_SHARDS", sizing.shards.to_string()),
        ("TORUA_REPLICAS", replicas.to_string()),
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
        log: common.log.clone(),
        start_timeout: Duration::from_secs(60),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(nodes, options)?;
    cluster
        .wait_green(Duration::from_secs(120))
        .context("the cluster did not turn green")?;
    Ok(cluster)
}

/// Waits until node `node`'s `/cluster/shards` (each read waiting at most `read_timeout`) reports
/// no write pending anywhere, stopping when less than `min_available_mb` is available and logging
/// progress every 20 s. Past `deadline` it fails, saying the writes are still pending `when`
/// (e.g. "at --max-minutes").
pub fn wait_applied(
    cluster: &TestCluster,
    node: usize,
    read_timeout: Duration,
    min_available_mb: f64,
    deadline: Instant,
    when: &str,
) -> Result<()> {
    let mut last_log = Instant::now();
    loop {
        memory_guard(min_available_mb, cluster)?;
        let answer = cluster.nodes[node].get_json("/cluster/shards", read_timeout);
        let pending = answer.as_ref().ok().map(|a| a["pending_writes"].clone());
        if pending == Some(json!(0)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("writes still pending {when}: {pending:?}");
        }
        if last_log.elapsed() > Duration::from_secs(20) {
            log(format!(
                "  waiting for writes to be applied: pending {}, node RSS MB {:?}, available MB {:?}",
                pending.map_or("?".into(), |p| p.to_string()),
                cluster_rss(cluster),
                mem_available_mb()
            ));
            last_log = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
