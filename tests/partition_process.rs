//! Split-brain safety with real packets cut between real processes.
//!
//! Five `torua serve` processes, each in its own network namespace, split 3/2 for 20 s under writes
//! and then healed. The minority holds the coordinator, so the majority must elect a new one and
//! promote replicas; the minority must refuse writes ("no quorum") and keep answering reads marked
//! stale. After the heal: green again, every acknowledged write of either side readable from every
//! node, no refused write present, and every shard's copies agree (counts and checksum).
//!
//! Topology (needs root and `ip netns`; no iptables):
//! ```text
//!   namespace tpart-nI:  c0 10.77.0.I/24  (cluster link: gossip, QUIC peers, node-to-node HTTP)
//!                        m0 10.78.I.1/30  (management link to the test process only)
//!   root namespace:      tpart-cI enslaved to bridge tpart-a (all nodes) or tpart-b (minority
//!                        during the split); tpart-mI 10.78.I.2/30
//! ```
//! Nodes listen HTTP on 0.0.0.0:7100 (so the test reaches every node through its management link,
//! whichever side it is on), gossip and QUIC on 10.77.0.I. A namespace has no route but its two
//! links, so the management links never join the two halves. The split moves the minority's
//! `tpart-cI` to the second bridge; the heal moves them back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua::graph::partition::shard_of;
use torua_testkit::{summarize, torua_bin, wait, Failures};

const NODES: usize = 5;
const SHARDS: u32 = 8;
const REPLICAS: usize = 2;
const PREFIX: &str = "tpart";
const HTTP_PORT: u16 = 7100;
const GOSSIP_PORT: u16 = 7200;
const PEER_PORT: u16 = 7300;
const SPLIT_FOR: Duration = Duration::from_secs(20);
/// After the split, how long the majority gets to notice, elect and promote before every shard
/// with a copy on its side must take writes there (it takes 1-2 s on an idle machine).
const SETTLE: Duration = Duration::from_secs(12);
/// When the reads during the split start (the minority must have noticed it by then).
const READS_AT: Duration = Duration::from_secs(6);
/// Client timeout of one read during the split. No read is sent later than this before the
/// planned heal, so every read is answered (or has timed out) while the split still holds.
const SPLIT_READ_TIMEOUT: Duration = Duration::from_secs(6);
/// Reads each node must have answered from a copy on its side during the split (a loaded machine
/// answers fewer; none would mean the check judged nothing).
const MIN_SPLIT_READS: usize = 3;
/// Writes continue this long after the heal.
const WRITE_AFTER_HEAL: Duration = Duration::from_secs(5);
const GREEN_AFTER_HEAL: Duration = Duration::from_secs(120);
/// Pause of each writer thread between two writes (there is one thread per node and shard).
const WRITER_PAUSE: Duration = Duration::from_millis(2000);
const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Network: namespaces, veth pairs, two bridges.

fn ns_name(i: usize) -> String {
    format!("{PREFIX}-n{}", i + 1)
}
fn cluster_veth(i: usize) -> String {
    format!("{PREFIX}-c{}", i + 1)
}
fn mgmt_veth(i: usize) -> String {
    format!("{PREFIX}-m{}", i + 1)
}
fn bridge(side: char) -> String {
    format!("{PREFIX}-{side}")
}
fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, (i + 1) as u8)
}
fn mgmt_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, (i + 1) as u8, 1)
}

/// Runs `ip <args>`; the error carries its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip` with the whitespace-separated words of `line` (names and addresses here have no spaces).
fn ip_words(line: &str) -> Result<String, String> {
    ip(&line.split_whitespace().collect::<Vec<_>>())
}

/// The namespaces and links of one run; removed on drop (after the nodes, which are declared
/// later and so dropped first).
struct Net {
    _lock: File,
}

impl Net {
    fn setup() -> Net {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the partition test cuts real packets with network namespaces (`ip netns`, veth, \
             bridges): it must run as root (euid is {euid})"
        );
        // One run at a time on this machine: the names below are fixed so leftovers of a crashed run
        // can be found and removed.
        let lock_path = std::env::temp_dir().join("torua-partition-process.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "cannot lock {}", lock_path.display());
        Self::remove_all(true);
        let net = Net { _lock: lock };
        if let Err(e) = Self::create() {
            panic!(
                "cannot build the test network (the partition test needs root, `ip netns`, veth \
                 pairs and bridges): {e}"
            );
        }
        net
    }

    fn create() -> Result<(), String> {
        for side in ['a', 'b'] {
            ip(&["link", "add", &bridge(side), "type", "bridge"])?;
            ip(&["link", "set", &bridge(side), "up"])?;
        }
        for i in 0..NODES {
            let (ns, c, m) = (ns_name(i), cluster_veth(i), mgmt_veth(i));
            ip_words(&format!("netns add {ns}"))?;
            ip_words(&format!("-n {ns} link set lo up"))?;
            // Cluster link: the namespace end is c0, the root end is enslaved to bridge a.
            ip_words(&format!("link add {c} type veth peer name c0 netns {ns}"))?;
            ip_words(&format!("link set {c} master {} up", bridge('a')))?;
            ip_words(&format!("-n {ns} addr add {}/24 dev c0", cluster_ip(i)))?;
            ip_words(&format!("-n {ns} link set c0 up"))?;
            // Management link: a /30 between the namespace and the root namespace.
            ip_words(&format!("link add {m} type veth peer name m0 netns {ns}"))?;
            ip_words(&format!("addr add 10.78.{}.2/30 dev {m}", i + 1))?;
            ip_words(&format!("link set {m} up"))?;
            ip_words(&format!("-n {ns} addr add {}/30 dev m0", mgmt_ip(i)))?;
            ip_words(&format!("-n {ns} link set m0 up"))?;
        }
        Ok(())
    }

