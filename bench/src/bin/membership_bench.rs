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
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use torua_testkit::{ready_ids, torua_bin, ClusterOptions, TestCluster};

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
    env: BTreeMap<String, String>,
    label: Option<String>,
    json: Option<PathBuf>,
    log: String,
}

const USAGE: &str = "usage: membership_bench <convergence|failover|false-deaths|all> [flags]
  convergence   --sizes 3,10,32 --trials 3
  failover      --sizes 5,10 --trials 10 --settle-ms 2000 [--no-graceful]
  false-deaths  --nodes 10 --minutes 5 --phases idle,busy --busy-threads 1 --sample-ms 250
  common        --env KEY=VALUE (repeatable) --label TEXT --json FILE --poll-ms 10 --log info
The torua binary is $TORUA_BIN, else the one next to this executable.";

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    if cmd.is_empty() || cmd == "-h" || cmd == "--help" {
        println!("{USAGE}");
        std::process::exit(if cmd.is_empty() { 2 } else { 0 });
    }
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
        env: BTreeMap::new(),
        label: None,
        json: None,
        log: "info".into(),
    };
    while let Some(flag) = it.next() {
        if flag == "--no-graceful" {
            a.graceful = false;
            continue;
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value:?}: expected {what}");
        match flag.as_str() {
            "--sizes" => {
                let sizes: Result<Vec<usize>, _> =
                    value.split(',').map(|s| s.trim().parse()).collect();
                a.sizes = Some(sizes.with_context(|| bad("a list like 3,10,32"))?);
            }
            "--trials" => a.trials = Some(value.parse().with_context(|| bad("a count"))?),
            "--minutes" => {
                a.minutes = value
                    .parse()
                    .with_context(|| bad("minutes, e.g. 5 or 0.2"))?
            }
            "--nodes" => a.nodes = value.parse().with_context(|| bad("a count"))?,
            "--phases" => a.phases = value.split(',').map(|s| s.trim().to_string()).collect(),
            "--busy-threads" => a.busy_threads = value.parse().with_context(|| bad("a count"))?,
            "--sample-ms" => a.sample_ms = value.parse().with_context(|| bad("milliseconds"))?,
            "--poll-ms" => a.poll_ms = value.parse().with_context(|| bad("milliseconds"))?,
            "--settle-ms" => a.settle_ms = value.parse().with_context(|| bad("milliseconds"))?,
            "--env" => {
                let (k, v) = value.split_once('=').with_context(|| bad("KEY=VALUE"))?;
                a.env.insert(k.to_string(), v.to_string());
            }
            "--label" => a.label = Some(value),
            "--json" => a.json = Some(PathBuf::from(value)),
            "--log" => a.log = value,
            _ => bail!("unknown flag {flag}\n{USAGE}"),
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
    fn options(&self) -> ClusterOptions {
        ClusterOptions {
            env: self.env.clone(),
            log: self.log.clone(),
            ..ClusterOptions::default()
        }
    }
    fn gossip_ms(&self) -> f64 {
        self.env
            .get("TORUA_GOSSIP_INTERVAL")
            .and_then(|s| parse_ms(s))
            .unwrap_or(DEFAULT_GOSSIP_MS)
    }
    fn phi(&self) -> f64 {
        self.env
            .get("TORUA_PHI_THRESHOLD")
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_PHI)
    }
    fn label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("gossip {}ms, phi {}", self.gossip_ms(), self.phi()))
    }
    /// Per-node poll interval: `--poll-ms` up to 10 nodes, scaled up beyond (32 nodes: 32 ms).
    fn poll_interval(&self, n: usize) -> Duration {
        let ms = self.poll_ms.max(self.poll_ms * n as u64 / 10);
        Duration::from_millis(ms)
    }
}

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

struct Out {
    file: Option<std::fs::File>,
    pending: Vec<String>,
    base: Value,
}

