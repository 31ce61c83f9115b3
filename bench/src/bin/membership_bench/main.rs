//! Cluster-membership benchmarks on real `torua serve` processes (loopback, real gossip, real HTTP).
//!
//! ```text
//! membership_bench convergence  [--sizes 3,10,32] [--trials 3]
//! membership_bench failover     [--sizes 5,10] [--trials 10] [--settle-ms 2000] [--no-graceful]
//! membership_bench false-deaths [--nodes 10] [--minutes 5] [--phases idle,busy] [--busy-threads 1]
//! membership_bench all          (the three above with their defaults and the common flags)
//!
//! common: --env KEY=VALUE (repeatable, passed to every node)  --label TEXT  --json FILE (JSON lines,
//!         appended; default: stdout after the tables)  --poll-ms 10  --log info
//! ```
//!
//! * convergence: from spawning N processes at once until every node's `/cluster/health` lists the N
//!   nodes as ready and every node names the same (coordinator, term). The baseline is N = 1 (spawn to a
//!   ready single-node cluster), measured in the same run.
//! * failover: converge, kill -9 the coordinator, measure until every survivor names the same new
//!   coordinator with the same, higher term; restart the killed node, wait for convergence, settle,
//!   repeat. Each trial also does the graceful case (SIGTERM of the coordinator), the baseline.
//! * false-deaths: an idle cluster, then the same cluster with busy-loop processes saturating cores;
//!   every node's `/cluster/health` is sampled and every (observer, member) pair ever seen not ready (or
//!   missing) is counted, as are coordinator changes.
//!
//! All polling uses one thread per node with a keep-alive HTTP agent, so the resolution is about the
//! poll interval (10 ms by default, scaled up for clusters above 10 nodes to keep the load bounded).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use torua_testkit::{ready_ids, TestCluster};

mod convergence;
mod failover;
mod false_deaths;
mod poller;

use convergence::*;
use failover::*;
use false_deaths::*;
use poller::*;
use torua_bench::flags::{Common, Flags};
use torua_bench::out::{dispatch, existing_torua_bin, Bench, Out};
use torua_bench::stats::{ms, pct, r1, Pct};
use torua_bench::sys::machine_jiffies;

const DEFAULT_GOSSIP_MS: f64 = 200.0;
/// As `TORUA_PHI_THRESHOLD`'s default (membership::config::DEFAULT_PHI_THRESHOLD).
const DEFAULT_PHI: f64 = 20.0;

// ------------------------------------------------------------------------------------------------
// Arguments

#[derive(Debug, Clone)]
struct Args {
    cmd: String,
    sizes: Option<Vec<usize>>,
    trials: Option<usize>,
    minutes: f64,
    nodes: usize,
    phases: Vec<String>,
    busy_threads: usize,
    sample_ms: u64,
    poll_ms: u64,
    settle_ms: u64,
    graceful: bool,
    common: Common,
}

const USAGE: &str = "usage: membership_bench <convergence|failover|false-deaths|all> [flags]
  convergence   --sizes 3,10,32 --trials 3
  failover      --sizes 5,10 --trials 10 --settle-ms 2000 [--no-graceful]
  false-deaths  --nodes 10 --minutes 5 --phases idle,busy --busy-threads 1 --sample-ms 250
  common        --env KEY=VALUE (repeatable) --label TEXT --json FILE --poll-ms 10 --log info
The torua binary is $TORUA_BIN, else the one next to this executable.";

fn parse_args() -> Result<Args> {
    let mut f = Flags::from_env(USAGE);
    let cmd = f.command();
    let mut a = Args {
        cmd,
        sizes: None,
        trials: None,
        minutes: 5.0,
        nodes: 10,
        phases: vec!["idle".into(), "busy".into()],
        busy_threads: 1,
        sample_ms: 250,
        poll_ms: 10,
        settle_ms: 2000,
        graceful: true,
        common: Common::new("info"),
    };
    while let Some(flag) = f.next_flag() {
        if flag == "--no-graceful" {
            a.graceful = false;
            continue;
        }
        let v = f.value(&flag)?;
        match flag.as_str() {
            "--sizes" => a.sizes = Some(v.list("a list like 3,10,32")?),
            "--trials" => a.trials = Some(v.parse("a count")?),
            "--minutes" => a.minutes = v.parse("minutes, e.g. 5 or 0.2")?,
            "--nodes" => a.nodes = v.parse("a count")?,
            "--phases" => a.phases = v.text.split(',').map(|s| s.trim().to_string()).collect(),
            "--busy-threads" => a.busy_threads = v.parse("a count")?,
            "--sample-ms" => a.sample_ms = v.parse("milliseconds")?,
            "--poll-ms" => a.poll_ms = v.parse("milliseconds")?,
            "--settle-ms" => a.settle_ms = v.parse("milliseconds")?,
            _ => f.common(&flag, v, &mut a.common)?,
        }
    }
    for p in &a.phases {
        if p != "idle" && p != "busy" {
            bail!("--phases: {p:?} is neither idle nor busy");
        }
    }
    Ok(a)
}

impl Args {
    fn gossip_ms(&self) -> f64 {
        self.common
            .env
            .get("TORUA_GOSSIP_INTERVAL")
            .and_then(|s| parse_ms(s))
            .unwrap_or(DEFAULT_GOSSIP_MS)
    }
    fn phi(&self) -> f64 {
        self.common
            .env
            .get("TORUA_PHI_THRESHOLD")
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_PHI)
    }
    fn label(&self) -> String {
        self.common
            .label
            .clone()
            .unwrap_or_else(|| format!("gossip {}ms, phi {}", self.gossip_ms(), self.phi()))
    }
    /// Per-node poll interval: `--poll-ms` up to 10 nodes, scaled up beyond (32 nodes: 32 ms).
    fn poll_interval(&self, n: usize) -> Duration {
        let ms = self.poll_ms.max(self.poll_ms * n as u64 / 10);
        Duration::from_millis(ms)
    }
}

/// The subcommands (`all` runs each in turn).
const BENCHES: [(&str, Bench<Args>); 3] = [
    ("convergence", convergence),
    ("failover", failover),
    ("false-deaths", false_deaths),
];

/// `100ms`, `1s`, `0.5s` → milliseconds (only what the benchmarks need to label results).
fn parse_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        ms.trim().parse().ok()
    } else if let Some(sec) = s.strip_suffix('s') {
        sec.trim().parse::<f64>().ok().map(|v| v * 1000.0)
    } else {
        None
    }
}

// ------------------------------------------------------------------------------------------------
// Output

fn stats_json(s: Option<Pct>) -> Value {
    match s {
        None => Value::Null,
        Some(s) => {
            json!({"n": s.n, "min_ms": r1(s.min), "median_ms": r1(s.median), "p90_ms": r1(s.p90),
                          "max_ms": r1(s.max), "mean_ms": r1(s.mean)})
        }
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

// ------------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let args = parse_args()?;
    if args.cmd == "spin" {
        spin();
    }
    let bin = existing_torua_bin()?;
    let mut out = Out::new(
        args.common.json.as_deref(),
        json!({
            "label": args.label(),
            "env": args.common.env,
            "gossip_interval_ms": args.gossip_ms(),
            "phi_threshold": args.phi(),
        }),
        false,
    )?;
    out.start("membership", &args.cmd, &args.label(), Some(bin))?;
    // Sizes and trial counts are per benchmark; only the common flags carry over to `all`.
    let common = || Args {
        sizes: None,
        trials: None,
        ..args.clone()
    };
    dispatch(&args.cmd, &args, common, &BENCHES, out, USAGE)
}
