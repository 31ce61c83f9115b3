//! Self-healing benchmark: real `torua serve` processes on loopback, observed only through
//! the HTTP API (`/cluster/health` of every running node, `/cluster/shards` of one of them).
//!
//! ```text
//! heal_bench [--small] [--gib 1.0] [--nodes 5] [--replace-after 5s] [--phases kill,return,join,rolling]
//!            [--json FILE] [--logs-dir DIR] ... (--help for every flag)
//! ```
//!
//! Phases, in this order, on one cluster:
//!
//! * **load**: `--nodes` nodes (R=`--replicas`, `--shards` shards, `TORUA_MEMORY_MB=--memory-mb`,
//!   `TORUA_REPLACE_AFTER=--replace-after`), GraphRAG-shaped data ingested in rounds through
//!   `POST /graph/ingest` (`--clients` threads round-robin over the nodes) until the primaries'
//!   `size_bytes` in `GET /cluster/shards` add up to `--gib` GiB (`--small`: 50 MB). One "document"
//!   of the generated data: 6 chunks of ~2.4 KB text, the document (its chunks' text), 10 entities
//!   with 400-900 byte descriptions, 12 relations (half to entities of the same document, half to
//!   earlier entities drawn from a power law, so some hubs), one community report (~4.5 KB);
//!   `--dim` adds embeddings to entities and chunks (default none: HNSW inserts are the slowest
//!   path per byte). Documents are cheap per byte (no index), chunks and entities are full-text
//!   indexed.
//! * **kill**: kill -9 of one node (`--victim`, default the last node that is not the
//!   coordinator). Timed until every running node reports green and every shard has its R
//!   in-sync copies on running nodes: from the kill, from the nominal replace moment (kill +
//!   `--replace-after`) and from the first re-created copy seen. Re-replication throughput = the
//!   re-created copies' `size_bytes` (once in sync) / (first re-created copy seen -> last one in
//!   sync). Baseline in the same run: `std::fs::copy` + fsync of the killed node's files of the same
//!   shards on the same disk, median of 3 (ratio = torua MB/s / copy MB/s). Cross-check: the
//!   snapshot copies the nodes' own logs report in the same window ("installed a copy from a
//!   snapshot ... mb= secs="), from the first "rebuilding"/"receiving" line to the last install.
//! * **return**: the killed node restarted on its files; timed until green and balanced (copies
//!   per running node differ by at most one, no move, no drain); bytes moved = `size_bytes` of the
//!   copies that appeared.
//! * **join**: a new node joins; timed and measured the same way.
//! * **rolling**: under a steady client load (`--client-threads` threads, `--client-rate`
//!   requests/s in all, alternating a write of `--write-batch` entities with their relations and a
//!   `GET /graph/entities/{id}` of an acknowledged id, each request to a node that is not the one
//!   being restarted), every node in turn gets SIGTERM (it drains itself: `--drain-timeout`, 5m
//!   by default), is waited on until it exits, is restarted and waited on until green and
//!   balanced. Client-visible errors (any non-200, item error, transport error, 404 of an
//!   acknowledged id) are counted; p50/p99 during the restarts against the same client during
//!   `--baseline-s` before them.
//!
//! After each phase (unless `--verify false`): `GET /cluster/shards?checksum=true`: every shard has
//! R in-sync copies on running nodes, in-sync copies agree (counts and checksum), and the
//! primaries hold exactly what was acknowledged (entities, relation copies per endpoint shard,
//! chunks, documents, communities).
//!
//! Output: progress on stderr, a summary on stdout, one JSON document in `--json` (rewritten after
//! every phase), the nodes' logs copied to `--logs-dir` (default: the `--json` file's folder).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use torua_testkit::{ClusterOptions, TestCluster};

mod clients;
mod copies;
mod data;
mod evidence;
mod phases;
mod summary;
mod watch;

