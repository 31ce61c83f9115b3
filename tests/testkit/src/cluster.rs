//! Real `torua serve` processes on loopback: starting, stopping, signalling and reading the logs of
//! the nodes of one [`TestCluster`], and running the `torua` binary's other commands.
//!
//! Every cluster gets its own loopback network `127.A.B.0/24` (any 127/8 address is loopback on Linux),
//! and node `i` listens on `127.A.B.i` with fixed ports. Distinct addresses instead of allocated ports mean
//! no races with other processes picking free ports, and a restarted node comes back on the same address.
//! Processes are killed when the harness value is dropped, so a failing test leaves nothing running.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::http::{delete_json, get_json, post_json};

pub const HTTP_PORT: u16 = 17100;
pub const GOSSIP_PORT: u16 = 17200;
pub const PEER_PORT: u16 = 17300;

/// Path of the `torua` binary: `$TORUA_BIN`, else the `torua` next to (or one level above) the running
/// executable — where cargo puts it for both `target/release/deps/<test>` and `target/release/<bench>`.
pub fn torua_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TORUA_BIN") {
        // Absolute: nodes start in their test directory.
        let path = PathBuf::from(path);
        return std::fs::canonicalize(&path).unwrap_or(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("torua");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "torua binary not found near {}; run `cargo build --release --bin torua` or set TORUA_BIN",
        exe.display()
    );
}

/// Cargo's target directory (where tests keep their virtual environments and artifacts):
/// `$CARGO_TARGET_DIR`, else the directory above the `release/` that holds the `torua` binary.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let bin = torua_bin();
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Microsoft GraphRAG's output for "Operation Dulce", kept in `tests/data`.
pub fn dulce_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/graphrag-operation-dulce")
}

/// A fresh `127.A.B` prefix for each cluster of this process.
fn next_subnet() -> (u8, u8) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    // 127.0.x.x is where people run things by hand (and `torua dev`); stay above it.
    let a = 1 + (pid % 250) as u8;
    let b = ((pid / 250 + n * 7) % 250) as u8 + 1;
    (a, b)
}

/// How to start the nodes of a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Extra environment for every node (e.g. `TORUA_GOSSIP_INTERVAL`).
    pub env: BTreeMap<String, String>,
    /// Node ids; the default is `node-1..node-N`.
    pub ids: Option<Vec<String>>,
    /// Wait for this long for every node to answer `/health` after start.
    pub start_timeout: Duration,
    /// The nodes' `TORUA_LOG` (default `info`, or `TORUA_TEST_LOG` from the test's environment).
    pub log: String,
}

/// The environment every test node gets unless a test sets it otherwise: reads wait for the
/// writes acknowledged before them as long as a strict read would (8 s), so that the suites'
/// read-backs check acknowledged writes, not the bounded wait (`tests/freshness_process.rs`
/// tests that).
fn default_env() -> BTreeMap<String, String> {
    BTreeMap::from([("TORUA_READ_WAIT".to_string(), "8s".to_string())])
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            env: default_env(),
            ids: None,
            start_timeout: Duration::from_secs(20),
            log: std::env::var("TORUA_TEST_LOG").unwrap_or_else(|_| "info".into()),
        }
    }
}

impl ClusterOptions {
    /// Exactly the environment `env` for every node (the product's defaults otherwise, not the
    /// tests' [`default_env`]: for benchmarks) and their `TORUA_LOG`.
    pub fn with_env(env: &BTreeMap<String, String>, log: &str) -> Self {
        ClusterOptions {
            env: env.clone(),
            log: log.to_string(),
            ..ClusterOptions::default()
        }
    }

    /// A small graph cluster of `nodes` for process tests: 8 shards, 2 copies each, a 512 MiB
    /// budget per node, and the map created once all `nodes` are ready.
    pub fn graph(nodes: usize) -> Self {
        let mut o = ClusterOptions::default();
        for (k, v) in [
            ("TORUA_SHARDS", "8".to_string()),
            ("TORUA_REPLICAS", "2".to_string()),
            ("TORUA_BOOTSTRAP_EXPECT", nodes.to_string()),
            ("TORUA_MEMORY_MB", "512".to_string()),
            ("TORUA_MAX_SHARD_GB", "4".to_string()),
        ] {
            o.env.insert(k.into(), v);
        }
        o.start_timeout = Duration::from_secs(60);
        o
    }