impl Out {
    fn new(args: &Args) -> Result<Self> {
        let file = match &args.json {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Some(
                    std::fs::File::options()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?,
                )
            }
            None => None,
        };
        let base = json!({
            "label": args.label(),
            "env": args.env,
            "gossip_interval_ms": args.gossip_ms(),
            "phi_threshold": args.phi(),
        });
        Ok(Out {
            file,
            pending: Vec::new(),
            base,
        })
    }

    /// One JSON line: the common fields (label, env, settings) plus `record`.
    fn emit(&mut self, record: Value) -> Result<()> {
        let mut line = self.base.clone();
        line["unix_time"] = json!(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
        if let (Some(obj), Value::Object(rec)) = (line.as_object_mut(), record) {
            obj.extend(rec);
        }
        let text = serde_json::to_string(&line)?;
        match &mut self.file {
            Some(f) => {
                writeln!(f, "{text}")?;
                f.flush()?;
            }
            None => self.pending.push(text),
        }
        Ok(())
    }

    fn finish(self) {
        if !self.pending.is_empty() {
            println!("\n# JSON lines");
            for line in self.pending {
                println!("{line}");
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    min: f64,
    median: f64,
    p90: f64,
    max: f64,
    mean: f64,
}

fn stats(values: &[f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    // Nearest rank.
    let p90 = v[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
    Some(Stats {
        n,
        min: v[0],
        median,
        p90,
        max: v[n - 1],
        mean: v.iter().sum::<f64>() / n as f64,
    })
}

fn stats_json(s: Option<Stats>) -> Value {
    match s {
        None => Value::Null,
        Some(s) => {
            json!({"n": s.n, "min_ms": r1(s.min), "median_ms": r1(s.median), "p90_ms": r1(s.p90),
                          "max_ms": r1(s.max), "mean_ms": r1(s.mean)})
        }
    }
}

fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

// ------------------------------------------------------------------------------------------------
// Poller: one thread per node, each GETting `/cluster/health` with a keep-alive agent.

struct Sample {
    node: usize,
    /// When the request was sent and when the answer arrived.
    sent: Instant,
    at: Instant,
    body: Option<Value>,
}

struct Poller {
    stop: Arc<AtomicBool>,
    rx: Option<mpsc::Receiver<Sample>>,
    threads: Vec<JoinHandle<()>>,
}

impl Poller {
    fn start(
        cluster: &TestCluster,
        nodes: &[usize],
        interval: Duration,
        timeout: Duration,
    ) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let threads = nodes
            .iter()
            .map(|&node| {
                let url = cluster.node(node).url("/cluster/health");
                let stop = stop.clone();
                let tx = tx.clone();
                thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout_connect(timeout)
                        .timeout(timeout)
                        .build();
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let body = agent
                            .get(&url)
                            .call()
                            .ok()
                            .and_then(|r| r.into_json::<Value>().ok());
                        let sample = Sample {
                            node,
                            sent,
                            at: Instant::now(),
                            body,
                        };
                        if tx.send(sample).is_err() {
                            return;
                        }
                        next += interval;
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                })
            })
            .collect();
        Poller {
            stop,
            rx: Some(rx),
            threads,
        }
    }

    fn recv(&self, deadline: Instant) -> Option<Sample> {
        let wait = deadline.saturating_duration_since(Instant::now());
        self.rx.as_ref()?.recv_timeout(wait).ok()
    }

    /// Feeds answers to requests sent at or after `since` into `check` (called with the latest answer of
    /// every node in `nodes`, once all have one) until it returns true; returns when that answer arrived.
    fn wait_for<F>(
        &self,
        nodes: &[usize],
        since: Instant,
        timeout: Duration,
        mut check: F,
    ) -> Result<(Instant, BTreeMap<usize, Value>)>
    where
        F: FnMut(Instant, &BTreeMap<usize, Value>) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut latest: BTreeMap<usize, Value> = BTreeMap::new();
        loop {
            let Some(s) = self.recv(deadline) else {
                let shown: Vec<String> = latest
                    .iter()
                    .map(|(i, v)| format!("  node index {i}: {v}"))
                    .collect();
                bail!(
                    "condition not met within {timeout:?}; last answers:\n{}",
                    shown.join("\n")
                );
            };
            if s.sent < since || !nodes.contains(&s.node) {
                continue;
            }
            match s.body {
                Some(v) => latest.insert(s.node, v),
                None => latest.remove(&s.node),
            };
            if latest.len() == nodes.len() && check(s.at, &latest) {
                return Ok((s.at, latest));
            }
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// (coordinator, term) if every answer lists exactly `expected` as ready and all name the same pair.
fn agreed(answers: &BTreeMap<usize, Value>, expected: &BTreeSet<String>) -> Option<(String, u64)> {
    let mut agreed: Option<(String, u64)> = None;
    for v in answers.values() {
        let ready: BTreeSet<String> = ready_ids(v).into_iter().collect();
        if &ready != expected {
            return None;
        }
        let pair = (v["coordinator"].as_str()?.to_string(), v["term"].as_u64()?);
        match &agreed {
            None => agreed = Some(pair),
            Some(a) if *a == pair => {}
            Some(_) => return None,
        }
    }
    agreed
}

/// (coordinator, term) if every answer names the same pair, whatever the member states.
fn same_coordinator(answers: &BTreeMap<usize, Value>) -> Option<(String, u64)> {
    let mut agreed: Option<(String, u64)> = None;
    for v in answers.values() {
        let pair = (v["coordinator"].as_str()?.to_string(), v["term"].as_u64()?);
        match &agreed {
            None => agreed = Some(pair),
            Some(a) if *a == pair => {}
            Some(_) => return None,
        }
    }
    agreed
}

fn ids(cluster: &TestCluster, nodes: &[usize]) -> BTreeSet<String> {
    nodes.iter().map(|&i| cluster.node(i).id.clone()).collect()
}

/// Waits until every running node agrees on a converged view; returns (coordinator, term, when).
fn wait_converged(
    cluster: &mut TestCluster,
    poll: Duration,
    timeout: Duration,
) -> Result<(String, u64, Instant)> {
    let running = cluster.running();
    let expected = ids(cluster, &running);
    let poller = Poller::start(cluster, &running, poll, Duration::from_secs(2));
    let mut found = None;
    let (at, _) = poller.wait_for(&running, Instant::now(), timeout, |_, answers| {
        found = agreed(answers, &expected);
        found.is_some()
    })?;
    let (c, t) = found.expect("set by the check");
    Ok((c, t, at))
}

// ------------------------------------------------------------------------------------------------
// 1. Convergence

struct ConvergenceTrial {
    all_up_ms: Option<f64>,
    converged_ms: f64,
    coordinator: String,
}

fn convergence_trial(args: &Args, n: usize) -> Result<ConvergenceTrial> {
    let mut cluster = TestCluster::new(n, args.options())?;
    let all: Vec<usize> = (0..n).collect();
    let expected = ids(&cluster, &all);
    let poller = Poller::start(
        &cluster,
        &all,
        args.poll_interval(n),
        Duration::from_secs(2),
    );
    let t0 = Instant::now();
    for node in &mut cluster.nodes {
        node.start()?;
    }
    let mut answered: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut found = None;
    let (at, _) = poller
        .wait_for(&all, t0, Duration::from_secs(60), |at, answers| {
            for &i in answers.keys() {
                answered.entry(i).or_insert(at);
            }
            found = agreed(answers, &expected);
            found.is_some()
        })
        .with_context(|| format!("{n} nodes did not converge"))?;
    drop(poller);
    let all_up_ms = (answered.len() == n).then(|| ms(*answered.values().max().unwrap() - t0));
    let (coordinator, _) = found.expect("set by the check");
    Ok(ConvergenceTrial {
        all_up_ms,
        converged_ms: ms(at - t0),
        coordinator,
    })
}

fn convergence(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let sizes = args.sizes.clone().unwrap_or_else(|| vec![3, 10, 32]);
    let trials = args.trials.unwrap_or(3);
    println!(
        "\n## convergence ({}; {trials} trials per size; baseline: 1 node)",
        args.label()
    );
    let mut all_sizes = vec![1];
    all_sizes.extend(sizes.iter().copied().filter(|&n| n != 1));
    let mut summaries = Vec::new();
    let mut baseline: Option<f64> = None;
    println!(
        "{:>5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8}  poll",
        "nodes", "trials", "min ms", "median ms", "max ms", "up ms", "ratio"
    );
    for n in all_sizes {
        let mut times = Vec::new();
        let mut ups = Vec::new();
        let mut failures = 0;
        for trial in 0..trials {
            match convergence_trial(args, n) {
                Ok(t) => {
                    out.emit(
                        json!({"bench": "convergence", "kind": "trial", "nodes": n, "trial": trial,
                        "converged_ms": r1(t.converged_ms), "all_answering_ms": t.all_up_ms.map(r1),
                        "coordinator": t.coordinator,
                        "poll_interval_ms": ms(args.poll_interval(n))}),
                    )?;
                    eprintln!(
                        "  convergence n={n} trial {trial}: {:.0} ms",
                        t.converged_ms
                    );
                    times.push(t.converged_ms);
                    ups.extend(t.all_up_ms);
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("  convergence n={n} trial {trial} FAILED: {e:#}");
                    out.emit(
                        json!({"bench": "convergence", "kind": "failure", "nodes": n, "trial": trial,
                        "error": format!("{e:#}")}),
                    )?;
                }
            }
        }
        let s = stats(&times);
        let up = stats(&ups);
        if n == 1 {
            baseline = s.map(|s| s.median);
        }
        let ratio = match (s, baseline) {
            (Some(s), Some(b)) if b > 0.0 => Some(s.median / b),
            _ => None,
        };
        println!(
            "{:>5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8}  {} ms{}",
            n,
            times.len(),
            fmt_ms(s.map(|s| s.min)),
            fmt_ms(s.map(|s| s.median)),
            fmt_ms(s.map(|s| s.max)),
            fmt_ms(up.map(|s| s.median)),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
            ms(args.poll_interval(n)),
            if failures > 0 {
                format!("  ({failures} FAILED)")
            } else {
                String::new()
            },
        );
        let summary = json!({"bench": "convergence", "kind": "summary", "nodes": n, "trials": trials,
            "failures": failures, "converged": stats_json(s), "all_answering": stats_json(up),
            "baseline_single_node_median_ms": baseline.map(r1),
            "ratio_to_single_node": ratio.map(|r| (r * 100.0).round() / 100.0),
            "poll_interval_ms": ms(args.poll_interval(n))});
        out.emit(summary.clone())?;
        summaries.push(summary);
    }
    println!("(up ms: median time until every node answered /cluster/health; ratio: median / 1-node median)");
    Ok(summaries)
}

// ------------------------------------------------------------------------------------------------
// 2. Failover

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Kill9,
    Term,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Kill9 => "kill9",
            Stop::Term => "sigterm",
        }
    }
}

struct FailoverTrial {
    /// Signal to every survivor naming the same new coordinator and term.
    failover_ms: f64,
    /// Signal to every survivor listing the stopped node as not ready (dead, or gone after a leave).
    detected_ms: Option<f64>,
    /// Restart of the stopped node to a converged cluster again.
    rejoin_ms: f64,
    old: (String, u64),
    new: (String, u64),
}

fn failover_trial(args: &Args, cluster: &mut TestCluster, stop: Stop) -> Result<FailoverTrial> {
    let n = cluster.nodes.len();
    let poll = args.poll_interval(n);
    let (old_c, old_t, _) = wait_converged(cluster, poll, Duration::from_secs(60))?;
    thread::sleep(Duration::from_millis(args.settle_ms));
    let victim = cluster
        .index_of(&old_c)
        .context("coordinator is not one of ours")?;
    let survivors: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
    let poller = Poller::start(cluster, &survivors, poll, Duration::from_secs(2));
    // Let every poll thread have its connection open before the clock starts.
    thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    match stop {
        Stop::Kill9 => cluster.node_mut(victim).kill9(),
        Stop::Term => cluster
            .node_mut(victim)
            .terminate(Duration::from_secs(15))?,
    }
    let mut detected: Option<Instant> = None;
    let mut new = None;
    let (at, _) = poller
        .wait_for(&survivors, t0, Duration::from_secs(60), |at, answers| {
            if detected.is_none() && answers.values().all(|v| !ready_ids(v).contains(&old_c)) {
                detected = Some(at);
            }
            new = same_coordinator(answers).filter(|(c, t)| *c != old_c && *t > old_t);
            new.is_some()
        })
        .with_context(|| format!("no failover after {} of {old_c}", stop.name()))?;
    drop(poller);
    let failover_ms = ms(at - t0);
    let new = new.expect("set by the check");

    let t1 = Instant::now();
    cluster.node_mut(victim).start()?;
    let (_, _, back) = wait_converged(cluster, poll, Duration::from_secs(60))
        .context("no convergence after the restart")?;
    Ok(FailoverTrial {
        failover_ms,
        detected_ms: detected.map(|d| ms(d - t0)),
        rejoin_ms: ms(back - t1),
        old: (old_c, old_t),
        new,
    })
}

/// Per stop kind: failover, detection and rejoin times (ms) and the number of failed trials.
#[derive(Default)]
struct KindResults {
    times: Vec<f64>,
    detected: Vec<f64>,
    rejoin: Vec<f64>,
    failures: usize,
}

fn failover(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let sizes = args.sizes.clone().unwrap_or_else(|| vec![5, 10]);
    let trials = args.trials.unwrap_or(10);
    let kinds: Vec<Stop> = if args.graceful {
        vec![Stop::Kill9, Stop::Term]
    } else {
        vec![Stop::Kill9]
    };
    let gossip = args.gossip_ms();
    println!(
        "\n## failover ({}; {trials} trials per size and stop kind, interleaved; settle {} ms)",
        args.label(),
        args.settle_ms
    );
    println!(
        "{:>5} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>11} {:>10} {:>9}",
        "nodes",
        "stop",
        "trials",
        "median ms",
        "p90 ms",
        "max ms",
        "min ms",
        "detect med",
        "rejoin med",
        "x gossip"
    );
    let mut summaries = Vec::new();
    for n in sizes {
        let mut cluster = TestCluster::start(n, args.options())?;
        let mut results: BTreeMap<&str, KindResults> = BTreeMap::new();
        'trials: for trial in 0..trials {
            for &kind in &kinds {
                let entry = results.entry(kind.name()).or_default();
                match failover_trial(args, &mut cluster, kind) {
                    Ok(t) => {
                        eprintln!(
                            "  failover n={n} {} trial {trial}: {:.0} ms ({} t{} -> {} t{}), rejoin {:.0} ms",
                            kind.name(),
                            t.failover_ms,
                            t.old.0,
                            t.old.1,
                            t.new.0,
                            t.new.1,
                            t.rejoin_ms
                        );
                        out.emit(
                            json!({"bench": "failover", "kind": "trial", "stop": kind.name(), "nodes": n,
                            "trial": trial, "failover_ms": r1(t.failover_ms), "detected_ms": t.detected_ms.map(r1),
                            "rejoin_ms": r1(t.rejoin_ms), "old_coordinator": t.old.0, "old_term": t.old.1,
                            "new_coordinator": t.new.0, "new_term": t.new.1,
                            "poll_interval_ms": ms(args.poll_interval(n))}),
                        )?;
                        entry.times.push(t.failover_ms);
                        entry.detected.extend(t.detected_ms);
                        entry.rejoin.push(t.rejoin_ms);
                    }
                    Err(e) => {
                        entry.failures += 1;
                        eprintln!(
                            "  failover n={n} {} trial {trial} FAILED: {e:#}",
                            kind.name()
                        );
                        out.emit(
                            json!({"bench": "failover", "kind": "failure", "stop": kind.name(), "nodes": n,
                            "trial": trial, "error": format!("{e:#}")}),
                        )?;
                        // Start over with a fresh cluster rather than measuring a broken one.
                        cluster.nodes.clear();
                        cluster = match TestCluster::start(n, args.options()) {
                            Ok(c) => c,
                            Err(e) => {
                                eprintln!("  cannot restart the {n}-node cluster: {e:#}");
                                break 'trials;
                            }
                        };
                    }
                }
            }
        }
        drop(cluster);
        let graceful_median = results
            .get("sigterm")
            .and_then(|r| stats(&r.times))
            .map(|s| s.median);
        for kind in &kinds {
            let Some(KindResults {
                times,
                detected,
                rejoin,
                failures,
            }) = results.get(kind.name())
            else {
                continue;
            };
            let s = stats(times);
            let d = stats(detected);
            let rj = stats(rejoin);
            let x_gossip = s.map(|s| s.median / gossip);
            let vs_graceful = match (s, graceful_median, kind) {
                (Some(s), Some(g), Stop::Kill9) if g > 0.0 => Some(s.median / g),
                _ => None,
            };
            println!(
                "{:>5} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>11} {:>10} {:>9}{}",
                n,
                kind.name(),
                times.len(),
                fmt_ms(s.map(|s| s.median)),
                fmt_ms(s.map(|s| s.p90)),
                fmt_ms(s.map(|s| s.max)),
                fmt_ms(s.map(|s| s.min)),
                fmt_ms(d.map(|s| s.median)),
                fmt_ms(rj.map(|s| s.median)),
                x_gossip.map_or("-".into(), |r| format!("{r:.1}")),
                if *failures > 0 {
                    format!("  ({failures} FAILED)")
                } else {
                    String::new()
                },
            );
            let summary = json!({"bench": "failover", "kind": "summary", "stop": kind.name(), "nodes": n,
                "trials": trials, "failures": failures, "failover": stats_json(s), "detected": stats_json(d),
                "rejoin": stats_json(rj),
                "median_over_gossip_interval": x_gossip.map(|r| (r * 100.0).round() / 100.0),
                "kill9_median_over_sigterm_median": vs_graceful.map(|r| (r * 100.0).round() / 100.0),
                "poll_interval_ms": ms(args.poll_interval(n))});
            out.emit(summary.clone())?;
            summaries.push(summary);
        }
        if let (Some(k), Some(g)) = (
            results.get("kill9").and_then(|r| stats(&r.times)),
            graceful_median,
        ) {
            println!(
                "{:>5} kill9 median / sigterm median = {:.2}",
                n,
                k.median / g
            );
        }
    }
    println!(
        "(failover: signal until every survivor names the same new coordinator and term; detect: until every \
         survivor lists the old one as not ready; rejoin: restart until converged again; x gossip: median / {gossip} ms)"
    );
    Ok(summaries)
}

