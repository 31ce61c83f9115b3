//! Peer transport benchmarks: QUIC round trips in process, broadcast and `/cluster/health`
//! on real `torua serve` processes (loopback, real gossip, real QUIC, real HTTP).
//!
//! ```text
//! transport_bench rtt          [--count 20000] [--warmup 2000] [--sizes 64,4096] [--rounds 20] [--threads 2]
//! transport_bench broadcast    [--nodes 10] [--count 500] [--warmup 50] [--node 0]
//! transport_bench health-load  [--nodes 5] [--concurrency 32] [--seconds 10] [--warmup-secs 2] [--threads 2]
//! transport_bench all          (the three above with their defaults and the common flags)
//!
//! common: --json FILE (JSON lines, appended; default: stdout after the tables)  --label TEXT
//!         --env KEY=VALUE (repeatable, passed to every node)  --log info
//! ```
//!
//! Every benchmark measures its baseline in the same run (the machine is small, shared and noisy) and
//! reports the ratio to it:
//! * rtt: `transport::Endpoint`s on 127.0.0.1 (identities from `ClusterCa::derive(DEV_CLUSTER_SECRET,
//!   "bench")`), an echo service (`Vec<u8>` in, the same bytes out), sequential request/response round
//!   trips; also the same echo with the payload as one serde byte string (`quic bytes`), which separates
//!   postcard's per-element encoding of `Vec<u8>` from the transport itself. Baseline: a plain tokio TCP
//!   echo on loopback (TCP_NODELAY, 4-byte length prefix + payload). The kinds run in rounds that rotate
//!   between them, so a burst of noise hits all alike. `--threads 0` runs everything on one thread (no
//!   cross-thread wake-ups: the steadiest measure of the protocol's own cost).
//! * broadcast: an N-node cluster, sequential `POST /broadcast` (`/control`, `{"log_filter":"info"}`) to
//!   one node over a keep-alive connection: client-observed latency, and the node's fan-out time (the
//!   largest `latency_ms` among the results); every result must be ok. Baseline: `GET /health` on the same
//!   node and connection, alternating with the broadcasts.
//! * health-load: an N-node cluster, `--concurrency` keep-alive HTTP/1.1 connections from this process
//!   (closed loop, one request in flight per connection) against `GET /cluster/health` on the
//!   coordinator and on a non-coordinator (which asks the coordinator over QUIC), each preceded by its
//!   baseline `GET /health` on the same node. The load generator shares the machine's cores with the
//!   nodes; the CPU time each process used is reported.
//!
//! Latencies are recorded in nanoseconds in HDR histograms (3 significant digits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use torua_testkit::TestCluster;
use transport::{ClusterCa, Endpoint, PeerInfo, Service, TransportConfig, DEV_CLUSTER_SECRET};

mod broadcast;
mod cpu;
mod health_load;
mod http_conn;
mod rtt;

use broadcast::*;
use cpu::*;
use health_load::*;
use http_conn::*;
use rtt::*;
use torua_bench::flags::{Common, Flags};
use torua_bench::out::{dispatch, existing_torua_bin, Bench, Out};
use torua_bench::stats::r3;
use torua_bench::sys::machine_jiffies;

// ------------------------------------------------------------------------------------------------
// Arguments

#[derive(Debug, Clone)]
struct Args {
    cmd: String,
    count: Option<usize>,
    warmup: Option<usize>,
    sizes: Vec<usize>,
    rounds: usize,
    threads: usize,
    nodes: Option<usize>,
    node: usize,
    concurrency: Vec<usize>,
    seconds: f64,
    warmup_secs: f64,
    common: Common,
}

const USAGE: &str = "usage: transport_bench <rtt|broadcast|health-load|all> [flags]
  rtt           --count 20000 --warmup 2000 --sizes 64,4096 --rounds 20 --threads 2 (0: current-thread runtime)
  broadcast     --nodes 10 --count 500 --warmup 50 --node 0 (index of the node that is asked)
  health-load   --nodes 5 --concurrency 32 (or a list, e.g. 1,32) --seconds 10 --warmup-secs 2 --threads 2
  common        --env KEY=VALUE (repeatable) --label TEXT --json FILE --log info
The torua binary (broadcast, health-load) is $TORUA_BIN, else the one next to this executable.";