    /// These options with `key=value` in every node's environment.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// These options with the cluster secret `secret` (HTTPS only, API keys asked for) and, when
    /// given, the bootstrap admin key `bootstrap`. From now on the test kit's HTTP helpers trust
    /// the CA that `secret` derives for cluster `torua`, and send `bootstrap` when given.
    pub fn with_secret(mut self, secret: &str, bootstrap: Option<&str>) -> Self {
        self.env
            .insert("TORUA_CLUSTER_SECRET".into(), secret.into());
        crate::http::trust_cluster_ca(secret, "torua");
        if let Some(key) = bootstrap {
            self.env
                .insert("TORUA_BOOTSTRAP_API_KEY".into(), key.into());
            crate::http::use_api_key(Some(key));
        }
        self
    }
}

/// One `torua serve` process (running or stopped).
pub struct NodeProc {
    pub id: String,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub env: BTreeMap<String, String>,
    child: Option<Child>,
    starts: u32,
}

impl NodeProc {
    pub fn http_addr(&self) -> String {
        format!("{}:{HTTP_PORT}", self.ip)
    }
    pub fn gossip_addr(&self) -> String {
        format!("{}:{GOSSIP_PORT}", self.ip)
    }
    pub fn peer_addr(&self) -> String {
        format!("{}:{PEER_PORT}", self.ip)
    }
    /// `https://` when the node serves TLS: it has a cluster secret (and TLS is not turned off)
    /// or TLS turned on.
    pub fn url(&self, path: &str) -> String {
        let tls = match self.env.get("TORUA_HTTP_TLS").map(String::as_str) {
            Some("on") => true,
            Some("off") => false,
            _ => self.env.contains_key("TORUA_CLUSTER_SECRET"),
        };
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.http_addr())
    }
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the process (again). Output goes to `log_path` (appended across restarts).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.id);
        }
        std::fs::create_dir_all(&self.data_dir)?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("cannot open {}", self.log_path.display()))?;
        self.starts += 1;
        let mut cmd = Command::new(torua_bin());
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TORUA_HTTP_ADDR", self.http_addr())
            .env("TORUA_GOSSIP_ADDR", self.gossip_addr())
            .env("TORUA_PEER_ADDR", self.peer_addr())
            .env("TORUA_DATA_DIR", &self.data_dir)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // An empty id lets the node generate (and keep) its own.
        if !self.id.is_empty() {
            cmd.env("TORUA_NODE_ID", &self.id);
        }
        // A node that crashes leaves its core next to its log (the kernel's default pattern
        // `core` is relative to the working directory), kept with the logs of a failed test.
        if let Some(dir) = self.log_path.parent() {
            cmd.current_dir(dir);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                    libc::setrlimit(libc::RLIMIT_CORE, &lim);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("cannot start torua serve")?;
        self.child = Some(child);
        Ok(())
    }

    /// kill -9: no goodbye, peers must detect the failure.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.reap(Duration::from_secs(5));
    }

    /// SIGTERM and wait for the process to exit (graceful leave).
    pub fn terminate(&mut self, wait: Duration) -> anyhow::Result<()> {
        self.signal(libc::SIGTERM);
        if !self.reap(wait) {
            bail!("{} did not exit within {wait:?} of SIGTERM", self.id);
        }
        Ok(())
    }

    /// SIGTERM, waits up to `wait` for the exit (panics if the process outlives it) and prints how
    /// long the graceful leave took.
    pub fn terminate_timed(&mut self, wait: Duration) {
        let started = Instant::now();
        self.terminate(wait).unwrap();
        eprintln!(
            "{} exited {:.2} s after SIGTERM",
            self.id,
            started.elapsed().as_secs_f64()
        );
    }

    /// Stops the process (SIGSTOP) without killing it: it stays bound but silent.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
    }
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&mut self, sig: i32) {
        if let Some(child) = &self.child {
            // SAFETY: signalling a child process we spawned and have not reaped yet.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
    }

    fn reap(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while let Some(child) = &mut self.child {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// GET returning JSON; errors name the node and path.
    pub fn get_json(&self, path: &str, timeout: Duration) -> anyhow::Result<Value> {
        get_json(&self.url(path), timeout).with_context(|| format!("{}: GET {path}", self.id))
    }

    /// POST JSON, returning (status, JSON body) for any status.
    pub fn post_json(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> anyhow::Result<(u16, Value)> {
        post_json(&self.url(path), body, timeout)
            .with_context(|| format!("{}: POST {path}", self.id))
    }

    /// POST JSON whose answer must be 200; returns its JSON body. Errors (a failed request or
    /// another status, with its body) name the node and path.
    pub fn post_ok(&self, path: &str, body: &Value, timeout: Duration) -> anyhow::Result<Value> {
        let (status, answer) = self.post_json(path, body, timeout)?;
        anyhow::ensure!(status == 200, "{}: POST {path}: {status} {answer}", self.id);
        Ok(answer)
    }

    /// The sum of the values of this node's `/metrics` lines that start with `prefix` (a metric's
    /// name with its labels, or with a trailing space for one without); `None` when the node does
    /// not answer or has no such line.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let text = (crate::http::with_key(crate::http::agent().get(&self.url("/metrics"))))
            .timeout(Duration::from_secs(10))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        let values: Vec<f64> = (text.lines())
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// DELETE, returning (status, JSON body) for any status.
    pub fn delete_json(&self, path: &str, timeout: Duration) -> anyhow::Result<(u16, Value)> {
        delete_json(&self.url(path), timeout).with_context(|| format!("{}: DELETE {path}", self.id))
    }

    /// How the process ended (e.g. "signal: 11 (SIGSEGV)"), if it exited on its own; `None` while it
    /// runs or after the harness stopped it (kill9/terminate).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Last lines of the node's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Writes every thread's stack of the running process next to its log (`<id>.stacks`), when
    /// gdb is installed: a failed test then shows where a stuck node was waiting. Bounded to 30 s.
    pub fn dump_stacks(&self) {
        let Some(child) = &self.child else { return };
        let out = self.log_path.with_extension("stacks");
        let Ok(file) = File::create(&out) else { return };
        let pid = child.id().to_string();
        let spawned = Command::new("timeout")
            .args([
                "30",
                "gdb",
                "-p",
                &pid,
                "-batch",
                "-ex",
                "thread apply all bt",
            ])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .status();
        if spawned.is_ok_and(|s| s.success()) {
            eprintln!("{}: thread stacks in {}", self.id, out.display());
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
/// A set of `torua serve` processes seeded from the first node.
pub struct TestCluster {
    pub dir: PathBuf,
    pub nodes: Vec<NodeProc>,
    pub options: ClusterOptions,
    keep_dir: bool,
}

impl TestCluster {
    /// Creates (but does not start) `n` nodes under a fresh temporary directory.
    pub fn new(n: usize, options: ClusterOptions) -> anyhow::Result<Self> {
        let (a, b) = next_subnet();
        let dir = std::env::temp_dir().join(format!(
            "torua-test-{}-{a}-{b}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let ids: Vec<String> = options
            .ids
            .clone()
            .unwrap_or_else(|| (1..=n).map(|i| format!("node-{i}")).collect());
        assert_eq!(ids.len(), n, "ClusterOptions::ids must name every node");
        let seed = format!("{}:{GOSSIP_PORT}", Ipv4Addr::new(127, a, b, 1));
        let mut nodes = Vec::with_capacity(n);
        for (i, id) in ids.into_iter().enumerate() {
            let ip = Ipv4Addr::new(127, a, b, (i + 1) as u8);
            let mut env = options.env.clone();
            env.entry("TORUA_SEEDS".into())
                .or_insert_with(|| seed.clone());
            env.entry("TORUA_LOG".into())
                .or_insert_with(|| options.log.clone());
            // Form the shard map over the whole cluster, not over whichever node is ready first.
            env.entry("TORUA_BOOTSTRAP_EXPECT".into())
                .or_insert_with(|| n.to_string());
            nodes.push(NodeProc {
                data_dir: dir.join(&id),
                log_path: dir.join(format!("{id}.log")),
                id,
                ip,
                env,
                child: None,
                starts: 0,
            });
        }
        Ok(TestCluster {
            dir,
            nodes,
            options,
            keep_dir: std::env::var_os("TORUA_KEEP_TEST_DIRS").is_some(),
        })
    }

    /// Creates and starts `n` nodes, waiting until each answers `/health`.
    pub fn start(n: usize, options: ClusterOptions) -> anyhow::Result<Self> {
        let mut cluster = Self::new(n, options)?;
        cluster.start_all()?;
        Ok(cluster)
    }

    /// Starts every node that is not running and waits until each answers `/health`.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        let mut started = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if !node.is_running() {
                node.start()?;
                started.push(i);
            }
        }
        let timeout = self.options.start_timeout;
        for i in started {
            self.wait_node_up(i, timeout)?;
        }
        Ok(())
    }

    pub fn node(&self, i: usize) -> &NodeProc {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut NodeProc {
        &mut self.nodes[i]
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Indices of nodes whose process is running.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                node.dump_stacks();
            }
        }
        self.nodes.clear();
        if !self.keep_dir && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `torua import graphrag <dir> --url <url> --quiet`; panics with its output when it fails.
/// Returns what it printed.
pub fn import_graphrag(dir: &Path, url: &str) -> String {
    import_graphrag_with(dir, url, &[])
}

/// [`import_graphrag`] with more arguments (e.g. `["--routing", "none"]`).
pub fn import_graphrag_with(dir: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(torua_bin())
        .args(["import", "graphrag"])
        .arg(dir)
        .args(["--url", url, "--quiet"])
        .args(args)
        .output()
        .expect("run torua import");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "import {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