    /// Removes everything this test may have created. `leftovers`: also kill processes still
    /// running inside our namespaces (a crashed earlier run of this test; our own nodes die with
    /// the test process through PR_SET_PDEATHSIG, so this is a safety net).
    fn remove_all(leftovers: bool) {
        for i in 0..NODES {
            let ns = ns_name(i);
            if std::path::Path::new("/run/netns").join(&ns).exists() {
                if leftovers {
                    if let Ok(pids) = ip(&["netns", "pids", &ns]) {
                        for pid in pids
                            .split_whitespace()
                            .filter_map(|p| p.parse::<i32>().ok())
                        {
                            eprintln!("killing pid {pid} left in namespace {ns} by an earlier run");
                            // SAFETY: plain kill(2) of a listed pid.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                }
                let _ = ip(&["netns", "del", &ns]);
            }
            // Deleting the root end of a veth deletes the pair, even if a process still holds the
            // namespace alive.
            let _ = ip(&["link", "del", &cluster_veth(i)]);
            let _ = ip(&["link", "del", &mgmt_veth(i)]);
        }
        for side in ['a', 'b'] {
            let _ = ip(&["link", "del", &bridge(side)]);
        }
    }

    /// Moves the cluster links of `nodes` to bridge `side`.
    fn attach(nodes: &[usize], side: char) -> Result<(), String> {
        for &i in nodes {
            ip(&["link", "set", &cluster_veth(i), "master", &bridge(side)])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        Self::remove_all(false);
    }
}

/// Whether a TCP connection from inside namespace `ns` to `addr` succeeds within `timeout` (the
/// stand-in for a ping: there is no ping binary; the nodes' HTTP listens on 0.0.0.0).
fn tcp_reachable_from(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<bool, String> {
    let path = PathBuf::from("/run/netns").join(ns);
    std::thread::spawn(move || {
        let f = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: setns of this (short-lived) thread into a network namespace we created.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(TcpStream::connect_timeout(&addr, timeout).is_ok())
    })
    .join()
    .map_err(|_| "probe thread panicked".to_string())?
}

/// The wall clock as HH:MM:SS.mmm UTC, to find a moment in the node logs.
fn utc_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

// ---------------------------------------------------------------------------------------------
// Nodes.

struct Node {
    id: String,
    idx: usize,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(idx: usize, dir: &std::path::Path) -> Node {
        let id = format!("node-{}", idx + 1);
        let data_dir = dir.join(&id);
        std::fs::create_dir_all(&data_dir).unwrap();
        let log_path = dir.join(format!("{id}.log"));
        let log = File::create(&log_path).unwrap();
        let seeds: Vec<String> = (0..NODES)
            .map(|j| format!("{}:{GOSSIP_PORT}", cluster_ip(j)))
            .collect();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns_name(idx)])
            .arg(torua_bin())
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TORUA_NODE_ID", &id)
            .env("TORUA_DATA_DIR", &data_dir)
            .env("TORUA_HTTP_ADDR", format!("0.0.0.0:{HTTP_PORT}"))
            .env(
                "TORUA_GOSSIP_ADDR",
                format!("{}:{GOSSIP_PORT}", cluster_ip(idx)),
            )
            .env(
                "TORUA_PEER_ADDR",
                format!("{}:{PEER_PORT}", cluster_ip(idx)),
            )
            .env("TORUA_ADVERTISE_HOST", cluster_ip(idx).to_string())
            .env("TORUA_CLUSTER_SECRET", "partition-test-secret-0123456789")
            // Partitions are this test's subject; API keys are security_process's.
            .env("TORUA_AUTH", "off")
            .env("TORUA_HTTP_TLS", "off")
            .env("TORUA_SEEDS", seeds.join(","))
            .env("TORUA_SHARDS", SHARDS.to_string())
            .env("TORUA_REPLICAS", REPLICAS.to_string())
            .env("TORUA_BOOTSTRAP_EXPECT", NODES.to_string())
            .env("TORUA_MEMORY_MB", "256")
            .env("TORUA_MAX_SHARD_GB", "4")
            // Nothing is re-replicated during a 20 s split: the minority's copies must catch up.
            .env("TORUA_REPLACE_AFTER", "60s")
            .env(
                "TORUA_LOG",
                std::env::var("TORUA_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl in the forked child before exec; `ip netns exec` execs torua in the same
        // process, so the node is killed if the test process dies without running its destructors.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start ip netns exec torua serve");
        Node {
            id,
            idx,
            log_path,
            child: Some(child),
        }
    }

    fn url(&self, path: &str) -> String {
        url_of(self.idx, path)
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            _ => None,
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// URL of node `idx`'s API through its management link.
fn url_of(idx: usize, path: &str) -> String {
    format!("http://{}:{HTTP_PORT}{path}", mgmt_ip(idx))
}

#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    stale: Option<String>,
    body: Value,
}

fn request(
    method: &str,
    url: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Resp, String> {
    let req = ureq::request(method, url).timeout(timeout);
    let resp = torua_testkit::http::send(req, body).map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status();
    let stale = resp.header("x-torua-stale").map(String::from);
    let text = resp
        .into_string()
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
    let body = torua_testkit::http::json_or_text(text);
    Ok(Resp {
        status,
        stale,
        body,
    })
}

fn get(node: &Node, path: &str, timeout: Duration) -> Result<Resp, String> {
    request("GET", &node.url(path), None, timeout)
}

/// The reason(s) an answer gives: `error.reason`, else the distinct item reasons.
fn reason_of(body: &Value) -> String {
    if let Some(r) = body["error"]["reason"].as_str() {
        return r.to_string();
    }
    let mut reasons: Vec<&str> = body["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["reason"].as_str()).collect())
        .unwrap_or_default();
    reasons.dedup();
    if reasons.is_empty() {
        if let Some(s) = body.as_str() {
            return s.chars().take(200).collect();
        }
    }
    reasons.join("; ")
}

/// A short form of a reason for tallies: digits replaced, cut at 90 characters.
fn reason_key(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .take(90)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Data: every write is two entities of one shard and a relation between them, so a request
// touches exactly one shard (no stub entities in other shards, and its fate is that shard's).

#[derive(Debug, Clone)]
struct Pair {
    a: String,
    b: String,
    rel: String,
    shard: u32,
}

fn pair(prefix: &str) -> Pair {
    let a = format!("{prefix}-a");
    let shard = shard_of(&a, SHARDS);
    pair_in(prefix, shard)
}

/// A pair whose two entities live in `shard`.
fn pair_in(prefix: &str, shard: u32) -> Pair {
    let find = |what: &str| {
        (0..)
            .map(|k| format!("{prefix}-{what}{k}"))
            .find(|id| shard_of(id, SHARDS) == shard)
            .unwrap()
    };
    Pair {
        rel: format!("{prefix}-r"),
        a: find("a"),
        b: find("b"),
        shard,
    }
}

fn batch_of(pairs: &[Pair]) -> Value {
    let mut entities = Vec::new();
    let mut relations = Vec::new();
    for p in pairs {
        for id in [&p.a, &p.b] {
            entities.push(
                json!({"id": id, "title": id, "type": "T", "description": format!("entity {id}")}),
            );
        }
        relations.push(json!({"id": p.rel, "source": p.a, "target": p.b, "description": "pair"}));
    }
    json!({"entities": entities, "relations": relations})
}

#[derive(Debug, Clone)]
struct WriteRec {
    node: usize,
    pair: Pair,
    /// Seconds since the test started.
    sent: f64,
    done: f64,
    status: Option<u16>,
    acked: bool,
    no_quorum: bool,
    reason: String,
}

impl WriteRec {
    /// Its node's id, its shard, and when it was sent and done counted from `split_s`: how
    /// failure messages and `writes.tsv` place a write.
    fn placed<'a>(&self, ids: &'a [String], split_s: f64) -> (&'a str, u32, f64, f64) {
        (
            &ids[self.node],
            self.pair.shard,
            self.sent - split_s,
            self.done - split_s,
        )
    }
}

fn write_once(node: usize, p: &Pair, t0: Instant) -> WriteRec {
    let sent = t0.elapsed().as_secs_f64();
    let answer = request(
        "POST",
        &url_of(node, "/graph/ingest"),
        Some(&batch_of(std::slice::from_ref(p))),
        Duration::from_secs(30),
    );
    let done = t0.elapsed().as_secs_f64();
    let (status, acked, no_quorum, reason) = match &answer {
        Ok(r) => {
            let acked = r.status == 200 && r.body["errors"] == false;
            let text = r.body.to_string();
            (
                Some(r.status),
                acked,
                r.status == 503 && text.contains("no quorum"),
                if acked {
                    String::new()
                } else {
                    reason_of(&r.body)
                },
            )
        }
        Err(e) => (None, false, false, e.clone()),
    };
    WriteRec {
        node,
        pair: p.clone(),
        sent,
        done,
        status,
        acked,
        no_quorum,
        reason,
    }
}

/// A read made during the split.
struct ReadRec {
    node: usize,
    pair: Pair,
    /// Whether the entity's shard has a copy on the reading node's side.
    served_here: bool,
    /// Seconds since the test started.
    done: f64,
    result: Result<Resp, String>,
}

// ---------------------------------------------------------------------------------------------
// Cluster views.

/// Every node answers `/cluster/health` green with 5 ready nodes, naming the same coordinator
/// and term. Returns (coordinator, term).
fn all_green(nodes: &[Node]) -> Result<(String, u64), String> {
    let mut agreed: Option<(String, u64)> = None;
    for n in nodes {
        let r = get(n, "/cluster/health", Duration::from_secs(3))?;
        let v = &r.body;
        if v["status"] != "green" || v["number_of_ready_nodes"].as_u64() != Some(NODES as u64) {
            return Err(format!("{}: {}", n.id, summarize(v)));
        }
        let c = (
            v["coordinator"].as_str().unwrap_or("").to_string(),
            v["term"].as_u64().unwrap_or(0),
        );
        match &agreed {
            None => agreed = Some(c),
            Some(a) if *a == c => {}
            Some(a) => return Err(format!("{} names {c:?}, another node {a:?}", n.id)),
        }
    }
    agreed.ok_or_else(|| "no node".into())
}

fn wait_green(nodes: &mut [Node], timeout: Duration) -> Result<(String, u64), String> {
    let mut exited = None;
    let green = wait::poll(timeout, Duration::from_millis(200), || {
        for n in nodes.iter_mut() {
            if let Some(status) = n.exited() {
                // Stops the wait: a node that exited does not come back.
                exited = Some(format!("{} exited ({status}):\n{}", n.id, n.log_tail(30)));
                return Ok(None);
            }
        }
        all_green(nodes).map(Some)
    });
    match green {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(exited.unwrap_or_default()),
        Err(last) => Err(format!("not green within {timeout:?}: {last}")),
    }
}

/// Shard -> node ids holding a copy, from a `/cluster/shards` answer.
fn copies_by_shard(shards: &Value) -> BTreeMap<u64, Vec<Value>> {
    let mut out: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for c in shards["copies"].as_array().into_iter().flatten() {
        if let Some(s) = c["shard"].as_u64() {
            out.entry(s).or_default().push(c.clone());
        }
    }
    out
}

fn node_of(copy: &Value) -> String {
    copy["node"].as_str().unwrap_or("?").to_string()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn five_nodes_split_3_2_under_writes_then_heal() {
    let t0 = Instant::now();
    let secs = |t: Instant| t.duration_since(t0).as_secs_f64();
    let mut failures = Failures::default();

    let net = Net::setup();
    let dir = std::env::temp_dir().join(format!("torua-partition-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut nodes: Vec<Node> = (0..NODES).map(|i| Node::start(i, &dir)).collect();
    let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();

    // 1. Green, then a first set of entities.
    let (coordinator, term0) = wait_green(&mut nodes, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("5 nodes in namespaces never went green: {e}"));
    let green_at = secs(Instant::now());
    eprintln!("green after {green_at:.1} s, coordinator {coordinator}, term {term0}");
    // The minority holds the coordinator, so the majority must elect a new one.
    let c = ids
        .iter()
        .position(|id| *id == coordinator)
        .expect("coordinator is a node");
    let minority: Vec<usize> = vec![c, (c + 1) % NODES];
    let majority: Vec<usize> = (0..NODES).filter(|i| !minority.contains(i)).collect();
    let minority_ids: BTreeSet<String> = minority.iter().map(|&i| ids[i].clone()).collect();
    let majority_ids: BTreeSet<String> = majority.iter().map(|&i| ids[i].clone()).collect();
    eprintln!("minority {minority_ids:?}, majority {majority_ids:?}");

    let initial: Vec<Pair> = (0..100).map(|k| pair(&format!("pi-{k}"))).collect();
    for (j, chunk) in initial.chunks(10).enumerate() {
        let node = &nodes[j % NODES];
        let r = request(
            "POST",
            &node.url("/graph/ingest"),
            Some(&batch_of(chunk)),
            T,
        );
        let ok = matches!(&r, Ok(r) if r.status == 200 && r.body["errors"] == false);
        failures.cases += 1;
        failures.check(ok, || format!("initial ingest via {}: {r:?}", node.id));
    }
    assert!(failures.list.is_empty(), "the initial ingest failed");
    let shard_map = get(&nodes[majority[0]], "/cluster/shards", T).expect("/cluster/shards");
    let placement: BTreeMap<u64, BTreeSet<String>> = copies_by_shard(&shard_map.body)
        .into_iter()
        .map(|(s, copies)| (s, copies.iter().map(node_of).collect()))
        .collect();
    assert_eq!(
        placement.len(),
        SHARDS as usize,
        "shard map before the split: {}",
        shard_map.body
    );
    let on_side = |shard: u32, side: &BTreeSet<String>| -> bool {
        placement
            .get(&u64::from(shard))
            .is_some_and(|nodes| nodes.iter().any(|n| side.contains(n)))
    };
    let only_minority: Vec<u32> = (0..SHARDS)
        .filter(|&s| !on_side(s, &majority_ids))
        .collect();
    eprintln!(
        "placement before the split: {placement:?}; shards only on the minority: {only_minority:?}"
    );

    // 2. Writers: small one-shard batches with unique ids to every node, continuously. One thread
    // per (node, shard), so that a write waiting on an unreachable shard (up to the 15 s write
    // deadline) does not hold back the writes of the other shards.
    let records: Arc<Mutex<Vec<WriteRec>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..NODES)
        .flat_map(|i| (0..SHARDS).map(move |s| (i, s)))
        .map(|(i, s)| {
            let (records, stop) = (records.clone(), stop.clone());
            std::thread::spawn(move || {
                // Spread the threads' requests over the pause.
                std::thread::sleep(WRITER_PAUSE / SHARDS * s);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let p = pair_in(&format!("pw-{}-{s}-{n}", i + 1), s);
                    let rec = write_once(i, &p, t0);
                    records.lock().unwrap().push(rec);
                    std::thread::sleep(WRITER_PAUSE);
                }
            })
        })
        .collect();
    // Writes flow for 4 s before the split, so that the split cuts through a running load.
    std::thread::sleep(Duration::from_secs(4));

    // 3. Split.
    let probe = |from: usize, to: usize| {
        tcp_reachable_from(
            &ns_name(from),
            SocketAddr::from((cluster_ip(to), HTTP_PORT)),
            Duration::from_millis(1500),
        )
    };
    failures.cases += 1;
    failures.check(probe(minority[0], majority[0]) == Ok(true), || {
        format!(
            "before the split, {} cannot reach {} over the cluster link",
            ids[minority[0]], ids[majority[0]]
        )
    });
    Net::attach(&minority, 'b').expect("split");
    let t_split = Instant::now();
    eprintln!("split at {:.1} s ({} UTC)", secs(t_split), utc_now());
    // The cut is real (a failing connect takes its whole timeout: in the background, so the
    // polls below see how fast the cluster reacts).
    let probes = {
        let (m, j) = (minority.clone(), majority.clone());
        std::thread::spawn(move || {
            [
                (m[0], j[0], false),
                (j[1], m[1], false),
                (m[0], m[1], true),
                (j[0], j[2], true),
            ]
            .into_iter()
            .map(|(from, to, expect)| {
                let got = tcp_reachable_from(
                    &ns_name(from),
                    SocketAddr::from((cluster_ip(to), HTTP_PORT)),
                    Duration::from_millis(1500),
                );
                (from, to, expect, got)
            })
            .collect::<Vec<_>>()
        })
    };

    let t_heal_planned = t_split + SPLIT_FOR;
    let mut majority_coordinator: Option<(String, u64, f64)> = None;
    let mut last_majority_health = String::new();
    let mut promoted_at: Option<f64> = None;
    let mut last_promotion_view = String::new();
    let mut split_reads: Option<Vec<std::thread::JoinHandle<Vec<ReadRec>>>> = None;
    while Instant::now() < t_heal_planned {
        // Each management link still reaches its node.
        for n in &nodes {
            if let Err(e) = get(n, "/health", Duration::from_secs(2)) {
                failures.fail(format!(
                    "during the split, the test cannot reach {}: {e}",
                    n.id
                ));
            }
        }
        // The majority agrees on a coordinator among its own members, with a higher term.
        if majority_coordinator.is_none() && Instant::now() < t_heal_planned {
            let views: Vec<Result<Resp, String>> = majority
                .iter()
                .map(|&i| get(&nodes[i], "/cluster/health", Duration::from_secs(2)))
                .collect();
            let named: Vec<Option<(String, u64)>> = views
                .iter()
                .map(|v| {
                    v.as_ref().ok().and_then(|r| {
                        Some((
                            r.body["coordinator"].as_str()?.to_string(),
                            r.body["term"].as_u64()?,
                        ))
                    })
                })
                .collect();
            last_majority_health = views
                .iter()
                .map(|v| match v {
                    Ok(r) => summarize(&r.body).to_string(),
                    Err(e) => e.clone(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            if let Some(Some((c, t))) = named.first() {
                if named.iter().all(|x| x.as_ref() == Some(&(c.clone(), *t)))
                    && majority_ids.contains(c)
                    && *t > term0
                {
                    majority_coordinator = Some((c.clone(), *t, t_split.elapsed().as_secs_f64()));
                    eprintln!(
                        "majority coordinator {c} (term {t}) after {:.1} s",
                        t_split.elapsed().as_secs_f64()
                    );
                }
            }
        }
        // The majority's map has a primary on the majority for every shard with a copy there.
        if majority_coordinator.is_some()
            && promoted_at.is_none()
            && Instant::now() < t_heal_planned
        {
            if let Ok(r) = get(
                &nodes[majority[0]],
                "/cluster/shards",
                Duration::from_secs(3),
            ) {
                let by_shard = copies_by_shard(&r.body);
                let missing: Vec<u64> = by_shard
                    .iter()
                    .filter(|(_, copies)| {
                        copies.iter().any(|c| majority_ids.contains(&node_of(c)))
                            && !copies
                                .iter()
                                .any(|c| c["primary"] == true && majority_ids.contains(&node_of(c)))
                    })
                    .map(|(s, _)| *s)
                    .collect();
                last_promotion_view = r.body.to_string();
                if missing.is_empty() && by_shard.len() == SHARDS as usize {
                    promoted_at = Some(t_split.elapsed().as_secs_f64());
                    eprintln!(
                        "majority primaries in place after {:.1} s",
                        promoted_at.unwrap()
                    );
                }
            }
        }
        // Reads on both sides, once the failure detector had time; in the background, so that a
        // read waiting on an unreachable shard does not stretch the split.
        if split_reads.is_none() && t_split.elapsed() >= READS_AT {
            let side_of = |i: usize| {
                if minority.contains(&i) {
                    &minority_ids
                } else {
                    &majority_ids
                }
            };
            split_reads = Some(
                (0..NODES)
                    .map(|i| {
                        let served: Vec<Pair> = initial
                            .iter()
                            .step_by(3)
                            .filter(|p| on_side(p.shard, side_of(i)))
                            .cloned()
                            .collect();
                        // A couple of ids whose shard has no copy on this side.
                        let elsewhere: Vec<Pair> = initial
                            .iter()
                            .filter(|p| !on_side(p.shard, side_of(i)))
                            .take(2)
                            .cloned()
                            .collect();
                        let last_send = t_heal_planned - SPLIT_READ_TIMEOUT;
                        std::thread::spawn(move || {
                            let mut out = Vec::new();
                            // The ids of other-side shards first: they are few and always asked.
                            for (p, here) in elsewhere
                                .into_iter()
                                .map(|p| (p, false))
                                .chain(served.into_iter().map(|p| (p, true)))
                            {
                                if Instant::now() >= last_send {
                                    break;
                                }
                                let result = request(
                                    "GET",
                                    &url_of(i, &format!("/graph/entities/{}", p.a)),
                                    None,
                                    SPLIT_READ_TIMEOUT,
                                );
                                out.push(ReadRec {
                                    node: i,
                                    pair: p,
                                    served_here: here,
                                    done: t0.elapsed().as_secs_f64(),
                                    result,
                                });
                            }
                            out
                        })
                    })
                    .collect::<Vec<_>>(),
            );
        }
        // The split lasts SPLIT_FOR whatever happens: until then, look again every 0.5 s.
        let left = t_heal_planned.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(Duration::from_millis(500)));
    }
    for (from, to, expect, got) in probes.join().expect("probe thread") {
        failures.cases += 1;
        failures.check(got == Ok(expect), || {
            format!(
                "during the split, TCP from {} to {}:{HTTP_PORT}: expected reachable={expect}, got {got:?}",
                ids[from],
                cluster_ip(to)
            )
        });
    }
    failures.cases += 2;
    failures.check(majority_coordinator.is_some(), || {
        format!(
            "the majority never agreed on a coordinator among {majority_ids:?} with a term above \
             {term0} during the {SPLIT_FOR:?} split; last views:\n{last_majority_health}"
        )
    });
    failures.check(promoted_at.is_some(), || {
        format!(
            "the majority's shard map never had a primary on the majority for every shard with a \
             copy there; last /cluster/shards: {last_promotion_view}"
        )
    });

    // The maps of both sides just before the heal, for the record.
    for &i in &[minority[0], majority[0]] {
        if let Ok(r) = get(&nodes[i], "/cluster/shards", Duration::from_secs(3)) {
            let _ = std::fs::write(
                dir.join(format!("shards-before-heal-{}.json", ids[i])),
                r.body.to_string(),
            );
        }
    }

    // 4. Heal.
    Net::attach(&minority, 'a').expect("heal");
    let t_heal = Instant::now();
    let split_secs = t_heal.duration_since(t_split).as_secs_f64();
    eprintln!(
        "healed at {:.1} s, after a {split_secs:.1} s split",
        secs(t_heal)
    );
    failures.cases += 1;
    failures.check(split_secs < SPLIT_FOR.as_secs_f64() + 5.0, || {
        format!("the test overran: the split lasted {split_secs:.1} s instead of {SPLIT_FOR:?}")
    });
    failures.cases += 1;
    failures.check(probe(minority[0], majority[0]) == Ok(true), || {
        format!(
            "after the heal, {} still cannot reach {}",
            ids[minority[0]], ids[majority[0]]
        )
    });
    // The reads made during the split. None was sent later than its timeout before the planned
    // heal, so each was answered (or gave up) while the split held.
    let heal_at = secs(t_heal);
    let mut served_reads = vec![0usize; NODES];
    for h in split_reads.unwrap_or_default() {
        for r in h.join().expect("read thread") {
            let i = r.node;
            let p = &r.pair;
            let where_ = if minority.contains(&i) {
                "minority"
            } else {
                "majority"
            };
            failures.cases += 1;
            if !failures.check(r.done < heal_at, || {
                format!(
                    "during the split, read of {} (shard {}) on {} ({where_}) ended at {:.1} s, \
                     after the heal at {heal_at:.1} s: the test overran its read timeout",
                    p.a, p.shard, ids[i], r.done
                )
            }) {
                continue;
            }
            if r.served_here {
                served_reads[i] += 1;
            }
            failures.cases += 1;
            match (&r.result, r.served_here) {
                (Ok(a), true) => {
                    let ok = a.status == 200
                        && a.body["entity"]["id"] == p.a.as_str()
                        && (majority.contains(&i) || a.stale.is_some());
                    failures.check(ok, || {
                        format!(
                            "during the split, read of {} (shard {}, copies {:?}) on {} ({where_}): \
                             expected 200{}; got {} stale={:?} {}",
                            p.a,
                            p.shard,
                            placement[&u64::from(p.shard)],
                            ids[i],
                            if minority.contains(&i) { " with x-torua-stale" } else { "" },
                            a.status,
                            a.stale,
                            a.body
                        )
                    });
                }
                (Ok(a), false) => {
                    // No copy on this side: the node cannot know; it must not say "absent".
                    failures.check(
                        a.status != 404
                            && (a.status != 200 || a.body["entity"]["id"] == p.a.as_str()),
                        || {
                            format!(
                                "during the split, read of {} (shard {} only on the other side) on \
                                 {}: got {} {}",
                                p.a, p.shard, ids[i], a.status, a.body
                            )
                        },
                    );
                }
                (Err(e), true) => failures.fail(format!(
                    "during the split, read of {} on {} ({where_}): {e}",
                    p.a, ids[i]
                )),
                (Err(_), false) => {}
            }
        }
    }
    eprintln!("reads answered from a copy on the reader's side during the split: {served_reads:?}");
    for (i, n) in served_reads.iter().enumerate() {
        failures.cases += 1;
        failures.check(*n >= MIN_SPLIT_READS, || {
            format!(
                "during the split, {} answered {n} reads of ids held on its side, fewer than \
                 {MIN_SPLIT_READS} (each read times out after {SPLIT_READ_TIMEOUT:?})",
                ids[i]
            )
        });
    }

    let green = wait_green(&mut nodes, GREEN_AFTER_HEAL);
    let heal_to_green = t_heal.elapsed().as_secs_f64();
    failures.cases += 1;
    if let Err(e) = &green {
        failures.fail(format!("after the heal: {e}"));
    } else {
        eprintln!("green {heal_to_green:.1} s after the heal: {green:?}");
    }
    // Writes flow across the heal for WRITE_AFTER_HEAL.
    if let Some(left) = WRITE_AFTER_HEAL.checked_sub(t_heal.elapsed()) {
        std::thread::sleep(left);
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer thread");
    }
    let final_green = wait_green(&mut nodes, Duration::from_secs(60));
    failures.cases += 1;
    if let Err(e) = &final_green {
        failures.fail(format!("after the writers stopped: {e}"));
    }
    // Every node installs the same shard map (version and term).
    let (maps, distinct) = wait::answer(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let maps: Vec<(String, Value, Value)> = nodes
                .iter()
                .map(
                    |n| match get(n, "/cluster/shards", Duration::from_secs(3)) {
                        Ok(r) => (
                            n.id.clone(),
                            r.body["version"].clone(),
                            r.body["term"].clone(),
                        ),
                        Err(e) => (n.id.clone(), Value::String(e), Value::Null),
                    },
                )
                .collect();
            let distinct: BTreeSet<String> =
                maps.iter().map(|(_, v, t)| format!("{v}/{t}")).collect();
            (maps, distinct)
        },
        |(_, distinct)| distinct.len() == 1,
    );
    failures.cases += 1;
    failures.check(distinct.len() == 1, || {
        format!("after the heal the nodes hold different shard maps (version, term): {maps:?}")
    });
    eprintln!("shard map after the heal (version/term): {distinct:?}");
    for n in &nodes {
        if let Ok(r) = get(n, "/cluster/shards", Duration::from_secs(3)) {
            let _ = std::fs::write(
                dir.join(format!("shards-after-heal-{}.json", n.id)),
                r.body.to_string(),
            );
        }
    }

    // Classify the writes.
    let records = records.lock().unwrap().clone();
    let split_s = secs(t_split);
    let heal_s = secs(t_heal);
    let settle_s = split_s + SETTLE.as_secs_f64();
    // A write for a failure message, its times counted from the split.
    let show = |r: &WriteRec| {
        let (node, shard, sent, done) = r.placed(&ids, split_s);
        format!(
            "{node} shard {shard} sent +{sent:.1}s done +{done:.1}s {:?} acked={} {}",
            r.status, r.acked, r.reason
        )
    };
    let mut first_no_quorum: BTreeMap<usize, f64> = BTreeMap::new();
    for r in &records {
        if r.no_quorum && minority.contains(&r.node) && r.done < heal_s {
            let at = r.done - split_s;
            let e = first_no_quorum.entry(r.node).or_insert(at);
            *e = e.min(at);
        }
    }
    for &m in &minority {
        failures.cases += 1;
        failures.check(first_no_quorum.contains_key(&m), || {
            let seen: Vec<String> = records
                .iter()
                .filter(|r| r.node == m && r.sent >= split_s && r.done < heal_s)
                .map(|r| format!("sent +{:.1}s {:?} {}", r.sent - split_s, r.status, r.reason))
                .collect();
            format!(
                "{} (minority) never answered a write with 503 \"no quorum\" during the split; \
                 its answers: {seen:?}",
                ids[m]
            )
        });
    }
    for r in &records {
        let side_minority = minority.contains(&r.node);
        // Once a minority node has refused for lack of quorum, it refuses every later write until
        // the heal.
        if side_minority {
            if let Some(first) = first_no_quorum.get(&r.node) {
                if r.sent > split_s + first && r.done < heal_s {
                    failures.cases += 1;
                    failures.check(r.no_quorum, || {
                        format!(
                            "write to {} (minority) sent {:.1} s into the split, after it had \
                             refused for lack of quorum: expected 503 \"no quorum\", got {:?} \
                             acked={} {}",
                            ids[r.node],
                            r.sent - split_s,
                            r.status,
                            r.acked,
                            r.reason
                        )
                    });
                }
            }
        }
    }
    // The majority continues: after settling, every shard with a copy on the majority side takes
    // writes there (its primary was promoted if it was on the minority).
    let mut majority_by_shard: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for r in &records {
        if majority.contains(&r.node) && r.sent >= settle_s && r.done < heal_s {
            let e = majority_by_shard.entry(r.pair.shard).or_default();
            e.0 += 1;
            e.1 += usize::from(r.acked);
        }
    }
    for s in (0..SHARDS).filter(|&s| on_side(s, &majority_ids)) {
        let (sent, acked) = majority_by_shard.get(&s).copied().unwrap_or_default();
        failures.cases += 1;
        failures.check(acked > 0, || {
            let seen: Vec<String> = records
                .iter()
                .filter(|r| {
                    majority.contains(&r.node)
                        && r.pair.shard == s
                        && r.done >= split_s
                        && r.sent < heal_s
                })
                .map(show)
                .collect();
            format!(
                "shard {s} (copies {:?}) took no write on the majority after settling ({SETTLE:?}; \
                 {sent} sent): {seen:#?}",
                placement[&u64::from(s)]
            )
        });
    }
    let majority_acked_in_split = records
        .iter()
        .filter(|r| majority.contains(&r.node) && r.acked && r.sent >= settle_s && r.done < heal_s)
        .count();
    failures.cases += 1;
    failures.check(majority_acked_in_split > 0, || {
        let seen: Vec<String> = records
            .iter()
            .filter(|r| majority.contains(&r.node) && r.done >= split_s && r.sent < heal_s)
            .map(show)
            .collect();
        format!(
            "no write to the majority sent after settling ({SETTLE:?}) was acknowledged before \
             the heal ({:.1} s after the split); majority writes in flight during the split:\n{}",
            heal_s - split_s,
            seen.join("\n")
        )
    });
    // Every write, for the record.
    let mut tsv = String::from("node\tshard\tsent_s\tdone_s\tstatus\tacked\tno_quorum\treason\n");
    for r in &records {
        let (node, shard, sent, done) = r.placed(&ids, split_s);
        tsv.push_str(&format!(
            "{node}\t{shard}\t{sent:.3}\t{done:.3}\t{:?}\t{}\t{}\t{}\n",
            r.status, r.acked, r.no_quorum, r.reason
        ));
    }
    let _ = std::fs::write(dir.join("writes.tsv"), tsv);

    // 5. After the heal: acknowledged ids everywhere, refused ids nowhere, copies agree.
    let acked_recs: Vec<&WriteRec> = records.iter().filter(|r| r.acked).collect();
    let acked: Vec<Pair> = initial
        .iter()
        .cloned()
        .chain(acked_recs.iter().map(|r| r.pair.clone()))
        .collect();
    let refused: Vec<Pair> = records
        .iter()
        .filter(|r| r.no_quorum)
        .map(|r| r.pair.clone())
        .collect();
    let unknown: Vec<&WriteRec> = records
        .iter()
        .filter(|r| !r.acked && !r.no_quorum)
        .collect();
    let read_started = Instant::now();
    let per_node: Vec<Vec<(Option<usize>, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                let (acked, refused) = (&acked, &refused);
                s.spawn(move || {
                    let mut bad = Vec::new();
                    for (k, p) in acked.iter().enumerate() {
                        match get(node, &format!("/graph/entities/{}", p.a), T) {
                            Ok(r) => {
                                let has_rel = r.body["relations"]
                                    .as_array()
                                    .is_some_and(|rs| rs.iter().any(|x| x["id"] == p.rel.as_str()));
                                if r.status != 200
                                    || r.body["entity"]["id"] != p.a.as_str()
                                    || !has_rel
                                    || r.stale.is_some()
                                {
                                    bad.push((Some(k), format!(
                                        "acknowledged {} (shard {}) on {}: {} stale={:?} {}",
                                        p.a, p.shard, node.id, r.status, r.stale, r.body
                                    )));
                                }
                            }
                            Err(e) => bad.push((Some(k), format!("acknowledged {} on {}: {e}", p.a, node.id))),
                        }
                        match get(node, &format!("/graph/entities/{}", p.b), T) {
                            Ok(r) if r.status == 200 && r.body["entity"]["id"] == p.b.as_str() => {}
                            other => bad.push((Some(k), format!(
                                "acknowledged {} (shard {}) on {}: {other:?}",
                                p.b, p.shard, node.id
                            ))),
                        }
                    }
                    for p in refused {
                        for id in [&p.a, &p.b] {
                            match get(node, &format!("/graph/entities/{id}"), T) {
                                Ok(r) if r.status == 404 => {}
                                other => bad.push((None, format!(
                                    "{id} was refused with 503 \"no quorum\" but {} answers {other:?}",
                                    node.id
                                ))),
                            }
                        }
                    }
                    bad
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    failures.cases += NODES * (acked.len() * 2 + refused.len() * 2);
    for (i, bad) in per_node.iter().enumerate() {
        for (_, b) in bad.iter().take(10) {
            failures.fail(b.clone());
        }
        if bad.len() > 10 {
            failures.fail(format!("{}: {} more wrong reads", ids[i], bad.len() - 10));
        }
    }
    let read_secs = read_started.elapsed().as_secs_f64();
    // Which acknowledged writes are wrong somewhere, by shard and by when and where they were
    // acknowledged.
    let bad_acked: BTreeSet<usize> = per_node.iter().flatten().filter_map(|(k, _)| *k).collect();
    let mut lost_summary: BTreeMap<String, usize> = BTreeMap::new();
    for &k in &bad_acked {
        let key = match k.checked_sub(initial.len()).map(|w| acked_recs[w]) {
            None => format!("shard {} initial set", acked[k].shard),
            Some(r) => format!(
                "shard {} acked by {} ({}) {} the split",
                r.pair.shard,
                ids[r.node],
                if minority.contains(&r.node) {
                    "minority"
                } else {
                    "majority"
                },
                if r.sent < split_s {
                    "before"
                } else if r.sent < heal_s {
                    "during"
                } else {
                    "after"
                }
            ),
        };
        *lost_summary.entry(key).or_default() += 1;
    }
    if !lost_summary.is_empty() {
        failures.fail(format!(
            "{} acknowledged writes are missing or wrong on some node; by origin: {lost_summary:#?}",
            bad_acked.len()
        ));
    }

    let mut checksum_summary = String::new();
    for &i in &[minority[0], majority[0]] {
        let r = get(
            &nodes[i],
            "/cluster/shards?checksum=true",
            Duration::from_secs(60),
        );
        failures.cases += 1;
        let r = match r {
            Ok(r) if r.status == 200 => r,
            other => {
                failures.fail(format!(
                    "/cluster/shards?checksum=true on {}: {other:?}",
                    ids[i]
                ));
                continue;
            }
        };
        let by_shard = copies_by_shard(&r.body);
        failures.check(by_shard.len() == SHARDS as usize, || {
            format!("{} lists {} shards: {}", ids[i], by_shard.len(), r.body)
        });
        let mut entities_total = 0;
        let mut relations_total = 0;
        for (shard, copies) in &by_shard {
            failures.cases += 1;
            let key = |c: &Value| {
                (
                    c["entities"].clone(),
                    c["relations"].clone(),
                    c["chunks"].clone(),
                    c["checksum"].clone(),
                )
            };
            let distinct: BTreeSet<String> =
                copies.iter().map(|c| format!("{:?}", key(c))).collect();
            let ok = copies.len() == REPLICAS
                && copies
                    .iter()
                    .all(|c| c["state"] == "started" && c["in_sync"] == true)
                && copies
                    .iter()
                    .all(|c| c["checksum"].as_str().is_some_and(|s| !s.is_empty()))
                && distinct.len() == 1;
            failures.check(ok, || {
                format!(
                    "shard {shard} copies (as {} lists them) do not agree or are not all started \
                     and in sync: {}",
                    ids[i],
                    Value::from(copies.clone())
                )
            });
            entities_total += copies[0]["entities"].as_u64().unwrap_or(0);
            relations_total += copies[0]["relations"].as_u64().unwrap_or(0);
        }
        // Entities are upserted by id: the total is the number of distinct ids present, between
        // the acknowledged ones and those plus the ones whose fate is unknown (timeouts, errors).
        let (lo, hi) = (
            2 * acked.len() as u64,
            2 * (acked.len() + unknown.len()) as u64,
        );
        failures.cases += 2;
        failures.check(entities_total >= lo && entities_total <= hi, || {
            format!(
                "{} counts {entities_total} entities over all shards; expected between {lo} \
                 (acknowledged) and {hi} (acknowledged + unknown)",
                ids[i]
            )
        });
        let (lo, hi) = (acked.len() as u64, (acked.len() + unknown.len()) as u64);
        failures.check(relations_total >= lo && relations_total <= hi, || {
            format!(
                "{} counts {relations_total} relations over all shards; expected between {lo} and {hi}",
                ids[i]
            )
        });
        checksum_summary = format!(
            "{} entities, {} relations in {} shards, copies agree per shard",
            entities_total,
            relations_total,
            by_shard.len()
        );
    }

    // Figures.
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for r in records.iter().filter(|r| !r.acked) {
        *reasons
            .entry(format!(
                "{}: {:?} {}",
                if minority.contains(&r.node) {
                    "minority"
                } else {
                    "majority"
                },
                r.status,
                reason_key(&r.reason)
            ))
            .or_default() += 1;
    }
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    let phase = |r: &WriteRec| {
        if r.sent < split_s {
            "before"
        } else if r.sent < heal_s {
            "split"
        } else {
            "after"
        }
    };
    eprintln!("\n=== partition figures ===");
    eprintln!("topology: 5 namespaces, minority {minority_ids:?} | majority {majority_ids:?}; split lasted {split_secs:.1} s");
    eprintln!("green at start after {green_at:.1} s (coordinator {coordinator}, term {term0})");
    for side in ["minority", "majority"] {
        for ph in ["before", "split", "after"] {
            let of: Vec<&WriteRec> = records
                .iter()
                .filter(|r| (minority.contains(&r.node) == (side == "minority")) && phase(r) == ph)
                .collect();
            let mut lat: Vec<f64> = of.iter().map(|r| r.done - r.sent).collect();
            lat.sort_by(f64::total_cmp);
            eprintln!(
                "writes {side:8} {ph:6}: {:4} sent, {:4} acked, {:4} refused \"no quorum\", {:4} other failures; latency p50 {:.3} s, max {:.1} s",
                of.len(),
                of.iter().filter(|r| r.acked).count(),
                of.iter().filter(|r| r.no_quorum).count(),
                of.iter().filter(|r| !r.acked && !r.no_quorum).count(),
                lat.get(lat.len() / 2).copied().unwrap_or(0.0),
                lat.last().copied().unwrap_or(0.0)
            );
        }
    }
    for (m, at) in &first_no_quorum {
        eprintln!(
            "first \"no quorum\" answer from {}: {at:.1} s after the split",
            ids[*m]
        );
    }
    eprintln!(
        "majority coordinator: {:?}; majority primaries in place after {:?} s",
        majority_coordinator, promoted_at
    );
    eprintln!(
        "majority writes acked after settling ({SETTLE:?}) during the split: {majority_acked_in_split}; \
         per shard (sent, acked): {majority_by_shard:?}"
    );
    eprintln!("green {heal_to_green:.1} s after the heal ({green:?})");
    eprintln!(
        "checked {} acknowledged pairs and {} refused pairs on {NODES} nodes in {read_secs:.1} s; {} writes of unknown fate",
        acked.len(),
        refused.len(),
        unknown.len()
    );
    eprintln!("{checksum_summary}");
    eprintln!("failure reasons:");
    for (k, n) in reasons.iter().take(12) {
        eprintln!("  {n:5} x {k}");
    }
    eprintln!("total {:.1} s", t0.elapsed().as_secs_f64());

    if !failures.list.is_empty() {
        for n in &nodes {
            eprintln!(
                "\n--- {} log tail ({}) ---\n{}",
                n.id,
                n.log_path.display(),
                n.log_tail(40)
            );
        }
        eprintln!("node logs and data kept in {}", dir.display());
    }
    drop(nodes);
    drop(net);
    if failures.list.is_empty() && std::env::var_os("TORUA_KEEP_TEST_DIRS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    failures.finish("partition 3/2 under writes", t0);
}
