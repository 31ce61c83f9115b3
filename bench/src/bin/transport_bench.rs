//! Peer transport benchmarks (issue 3): QUIC round trips in process, broadcast and `/cluster/health`
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

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use torua_testkit::{torua_bin, ClusterOptions, TestCluster};
use transport::{ClusterCa, Endpoint, PeerInfo, Service, TransportConfig, DEV_CLUSTER_SECRET};

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
    env: BTreeMap<String, String>,
    label: Option<String>,
    json: Option<PathBuf>,
    log: String,
}

const USAGE: &str = "usage: transport_bench <rtt|broadcast|health-load|all> [flags]
  rtt           --count 20000 --warmup 2000 --sizes 64,4096 --rounds 20 --threads 2 (0: current-thread runtime)
  broadcast     --nodes 10 --count 500 --warmup 50 --node 0 (index of the node that is asked)
  health-load   --nodes 5 --concurrency 32 (or a list, e.g. 1,32) --seconds 10 --warmup-secs 2 --threads 2
  common        --env KEY=VALUE (repeatable) --label TEXT --json FILE --log info
The torua binary (broadcast, health-load) is $TORUA_BIN, else the one next to this executable.";

fn parse_list(value: &str) -> Result<Vec<usize>, std::num::ParseIntError> {
    value.split(',').map(|s| s.trim().parse()).collect()
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    if cmd.is_empty() || cmd == "-h" || cmd == "--help" {
        println!("{USAGE}");
        std::process::exit(if cmd.is_empty() { 2 } else { 0 });
    }
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
        env: BTreeMap::new(),
        label: None,
        json: None,
        log: "info".into(),
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value:?}: expected {what}");
        match flag.as_str() {
            "--count" => a.count = Some(value.parse().with_context(|| bad("a count"))?),
            "--warmup" => a.warmup = Some(value.parse().with_context(|| bad("a count"))?),
            "--sizes" => {
                a.sizes = parse_list(&value).with_context(|| bad("a list like 64,4096"))?
            }
            "--rounds" => a.rounds = value.parse().with_context(|| bad("a count"))?,
            "--threads" => a.threads = value.parse().with_context(|| bad("a count"))?,
            "--nodes" => a.nodes = Some(value.parse().with_context(|| bad("a count"))?),
            "--node" => a.node = value.parse().with_context(|| bad("a node index"))?,
            "--concurrency" => {
                a.concurrency = parse_list(&value).with_context(|| bad("a list like 1,32"))?
            }
            "--seconds" => a.seconds = value.parse().with_context(|| bad("seconds"))?,
            "--warmup-secs" => a.warmup_secs = value.parse().with_context(|| bad("seconds"))?,
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
    fn options(&self) -> ClusterOptions {
        ClusterOptions {
            env: self.env.clone(),
            log: self.log.clone(),
            ..ClusterOptions::default()
        }
    }
    fn label(&self) -> String {
        self.label.clone().unwrap_or_else(|| {
            if self.env.is_empty() {
                "defaults".into()
            } else {
                self.env
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
        Ok(Out {
            file,
            pending: Vec::new(),
            base: json!({"label": args.label(), "env": args.env}),
        })
    }

    /// One JSON line: the common fields plus `record`.
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

/// Rounds to 3 decimals (JSON output).
fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

fn hist_json_ms(h: &Histogram<u64>) -> Value {
    json!({
        "n": h.len(),
        "min_ms": r3(ms_of(h.min())),
        "p50_ms": r3(ms_of(h.value_at_quantile(0.5))),
        "p90_ms": r3(ms_of(h.value_at_quantile(0.9))),
        "p99_ms": r3(ms_of(h.value_at_quantile(0.99))),
        "p999_ms": r3(ms_of(h.value_at_quantile(0.999))),
        "max_ms": r3(ms_of(h.max())),
        "mean_ms": r3(h.mean() / 1e6),
    })
}

fn hist_json_us(h: &Histogram<u64>) -> Value {
    json!({
        "n": h.len(),
        "min_us": r3(us_of(h.min())),
        "p50_us": r3(us_of(h.value_at_quantile(0.5))),
        "p90_us": r3(us_of(h.value_at_quantile(0.9))),
        "p99_us": r3(us_of(h.value_at_quantile(0.99))),
        "p999_us": r3(us_of(h.value_at_quantile(0.999))),
        "max_us": r3(us_of(h.max())),
        "mean_us": r3(h.mean() / 1e3),
    })
}

fn p50(h: &Histogram<u64>) -> u64 {
    h.value_at_quantile(0.5)
}

fn p99(h: &Histogram<u64>) -> u64 {
    h.value_at_quantile(0.99)
}

// ------------------------------------------------------------------------------------------------
// CPU accounting from /proc (Linux): how much of the 2 cores each process used during a phase.

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the command.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Busy and total jiffies of the whole machine.
fn machine_jiffies() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0.0);
    Some((total - idle, total))
}

/// CPU use of named processes between `start` and `stop`, in cores (1.0 = one core busy).
struct CpuMeter {
    pids: Vec<(String, String)>,
    before: Vec<Option<f64>>,
    machine: Option<(f64, f64)>,
    at: Instant,
}

impl CpuMeter {
    fn start(pids: Vec<(String, String)>) -> CpuMeter {
        let before = pids.iter().map(|(_, pid)| cpu_seconds(pid)).collect();
        CpuMeter {
            pids,
            before,
            machine: machine_jiffies(),
            at: Instant::now(),
        }
    }

    fn stop(self) -> Value {
        let wall = self.at.elapsed().as_secs_f64();
        let mut out = serde_json::Map::new();
        for ((name, pid), before) in self.pids.iter().zip(self.before) {
            let used = match (before, cpu_seconds(pid)) {
                (Some(b), Some(a)) => json!(r3((a - b) / wall)),
                _ => Value::Null,
            };
            out.insert(name.clone(), used);
        }
        if let (Some((b0, t0)), Some((b1, t1))) = (self.machine, machine_jiffies()) {
            if t1 > t0 {
                out.insert(
                    "machine_busy_fraction".into(),
                    json!(r3((b1 - b0) / (t1 - t0))),
                );
            }
        }
        Value::Object(out)
    }
}

fn fmt_cpu(cpu: &Value) -> String {
    cpu.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| match v.as_f64() {
                    Some(x) if k == "machine_busy_fraction" => format!("machine {:.0}%", x * 100.0),
                    Some(x) => format!("{k} {x:.2}"),
                    None => format!("{k} ?"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------------
// rtt: QUIC transport vs plain TCP, in process

struct Echo;

impl Service for Echo {
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn call(&self, _peer: PeerInfo, request: Vec<u8>) -> Vec<u8> {
        request
    }
}

/// A plain TCP echo server: 4-byte big-endian length, then that many bytes; answered the same way.
async fn tcp_echo_server(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let mut len = [0u8; 4];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let n = u32::from_be_bytes(len) as usize;
                buf.clear();
                buf.extend_from_slice(&len);
                buf.resize(4 + n, 0);
                if stream.read_exact(&mut buf[4..]).await.is_err() {
                    return;
                }
                if stream.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
    }
}

struct TcpEchoClient {
    stream: TcpStream,
    frame: Vec<u8>,
    answer: Vec<u8>,
}

impl TcpEchoClient {
    async fn connect(addr: SocketAddr, payload: &[u8]) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        Ok(TcpEchoClient {
            stream,
            answer: vec![0; frame.len()],
            frame,
        })
    }

    async fn round_trip(&mut self) -> Result<()> {
        self.stream.write_all(&self.frame).await?;
        self.stream.read_exact(&mut self.answer).await?;
        Ok(())
    }
}

/// A byte payload that serialises as one serde `bytes` value (postcard: length + raw bytes, one copy)
/// instead of a sequence of `u8` (postcard writes and reads each element through serde one by one).
#[derive(Debug, Clone, PartialEq)]
struct Blob(Vec<u8>);

impl serde::Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

struct BlobEcho;

impl Service for BlobEcho {
    type Request = Blob;
    type Response = Blob;

    async fn call(&self, _peer: PeerInfo, request: Blob) -> Blob {
        request
    }
}

/// What one rtt row measures.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// The transport with `Vec<u8>` messages (the echo service as specified).
    Quic,
    /// The transport with the payload as one serde byte string (no per-byte serde work).
    QuicBytes,
    /// The baseline.
    Tcp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Quic => "quic Vec<u8>",
            Kind::QuicBytes => "quic bytes",
            Kind::Tcp => "tcp baseline",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Kind::Quic => "quic",
            Kind::QuicBytes => "quic_bytes",
            Kind::Tcp => "tcp",
        }
    }
}