use clients::*;
use copies::*;
use data::*;
use evidence::*;
use phases::*;
use summary::*;
use torua_bench::flags::{Common, Flags};
use torua_bench::out::write_doc;
use torua_bench::stats::{histogram, r2, summary};
use torua_bench::sys::{cluster_rss, load_1m, machine, memory_guard};
use torua_testkit::gen::{embedding, pack, shard_of, text_of_bytes as text, vocabulary, TYPES};
use torua_testkit::graphrag::{Chunk, Community, Document, Entity, Items, Relation};
use torua_testkit::http::{get_full, short};
use torua_testkit::ingest::post_all;
use torua_testkit::log;
use torua_testkit::rng::{power_law, Rng};
use watch::*;

// ------------------------------------------------------------------------------------------------
// Arguments

const USAGE: &str = "usage: heal_bench [--small] [flags]
  data     --gib 1.0 (primaries' size_bytes to reach; --small: 50 MB) --dim 0 (embedding dimension)
           --seed 42
  cluster  --nodes 5 --replicas 2 --shards 16 --memory-mb 1024 --replace-after 5s
           --max-moves N (TORUA_MAX_CONCURRENT_MOVES; default: the node's) --drain-timeout 5m
           (TORUA_DRAIN_TIMEOUT: SIGTERM drains; 0s: it hands over and leaves, moving nothing) --env KEY=VALUE (repeatable) --log info
  load     --clients 4 --body-mb 4 --max-minutes 60
  phases   --phases kill,return,join,rolling --victim NODE_ID (default: last non-coordinator)
           --poll-ms 250 --settle-s 3 (a condition must hold this long) --phase-timeout-s 1800
  rolling  --baseline-s 60 (--small: 20) --client-threads 2 --client-rate 20 (requests/s, all threads)
           --write-batch 10
  checks   --verify true --min-available-mb 1500 (stop when the machine has less memory free)
  output   --label TEXT --json FILE --logs-dir DIR
The torua binary is $TORUA_BIN, else the one next to this executable.";

#[derive(Debug, Clone, Serialize)]
struct Args {
    gib: f64,
    dim: usize,
    seed: u64,
    nodes: usize,
    replicas: usize,
    shards: u32,
    memory_mb: u64,
    replace_after: String,
    max_moves: Option<u32>,
    drain_timeout: Option<String>,
    clients: usize,
    body_mb: f64,
    max_minutes: f64,
    phases: Vec<String>,
    victim: Option<String>,
    poll_ms: u64,
    settle_s: f64,
    phase_timeout_s: f64,
    baseline_s: f64,
    client_threads: usize,
    client_rate: f64,
    write_batch: usize,
    verify: bool,
    min_available_mb: f64,
    #[serde(flatten)]
    common: Common,
    logs_dir: Option<PathBuf>,
}

const PHASES: [&str; 4] = ["kill", "return", "join", "rolling"];

fn parse_args() -> Result<Args> {
    let mut a = Args {
        gib: 1.0,
        dim: 0,
        seed: 42,
        nodes: 5,
        replicas: 2,
        shards: 16,
        memory_mb: 1024,
        replace_after: "5s".into(),
        max_moves: None,
        drain_timeout: Some("5m".into()),
        clients: 4,
        body_mb: 4.0,
        max_minutes: 60.0,
        phases: PHASES.iter().map(|s| s.to_string()).collect(),
        victim: None,
        poll_ms: 250,
        settle_s: 3.0,
        phase_timeout_s: 1800.0,
        baseline_s: 60.0,
        client_threads: 2,
        client_rate: 20.0,
        write_batch: 10,
        verify: true,
        min_available_mb: 1500.0,
        common: Common::new("info"),
        logs_dir: None,
    };
    let mut f = Flags::from_env(USAGE);
    while let Some(flag) = f.next_flag() {
        if flag == "--small" {
            a.gib = 50.0 / 1024.0;
            a.baseline_s = 20.0;
            continue;
        }
        let v = f.value(&flag)?;
        match flag.as_str() {
            "--gib" => a.gib = v.parse("GiB")?,
            "--dim" => a.dim = v.parse("a dimension")?,
            "--seed" => a.seed = v.parse("an integer")?,
            "--nodes" => a.nodes = v.parse("a count")?,
            "--replicas" => a.replicas = v.parse("a count")?,
            "--shards" => a.shards = v.parse("a count")?,
            "--memory-mb" => a.memory_mb = v.parse("megabytes")?,
            "--replace-after" => a.replace_after = v.text,
            "--max-moves" => a.max_moves = Some(v.parse("a count")?),
            "--drain-timeout" => a.drain_timeout = Some(v.text),
            "--clients" => a.clients = v.parse("a count")?,
            "--body-mb" => a.body_mb = v.parse("megabytes")?,
            "--max-minutes" => a.max_minutes = v.parse("minutes")?,
            "--phases" => a.phases = v.known_names("phase", &PHASES)?,
            "--victim" => a.victim = Some(v.text),
            "--poll-ms" => a.poll_ms = v.parse("milliseconds")?,
            "--settle-s" => a.settle_s = v.parse("seconds")?,
            "--phase-timeout-s" => a.phase_timeout_s = v.parse("seconds")?,
            "--baseline-s" => a.baseline_s = v.parse("seconds")?,
            "--client-threads" => a.client_threads = v.parse("a count")?,
            "--client-rate" => a.client_rate = v.parse("requests/s")?,
            "--write-batch" => a.write_batch = v.parse("a count")?,
            "--verify" => a.verify = v.parse("true or false")?,
            "--min-available-mb" => a.min_available_mb = v.parse("megabytes")?,
            "--logs-dir" => a.logs_dir = Some(PathBuf::from(v.text)),
            _ => f.common(&flag, v, &mut a.common)?,
        }
    }
    if a.phases.iter().any(|p| p == "return") && !a.phases.iter().any(|p| p == "kill") {
        bail!("--phases: return needs kill");
    }
    if a.nodes < 2 || a.replicas == 0 || a.replicas > a.nodes || a.shards == 0 {
        bail!("--nodes at least 2, --replicas in 1..=--nodes, --shards at least 1");
    }
    if a.gib <= 0.0 || a.clients == 0 || a.body_mb <= 0.0 || a.poll_ms == 0 {
        bail!("--gib, --clients, --body-mb and --poll-ms must be positive");
    }
    if a.client_threads == 0 || a.client_rate <= 0.0 || a.write_batch == 0 {
        bail!("--client-threads, --client-rate and --write-batch must be positive");
    }
    if a.logs_dir.is_none() {
        a.logs_dir = a
            .common
            .json
            .as_ref()
            .and_then(|p| p.parent())
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.join("logs"));
    }
    Ok(a)
}

impl Args {
    fn has(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
    fn target_bytes(&self) -> u64 {
        (self.gib * (1u64 << 30) as f64) as u64
    }
}

// ------------------------------------------------------------------------------------------------
// Small utilities

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

// ------------------------------------------------------------------------------------------------
// HTTP

// ------------------------------------------------------------------------------------------------

fn copy_logs(cluster: &TestCluster, dir: &Path) {
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    for n in &cluster.nodes {
        if n.log_path.exists() {
            let _ = std::fs::copy(&n.log_path, dir.join(format!("{}.log", n.id)));
        }
    }
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let mut env = a.common.env.clone();
    env.insert("TORUA_SHARDS".into(), a.shards.to_string());
    env.insert("TORUA_REPLICAS".into(), a.replicas.to_string());
    env.insert("TORUA_BOOTSTRAP_EXPECT".into(), a.nodes.to_string());
    env.insert("TORUA_MEMORY_MB".into(), a.memory_mb.to_string());
    env.insert("TORUA_REPLACE_AFTER".into(), a.replace_after.clone());
    env.insert("TORUA_EMBEDDING_DIM".into(), a.dim.to_string());
    if let Some(m) = a.max_moves {
        env.insert("TORUA_MAX_CONCURRENT_MOVES".into(), m.to_string());
    }
    if let Some(d) = &a.drain_timeout {
        env.insert("TORUA_DRAIN_TIMEOUT".into(), d.clone());
    }
    let options = ClusterOptions {
        env,
        log: a.common.log.clone(),
        start_timeout: Duration::from_secs(120),
        ..ClusterOptions::default()
    };
    // One node more than started, for the join phase.
    let cluster = TestCluster::new(a.nodes + 1, options)?;
    let label = a.common.label.clone().unwrap_or_else(|| {
        format!(
            "{} nodes R={} {} shards, {:.3} GiB, replace after {}",
            a.nodes, a.replicas, a.shards, a.gib, a.replace_after
        )
    });
    let doc = json!({
        "bench": "heal", "label": label, "args": a, "machine": machine(),
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        "cluster_dir": cluster.dir.display().to_string(),
    });
    let mut b = Bench {
        gen: Gen::new(a.seed, a.dim),
        a,
        cluster,
        doc,
        problems: Vec::new(),
        expected: Totals::default(),
        uncertain: Totals::default(),
        active: Vec::new(),
        fs_copy_mb_per_s: None,
    };
    let result = run(&mut b);
    if let Err(e) = &result {
        log(format!("FAILED: {e:#}"));
        b.problems.push(format!("run stopped: {e:#}"));
        b.doc["error"] = json!(format!("{e:#}"));
    }
    b.doc["finished_unix_time"] = json!(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0));
    b.doc["load_1m_end"] = json!(load_1m());
    b.write_json()?;
    if let Some(dir) = &b.a.logs_dir {
        copy_logs(&b.cluster, dir);
        log(format!("node logs copied to {}", dir.display()));
    }
    print_summary(&b.doc, &b.problems);
    let _ = std::io::stdout().flush();
    result?;
    if !b.problems.is_empty() {
        bail!("{} problem(s), see above", b.problems.len());
    }
    Ok(())
}

fn run(b: &mut Bench) -> Result<()> {
    log(format!(
        "starting {} nodes under {} (torua: {})",
        b.a.nodes,
        b.cluster.dir.display(),
        torua_testkit::torua_bin().display()
    ));
    for i in 0..b.a.nodes {
        b.cluster.nodes[i].start()?;
        b.active.push(i);
    }
    for i in 0..b.a.nodes {
        b.cluster.wait_node_up(i, Duration::from_secs(120))?;
    }
    b.cluster
        .wait_green(Duration::from_secs(180))
        .context("the new cluster did not turn green")?;
    // Start from a settled cluster: every copy opened (reporting stats), in sync, balanced.
    let t0 = Instant::now();
    let (_, copies) = shards_now(&mut b.cluster, false)?;
    let mut w = Watch::new(&copies);
    let opts = b.opts(None);
    let a = b.a.clone();
    let (t, _) = watch(&mut b.cluster, &mut w, t0, &opts, &a, |_, v| v.settled())
        .context("the new cluster did not settle")?;
    b.doc["start"] = json!({"settled_s": r2(t), "watch": w.to_json()});
    b.load()?;
    if b.a.has("kill") {
        let victim = b.kill()?;
        if b.a.has("return") {
            b.join("return", victim)?;
        } else {
            // The later phases want every node: bring it back without measuring.
            b.start_node(victim)?;
            b.cluster
                .wait_green(Duration::from_secs(b.a.phase_timeout_s as u64))?;
        }
    }
    if b.a.has("join") {
        let new = b.a.nodes;
        b.join("join", new)?;
    }
    if b.a.has("rolling") {
        b.rolling()?;
    }
    Ok(())
}