// ------------------------------------------------------------------------------------------------
// 3. False deaths

/// Busy-loop child processes (`membership_bench spin`), killed on drop.
struct Spinners(Vec<Child>);

impl Spinners {
    fn start(count: usize) -> Result<Spinners> {
        // /proc/self/exe still runs this program if its file was replaced (rebuilt) since it started.
        let proc_exe = PathBuf::from("/proc/self/exe");
        let exe = if proc_exe.exists() {
            proc_exe
        } else {
            std::env::current_exe()?
        };
        let mut children = Vec::new();
        for _ in 0..count {
            children.push(
                Command::new(&exe)
                    .arg("spin")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("cannot start a busy-loop process")?,
            );
        }
        Ok(Spinners(children))
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spin() -> ! {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
}

/// CPU time (user + system, seconds) the machine spent so far, from /proc/stat, to report load.
fn machine_busy_seconds() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    let idle = v[3] + v[4];
    let total: f64 = v.iter().take(8).sum();
    Some(((total - idle) / 100.0, total / 100.0))
}

struct Phase {
    name: String,
    samples: usize,
    unanswered: usize,
    bad_pairs: BTreeMap<(String, String), (String, f64)>,
    dead_pairs: BTreeSet<(String, String)>,
    bad_samples: usize,
    coordinator_changes: usize,
    coordinators: BTreeSet<(String, u64)>,
    heartbeat_ages: Vec<f64>,
    exited: Vec<String>,
    cpu_busy: Option<f64>,
}

fn false_deaths_phase(args: &Args, cluster: &mut TestCluster, name: &str) -> Result<Phase> {
    let n = cluster.nodes.len();
    let all: Vec<usize> = (0..n).collect();
    let expected: Vec<String> = all.iter().map(|&i| cluster.node(i).id.clone()).collect();
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let spinners = if name == "busy" {
        Some(Spinners::start(args.busy_threads)?)
    } else {
        None
    };
    let cpu0 = machine_busy_seconds();
    let poller = Poller::start(
        cluster,
        &all,
        Duration::from_millis(args.sample_ms),
        Duration::from_secs(2),
    );
    let start = Instant::now();
    let end = start + duration;
    let mut phase = Phase {
        name: name.to_string(),
        samples: 0,
        unanswered: 0,
        bad_pairs: BTreeMap::new(),
        dead_pairs: BTreeSet::new(),
        bad_samples: 0,
        coordinator_changes: 0,
        coordinators: BTreeSet::new(),
        heartbeat_ages: Vec::new(),
        exited: Vec::new(),
        cpu_busy: None,
    };
    let mut last_coordinator: BTreeMap<usize, (Option<String>, Option<u64>)> = BTreeMap::new();
    let mut next_report = start + Duration::from_secs(60);
    while let Some(s) = poller.recv(end) {
        if s.at > end {
            break;
        }
        phase.samples += 1;
        let observer = expected[s.node].clone();
        let Some(v) = s.body else {
            phase.unanswered += 1;
            continue;
        };
        let members = v["nodes"].as_array().cloned().unwrap_or_default();
        let mut bad = false;
        for id in &expected {
            let member = members.iter().find(|m| m["id"] == id.as_str());
            let state = member
                .and_then(|m| m["state"].as_str())
                .unwrap_or("missing")
                .to_string();
            if let Some(age) = member.and_then(|m| m["last_heartbeat_ms_ago"].as_f64()) {
                if *id != observer {
                    phase.heartbeat_ages.push(age);
                }
            }
            if state != "ready" {
                bad = true;
                if state == "dead" {
                    phase.dead_pairs.insert((observer.clone(), id.clone()));
                }
                let t = ms(s.at - start) / 1000.0;
                phase
                    .bad_pairs
                    .entry((observer.clone(), id.clone()))
                    .or_insert_with(|| {
                        eprintln!(
                            "  false-deaths {name}: at {t:.1} s {observer} sees {id} as {state}"
                        );
                        (state.clone(), t)
                    });
            }
        }
        if bad {
            phase.bad_samples += 1;
        }
        let pair = (
            v["coordinator"].as_str().map(String::from),
            v["term"].as_u64(),
        );
        if let (Some(c), Some(t)) = (&pair.0, pair.1) {
            phase.coordinators.insert((c.clone(), t));
        }
        if let Some(prev) = last_coordinator.insert(s.node, pair.clone()) {
            if prev != pair {
                phase.coordinator_changes += 1;
                eprintln!(
                    "  false-deaths {name}: at {:.1} s {observer}: coordinator {prev:?} -> {pair:?}",
                    ms(s.at - start) / 1000.0
                );
            }
        }
        if Instant::now() > next_report {
            next_report += Duration::from_secs(60);
            eprintln!(
                "  false-deaths {name}: {:.0} s, {} samples, {} bad pairs, {} coordinator changes",
                start.elapsed().as_secs_f64(),
                phase.samples,
                phase.bad_pairs.len(),
                phase.coordinator_changes
            );
        }
    }
    drop(poller);
    let cpu1 = machine_busy_seconds();
    drop(spinners);
    if let (Some((b0, t0)), Some((b1, t1))) = (cpu0, cpu1) {
        if t1 > t0 {
            phase.cpu_busy = Some((b1 - b0) / (t1 - t0));
        }
    }
    phase.exited = cluster
        .nodes
        .iter_mut()
        .filter_map(|node| (!node.is_running()).then(|| node.id.clone()))
        .collect();
    Ok(phase)
}

fn false_deaths(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let n = args.nodes;
    println!(
        "\n## false deaths ({}; {n} nodes; {} min per phase; phases {}; {} busy-loop process(es) in busy; \
         sampling every {} ms)",
        args.label(),
        args.minutes,
        args.phases.join(","),
        args.busy_threads,
        args.sample_ms
    );
    let mut cluster = TestCluster::start(n, args.options())?;
    let (c, t, _) = wait_converged(&mut cluster, args.poll_interval(n), Duration::from_secs(60))?;
    eprintln!("  false-deaths: {n} nodes converged, coordinator {c} term {t}");
    thread::sleep(Duration::from_secs(2));
    let mut phases = Vec::new();
    let mut failure = None;
    for name in &args.phases {
        match false_deaths_phase(args, &mut cluster, name) {
            Ok(p) => phases.push(p),
            Err(e) => {
                // Report the phases that did run before failing.
                failure = Some(e.context(format!("false-deaths phase {name}")));
                break;
            }
        }
    }
    drop(cluster);
    println!(
        "{:>6} {:>8} {:>9} {:>10} {:>10} {:>11} {:>11} {:>10} {:>10} {:>9}",
        "phase",
        "samples",
        "no answer",
        "bad pairs",
        "dead pairs",
        "bad samples",
        "coord chg",
        "hb p99 ms",
        "hb max ms",
        "cpu busy"
    );
    let mut summaries = Vec::new();
    for p in &phases {
        let hb = {
            let mut v = p.heartbeat_ages.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            let p99 = v
                .get(((v.len() as f64 * 0.99) as usize).min(v.len().saturating_sub(1)))
                .copied();
            (p99, v.last().copied())
        };
        println!(
            "{:>6} {:>8} {:>9} {:>10} {:>10} {:>11} {:>11} {:>10} {:>10} {:>9}{}",
            p.name,
            p.samples,
            p.unanswered,
            p.bad_pairs.len(),
            p.dead_pairs.len(),
            p.bad_samples,
            p.coordinator_changes,
            fmt_ms(hb.0),
            fmt_ms(hb.1),
            p.cpu_busy
                .map_or("-".into(), |c| format!("{:.0}%", c * 100.0)),
            if p.exited.is_empty() {
                String::new()
            } else {
                format!("  EXITED: {:?}", p.exited)
            },
        );
        let pairs: Vec<Value> = p
            .bad_pairs
            .iter()
            .map(|((o, m), (state, t))| json!({"observer": o, "member": m, "state": state, "first_seen_s": r1(*t)}))
            .collect();
        let summary = json!({"bench": "false_deaths", "kind": "summary", "phase": p.name, "nodes": n,
            "minutes": args.minutes, "busy_threads": if p.name == "busy" { args.busy_threads } else { 0 },
            "sample_interval_ms": args.sample_ms, "samples": p.samples, "unanswered": p.unanswered,
            "false_death_pairs": p.bad_pairs.len(), "dead_pairs": p.dead_pairs.len(),
            "bad_samples": p.bad_samples, "coordinator_changes": p.coordinator_changes,
            "coordinators_seen": p.coordinators.iter().map(|(c, t)| json!([c, t])).collect::<Vec<_>>(),
            "heartbeat_age_p99_ms": hb.0, "heartbeat_age_max_ms": hb.1,
            "machine_cpu_busy": p.cpu_busy.map(|c| (c * 1000.0).round() / 1000.0),
            "exited": p.exited, "pairs": pairs});
        out.emit(summary.clone())?;
        summaries.push(summary);
    }
    println!(
        "(bad pairs: distinct (observer, member) pairs ever seen not ready or missing; dead pairs: of those, seen \
         as dead; coord chg: changes of (coordinator, term) seen by any observer; hb: last_heartbeat_ms_ago of \
         peers; cpu busy: whole machine, both cores)"
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(summaries),
    }
}

// ------------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let args = parse_args()?;
    if args.cmd == "spin" {
        spin();
    }
    let bin = torua_bin();
    if !bin.is_file() {
        bail!("torua binary {} does not exist", bin.display());
    }
    let mut out = Out::new(&args)?;
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "# membership benchmarks: {} ({}), torua {}, {cores} cores",
        args.cmd,
        args.label(),
        bin.display()
    );
    out.emit(
        json!({"bench": "meta", "kind": "start", "command": args.cmd, "torua_bin": bin.display().to_string(),
        "cores": cores, "argv": std::env::args().collect::<Vec<_>>()}),
    )?;
    match args.cmd.as_str() {
        "convergence" => {
            convergence(&args, &mut out)?;
        }
        "failover" => {
            failover(&args, &mut out)?;
        }
        "false-deaths" => {
            false_deaths(&args, &mut out)?;
        }
        "all" => {
            // Sizes and trial counts are per benchmark; only the common flags carry over.
            let common = Args {
                sizes: None,
                trials: None,
                ..args.clone()
            };
            convergence(&common, &mut out)?;
            failover(&common, &mut out)?;
            false_deaths(&common, &mut out)?;
        }
        other => bail!("unknown benchmark {other:?}\n{USAGE}"),
    }
    out.finish();
    Ok(())
}