async fn rtt_async(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let count = args.count.unwrap_or(20_000);
    let warmup = args.warmup.unwrap_or(2_000);
    let rounds = args.rounds;
    let per_round = count.div_ceil(rounds);

    let ca = ClusterCa::derive(DEV_CLUSTER_SECRET, "bench")?;
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let bind = |id: &str| -> Result<Endpoint> {
        Ok(Endpoint::bind(
            any,
            ca.issue_node_identity(id)?,
            TransportConfig::default(),
        )?)
    };
    let server = bind("bench-server")?;
    server.serve(Echo);
    let blob_server = bind("bench-blob-server")?;
    blob_server.serve(BlobEcho);
    let client = bind("bench-client")?;
    let (peer, blob_peer) = (server.local_addr(), blob_server.local_addr());

    let listener = TcpListener::bind(any).await?;
    let tcp_addr = listener.local_addr()?;
    let tcp_server = tokio::spawn(tcp_echo_server(listener));

    println!(
        "\n## rtt: sequential request/response on 127.0.0.1, {count} round trips per size and kind after \
         {warmup} warm-up, in {rounds} rounds that rotate the kinds, tokio {}",
        if args.threads == 0 {
            "current-thread runtime (client, server and baseline on one thread)".to_string()
        } else {
            format!("multi-thread runtime with {} workers", args.threads)
        }
    );
    println!(
        "{:>7} {:<13} | {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} | {:>7} {:>7}",
        "payload", "kind", "p50", "p90", "p99", "p99.9", "max", "rt/s", "x p50", "x p99"
    );
    let kinds = [Kind::Quic, Kind::QuicBytes, Kind::Tcp];
    let mut records = Vec::new();
    for &size in &args.sizes {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let blob = Blob(payload.clone());
        // Correctness once: every echo carries the exact bytes.
        let back: Vec<u8> = client.request(peer, &payload, None).await?;
        ensure!(back == payload, "echo over QUIC changed the payload");
        let back: Blob = client.request(blob_peer, &blob, None).await?;
        ensure!(back == blob, "bytes echo over QUIC changed the payload");
        let mut tcp = TcpEchoClient::connect(tcp_addr, &payload).await?;
        tcp.round_trip().await?;
        ensure!(tcp.answer == tcp.frame, "echo over TCP changed the payload");

        // UDP datagrams and I/O operations behind each QUIC round trip (client side, both kinds).
        let conns = [
            client.connect(peer).await?,
            client.connect(blob_peer).await?,
        ];
        let stats = || {
            conns
                .iter()
                .map(|c| c.quinn_connection().stats())
                .collect::<Vec<_>>()
        };
        let mut stats_before = None;
        let mut hists: Vec<Histogram<u64>> = kinds.iter().map(|_| histogram()).collect();
        let mut busy = [Duration::ZERO; 3];
        let started = Instant::now();
        for round in 0..=rounds {
            // Round 0 is the warm-up; then the starting kind rotates so none always follows another.
            let n = if round == 0 {
                warmup
            } else {
                per_round.min(count - (round - 1) * per_round)
            };
            if round == 1 {
                stats_before = Some(stats());
            }
            for pass in 0..kinds.len() {
                let k = (pass + round) % kinds.len();
                let phase = Instant::now();
                for _ in 0..n {
                    let t = Instant::now();
                    match kinds[k] {
                        Kind::Quic => {
                            let back: Vec<u8> = client.request(peer, &payload, None).await?;
                            ensure!(back.len() == size, "short echo over QUIC");
                        }
                        Kind::QuicBytes => {
                            let back: Blob = client.request(blob_peer, &blob, None).await?;
                            ensure!(back.0.len() == size, "short bytes echo over QUIC");
                        }
                        Kind::Tcp => tcp.round_trip().await?,
                    }
                    if round > 0 {
                        record(&mut hists[k], t.elapsed());
                    }
                }
                if round > 0 {
                    busy[k] += phase.elapsed();
                }
            }
        }
        let wall = started.elapsed();
        let stats_after = stats();
        let stats_before = stats_before.context("no measured round")?;
        let (mut tx, mut rx, mut tx_io, mut rx_io) = (0u64, 0u64, 0u64, 0u64);
        for (a, b) in stats_after.iter().zip(&stats_before) {
            tx += a.udp_tx.datagrams - b.udp_tx.datagrams;
            rx += a.udp_rx.datagrams - b.udp_rx.datagrams;
            tx_io += a.udp_tx.ios - b.udp_tx.ios;
            rx_io += a.udp_rx.ios - b.udp_rx.ios;
        }
        let quic_round_trips = (hists[0].len() + hists[1].len()).max(1) as f64;
        let per_rt = |v: u64| r3(v as f64 / quic_round_trips);
        let mtu = stats_after[1].path.current_mtu;
        let ht = &hists[2];
        let mut rec = json!({
            "bench": "rtt", "payload_bytes": size, "count": count, "warmup": warmup, "rounds": rounds,
            "runtime_threads": args.threads, "target_ratio": 3.0, "wall_s": r3(wall.as_secs_f64()),
            "quic_client_per_round_trip": {"datagrams_sent": per_rt(tx), "datagrams_received": per_rt(rx),
                "send_ios": per_rt(tx_io), "recv_ios": per_rt(rx_io)},
            "quic_path_mtu": mtu,
        });
        for (k, kind) in kinds.iter().enumerate() {
            let h = &hists[k];
            let rate = h.len() as f64 / busy[k].as_secs_f64();
            let (x50, x99) = (ratio(p50(h), p50(ht)), ratio(p99(h), p99(ht)));
            println!(
                "{:>7} {:<13} | {:>7.1}us {:>7.1}us {:>7.1}us {:>7.1}us {:>7.1}us | {:>9.0} | {:>6.2}x {:>6.2}x",
                fmt_bytes(size),
                kind.name(),
                us_of(p50(h)),
                us_of(h.value_at_quantile(0.9)),
                us_of(p99(h)),
                us_of(h.value_at_quantile(0.999)),
                us_of(h.max()),
                rate,
                x50,
                x99
            );
            let mut lat = hist_json_us(h);
            lat["round_trips_per_s"] = json!(r3(rate));
            rec[kind.key()] = lat;
            if *kind != Kind::Tcp {
                rec[format!("{}_ratio_p50", kind.key())] = json!(r3(x50));
                rec[format!("{}_ratio_p99", kind.key())] = json!(r3(x99));
                rec[format!("{}_target_met", kind.key())] = json!(x50 <= 3.0 && x99 <= 3.0);
            }
        }
        println!(
            "{:>7} quic per round trip (client side): {} datagrams sent, {} received, {} send and {} \
             receive I/O calls; path MTU {mtu} bytes",
            "",
            per_rt(tx),
            per_rt(rx),
            per_rt(tx_io),
            per_rt(rx_io)
        );
        out.emit(rec.clone())?;
        records.push(rec);
    }
    println!(
        "x = ratio to the TCP baseline of the same payload; target: QUIC/TCP <= 3x at p50 and p99; \
         rt/s = sequential round trips per second while that kind ran"
    );
    tcp_server.abort();
    client.shutdown().await;
    server.shutdown().await;
    blob_server.shutdown().await;
    Ok(records)
}