fn parse_args() -> Result<Args> {
    let mut f = Flags::from_env(USAGE);
    let cmd = f.command();
    let mut a = Args {
        cmd,
        count: None,
        warmup: None,
        sizes: vec![64, 4096],
        rounds: 20,
        threads: 2,
        nodes: None,
        node: 0,
        concurrency: vec![32],
        seconds: 10.0,
        warmup_secs: 2.0,
        common: Common::new("info"),
    };
    while let Some(flag) = f.next_flag() {
        let v = f.value(&flag)?;
        match flag.as_str() {
            "--count" => a.count = Some(v.parse("a count")?),
            "--warmup" => a.warmup = Some(v.parse("a count")?),
            "--sizes" => a.sizes = v.list("a list like 64,4096")?,
            "--rounds" => a.rounds = v.parse("a count")?,
            "--threads" => a.threads = v.parse("a count")?,
            "--nodes" => a.nodes = Some(v.parse("a count")?),
            "--node" => a.node = v.parse("a node index")?,
            "--concurrency" => a.concurrency = v.list("a list like 1,32")?,
            "--seconds" => a.seconds = v.parse("seconds")?,
            "--warmup-secs" => a.warmup_secs = v.parse("seconds")?,
            _ => f.common(&flag, v, &mut a.common)?,
        }
    }
    ensure!(a.rounds > 0, "--rounds must be at least 1");
    ensure!(!a.sizes.is_empty(), "--sizes must name a size");
    ensure!(
        a.concurrency.iter().all(|&c| c > 0),
        "--concurrency must be positive"
    );
    ensure!(a.seconds > 0.0, "--seconds must be positive");
    Ok(a)
}

impl Args {
    fn label(&self) -> String {
        self.common.label.clone().unwrap_or_else(|| {
            if self.common.env.is_empty() {
                "defaults".into()
            } else {
                self.common
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        })
    }
    fn runtime(&self) -> Result<tokio::runtime::Runtime> {
        let rt = if self.threads == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.threads)
                .enable_all()
                .build()?
        };
        Ok(rt)
    }
}

/// The subcommands (`all` runs each in turn).
const BENCHES: [(&str, Bench<Args>); 3] = [
    ("rtt", rtt),
    ("broadcast", broadcast),
    ("health-load", health_load),
];

// ------------------------------------------------------------------------------------------------
// Output

// ------------------------------------------------------------------------------------------------
// Histograms (nanoseconds)

fn histogram() -> Histogram<u64> {
    // 1 ns .. 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

fn ms_of(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn us_of(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// Count, percentiles and mean of a nanosecond histogram in `unit` (`ms` or `us`, `ns_per_unit`
/// nanoseconds each), as `{"n", "min_<unit>", "p50_<unit>", ..., "mean_<unit>"}`.
fn hist_json(h: &Histogram<u64>, unit: &str, ns_per_unit: f64) -> Value {
    let mut v = json!({"n": h.len()});
    for (name, ns) in [
        ("min", h.min()),
        ("p50", h.value_at_quantile(0.5)),
        ("p90", h.value_at_quantile(0.9)),
        ("p99", h.value_at_quantile(0.99)),
        ("p999", h.value_at_quantile(0.999)),
        ("max", h.max()),
    ] {
        v[format!("{name}_{unit}")] = json!(r3(ns as f64 / ns_per_unit));
    }
    v[format!("mean_{unit}")] = json!(r3(h.mean() / ns_per_unit));
    v
}

fn hist_json_ms(h: &Histogram<u64>) -> Value {
    hist_json(h, "ms", 1e6)
}

fn hist_json_us(h: &Histogram<u64>) -> Value {
    hist_json(h, "us", 1e3)
}

fn p50(h: &Histogram<u64>) -> u64 {
    h.value_at_quantile(0.5)
}

fn p99(h: &Histogram<u64>) -> u64 {
    h.value_at_quantile(0.99)
}

// ------------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut out = Out::new(
        args.common.json.as_deref(),
        json!({"label": args.label(), "env": args.common.env}),
        false,
    )?;
    let needs_torua = args.cmd != "rtt";
    let bin = needs_torua.then(existing_torua_bin).transpose()?;
    out.start("transport", &args.cmd, &args.label(), bin)?;
    // Counts are per benchmark; only the common flags carry over to `all`.
    let common = || Args {
        count: None,
        warmup: None,
        nodes: None,
        ..args.clone()
    };
    dispatch(&args.cmd, &args, common, &BENCHES, out, USAGE)
}