fn fmt_bytes(n: usize) -> String {
    if n >= 1024 && n / 1024 * 1024 == n {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

fn rtt(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    args.runtime()?.block_on(rtt_async(args, out))
}

// ------------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 keep-alive client (Content-Length bodies only, which is what axum sends for JSON).

struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    async fn connect(addr: &str) -> Result<HttpConn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends a complete request and reads one response: (status, body).
    async fn call(&mut self, request: &[u8]) -> Result<(u16, &[u8])> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed before the response head");
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("status line")?;
        let mut length = None;
        for line in head.split("\r\n").skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("chunked responses are not supported by this client");
                }
            }
        }
        let length = length.context("response without Content-Length")?;
        while self.buf.len() < head_end + length {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed in the response body");
            }
        }
        ensure!(
            self.buf.len() == head_end + length,
            "extra bytes after the response"
        );
        Ok((status, &self.buf[head_end..]))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn get_request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: transport_bench\r\n\r\n")
        .into_bytes()
}

fn post_json_request(host: &str, path: &str, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: transport_bench\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ------------------------------------------------------------------------------------------------
// broadcast

fn start_cluster(args: &Args, n: usize) -> Result<(TestCluster, String, Duration)> {
    let started = Instant::now();
    let mut cluster = TestCluster::start(n, args.options())?;
    let (coordinator, term) = cluster.wait_converged(Duration::from_secs(60))?;
    let took = started.elapsed();
    println!(
        "cluster of {n} converged in {:.1} s: coordinator {coordinator}, term {term}",
        took.as_secs_f64()
    );
    Ok((cluster, coordinator, took))
}

fn broadcast(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let n = args.nodes.unwrap_or(10);
    let count = args.count.unwrap_or(500);
    let warmup = args.warmup.unwrap_or(50);
    ensure!(args.node < n, "--node {} but only {n} nodes", args.node);
    println!(
        "\n## broadcast: {n}-node cluster, {count} sequential POST /broadcast to one node after {warmup} warm-up, \
         alternating with GET /health (baseline) on the same keep-alive connection"
    );
    let (cluster, coordinator, _) = start_cluster(args, n)?;
    let node = cluster.node(args.node);
    let host = node.http_addr();
    let node_id = node.id.clone();
    let rt = args.runtime()?;
    let rec = rt.block_on(async {
        let mut conn = HttpConn::connect(&host).await?;
        let bcast = post_json_request(
            &host,
            "/broadcast",
            &json!({"path": "/control", "payload": {"log_filter": "info"}}),
        );
        let health = get_request(&host, "/health");
        let mut h_client = histogram();
        let mut h_fanout = histogram();
        let mut h_health = histogram();
        let mut failures = 0usize;
        let mut first_failure: Option<String> = None;
        for i in 0..warmup + count {
            let measured = i >= warmup;
            let t = Instant::now();
            let (status, _) = conn.call(&health).await?;
            let took = t.elapsed();
            ensure!(status == 200, "GET /health answered {status}");
            if measured {
                record(&mut h_health, took);
            }

            let t = Instant::now();
            let (status, body_bytes) = conn.call(&bcast).await?;
            let took = t.elapsed();
            let answer: Value = serde_json::from_slice(body_bytes).context("broadcast answer")?;
            ensure!(status == 200, "POST /broadcast answered {status}: {answer}");
            let results = answer["results"].as_array().cloned().unwrap_or_default();
            let all_ok = answer["sent_to"].as_u64() == Some(n as u64)
                && results.len() == n
                && results.iter().all(|r| r["ok"] == true);
            if !all_ok {
                failures += 1;
                if first_failure.is_none() {
                    first_failure = Some(answer.to_string());
                }
            }
            if measured {
                record(&mut h_client, took);
                let fanout_ms = results
                    .iter()
                    .filter_map(|r| r["latency_ms"].as_f64())
                    .fold(0.0f64, f64::max);
                record(&mut h_fanout, Duration::from_secs_f64(fanout_ms / 1000.0));
            }
        }
        anyhow::Ok((h_client, h_fanout, h_health, failures, first_failure))
    })?;
    let (h_client, h_fanout, h_health, failures, first_failure) = rec;
    println!(
        "{:<34} | {:>8} {:>8} {:>8} {:>8} {:>8}",
        "asked node ".to_string() + &node_id,
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "mean ms"
    );
    for (name, h) in [
        ("POST /broadcast (client)", &h_client),
        ("  fan-out (max latency_ms)", &h_fanout),
        ("GET /health (baseline)", &h_health),
    ] {
        println!(
            "{:<34} | {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name,
            ms_of(p50(h)),
            ms_of(h.value_at_quantile(0.9)),
            ms_of(p99(h)),
            ms_of(h.max()),
            h.mean() / 1e6
        );
    }
    let (x50, x99) = (
        ratio(p50(&h_client), p50(&h_health)),
        ratio(p99(&h_client), p99(&h_health)),
    );
    let target_met = ms_of(p50(&h_client)) <= 5.0 && failures == 0;
    println!(
        "broadcast/health ratio: p50 {x50:.2}x, p99 {x99:.2}x; broadcasts with a failed or missing result: \
         {failures}/{}; target p50 <= 5 ms: {}",
        warmup + count,
        if target_met { "met" } else { "MISSED" }
    );
    if let Some(f) = &first_failure {
        println!("first failed broadcast answer: {f}");
    }
    let rec = json!({
        "bench": "broadcast", "nodes": n, "count": count, "warmup": warmup, "asked": node_id,
        "coordinator": coordinator,
        "client": hist_json_ms(&h_client), "fanout": hist_json_ms(&h_fanout),
        "health_baseline": hist_json_ms(&h_health),
        "ratio_p50": r3(x50), "ratio_p99": r3(x99),
        "failed_broadcasts": failures, "first_failure": first_failure,
        "target_p50_ms": 5.0, "target_met": target_met,
    });
    out.emit(rec.clone())?;
    Ok(vec![rec])
}

// ------------------------------------------------------------------------------------------------
// health-load

struct LoadResult {
    hist: Histogram<u64>,
    requests: u64,
    errors: u64,
    non_200: u64,
    local_answers: u64,
    seconds: f64,
}

/// `concurrency` closed-loop connections GETting `path` on `host`: `warmup` unmeasured, then
/// `seconds` measured. Only requests that complete inside the measured window count.
async fn load(
    host: &str,
    path: &str,
    concurrency: usize,
    warmup: Duration,
    seconds: Duration,
) -> Result<LoadResult> {
    let request: Arc<[u8]> = get_request(host, path).into();
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let measure_to = measure_from + seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let request = request.clone();
        let host = host.to_string();
        tasks.spawn(async move {
            let mut hist = histogram();
            let (mut requests, mut errors, mut non_200, mut local) = (0u64, 0u64, 0u64, 0u64);
            let mut conn: Option<HttpConn> = None;
            loop {
                let t = Instant::now();
                if t >= measure_to {
                    break;
                }
                if conn.is_none() {
                    match HttpConn::connect(&host).await {
                        Ok(c) => conn = Some(c),
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected");
                let t = Instant::now();
                let result = c
                    .call(&request)
                    .await
                    .map(|(status, body)| (status, find(body, br#""source":"local""#).is_some()));
                let done = Instant::now();
                let counted = t >= measure_from && done <= measure_to;
                match result {
                    Ok((status, is_local)) => {
                        if counted {
                            requests += 1;
                            record(&mut hist, done - t);
                            if status != 200 {
                                non_200 += 1;
                            }
                            if is_local {
                                local += 1;
                            }
                        }
                    }
                    Err(_) => {
                        if counted {
                            errors += 1;
                        }
                        conn = None;
                    }
                }
            }
            (hist, requests, errors, non_200, local)
        });
    }
    let mut total = LoadResult {
        hist: histogram(),
        requests: 0,
        errors: 0,
        non_200: 0,
        local_answers: 0,
        seconds: seconds.as_secs_f64(),
    };
    while let Some(done) = tasks.join_next().await {
        let (hist, requests, errors, non_200, local) = done?;
        total.hist.add(&hist)?;
        total.requests += requests;
        total.errors += errors;
        total.non_200 += non_200;
        total.local_answers += local;
    }
    Ok(total)
}

fn health_load(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let n = args.nodes.unwrap_or(5);
    ensure!(
        n >= 2,
        "health-load needs at least 2 nodes (a coordinator and another)"
    );
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let seconds = Duration::from_secs_f64(args.seconds);
    println!(
        "\n## health-load: {n}-node cluster, closed-loop keep-alive HTTP/1.1 load from this process \
         (tokio, {} workers) for {:.0} s after {:.0} s warm-up per case; the load generator shares the \
         machine's {} cores with the nodes",
        args.threads,
        seconds.as_secs_f64(),
        warmup.as_secs_f64(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let (cluster, coordinator, _) = start_cluster(args, n)?;
    let coord_i = cluster
        .index_of(&coordinator)
        .context("coordinator is not one of the started nodes")?;
    let other_i = (0..n).find(|&i| i != coord_i).expect("n >= 2");
    let pid_of = |i: usize| {
        cluster
            .node(i)
            .pid()
            .map(|p| p.to_string())
            .unwrap_or_default()
    };
    let rt = args.runtime()?;
    let mut records = Vec::new();
    println!(
        "{:<5} {:<14} {:<16} | {:>9} {:>8} {:>8} {:>8} {:>8} | {:>6} {:>6} | cpu (cores)",
        "conns", "node", "path", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "local"
    );
    for &concurrency in &args.concurrency {
        for (role, i) in [("coordinator", coord_i), ("other", other_i)] {
            let node = cluster.node(i);
            let host = node.http_addr();
            let mut pair: Vec<(String, LoadResult, Value)> = Vec::new();
            for path in ["/health", "/cluster/health"] {
                let mut pids = vec![
                    ("load_generator".to_string(), "self".to_string()),
                    (node.id.clone(), pid_of(i)),
                ];
                if i != coord_i {
                    pids.push((format!("{coordinator} (coordinator)"), pid_of(coord_i)));
                }
                // Meter only the measured window: start it after the warm-up.
                let result = rt.block_on(async {
                    let meter = tokio::spawn(async move {
                        tokio::time::sleep(warmup).await;
                        let m = CpuMeter::start(pids);
                        tokio::time::sleep(seconds).await;
                        m.stop()
                    });
                    let r = load(&host, path, concurrency, warmup, seconds).await?;
                    let cpu = meter.await?;
                    anyhow::Ok((r, cpu))
                })?;
                let (r, cpu) = result;
                let rps = r.requests as f64 / r.seconds;
                println!(
                    "{:<5} {:<14} {:<16} | {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} | {:>6} {:>6} | {}",
                    concurrency,
                    format!("{} ({})", node.id, if role == "other" { "other" } else { "coord" }),
                    path,
                    rps,
                    ms_of(p50(&r.hist)),
                    ms_of(r.hist.value_at_quantile(0.9)),
                    ms_of(p99(&r.hist)),
                    ms_of(r.hist.max()),
                    r.errors + r.non_200,
                    r.local_answers,
                    fmt_cpu(&cpu)
                );
                pair.push((path.to_string(), r, cpu));
            }
            let (base, health) = (&pair[0].1, &pair[1].1);
            let rps_base = base.requests as f64 / base.seconds;
            let rps = health.requests as f64 / health.seconds;
            let rps_ratio = rps / rps_base;
            let (x50, x99) = (
                ratio(p50(&health.hist), p50(&base.hist)),
                ratio(p99(&health.hist), p99(&base.hist)),
            );
            // One closed-loop connection measures latency, not capacity: the throughput target
            // applies to concurrent load only.
            let target_met = (concurrency > 1).then(|| {
                rps >= 10_000.0
                    && ms_of(p99(&health.hist)) <= 10.0
                    && health.errors == 0
                    && health.non_200 == 0
            });
            println!(
                "      /cluster/health vs /health on {}: req/s {:.2}x, p50 {:.2}x, p99 {:.2}x; \
                 target >= 10000 req/s with p99 <= 10 ms: {}",
                node.id,
                rps_ratio,
                x50,
                x99,
                match target_met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "n/a (one connection)",
                }
            );
            let rec = json!({
                "bench": "health_load", "nodes": n, "concurrency": concurrency, "node": node.id,
                "role": role, "coordinator": coordinator,
                "warmup_s": warmup.as_secs_f64(), "seconds": seconds.as_secs_f64(),
                "loadgen_threads": args.threads,
                "cluster_health": {
                    "requests_per_s": r3(rps), "requests": health.requests, "errors": health.errors,
                    "non_200": health.non_200, "local_answers": health.local_answers,
                    "latency": hist_json_ms(&health.hist), "cpu_cores": pair[1].2,
                },
                "health_baseline": {
                    "requests_per_s": r3(rps_base), "requests": base.requests, "errors": base.errors,
                    "non_200": base.non_200,
                    "latency": hist_json_ms(&base.hist), "cpu_cores": pair[0].2,
                },
                "ratio_requests_per_s": r3(rps_ratio), "ratio_p50": r3(x50), "ratio_p99": r3(x99),
                "target_requests_per_s": 10_000, "target_p99_ms": 10.0, "target_met": target_met,
            });
            out.emit(rec.clone())?;
            records.push(rec);
        }
    }
    println!(
        "local = answers with \"source\":\"local\" (the coordinator did not answer in time); \
         cpu = cores used during the measured window (the machine has 2)"
    );
    Ok(records)
}

// ------------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut out = Out::new(&args)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let needs_torua = args.cmd != "rtt";
    let bin = if needs_torua {
        let bin = torua_bin();
        if !bin.is_file() {
            bail!("torua binary {} does not exist", bin.display());
        }
        Some(bin.display().to_string())
    } else {
        None
    };
    println!(
        "# transport benchmarks: {} ({}), torua {}, {cores} cores",
        args.cmd,
        args.label(),
        bin.as_deref().unwrap_or("-")
    );
    out.emit(
        json!({"bench": "meta", "kind": "start", "command": args.cmd, "torua_bin": bin,
        "cores": cores, "argv": std::env::args().collect::<Vec<_>>()}),
    )?;
    match args.cmd.as_str() {
        "rtt" => {
            rtt(&args, &mut out)?;
        }
        "broadcast" => {
            broadcast(&args, &mut out)?;
        }
        "health-load" => {
            health_load(&args, &mut out)?;
        }
        "all" => {
            // Counts are per benchmark; only the common flags carry over.
            let common = Args {
                count: None,
                warmup: None,
                nodes: None,
                ..args.clone()
            };
            rtt(&common, &mut out)?;
            broadcast(&common, &mut out)?;
            health_load(&common, &mut out)?;
        }
        other => bail!("unknown benchmark {other:?}\n{USAGE}"),
    }
    out.finish();
    Ok(())
}
