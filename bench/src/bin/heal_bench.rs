//! Self-healing benchmark (issue 7): real `torua serve` processes on loopback, observed only through
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
//!   being restarted), every node in turn gets SIGTERM (it drains itself), is waited on until it
//!   exits, is restarted and waited on until green and balanced. Client-visible errors (any
//!   non-200, item error, transport error, 404 of an acknowledged id) are counted; p50/p99 during
//!   the restarts against the same client during `--baseline-s` before them.
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
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use torua_testkit::{ClusterOptions, TestCluster};

// ------------------------------------------------------------------------------------------------
// Arguments

const USAGE: &str = "usage: heal_bench [--small] [flags]
  data     --gib 1.0 (primaries' size_bytes to reach; --small: 50 MB) --dim 0 (embedding dimension)
           --seed 42
  cluster  --nodes 5 --replicas 2 --shards 16 --memory-mb 1024 --replace-after 5s
           --max-moves N (TORUA_MAX_CONCURRENT_MOVES; default: the node's) --drain-timeout D
           (TORUA_DRAIN_TIMEOUT; default: the node's) --env KEY=VALUE (repeatable) --log info
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
    env: BTreeMap<String, String>,
    log: String,
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
    label: Option<String>,
    json: Option<PathBuf>,
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
        drain_timeout: None,
        env: BTreeMap::new(),
        log: "info".into(),
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
        label: None,
        json: None,
        logs_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--small" => {
                a.gib = 50.0 / 1024.0;
                a.baseline_s = 20.0;
                continue;
            }
            _ => {}
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value:?}: expected {what}");
        match flag.as_str() {
            "--gib" => a.gib = value.parse().with_context(|| bad("GiB"))?,
            "--dim" => a.dim = value.parse().with_context(|| bad("a dimension"))?,
            "--seed" => a.seed = value.parse().with_context(|| bad("an integer"))?,
            "--nodes" => a.nodes = value.parse().with_context(|| bad("a count"))?,
            "--replicas" => a.replicas = value.parse().with_context(|| bad("a count"))?,
            "--shards" => a.shards = value.parse().with_context(|| bad("a count"))?,
            "--memory-mb" => a.memory_mb = value.parse().with_context(|| bad("megabytes"))?,
            "--replace-after" => a.replace_after = value,
            "--max-moves" => a.max_moves = Some(value.parse().with_context(|| bad("a count"))?),
            "--drain-timeout" => a.drain_timeout = Some(value),
            "--env" => {
                let (k, v) = value.split_once('=').with_context(|| bad("KEY=VALUE"))?;
                a.env.insert(k.to_string(), v.to_string());
            }
            "--log" => a.log = value,
            "--clients" => a.clients = value.parse().with_context(|| bad("a count"))?,
            "--body-mb" => a.body_mb = value.parse().with_context(|| bad("megabytes"))?,
            "--max-minutes" => a.max_minutes = value.parse().with_context(|| bad("minutes"))?,
            "--phases" => {
                a.phases = value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }
            "--victim" => a.victim = Some(value),
            "--poll-ms" => a.poll_ms = value.parse().with_context(|| bad("milliseconds"))?,
            "--settle-s" => a.settle_s = value.parse().with_context(|| bad("seconds"))?,
            "--phase-timeout-s" => {
                a.phase_timeout_s = value.parse().with_context(|| bad("seconds"))?
            }
            "--baseline-s" => a.baseline_s = value.parse().with_context(|| bad("seconds"))?,
            "--client-threads" => {
                a.client_threads = value.parse().with_context(|| bad("a count"))?
            }
            "--client-rate" => a.client_rate = value.parse().with_context(|| bad("requests/s"))?,
            "--write-batch" => a.write_batch = value.parse().with_context(|| bad("a count"))?,
            "--verify" => a.verify = value.parse().with_context(|| bad("true or false"))?,
            "--min-available-mb" => {
                a.min_available_mb = value.parse().with_context(|| bad("megabytes"))?
            }
            "--label" => a.label = Some(value),
            "--json" => a.json = Some(PathBuf::from(value)),
            "--logs-dir" => a.logs_dir = Some(PathBuf::from(value)),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    for p in &a.phases {
        if !PHASES.contains(&p.as_str()) {
            bail!(
                "--phases: unknown phase {p:?} (known: {})",
                PHASES.join(",")
            );
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

fn log(msg: impl AsRef<str>) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!(
        "heal_bench [{:02}:{:02}:{:02}]: {}",
        (t / 3600) % 24,
        (t / 60) % 60,
        t % 60,
        msg.as_ref()
    );
}

fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn meminfo_mb(key: &str) -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).round())
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).round())
}

fn cluster_rss(cluster: &TestCluster) -> BTreeMap<String, Option<f64>> {
    cluster
        .nodes
        .iter()
        .filter_map(|n| n.pid().map(|p| (n.id.clone(), rss_mb(p))))
        .collect()
}

/// Fails when the machine is about to run out of memory (it is shared: better to stop the
/// cluster than to let the OOM killer pick).
fn memory_guard(a: &Args, cluster: &TestCluster) -> Result<()> {
    if let Some(avail) = meminfo_mb("MemAvailable:") {
        if avail < a.min_available_mb {
            bail!(
                "only {avail} MB available (--min-available-mb {}); node RSS MB {:?}",
                a.min_available_mb,
                cluster_rss(cluster)
            );
        }
    }
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn short(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

// The placement of src/graph/partition.rs (FNV-1a-64 mod shards).
fn shard_of(id: &str, shards: u32) -> u32 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h % u64::from(shards.max(1))) as u32
}

// ------------------------------------------------------------------------------------------------
// Deterministic GraphRAG-shaped data

/// SplitMix64 (as the other benchmarks).
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

/// Rank in `0..n` from a bounded power law with density ∝ x^-skew on [1, n+1].
fn power_law(rng: &mut Rng, n: usize, skew: f64) -> usize {
    let e = 1.0 - skew;
    let top = ((n + 1) as f64).powf(e) - 1.0;
    let x = (1.0 + rng.unit() * top).powf(1.0 / e);
    (x as usize).saturating_sub(1).min(n - 1)
}

#[derive(Debug, Clone, Serialize)]
struct Entity {
    id: String,
    title: String,
    #[serde(rename = "type")]
    kind: String,
    description: String,
    text_unit_ids: Vec<String>,
    frequency: i64,
    degree: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Serialize)]
struct Relation {
    id: String,
    source: String,
    target: String,
    description: String,
    weight: f64,
    text_unit_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Chunk {
    id: String,
    text: String,
    n_tokens: i64,
    document_id: String,
    entity_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Serialize)]
struct Document {
    id: String,
    title: String,
    text: String,
    text_unit_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Community {
    id: String,
    level: i64,
    parent: String,
    title: String,
    entity_ids: Vec<String>,
    summary: String,
    full_content: String,
    rank: f64,
}

#[derive(Default)]
struct Round {
    entities: Vec<Entity>,
    relations: Vec<Relation>,
    chunks: Vec<Chunk>,
    documents: Vec<Document>,
    communities: Vec<Community>,
}

/// What the primaries must hold: every acknowledged item once, each relation once per endpoint
/// shard.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
struct Totals {
    entities: u64,
    relations: u64,
    relation_copies: u64,
    chunks: u64,
    documents: u64,
    communities: u64,
}

impl Totals {
    fn add_relation(&mut self, source: &str, target: &str, shards: u32) {
        self.relations += 1;
        self.relation_copies += 1 + u64::from(shard_of(source, shards) != shard_of(target, shards));
    }
    fn add(&mut self, o: &Totals) {
        self.entities += o.entities;
        self.relations += o.relations;
        self.relation_copies += o.relation_copies;
        self.chunks += o.chunks;
        self.documents += o.documents;
        self.communities += o.communities;
    }
    fn of_round(r: &Round, shards: u32) -> Totals {
        let mut t = Totals {
            entities: r.entities.len() as u64,
            chunks: r.chunks.len() as u64,
            documents: r.documents.len() as u64,
            communities: r.communities.len() as u64,
            ..Totals::default()
        };
        for rel in &r.relations {
            t.add_relation(&rel.source, &rel.target, shards);
        }
        t
    }
}

const SYLLABLES: [&str; 40] = [
    "ka", "ro", "mi", "del", "tan", "ver", "lo", "sa", "nix", "or", "bel", "qua", "ze", "ha",
    "tor", "ua", "pen", "dri", "mo", "lus", "ar", "ven", "cor", "ti", "gal", "shi", "bo", "rek",
    "fa", "nu", "ple", "sto", "wi", "jor", "ek", "mar", "dun", "vi", "os", "te",
];
const TYPES: [&str; 6] = [
    "PERSON",
    "ORGANIZATION",
    "GEO",
    "EVENT",
    "CONCEPT",
    "TECHNOLOGY",
];
const CHUNKS_PER_DOC: usize = 6;
const ENTITIES_PER_DOC: usize = 10;
const RELATIONS_PER_DOC: usize = 12;

fn vocabulary(rng: &mut Rng, n: usize, lo: usize, hi: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let w: String = (0..rng.range(lo, hi))
            .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
            .collect();
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// About `bytes` bytes of words (frequent words more likely).
fn text(rng: &mut Rng, vocab: &[String], bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 16);
    while s.len() < bytes {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&vocab[power_law(rng, vocab.len(), 0.7)]);
    }
    s
}

fn embedding(rng: &mut Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f64> = (0..dim).map(|_| rng.unit() * 2.0 - 1.0).collect();
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v.iter().map(|x| ((x * 1e4).round() / 1e4) as f32).collect()
}

struct Gen {
    rng: Rng,
    vocab: Vec<String>,
    names: Vec<String>,
    dim: usize,
    docs: usize,
    entities: usize,
    relations: usize,
}

impl Gen {
    fn new(seed: u64, dim: usize) -> Gen {
        let mut rng = Rng(seed);
        let vocab = vocabulary(&mut rng, 5000, 2, 3);
        let names = vocabulary(&mut rng, 20_000, 3, 4)
            .into_iter()
            .map(|w| w.to_uppercase())
            .collect();
        Gen {
            rng,
            vocab,
            names,
            dim,
            docs: 0,
            entities: 0,
            relations: 0,
        }
    }

    fn name(&mut self) -> String {
        let a = self.rng.below(self.names.len());
        let b = self.rng.below(self.names.len());
        format!("{} {}", self.names[a], self.names[b])
    }

    /// One document with its chunks, entities, relations and community report.
    fn document(&mut self, out: &mut Round) {
        let d = self.docs;
        self.docs += 1;
        let doc_id = format!("d-{d}");
        let first_entity = self.entities;
        let entity_ids: Vec<String> = (0..ENTITIES_PER_DOC)
            .map(|k| format!("e-{}", first_entity + k))
            .collect();
        self.entities += ENTITIES_PER_DOC;
        let chunk_ids: Vec<String> = (0..CHUNKS_PER_DOC).map(|k| format!("c-{d}-{k}")).collect();
        let mut chunk_entities: Vec<Vec<String>> = vec![Vec::new(); CHUNKS_PER_DOC];
        for (k, id) in entity_ids.iter().enumerate() {
            let n = self.rng.range(1, 3);
            let mut units: Vec<usize> = (0..n).map(|_| self.rng.below(CHUNKS_PER_DOC)).collect();
            units.sort_unstable();
            units.dedup();
            for &u in &units {
                chunk_entities[u].push(id.clone());
            }
            let description_len = self.rng.range(400, 900);
            let title = self.name();
            out.entities.push(Entity {
                id: id.clone(),
                title,
                kind: TYPES[(d + k) % TYPES.len()].to_string(),
                description: text(&mut self.rng, &self.vocab, description_len),
                frequency: units.len() as i64,
                text_unit_ids: units.iter().map(|&u| chunk_ids[u].clone()).collect(),
                degree: 0,
                embedding: (self.dim > 0).then(|| embedding(&mut self.rng, self.dim)),
            });
        }
        let mut full = Vec::with_capacity(CHUNKS_PER_DOC);
        for (k, id) in chunk_ids.iter().enumerate() {
            let len = self.rng.range(1700, 3100);
            let t = text(&mut self.rng, &self.vocab, len);
            full.push(t.clone());
            out.chunks.push(Chunk {
                id: id.clone(),
                n_tokens: (t.split(' ').count() as f64 * 1.3).round() as i64,
                text: t,
                document_id: doc_id.clone(),
                entity_ids: std::mem::take(&mut chunk_entities[k]),
                embedding: (self.dim > 0).then(|| embedding(&mut self.rng, self.dim)),
            });
        }
        let title = format!("Report {d}: {}", self.name());
        out.documents.push(Document {
            id: doc_id,
            title,
            text: full.join("\n"),
            text_unit_ids: chunk_ids.clone(),
        });
        for j in 0..RELATIONS_PER_DOC {
            let s = first_entity + self.rng.below(ENTITIES_PER_DOC);
            let mut t = if j % 2 == 0 || first_entity == 0 {
                first_entity + self.rng.below(ENTITIES_PER_DOC)
            } else {
                // Earlier entities, a few of them hubs.
                power_law(&mut self.rng, first_entity, 0.6)
            };
            if t == s {
                t = if s == first_entity { s + 1 } else { s - 1 };
            }
            let len = self.rng.range(100, 300);
            out.relations.push(Relation {
                id: format!("r-{}", self.relations),
                source: format!("e-{s}"),
                target: format!("e-{t}"),
                description: text(&mut self.rng, &self.vocab, len),
                weight: (1 + self.rng.below(10)) as f64,
                text_unit_ids: vec![chunk_ids[self.rng.below(CHUNKS_PER_DOC)].clone()],
            });
            self.relations += 1;
        }
        let summary_len = self.rng.range(300, 600);
        let content_len = self.rng.range(3000, 5000);
        let title = format!("Community {d}: {}", self.name());
        out.communities.push(Community {
            id: format!("m-{d}"),
            level: 0,
            parent: format!("m1-{}", d / 20),
            title,
            entity_ids,
            summary: text(&mut self.rng, &self.vocab, summary_len),
            full_content: text(&mut self.rng, &self.vocab, content_len),
            rank: (1 + self.rng.below(100)) as f64 / 10.0,
        });
    }
}

/// Items serialised one by one into bodies of about `max` bytes: `{"<key>": [item, ...]}`.
fn pack<T: Serialize>(key: &str, items: &[T], max: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    for item in items {
        let s = serde_json::to_vec(item)?;
        if !body.is_empty() && body.len() + s.len() + 2 > max {
            body.extend_from_slice(b"]}");
            out.push(std::mem::take(&mut body));
        }
        if body.is_empty() {
            body.extend_from_slice(format!("{{\"{key}\":[").as_bytes());
        } else {
            body.push(b',');
        }
        body.extend_from_slice(&s);
    }
    if !body.is_empty() {
        body.extend_from_slice(b"]}");
        out.push(body);
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// HTTP

const GIVE_UP: Duration = Duration::from_secs(300);

/// POSTs one body until it is acknowledged without errors (the items are upserts: a retry is
/// harmless); returns the number of retries.
fn post_batch(agent: &ureq::Agent, url: &str, body: &[u8]) -> Result<usize> {
    let mut retries = 0;
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let (status, text) = match agent
            .post(url)
            .set("content-type", "application/json")
            .send_bytes(body)
        {
            Ok(r) => (r.status(), r.into_string()?),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        let ok = status == 200
            && serde_json::from_str::<Value>(&text).is_ok_and(|v| v["errors"] == false);
        if ok {
            return Ok(retries);
        }
        if Instant::now() > deadline {
            bail!(
                "POST {url}: still failing after {retries} retries: {status} {}",
                short(&text, 500)
            );
        }
        if retries < 3 || retries % 20 == 0 {
            log(format!(
                "POST {url}: {status} {} (retrying)",
                short(&text, 300)
            ));
        }
        retries += 1;
        std::thread::sleep(Duration::from_millis(if status == 429 || status == 503 {
            200
        } else {
            1000
        }));
    }
}

/// Sends the bodies with `clients` threads, thread k posting to node k mod n. Returns the
/// retries; fails when a batch failed for good or the deadline passed.
fn post_all(
    what: &str,
    urls: &[String],
    bodies: &[Vec<u8>],
    clients: usize,
    deadline: Instant,
) -> Result<usize> {
    if bodies.is_empty() {
        return Ok(0);
    }
    let next = AtomicUsize::new(0);
    let retries = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let clients = clients.min(bodies.len()).max(1);
    let barrier = Barrier::new(clients);
    std::thread::scope(|scope| {
        for k in 0..clients {
            let url = &urls[k % urls.len()];
            let (next, retries, failure, barrier) = (&next, &retries, &failure, &barrier);
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(300))
                    .build();
                barrier.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= bodies.len() || failure.lock().expect("lock").is_some() {
                        return;
                    }
                    if Instant::now() > deadline {
                        *failure.lock().expect("lock") =
                            Some(anyhow::anyhow!("--max-minutes passed during the load"));
                        return;
                    }
                    match post_batch(&agent, url, &bodies[i]) {
                        Ok(n) => {
                            retries.fetch_add(n, Ordering::SeqCst);
                        }
                        Err(e) => {
                            *failure.lock().expect("lock") = Some(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("lock") {
        return Err(e.context(format!("loading {what}")));
    }
    Ok(retries.into_inner())
}

/// GET returning (status, JSON body or the text as a string, value of `x-torua-stale`).
fn get_full(agent: &ureq::Agent, url: &str) -> Result<(u16, Value, Option<String>)> {
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.into()),
    };
    let status = resp.status();
    let stale = resp.header("x-torua-stale").map(String::from);
    let text = resp.into_string()?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value, stale))
}

// ------------------------------------------------------------------------------------------------
// Observing the cluster

#[derive(Debug, Clone)]
struct CopyInfo {
    shard: u64,
    node: String,
    primary: bool,
    state: String,
    in_sync: bool,
    size: Option<u64>,
    counts: [Option<u64>; 5],
    checksum: Option<String>,
    /// Logged and applied sequence numbers.
    seq: (Option<u64>, Option<u64>),
}

const COUNT_KEYS: [&str; 5] = [
    "entities",
    "relations",
    "chunks",
    "documents",
    "communities",
];

type Pair = (u64, String);

impl CopyInfo {
    fn pair(&self) -> Pair {
        (self.shard, self.node.clone())
    }
    fn label(&self) -> String {
        format!(
            "{}{}",
            self.state,
            if self.in_sync { ", in sync" } else { "" }
        )
    }
}

fn parse_copies(v: &Value) -> Option<Vec<CopyInfo>> {
    let list = v["copies"].as_array()?;
    Some(
        list.iter()
            .map(|c| CopyInfo {
                shard: c["shard"].as_u64().unwrap_or(u64::MAX),
                node: c["node"].as_str().unwrap_or("?").to_string(),
                primary: c["primary"] == true,
                state: c["state"].as_str().unwrap_or("?").to_string(),
                in_sync: c["in_sync"] == true,
                size: c["size_bytes"].as_u64(),
                counts: COUNT_KEYS.map(|k| c[k].as_u64()),
                checksum: c["checksum"].as_str().map(String::from),
                seq: (c["seq"].as_u64(), c["applied_seq"].as_u64()),
            })
            .collect(),
    )
}

fn list_len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// One sample: every running node's health, one node's shard table.
struct View {
    t: f64,
    statuses: Vec<(String, String)>,
    all_green: bool,
    health: Value,
    /// `reasons` of the first node that did not answer green.
    not_green_reasons: Value,
    copies: Option<Vec<CopyInfo>>,
    moves: usize,
    draining: usize,
    per_node: BTreeMap<String, usize>,
    balanced: bool,
    /// Every shard has R in-sync copies on running nodes, and nothing else.
    full: bool,
}

impl View {
    fn settled(&self) -> bool {
        self.all_green && self.full && self.balanced && self.moves == 0 && self.draining == 0
    }
    fn line(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(id, s)| format!("{id}={s}"))
            .collect();
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        for c in self.copies.iter().flatten() {
            *states.entry(c.label()).or_default() += 1;
        }
        format!(
            "health [{}]; copies {:?}; per node {:?}; moves {}, draining {}",
            statuses.join(" "),
            states,
            self.per_node,
            self.moves,
            self.draining
        )
    }
}

/// What one sample asks: the running nodes (when the sample was launched) and which node
/// answers `/cluster/shards`.
#[derive(Clone)]
struct Probe {
    ids: Vec<String>,
    health_urls: Vec<String>,
    shards_url: Option<String>,
    avoid_id: Option<String>,
}

impl Probe {
    fn new(cluster: &mut TestCluster, avoid: Option<usize>) -> Probe {
        let running = cluster.running();
        let observer = running
            .iter()
            .copied()
            .find(|&i| Some(i) != avoid)
            .or(running.first().copied());
        Probe {
            ids: running
                .iter()
                .map(|&i| cluster.nodes[i].id.clone())
                .collect(),
            health_urls: running
                .iter()
                .map(|&i| cluster.nodes[i].url("/cluster/health"))
                .collect(),
            shards_url: observer.map(|i| cluster.nodes[i].url("/cluster/shards")),
            avoid_id: avoid.map(|i| cluster.nodes[i].id.clone()),
        }
    }
}

/// Takes one sample (HTTP only: runs on its own thread).
fn probe(agent: &ureq::Agent, p: &Probe, shards: u32, replicas: usize, t: f64) -> View {
    let ids = p.ids.clone();
    let mut statuses = Vec::new();
    let mut health = Value::Null;
    let mut not_green_reasons = Value::Null;
    let mut all_green = !ids.is_empty();
    for (id, url) in ids.iter().zip(&p.health_urls) {
        let status = match get_full(agent, url) {
            Ok((200, v, _)) => {
                let s = v["status"].as_str().unwrap_or("?").to_string();
                if s != "green" && not_green_reasons.is_null() {
                    not_green_reasons = json!({"node": id, "reasons": v["reasons"]});
                }
                if health.is_null() && Some(id) != p.avoid_id.as_ref() {
                    health = v;
                }
                s
            }
            Ok((code, v, _)) => format!("{code} {}", short(&v.to_string(), 80)),
            Err(e) => format!("error: {}", short(&e.to_string(), 80)),
        };
        if status != "green" {
            all_green = false;
        }
        statuses.push((id.clone(), status));
    }
    let answer = p
        .shards_url
        .as_ref()
        .and_then(|url| match get_full(agent, url) {
            Ok((200, v, _)) => Some(v),
            _ => None,
        });
    let copies = answer.as_ref().and_then(parse_copies);
    let (moves, draining) = answer.as_ref().map_or((0, 0), |v| {
        (list_len(&v["moves"]), list_len(&v["draining"]))
    });
    let mut per_node: BTreeMap<String, usize> = ids.iter().map(|id| (id.clone(), 0)).collect();
    let mut full = copies.is_some();
    if let Some(copies) = &copies {
        let mut good = vec![0usize; shards as usize];
        for c in copies {
            if let Some(n) = per_node.get_mut(&c.node) {
                *n += 1;
            } else {
                full = false; // a copy on a stopped node
            }
            // In sync on a running node. (A copy its node has not opened yet, e.g. never written
            // since the cluster formed, is listed as "initializing" although in sync.)
            if c.in_sync && c.state != "unavailable" && ids.contains(&c.node) {
                if let Some(g) = good.get_mut(c.shard as usize) {
                    *g += 1;
                }
            } else {
                full = false;
            }
        }
        if good.iter().any(|&g| g < replicas) {
            full = false;
        }
    }
    let balanced = per_node.values().max().copied().unwrap_or(0)
        <= per_node.values().min().copied().unwrap_or(0) + 1;
    View {
        t,
        statuses,
        all_green,
        health,
        not_green_reasons,
        copies,
        moves,
        draining,
        per_node,
        balanced,
        full,
    }
}

/// What happened to the shard copies during one watched period.
#[derive(Default)]
struct Watch {
    /// Copies present when the period began.
    initial: BTreeSet<Pair>,
    last_label: BTreeMap<Pair, String>,
    first_seen: BTreeMap<Pair, f64>,
    in_sync_at: BTreeMap<Pair, f64>,
    gone_at: BTreeMap<Pair, f64>,
    size: BTreeMap<Pair, u64>,
    events: Vec<Value>,
    health_events: Vec<Value>,
    last_health: String,
    first_not_green: Option<f64>,
    samples: usize,
    stale_samples: usize,
    sample_ms: Vec<f64>,
}

impl Watch {
    fn new(initial: &[CopyInfo]) -> Watch {
        let mut w = Watch {
            initial: initial.iter().map(CopyInfo::pair).collect(),
            ..Watch::default()
        };
        for c in initial {
            w.last_label.insert(c.pair(), c.label());
            if let Some(s) = c.size {
                w.size.insert(c.pair(), s);
            }
        }
        w
    }

    fn record(&mut self, v: &View) {
        self.samples += 1;
        let hs = &v.health["shards"];
        let health = format!(
            "{} (active {}, initializing {}, relocating {}, unassigned {}, unavailable {})",
            if v.all_green {
                "green everywhere"
            } else {
                "not green"
            },
            hs["active_shards"],
            hs["initializing_shards"],
            hs["relocating_shards"],
            hs["unassigned_shards"],
            hs["unavailable_shards"]
        );
        // Why it is not green, as the first non-green node says.
        let reasons = if v.all_green {
            Value::Null
        } else {
            v.not_green_reasons.clone()
        };
        let health = if reasons.is_null() {
            health
        } else {
            format!("{health}: {}", short(&reasons.to_string(), 400))
        };
        if !v.all_green && self.first_not_green.is_none() {
            self.first_not_green = Some(v.t);
        }
        if health != self.last_health {
            self.health_events.push(json!({"t": r2(v.t), "health": health, "statuses": v.statuses.iter().map(|(a, b)| format!("{a}={b}")).collect::<Vec<_>>()}));
            self.last_health = health;
        }
        let Some(copies) = &v.copies else { return };
        let present: BTreeSet<Pair> = copies.iter().map(CopyInfo::pair).collect();
        for c in copies {
            let p = c.pair();
            if let Some(s) = c.size {
                self.size.insert(p.clone(), s);
            }
            let label = c.label();
            if self.last_label.get(&p) != Some(&label) {
                let new = !self.initial.contains(&p);
                if new && !self.first_seen.contains_key(&p) {
                    self.first_seen.insert(p.clone(), v.t);
                }
                self.events.push(json!({"t": r2(v.t), "shard": c.shard, "node": c.node, "state": label, "primary": c.primary, "size_bytes": c.size}));
                log(format!(
                    "  +{:.1} s shard {} @ {}: {}{}",
                    v.t,
                    c.shard,
                    c.node,
                    label,
                    if c.primary { " (primary)" } else { "" }
                ));
                self.last_label.insert(p.clone(), label);
            }
            if c.in_sync && !self.in_sync_at.contains_key(&p) {
                if !self.initial.contains(&p) {
                    self.in_sync_at.insert(p.clone(), v.t);
                }
            } else if !c.in_sync {
                self.in_sync_at.remove(&p);
            }
        }
        let vanished: Vec<Pair> = self
            .last_label
            .keys()
            .filter(|p| !present.contains(*p) && !self.gone_at.contains_key(*p))
            .cloned()
            .collect();
        for p in vanished {
            log(format!("  +{:.1} s shard {} @ {}: dropped", v.t, p.0, p.1));
            self.events
                .push(json!({"t": r2(v.t), "shard": p.0, "node": p.1, "state": "dropped"}));
            self.gone_at.insert(p.clone(), v.t);
            self.last_label.remove(&p);
        }
        // A copy that comes back after being dropped counts as new again.
        self.gone_at.retain(|p, _| !present.contains(p));
    }

    /// Copies that appeared during the period and are still there: (pair, first seen, in sync
    /// at, size).
    fn created(&self) -> Vec<(Pair, f64, Option<f64>, Option<u64>)> {
        self.first_seen
            .iter()
            .filter(|(p, _)| self.last_label.contains_key(*p))
            .map(|(p, &t)| {
                (
                    p.clone(),
                    t,
                    self.in_sync_at.get(p).copied(),
                    self.size.get(p).copied(),
                )
            })
            .collect()
    }

    /// Figures of the copies created during the period.
    fn transfer(&self) -> Value {
        self.transfer_where(|_| true)
    }

    /// Figures of the copies created during the period that `keep` accepts.
    fn transfer_where(&self, keep: impl Fn(&Pair) -> bool) -> Value {
        let created: Vec<_> = self.created().into_iter().filter(|c| keep(&c.0)).collect();
        let bytes: u64 = created.iter().filter_map(|c| c.3).sum();
        let first = created.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
        let last = created
            .iter()
            .filter_map(|c| c.2)
            .fold(f64::NEG_INFINITY, f64::max);
        let window = (last - first).max(0.0);
        let all_in_sync = created.iter().all(|c| c.2.is_some());
        let per_copy: Vec<Value> = created
            .iter()
            .map(|(p, t0, t1, size)| {
                json!({"shard": p.0, "node": p.1, "first_seen_s": r2(*t0), "in_sync_s": t1.map(r2),
                       "size_bytes": size, "mb_per_s": match (t1, size) {
                           (Some(t1), Some(s)) if *t1 > *t0 => Some(r2(mb(*s) / (t1 - t0))), _ => None }})
            })
            .collect();
        json!({
            "copies_created": created.len(), "bytes": bytes, "mb": r2(mb(bytes)),
            "first_seen_s": first.is_finite().then(|| r2(first)),
            "last_in_sync_s": last.is_finite().then(|| r2(last)),
            "window_s": (first.is_finite() && last.is_finite()).then(|| r2(window)),
            "mb_per_s": (window > 0.0 && all_in_sync).then(|| r2(mb(bytes) / window)),
            "all_in_sync": all_in_sync,
            "copies_dropped": self.gone_at.len(),
            "per_copy": per_copy,
        })
    }

    fn to_json(&self) -> Value {
        let mean_ms = if self.sample_ms.is_empty() {
            0.0
        } else {
            self.sample_ms.iter().sum::<f64>() / self.sample_ms.len() as f64
        };
        let max_ms = self.sample_ms.iter().copied().fold(0.0, f64::max);
        json!({"samples": self.samples, "stale_samples_dropped": self.stale_samples,
               "mean_sample_ms": r2(mean_ms), "max_sample_ms": r2(max_ms),
               "first_not_green_s": self.first_not_green.map(r2),
               "health_events": self.health_events, "copy_events": self.events})
    }
}

struct WatchOptions {
    /// Nodes whose process must stay up: one that exits fails the watch (a crash).
    must_run: Vec<usize>,
    poll: Duration,
    settle: f64,
    timeout: f64,
    avoid: Option<usize>,
    shards: u32,
    replicas: usize,
}

/// Samples the cluster until `done` has held for `settle` seconds in a row; returns when it
/// first held (of that stretch), the last view, and fails at `timeout` with the last view.
///
/// A sample is launched every `poll` on its own thread (at most `MAX_IN_FLIGHT` at once), so a
/// slow answer (e.g. `/cluster/shards` waiting for a node that was just killed) does not stop the
/// clock; samples are stamped with their launch time and one older than the newest processed is
/// dropped.
fn watch<F>(
    cluster: &mut TestCluster,
    w: &mut Watch,
    start: Instant,
    o: &WatchOptions,
    a: &Args,
    mut done: F,
) -> Result<(f64, View)>
where
    F: FnMut(&mut TestCluster, &View) -> bool,
{
    const MAX_IN_FLIGHT: usize = 8;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let (tx, rx) = std::sync::mpsc::channel::<(View, f64)>();
    let in_flight = std::sync::Arc::new(AtomicUsize::new(0));
    let mut since: Option<f64> = None;
    let mut last_log = Instant::now();
    let mut newest = f64::NEG_INFINITY;
    let mut last: Option<View> = None;
    loop {
        let tick = Instant::now();
        if in_flight.load(Ordering::SeqCst) < MAX_IN_FLIGHT {
            let p = Probe::new(cluster, o.avoid);
            let t = start.elapsed().as_secs_f64();
            let (agent, tx, in_flight) = (agent.clone(), tx.clone(), in_flight.clone());
            let (shards, replicas) = (o.shards, o.replicas);
            in_flight.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let began = Instant::now();
                let v = probe(&agent, &p, shards, replicas, t);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send((v, began.elapsed().as_secs_f64() * 1000.0));
            });
        }
        let mut got = Vec::new();
        loop {
            let left = o.poll.saturating_sub(tick.elapsed());
            match rx.recv_timeout(left) {
                Ok(x) => got.push(x),
                Err(_) => break,
            }
        }
        got.sort_by(|x, y| x.0.t.total_cmp(&y.0.t));
        for (v, ms) in got {
            w.sample_ms.push(ms);
            if v.t < newest {
                w.stale_samples += 1;
                continue;
            }
            newest = v.t;
            w.record(&v);
            if done(cluster, &v) {
                let s = *since.get_or_insert(v.t);
                if v.t - s >= o.settle {
                    return Ok((s, v));
                }
            } else {
                since = None;
            }
            last = Some(v);
        }
        for &j in &o.must_run {
            if !cluster.nodes[j].is_running() {
                let node = &cluster.nodes[j];
                bail!(
                    "{} exited on its own (crash?) at +{:.1} s; the end of its log:\n{}",
                    node.id,
                    start.elapsed().as_secs_f64(),
                    node.log_tail(8)
                );
            }
        }
        let t = start.elapsed().as_secs_f64();
        if last_log.elapsed() > Duration::from_secs(10) {
            log(format!(
                "  +{t:.0} s: {}",
                last.as_ref().map_or("no sample yet".into(), View::line)
            ));
            last_log = Instant::now();
            memory_guard(a, cluster)?;
        }
        if t > o.timeout {
            bail!(
                "condition not reached within {:.0} s; last sample: {}",
                o.timeout,
                last.as_ref().map_or("none".into(), View::line)
            );
        }
    }
}

fn shards_now(cluster: &mut TestCluster, checksum: bool) -> Result<(Value, Vec<CopyInfo>)> {
    let i = *cluster.running().first().context("no node is running")?;
    let path = if checksum {
        "/cluster/shards?checksum=true"
    } else {
        "/cluster/shards"
    };
    let v = cluster.nodes[i].get_json(path, Duration::from_secs(600))?;
    let copies = parse_copies(&v).with_context(|| format!("no copies in {path}: {v}"))?;
    Ok((v, copies))
}

fn size_of(copies: &[CopyInfo], pred: impl Fn(&CopyInfo) -> bool) -> u64 {
    copies
        .iter()
        .filter(|c| pred(c))
        .filter_map(|c| c.size)
        .sum()
}

/// Waits until no logged write is waiting to be applied anywhere.
fn wait_applied(a: &Args, cluster: &mut TestCluster, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_log = Instant::now();
    loop {
        memory_guard(a, cluster)?;
        let answer = shards_now(cluster, false).map(|x| x.0);
        let pending = answer.as_ref().ok().map(|a| a["pending_writes"].clone());
        if pending == Some(json!(0)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("writes still pending after {timeout:?}: {pending:?}");
        }
        if last_log.elapsed() > Duration::from_secs(20) {
            log(format!(
                "  waiting for writes to be applied: pending {}, node RSS MB {:?}",
                pending.map_or("?".into(), |p| p.to_string()),
                cluster_rss(cluster)
            ));
            last_log = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The checks run after each phase: R in-sync copies per shard on running nodes, in-sync copies
/// agreeing (counts and checksum), primaries holding what was acknowledged (between `expected`
/// and `expected + uncertain` when some writes failed without an answer).
fn verify(
    a: &Args,
    cluster: &mut TestCluster,
    expected: &Totals,
    uncertain: &Totals,
) -> Result<Value> {
    let t = Instant::now();
    // A copy without stats (its node did not answer in time) is asked again, a few times.
    let mut attempts = 0;
    let (answer, copies) = loop {
        attempts += 1;
        let (answer, copies) = shards_now(cluster, true)?;
        let missing = copies
            .iter()
            .filter(|c| c.counts[0].is_none() || c.checksum.is_none())
            .count();
        if missing == 0 || attempts >= 5 {
            break (answer, copies);
        }
        log(format!(
            "  verify: {missing} copies without stats or checksum; asking again"
        ));
        std::thread::sleep(Duration::from_secs(10));
    };
    let checksum_s = t.elapsed().as_secs_f64();
    let running: Vec<String> = cluster
        .running()
        .iter()
        .map(|&i| cluster.nodes[i].id.clone())
        .collect();
    let mut problems = Vec::new();
    let mut by_shard: BTreeMap<u64, Vec<&CopyInfo>> = BTreeMap::new();
    for c in &copies {
        by_shard.entry(c.shard).or_default().push(c);
    }
    let mut no_checksum = 0;
    for s in 0..u64::from(a.shards) {
        let list = by_shard.get(&s).cloned().unwrap_or_default();
        let good: Vec<&&CopyInfo> = list
            .iter()
            .filter(|c| c.in_sync && c.state != "unavailable" && running.contains(&c.node))
            .collect();
        if good.len() < a.replicas {
            problems.push(format!(
                "shard {s}: {} in-sync copies on running nodes (want {}): {:?}",
                good.len(),
                a.replicas,
                list.iter()
                    .map(|c| format!("{}: {}", c.node, c.label()))
                    .collect::<Vec<_>>()
            ));
        }
        if list.iter().filter(|c| c.primary).count() != 1 {
            problems.push(format!("shard {s}: not exactly one primary"));
        }
        if let Some(first) = good.first() {
            for c in &good[1..] {
                if c.counts != first.counts {
                    problems.push(format!(
                        "shard {s}: counts (entities, relations, chunks, documents, communities) differ: {}{} {:?} (seq, applied {:?}) vs {}{} {:?} (seq, applied {:?})",
                        first.node,
                        if first.primary { " (primary)" } else { "" },
                        first.counts,
                        first.seq,
                        c.node,
                        if c.primary { " (primary)" } else { "" },
                        c.counts,
                        c.seq
                    ));
                }
                if c.checksum != first.checksum {
                    problems.push(format!(
                        "shard {s}: checksums differ: {} {:?} vs {} {:?}",
                        first.node, first.checksum, c.node, c.checksum
                    ));
                }
            }
        }
        no_checksum += good.iter().filter(|c| c.checksum.is_none()).count();
    }
    if no_checksum > 0 {
        problems.push(format!(
            "{no_checksum} in-sync copies reported no checksum with ?checksum=true"
        ));
    }
    let mut sums = [0u64; 5];
    let mut no_counts = Vec::new();
    for c in copies.iter().filter(|c| c.primary) {
        if c.counts.iter().any(Option::is_none) {
            no_counts.push(format!("shard {} @ {}", c.shard, c.node));
        }
        for (s, x) in sums.iter_mut().zip(&c.counts) {
            *s += x.unwrap_or(0);
        }
    }
    if !no_counts.is_empty() {
        problems.push(format!(
            "{} primaries reported no counts: {}",
            no_counts.len(),
            no_counts.join(", ")
        ));
    }
    let want = [
        expected.entities,
        expected.relation_copies,
        expected.chunks,
        expected.documents,
        expected.communities,
    ];
    let slack = [
        uncertain.entities,
        uncertain.relation_copies,
        uncertain.chunks,
        uncertain.documents,
        uncertain.communities,
    ];
    for k in 0..5 {
        if no_counts.is_empty() && (sums[k] < want[k] || sums[k] > want[k] + slack[k]) {
            problems.push(format!(
                "primaries hold {} {} (acknowledged: {}{})",
                sums[k],
                COUNT_KEYS[k],
                want[k],
                if slack[k] > 0 {
                    format!(", plus up to {} unanswered", slack[k])
                } else {
                    String::new()
                }
            ));
        }
    }
    let ok = problems.is_empty();
    if !ok {
        log(format!("VERIFICATION FAILED: {}", problems.join("; ")));
    } else {
        log(format!(
            "  verified: {} shards x {} in-sync copies agree (checksums), primaries hold every acknowledged item ({checksum_s:.1} s)",
            a.shards, a.replicas
        ));
    }
    Ok(json!({
        "ok": ok, "problems": problems, "checksum_s": r2(checksum_s), "attempts": attempts,
        "primaries": {"entities": sums[0], "relations": sums[1], "chunks": sums[2], "documents": sums[3], "communities": sums[4]},
        "expected": expected, "uncertain": uncertain, "copies": copies.len(),
        "size_bytes_primaries": size_of(&copies, |c| c.primary),
        "size_bytes_all_copies": size_of(&copies, |_| true),
        "version": answer["version"], "term": answer["term"],
    }))
}

// ------------------------------------------------------------------------------------------------
// Phases

struct Bench {
    a: Args,
    cluster: TestCluster,
    doc: Value,
    problems: Vec<String>,
    expected: Totals,
    uncertain: Totals,
    /// Indices of the nodes that take part (started at least once).
    active: Vec<usize>,
    gen: Gen,
    fs_copy_mb_per_s: Option<f64>,
}

impl Bench {
    fn opts(&self, avoid: Option<usize>) -> WatchOptions {
        WatchOptions {
            must_run: self
                .active
                .iter()
                .copied()
                .filter(|&i| Some(i) != avoid)
                .collect(),
            poll: Duration::from_millis(self.a.poll_ms),
            settle: self.a.settle_s,
            timeout: self.a.phase_timeout_s,
            avoid,
            shards: self.a.shards,
            replicas: self.a.replicas,
        }
    }

    fn write_json(&self) -> Result<()> {
        if let Some(path) = &self.a.json {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut doc = self.doc.clone();
            doc["problems"] = json!(self.problems);
            std::fs::write(path, serde_json::to_string_pretty(&doc)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    fn check(&mut self, phase: &str) -> Result<()> {
        if !self.a.verify {
            return Ok(());
        }
        let v = verify(&self.a, &mut self.cluster, &self.expected, &self.uncertain)?;
        if v["ok"] != true {
            self.problems.push(format!(
                "after {phase}: verification failed: {}",
                v["problems"]
            ));
        }
        self.doc["verify"][phase] = v;
        Ok(())
    }

    fn urls(&self, path: &str) -> Vec<String> {
        self.active
            .iter()
            .map(|&i| self.cluster.nodes[i].url(path))
            .collect()
    }

    fn start_node(&mut self, i: usize) -> Result<()> {
        self.cluster.nodes[i].start()?;
        self.cluster.wait_node_up(i, Duration::from_secs(120))?;
        if !self.active.contains(&i) {
            self.active.push(i);
        }
        Ok(())
    }

    // --- load -----------------------------------------------------------------------------------

    fn load(&mut self) -> Result<()> {
        let a = self.a.clone();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(a.max_minutes * 60.0);
        let target = a.target_bytes();
        let urls = self.urls("/graph/ingest");
        let body_max = (a.body_mb * 1e6) as usize;
        wait_applied(&a, &mut self.cluster, Duration::from_secs(60))?;
        let (_, copies) = shards_now(&mut self.cluster, false)?;
        let empty = size_of(&copies, |c| c.primary);
        let mut size = empty;
        let mut json_bytes = 0u64;
        let mut retries = 0;
        let mut rounds = Vec::new();
        // size_bytes per JSON byte (of the last round), and JSON bytes per document.
        let mut amplification = 3.0;
        let mut doc_bytes = 50_000.0 + (a.dim * 8 * (ENTITIES_PER_DOC + CHUNKS_PER_DOC)) as f64;
        let round_cap = ((target as f64 / amplification) / 8.0).clamp(4e6, 64e6);
        log(format!(
            "load: until the primaries hold {:.0} MB (empty shards: {:.1} MB)",
            mb(target),
            mb(empty)
        ));
        while size < target {
            let want = ((target - size) as f64 / amplification * 1.05).clamp(1e6, round_cap);
            let docs = ((want / doc_bytes).ceil() as usize).max(1);
            let tg = Instant::now();
            let mut round = Round::default();
            for _ in 0..docs {
                self.gen.document(&mut round);
            }
            let totals = Totals::of_round(&round, a.shards);
            let first = [
                pack("entities", &round.entities, body_max)?,
                pack("chunks", &round.chunks, body_max)?,
                pack("documents", &round.documents, body_max)?,
                pack("communities", &round.communities, body_max)?,
            ]
            .concat();
            let rels = pack("relations", &round.relations, body_max)?;
            drop(round);
            let bytes: u64 = first.iter().chain(&rels).map(|b| b.len() as u64).sum();
            let gen_s = tg.elapsed().as_secs_f64();
            let tp = Instant::now();
            retries += post_all(
                "entities, chunks, documents, communities",
                &urls,
                &first,
                a.clients,
                deadline,
            )?;
            drop(first);
            retries += post_all("relations", &urls, &rels, a.clients, deadline)?;
            drop(rels);
            let ack_s = tp.elapsed().as_secs_f64();
            self.expected.add(&totals);
            wait_applied(
                &a,
                &mut self.cluster,
                deadline.saturating_duration_since(Instant::now()),
            )?;
            let applied_s = tp.elapsed().as_secs_f64();
            let (_, copies) = shards_now(&mut self.cluster, false)?;
            let new_size = size_of(&copies, |c| c.primary);
            json_bytes += bytes;
            // Marginal: the first data in a shard costs a fixed ~30 MB (Kuzu's pages of every
            // table and index), later data far less per byte.
            amplification = (new_size.saturating_sub(size) as f64 / bytes as f64).max(0.5);
            doc_bytes = bytes as f64 / docs as f64;
            memory_guard(&a, &self.cluster)?;
            log(format!(
                "  round {}: {docs} documents, {:.1} MB of JSON acknowledged in {ack_s:.1} s, applied in {applied_s:.1} s; primaries {:.0} of {:.0} MB ({:.0}%), all copies {:.0} MB; {:.0} s so far; node RSS MB {:?}",
                rounds.len() + 1,
                mb(bytes),
                mb(new_size),
                mb(target),
                100.0 * new_size as f64 / target as f64,
                mb(size_of(&copies, |_| true)),
                t0.elapsed().as_secs_f64(),
                cluster_rss(&self.cluster)
            ));
            rounds.push(
                json!({"documents": docs, "json_bytes": bytes, "generate_s": r2(gen_s),
                               "acknowledged_s": r2(ack_s), "applied_s": r2(applied_s),
                               "size_bytes_primaries": new_size}),
            );
            size = new_size;
        }
        // unsafe: malloc_trim only gives free heap memory back (the bodies are gone).
        unsafe { libc::malloc_trim(0) };
        let applied = t0.elapsed().as_secs_f64();
        log("load: waiting for green (every copy in sync)");
        let (_, copies) = shards_now(&mut self.cluster, false)?;
        let mut w = Watch::new(&copies);
        let opts = self.opts(None);
        let (green_t, view) = watch(&mut self.cluster, &mut w, t0, &opts, &a, |_, v| v.settled())?;
        let (_, copies) = shards_now(&mut self.cluster, false)?;
        let mut per_node: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for c in &copies {
            let e = per_node.entry(c.node.clone()).or_default();
            e.0 += 1;
            e.1 += c.size.unwrap_or(0);
        }
        log(format!(
            "load: {:.0} MB of JSON in {} rounds; primaries {:.0} MB, all copies {:.0} MB; applied after {applied:.0} s, green after {green_t:.0} s; per node (copies, MB): {:?}",
            mb(json_bytes),
            rounds.len(),
            mb(size_of(&copies, |c| c.primary)),
            mb(size_of(&copies, |_| true)),
            per_node.iter().map(|(k, v)| format!("{k}: {}, {:.0}", v.0, mb(v.1))).collect::<Vec<_>>()
        ));
        self.doc["load"] = json!({
            "target_bytes": target, "json_bytes": json_bytes, "rounds": rounds, "retries": retries,
            "applied_s": r2(applied), "green_s": r2(green_t),
            "size_bytes_primaries": size_of(&copies, |c| c.primary),
            "size_bytes_all_copies": size_of(&copies, |_| true),
            "size_bytes_empty_shards": empty,
            "amplification_last_round": r2(amplification),
            "size_per_json_byte": r2(size_of(&copies, |c| c.primary).saturating_sub(empty) as f64 / json_bytes.max(1) as f64),
            "items": self.expected,
            "per_node": per_node.iter().map(|(k, v)| (k.clone(), json!({"copies": v.0, "size_bytes": v.1}))).collect::<BTreeMap<_, _>>(),
            "rss_mb": cluster_rss(&self.cluster),
            "view": view.line(),
        });
        self.write_json()?;
        self.check("load")?;
        self.write_json()
    }

    // --- kill -9 --------------------------------------------------------------------------------

    fn coordinator(&mut self) -> Option<String> {
        let i = *self.cluster.running().first()?;
        let h = self.cluster.nodes[i]
            .get_json("/cluster/health", Duration::from_secs(10))
            .ok()?;
        h["coordinator"].as_str().map(String::from)
    }

    fn kill(&mut self) -> Result<usize> {
        let a = self.a.clone();
        let coordinator = self.coordinator();
        let victim = match &a.victim {
            Some(id) => self
                .cluster
                .index_of(id)
                .with_context(|| format!("--victim {id}: no such node"))?,
            None => *self
                .active
                .iter()
                .rev()
                .find(|&&i| Some(&self.cluster.nodes[i].id) != coordinator.as_ref())
                .context("no node to kill")?,
        };
        let victim_id = self.cluster.nodes[victim].id.clone();
        let (_, before) = shards_now(&mut self.cluster, false)?;
        let held: Vec<&CopyInfo> = before.iter().filter(|c| c.node == victim_id).collect();
        let held_bytes: u64 = held.iter().filter_map(|c| c.size).sum();
        let held_shards: Vec<u64> = held.iter().map(|c| c.shard).collect();
        let primaries_held = held.iter().filter(|c| c.primary).count();
        log(format!(
            "kill: kill -9 {victim_id} (coordinator: {}), holding {} copies ({} primaries), {:.0} MB: shards {:?}",
            coordinator.as_deref().unwrap_or("?"),
            held.len(),
            primaries_held,
            mb(held_bytes),
            held_shards
        ));
        let replace_after = parse_secs(&a.replace_after).unwrap_or(f64::NAN);
        let mut w = Watch::new(&before);
        let wall_start = SystemTime::now();
        let t0 = Instant::now();
        self.cluster.nodes[victim].kill9();
        let opts = self.opts(Some(victim));
        let result = watch(&mut self.cluster, &mut w, t0, &opts, &a, |_, v| {
            v.all_green && v.full && v.moves == 0
        });
        let (green_t, view) = match result {
            Ok(x) => x,
            Err(e) => {
                self.doc["kill"] =
                    json!({"victim": victim_id, "error": format!("{e:#}"), "watch": w.to_json()});
                return Err(e);
            }
        };
        let wall_end = SystemTime::now();
        // Re-replication: the new copies of the shards the killed node held; other moves (the
        // coordinator rebalancing 32 copies over 4 nodes) are reported apart.
        let transfer = w.transfer_where(|p| held_shards.contains(&p.0));
        let transfer_all = w.transfer();
        let logged = logged_transfers(&self.cluster, wall_start, wall_end);
        let first_seen = transfer["first_seen_s"].as_f64();
        let throughput = transfer["mb_per_s"].as_f64();
        log(format!(
            "kill: green {green_t:.1} s after the kill ({:.1} s after the nominal replace moment, {} after the first re-created copy appeared); {} copies re-created, {:.0} MB, {} MB/s",
            green_t - replace_after,
            first_seen.map_or("?".into(), |f| format!("{:.1} s", green_t - f)),
            transfer["copies_created"],
            mb(transfer["bytes"].as_u64().unwrap_or(0)),
            throughput.map_or("?".into(), |x| format!("{x:.1}"))
        ));
        // Baseline: the same shards' files copied on the same disk.
        let baseline = fs_copy_baseline(&self.cluster.nodes[victim].data_dir, &held_shards)
            .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        let copy_rate = baseline["mb_per_s"].as_f64();
        self.fs_copy_mb_per_s = copy_rate;
        log(format!(
            "kill: the nodes' logs: {}",
            short(&logged.to_string(), 600)
        ));
        log(format!("kill: baseline fs::copy + fsync of the killed node's files of those shards: {baseline}"));
        let ratio = match (throughput, copy_rate) {
            (Some(t), Some(c)) if c > 0.0 => Some(r2(t / c)),
            _ => None,
        };
        if throughput.is_some_and(|t| t < 50.0) {
            self.problems.push(format!(
                "re-replication {:.1} MB/s, below the 50 MB/s target",
                throughput.unwrap_or(0.0)
            ));
        }
        self.doc["kill"] = json!({
            "victim": victim_id, "coordinator": coordinator, "held_copies": held.len(),
            "held_primaries": primaries_held, "held_shards": held_shards, "held_bytes": held_bytes,
            "replace_after_s": replace_after,
            "green_after_kill_s": r2(green_t),
            "green_after_replace_moment_s": r2(green_t - replace_after),
            "green_after_first_copy_s": first_seen.map(|f| r2(green_t - f)),
            "first_not_green_s": w.first_not_green.map(r2),
            "transfer": transfer, "transfer_all_moves": transfer_all, "node_logs": logged,
            "re_replication_mb_per_s": throughput,
            "target_mb_per_s": 50.0, "target_met": throughput.map(|t| t >= 50.0),
            "fs_copy_baseline": baseline, "ratio_vs_fs_copy": ratio, "load_1m": load_1m(),
            "view": view.line(), "watch": w.to_json(),
        });
        self.write_json()?;
        self.check("kill")?;
        self.write_json()?;
        Ok(victim)
    }

    // --- a node (re)joins -----------------------------------------------------------------------

    fn join(&mut self, phase: &str, i: usize) -> Result<()> {
        let a = self.a.clone();
        let id = self.cluster.nodes[i].id.clone();
        let (_, before) = shards_now(&mut self.cluster, false)?;
        let mut w = Watch::new(&before);
        log(format!(
            "{phase}: starting {id} ({})",
            if self.cluster.nodes[i].data_dir.exists() {
                "on its files"
            } else {
                "empty"
            }
        ));
        let wall_start = SystemTime::now();
        let t0 = Instant::now();
        self.start_node(i)?;
        let up = t0.elapsed().as_secs_f64();
        let opts = self.opts(None);
        let node_id = id.clone();
        let result = watch(&mut self.cluster, &mut w, t0, &opts, &a, |_, v| {
            v.settled() && v.per_node.get(&node_id).copied().unwrap_or(0) > 0
        });
        let (t, view) = match result {
            Ok(x) => x,
            Err(e) => {
                self.doc[phase] =
                    json!({"node": id, "error": format!("{e:#}"), "watch": w.to_json()});
                return Err(e);
            }
        };
        let transfer = w.transfer();
        let logged = logged_transfers(&self.cluster, wall_start, SystemTime::now());
        let rate = transfer["mb_per_s"].as_f64();
        log(format!(
            "{phase}: {id} up after {up:.1} s; green and balanced after {t:.1} s; {} copies moved, {:.0} MB, {} MB/s; per node {:?}",
            transfer["copies_created"],
            mb(transfer["bytes"].as_u64().unwrap_or(0)),
            rate.map_or("?".into(), |x| format!("{x:.1}")),
            view.per_node
        ));
        self.doc[phase] = json!({
            "node": id, "up_s": r2(up), "balanced_green_s": r2(t), "transfer": transfer, "node_logs": logged,
            "ratio_vs_fs_copy": match (rate, self.fs_copy_mb_per_s) { (Some(r), Some(c)) if c > 0.0 => Some(r2(r / c)), _ => None },
            "per_node": view.per_node, "view": view.line(), "watch": w.to_json(), "load_1m": load_1m(),
        });
        self.write_json()?;
        self.check(phase)?;
        self.write_json()
    }

    // --- rolling restart under load -------------------------------------------------------------

    fn rolling(&mut self) -> Result<()> {
        let a = self.a.clone();
        let order = self.active.clone();
        let urls = self.urls("");
        let bulk_entities = self.gen.entities;
        let vocab = self.gen.vocab.clone();
        let shared = ClientShared {
            route: Mutex::new(Route {
                excluded: None,
                in_flight: vec![0; urls.len()],
                generation: vec![0; urls.len()],
            }),
            phase: AtomicU8::new(BASELINE),
            stale: AtomicUsize::new(0),
        };
        let drain_wait = a
            .drain_timeout
            .as_deref()
            .and_then(parse_secs)
            .unwrap_or(300.0)
            + 120.0;
        let mut steps = Vec::new();
        let mut failure: Option<anyhow::Error> = None;
        let t0 = Instant::now();
        let mut rolling_s = (0.0, 0.0);
        let results: Vec<ClientResult> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..a.client_threads)
                .map(|k| {
                    let (shared, urls, vocab, a) = (&shared, &urls, &vocab, &a);
                    scope.spawn(move || client(k, a, shared, urls, vocab, bulk_entities, t0))
                })
                .collect();
            log(format!(
                "rolling: client baseline for {:.0} s ({} threads, {} requests/s, writes of {} entities)",
                a.baseline_s, a.client_threads, a.client_rate, a.write_batch
            ));
            std::thread::sleep(Duration::from_secs_f64(a.baseline_s));
            shared.phase.store(ROLLING, Ordering::SeqCst);
            rolling_s.0 = t0.elapsed().as_secs_f64();
            for (pos, &i) in order.iter().enumerate() {
                match self.restart_one(&shared, pos, i, drain_wait, t0) {
                    Ok(step) => steps.push(step),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            rolling_s.1 = t0.elapsed().as_secs_f64();
            shared.route.lock().expect("route").excluded = None;
            shared.phase.store(STOP, Ordering::SeqCst);
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        // Merge the clients.
        let mut hist: [[Histogram<u64>; 2]; 2] =
            [[histogram(), histogram()], [histogram(), histogram()]];
        let mut ok = [[0u64; 2]; 2];
        let mut errors: Vec<Value> = Vec::new();
        let mut error_counts = [[0u64; 2]; 2];
        let mut acked_ids: Vec<String> = Vec::new();
        for r in &results {
            for p in 0..2 {
                for o in 0..2 {
                    hist[p][o].add(&r.hist[p][o]).expect("same bounds");
                    ok[p][o] += r.ok[p][o];
                    error_counts[p][o] += r.errors[p][o];
                }
            }
            errors.extend(r.error_details.iter().cloned());
            self.expected.add(&r.acked);
            self.uncertain.add(&r.unanswered);
            acked_ids.extend(r.acked_ids.iter().cloned());
        }
        errors.sort_by(|x, y| {
            x["t"]
                .as_f64()
                .partial_cmp(&y["t"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let total_errors: u64 = error_counts.iter().flatten().sum();
        let during_errors: u64 = error_counts[1].iter().sum();
        if total_errors > 0 {
            self.problems.push(format!(
                "rolling restart: {total_errors} client-visible errors ({during_errors} during the restarts); first: {}",
                errors.first().map_or(String::new(), |e| e.to_string())
            ));
        }
        let ops = ["write", "read"];
        let mut lat = serde_json::Map::new();
        for (o, name) in ops.iter().enumerate() {
            let base = summary(&hist[0][o]);
            let during = summary(&hist[1][o]);
            let ratio = |k: &str| match (base[k].as_f64(), during[k].as_f64()) {
                (Some(b), Some(d)) if b > 0.0 => Some(r2(d / b)),
                _ => None,
            };
            lat.insert(
                name.to_string(),
                json!({"baseline": base, "during": during, "ratio_p50": ratio("p50_ms"), "ratio_p99": ratio("p99_ms"),
                       "ok_baseline": ok[0][o], "ok_during": ok[1][o],
                       "errors_baseline": error_counts[0][o], "errors_during": error_counts[1][o]}),
            );
        }
        // Acknowledged client writes readable after the restarts, from every node.
        let readback = readback(&mut self.cluster, &acked_ids, 300);
        if readback["missing"].as_u64() != Some(0) {
            self.problems.push(format!(
                "rolling restart: acknowledged entities missing afterwards: {}",
                readback
            ));
        }
        self.doc["rolling"] = json!({
            "order": order.iter().map(|&i| self.cluster.nodes[i].id.clone()).collect::<Vec<_>>(),
            "steps": steps, "rolling_s": r2(rolling_s.1 - rolling_s.0), "load_1m": load_1m(),
            "client": {"threads": a.client_threads, "rate": a.client_rate, "write_batch": a.write_batch,
                       "baseline_s": a.baseline_s, "latency": lat, "errors": total_errors,
                       "errors_during": during_errors, "error_details": errors.iter().take(50).collect::<Vec<_>>(),
                       "stale_reads": shared.stale.load(Ordering::SeqCst),
                       "acknowledged_entities": acked_ids.len(), "readback": readback},
            "error": failure.as_ref().map(|e| format!("{e:#}")),
        });
        self.write_json()?;
        if let Some(e) = failure {
            return Err(e);
        }
        self.check("rolling")?;
        self.write_json()
    }

    fn restart_one(
        &mut self,
        shared: &ClientShared,
        pos: usize,
        i: usize,
        drain_wait: f64,
        t0: Instant,
    ) -> Result<Value> {
        let a = self.a.clone();
        let id = self.cluster.nodes[i].id.clone();
        // Route the clients elsewhere, and wait for their requests to this node to finish.
        let k = self
            .active
            .iter()
            .position(|&x| x == i)
            .context("active node")?;
        shared.route.lock().expect("route").excluded = Some(k);
        let wait_start = Instant::now();
        while shared.route.lock().expect("route").in_flight[k] > 0 {
            if wait_start.elapsed() > Duration::from_secs(60) {
                bail!("client requests to {id} still running after 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (_, before) = shards_now(&mut self.cluster, false)?;
        let held = before.iter().filter(|c| c.node == id).count();
        let held_bytes = size_of(&before, |c| c.node == id);
        log(format!(
            "rolling {}/{}: SIGTERM {id} ({held} copies, {:.0} MB) at +{:.1} s",
            pos + 1,
            self.active.len(),
            mb(held_bytes),
            t0.elapsed().as_secs_f64()
        ));
        let wall_start = SystemTime::now();
        let start = Instant::now();
        let mut w = Watch::new(&before);
        let pid = self.cluster.nodes[i].pid().context("node not running")?;
        // SAFETY: signalling a child process the harness spawned and has not reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let mut opts = self.opts(Some(i));
        opts.timeout = drain_wait;
        opts.settle = 0.0;
        let exited = watch(&mut self.cluster, &mut w, start, &opts, &a, |c, _| {
            !c.nodes[i].is_running()
        });
        let mut step = json!({"node": id, "held_copies": held, "held_bytes": held_bytes,
                              "sigterm_at_s": r2(start.duration_since(t0).as_secs_f64())});
        let exit_s = match exited {
            Ok((t, _)) => t,
            Err(e) => {
                let msg = format!(
                    "{id} did not exit within {drain_wait:.0} s of SIGTERM ({e:#}); killed with -9"
                );
                log(&msg);
                self.problems.push(format!("rolling restart: {msg}"));
                self.cluster.nodes[i].kill9();
                step["killed"] = json!(true);
                start.elapsed().as_secs_f64()
            }
        };
        let drained = w.transfer();
        let (_, after_exit) = shards_now(&mut self.cluster, false)?;
        let left_behind = after_exit.iter().filter(|c| c.node == id).count();
        if left_behind > 0 {
            self.problems.push(format!(
                "rolling restart: {id} exited still holding {left_behind} copies in the map"
            ));
        }
        log(format!(
            "rolling {}/{}: {id} exited {exit_s:.1} s after SIGTERM ({} copies moved off, {:.0} MB, {} MB/s; {left_behind} left in the map)",
            pos + 1,
            self.active.len(),
            drained["copies_created"],
            mb(drained["bytes"].as_u64().unwrap_or(0)),
            drained["mb_per_s"]
        ));
        let drain_watch = w.to_json();
        let mut w = Watch::new(&after_exit);
        let restart = Instant::now();
        self.cluster.nodes[i].start()?;
        self.cluster.wait_node_up(i, Duration::from_secs(120))?;
        let up_s = restart.elapsed().as_secs_f64();
        let opts = self.opts(None);
        let node_id = id.clone();
        let settled = watch(&mut self.cluster, &mut w, restart, &opts, &a, |_, v| {
            v.settled() && v.per_node.get(&node_id).copied().unwrap_or(0) > 0
        });
        let refill = w.transfer();
        step["exit_after_sigterm_s"] = json!(r2(exit_s));
        step["left_in_map"] = json!(left_behind);
        step["drain"] = drained;
        step["drain_watch"] = drain_watch;
        step["up_after_start_s"] = json!(r2(up_s));
        step["refill"] = refill;
        step["refill_watch"] = w.to_json();
        let (t, view) = match settled {
            Ok(x) => x,
            Err(e) => {
                step["error"] = json!(format!("{e:#}"));
                return Err(e.context(format!("{id} after its restart: {step}")));
            }
        };
        step["green_balanced_after_start_s"] = json!(r2(t));
        step["node_logs"] = logged_transfers(&self.cluster, wall_start, SystemTime::now());
        step["total_s"] = json!(r2(start.elapsed().as_secs_f64()));
        log(format!(
            "rolling {}/{}: {id} back: green and balanced {t:.1} s after its start ({} copies moved, {:.0} MB); {}",
            pos + 1,
            self.active.len(),
            step["refill"]["copies_created"],
            mb(step["refill"]["bytes"].as_u64().unwrap_or(0)),
            view.line()
        ));
        // New connections for the restarted node.
        let mut route = shared.route.lock().expect("route");
        route.generation[k] += 1;
        Ok(step)
    }
}

/// Removes terminal colour codes (the nodes log with ANSI escapes).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Unix seconds of an RFC 3339 UTC time like `2026-11-27T16:15:18.035418Z`.
fn parse_utc(s: &str) -> Option<f64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min, sec) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// Value of `key=` in a tracing line (quotes removed).
fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// The snapshot copies the nodes' logs report between two moments: how many, their MB (as
/// logged, whole MB), the window from the first "rebuilding"/"receiving" line to the last
/// "installed" line, and the per-copy rates the nodes computed.
fn logged_transfers(cluster: &TestCluster, from: SystemTime, to: SystemTime) -> Value {
    let unix = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let (from, to) = (unix(from), unix(to));
    let mut installed = Vec::new();
    let mut first_start = f64::INFINITY;
    let mut last_end = f64::NEG_INFINITY;
    let mut failures = Vec::new();
    for n in &cluster.nodes {
        let Ok(text) = std::fs::read_to_string(&n.log_path) else {
            continue;
        };
        for raw in text.lines() {
            if !raw.contains("snapshot") {
                continue;
            }
            let line = strip_ansi(raw);
            let Some(t) = line.split_whitespace().nth(1).and_then(parse_utc) else {
                continue;
            };
            if t < from || t > to {
                continue;
            }
            if line.contains("rebuilding this copy from a snapshot")
                || line.contains("receiving a snapshot")
            {
                first_start = first_start.min(t);
            } else if line.contains("installed a copy from a snapshot") {
                last_end = last_end.max(t);
                let num = |k: &str| field(&line, k).and_then(|v| v.parse::<f64>().ok());
                installed.push(json!({"node": n.id, "shard": field(&line, "shard"), "from": field(&line, "from"),
                                      "mb": num("mb"), "secs": num("secs"), "mb_per_s": num("mb_per_s"),
                                      "at_s": r2(t - from)}));
            } else if line.contains("WARN") || line.contains("ERROR") {
                failures.push(short(line.split_once(' ').map_or(&line[..], |x| x.1), 300));
            }
        }
    }
    let mb: f64 = installed.iter().filter_map(|c| c["mb"].as_f64()).sum();
    let window = last_end - first_start;
    json!({
        "copies_installed": installed.len(), "mb": mb,
        "first_start_s": first_start.is_finite().then(|| r2(first_start - from)),
        "last_installed_s": last_end.is_finite().then(|| r2(last_end - from)),
        "window_s": window.is_finite().then(|| r2(window)),
        "mb_per_s": (window.is_finite() && window > 0.0).then(|| r2(mb / window)),
        "installed": installed, "warnings": failures.iter().take(20).collect::<Vec<_>>(),
    })
}

/// Seconds of a duration like `5s`, `500ms`, `2m`.
fn parse_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.trim().parse().ok()?;
    Some(match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    })
}

/// `std::fs::copy` + fsync of a node's files of `shards` into a scratch folder on the same file
/// system, timed (then deleted); the median of `FS_COPY_TRIALS` runs.
fn fs_copy_baseline(data_dir: &Path, shards: &[u64]) -> Result<Value> {
    let dir = data_dir.join("shards");
    let mut files = Vec::new();
    collect_files(&dir, &mut files)?;
    let wanted = |name: &str| {
        shards.iter().any(|s| {
            let db = format!("shard-{s}.kz");
            name == db
                || name.strip_prefix(&db).is_some_and(|r| r.starts_with('.'))
                || name.starts_with(&format!("shard-{s}.log."))
        })
    };
    let mut picked: Vec<PathBuf> = files
        .iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(wanted))
        .cloned()
        .collect();
    let matched = !picked.is_empty();
    if !matched {
        picked = files;
    }
    let scratch = data_dir
        .parent()
        .unwrap_or(data_dir)
        .join(format!("fs-copy-baseline-{}", std::process::id()));
    // Three times (the file system's write-back state varies run to run): the median counts.
    let mut trials = Vec::new();
    let mut bytes = 0;
    let mut db_bytes = 0;
    for _ in 0..FS_COPY_TRIALS {
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        let t = Instant::now();
        let mut copy_s = 0.0;
        (bytes, db_bytes) = (0, 0);
        for (k, src) in picked.iter().enumerate() {
            let dst = scratch.join(format!("{k}"));
            let tc = Instant::now();
            let n = std::fs::copy(src, &dst).with_context(|| format!("copy {}", src.display()))?;
            copy_s += tc.elapsed().as_secs_f64();
            std::fs::File::open(&dst)?.sync_all()?;
            bytes += n;
            if src
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".kz"))
            {
                db_bytes += n;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        trials.push((secs, copy_s));
        let _ = std::fs::remove_dir_all(&scratch);
    }
    trials.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (secs, copy_s) = trials[trials.len() / 2];
    Ok(json!({
        "files": picked.len(), "matched_shard_files": matched, "bytes": bytes, "db_file_bytes": db_bytes,
        "trials": trials.len(), "seconds": r2(secs), "copy_only_s": r2(copy_s),
        "mb_per_s": (secs > 0.0).then(|| r2(mb(bytes) / secs)),
        "copy_only_mb_per_s": (copy_s > 0.0).then(|| r2(mb(bytes) / copy_s)),
        "all_trials_mb_per_s": trials.iter().map(|t| r2(mb(bytes) / t.0)).collect::<Vec<_>>(),
    }))
}

const FS_COPY_TRIALS: usize = 3;

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = e?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads up to `n` acknowledged ids (spread over the list) from every running node.
fn readback(cluster: &mut TestCluster, ids: &[String], n: usize) -> Value {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let step = (ids.len() / n.max(1)).max(1);
    let sample: Vec<&String> = ids.iter().step_by(step).take(n).collect();
    let mut missing = Vec::new();
    let mut reads = 0;
    for i in cluster.running() {
        for id in &sample {
            reads += 1;
            let url = cluster.nodes[i].url(&format!("/graph/entities/{id}"));
            match get_full(&agent, &url) {
                Ok((200, v, _)) if v["entity"]["id"] == json!(id) => {}
                Ok((code, v, _)) => missing.push(format!(
                    "{} {id}: {code} {}",
                    cluster.nodes[i].id,
                    short(&v.to_string(), 120)
                )),
                Err(e) => missing.push(format!("{} {id}: {e}", cluster.nodes[i].id)),
            }
        }
    }
    json!({"ids": sample.len(), "reads": reads, "missing": missing.len(), "first_missing": missing.iter().take(10).collect::<Vec<_>>()})
}

// ------------------------------------------------------------------------------------------------
// The rolling-restart client

const BASELINE: u8 = 0;
const ROLLING: u8 = 1;
const STOP: u8 = 2;

struct Route {
    /// Index (into the client's urls) of the node being restarted.
    excluded: Option<usize>,
    in_flight: Vec<usize>,
    /// Bumped when a node was restarted: the clients open new connections to it.
    generation: Vec<u64>,
}

struct ClientShared {
    route: Mutex<Route>,
    phase: AtomicU8,
    stale: AtomicUsize,
}

struct ClientResult {
    /// [baseline, rolling] x [write, read], µs.
    hist: [[Histogram<u64>; 2]; 2],
    ok: [[u64; 2]; 2],
    errors: [[u64; 2]; 2],
    error_details: Vec<Value>,
    acked: Totals,
    unanswered: Totals,
    acked_ids: Vec<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Latency summary of µs samples, in ms.
fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |v: u64| (v as f64 / 10.0).round() / 100.0;
    json!({"n": h.len(), "p50_ms": ms(h.value_at_quantile(0.5)), "p90_ms": ms(h.value_at_quantile(0.9)),
           "p99_ms": ms(h.value_at_quantile(0.99)), "max_ms": ms(h.max()), "mean_ms": (h.mean() / 10.0).round() / 100.0})
}

fn client(
    k: usize,
    a: &Args,
    shared: &ClientShared,
    urls: &[String],
    vocab: &[String],
    bulk_entities: usize,
    t0: Instant,
) -> ClientResult {
    let mut r = ClientResult {
        hist: [[histogram(), histogram()], [histogram(), histogram()]],
        ok: [[0; 2]; 2],
        errors: [[0; 2]; 2],
        error_details: Vec::new(),
        acked: Totals::default(),
        unanswered: Totals::default(),
        acked_ids: Vec::new(),
    };
    let period = Duration::from_secs_f64(a.client_threads as f64 / a.client_rate);
    let mut rng = Rng(a.seed ^ (0xC11E_0000 + k as u64));
    let new_agent = || {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build()
    };
    let mut agents: Vec<(u64, ureq::Agent)> = urls.iter().map(|_| (0, new_agent())).collect();
    let mut rr = k;
    let mut n = 0u64;
    loop {
        let phase = shared.phase.load(Ordering::SeqCst);
        if phase == STOP {
            break;
        }
        let p = usize::from(phase == ROLLING);
        let tick = Instant::now();
        let (node, generation) = {
            let mut route = shared.route.lock().expect("route");
            let mut node = rr % urls.len();
            while Some(node) == route.excluded {
                rr += 1;
                node = rr % urls.len();
            }
            rr += 1;
            route.in_flight[node] += 1;
            (node, route.generation[node])
        };
        if agents[node].0 != generation {
            agents[node] = (generation, new_agent());
        }
        let agent = &agents[node].1;
        let write = n.is_multiple_of(2);
        n += 1;
        let started = Instant::now();
        let outcome: std::result::Result<(), String> = if write {
            let ids: Vec<String> = (0..a.write_batch)
                .map(|j| format!("cw{k}-{n}-{j}"))
                .collect();
            let entities: Vec<Value> = ids
                .iter()
                .map(|id| {
                    json!({"id": id, "title": id, "type": "CONCEPT",
                           "description": text(&mut rng, vocab, 300), "text_unit_ids": []})
                })
                .collect();
            let mut relations = Vec::new();
            let mut totals = Totals {
                entities: ids.len() as u64,
                ..Totals::default()
            };
            for (j, id) in ids.iter().enumerate() {
                let target = if j + 1 < ids.len() {
                    ids[j + 1].clone()
                } else {
                    format!("e-{}", rng.below(bulk_entities.max(1)))
                };
                totals.add_relation(id, &target, a.shards);
                relations.push(json!({"id": format!("cwr{k}-{n}-{j}"), "source": id, "target": target,
                                      "description": "written during the rolling restart", "weight": 1.0}));
            }
            let body = json!({"entities": entities, "relations": relations});
            let url = format!("{}/graph/ingest", urls[node]);
            match agent.post(&url).send_json(body) {
                Ok(resp) => {
                    let status = resp.status();
                    let v: Value = resp.into_json().unwrap_or(Value::Null);
                    if status == 200 && v["errors"] == false {
                        r.acked.add(&totals);
                        r.acked_ids.extend(ids);
                        Ok(())
                    } else {
                        // Some items may have been written.
                        r.unanswered.add(&totals);
                        Err(format!("{status} {}", short(&v.to_string(), 400)))
                    }
                }
                Err(ureq::Error::Status(code, resp)) => {
                    r.unanswered.add(&totals);
                    Err(format!(
                        "{code} {}",
                        short(&resp.into_string().unwrap_or_default(), 400)
                    ))
                }
                Err(e) => {
                    r.unanswered.add(&totals);
                    Err(format!("transport: {e}"))
                }
            }
        } else {
            let id = if !r.acked_ids.is_empty() && rng.below(2) == 0 {
                r.acked_ids[rng.below(r.acked_ids.len())].clone()
            } else {
                format!("e-{}", rng.below(bulk_entities.max(1)))
            };
            let url = format!("{}/graph/entities/{id}", urls[node]);
            match get_full(agent, &url) {
                Ok((200, v, stale)) if v["entity"]["id"] == json!(id) => {
                    if let Some(reason) = stale {
                        let n = shared.stale.fetch_add(1, Ordering::SeqCst);
                        if n < 10 {
                            log(format!(
                                "stale-marked read at +{:.1} s from {}: {reason}",
                                t0.elapsed().as_secs_f64(),
                                urls[node]
                            ));
                        }
                    }
                    Ok(())
                }
                Ok((code, v, _)) => Err(format!("{code} for {id}: {}", short(&v.to_string(), 400))),
                Err(e) => Err(format!("transport, {id}: {e}")),
            }
        };
        let us = started.elapsed().as_micros().max(1) as u64;
        let excluded = {
            let mut route = shared.route.lock().expect("route");
            route.in_flight[node] -= 1;
            route.excluded
        };
        let o = usize::from(!write);
        match outcome {
            Ok(()) => {
                r.ok[p][o] += 1;
                let _ = r.hist[p][o].record(us);
            }
            Err(e) => {
                r.errors[p][o] += 1;
                let t = t0.elapsed().as_secs_f64();
                let detail = json!({"t": r2(t), "client": k, "op": if write { "write" } else { "read" },
                                    "node": urls[node], "restarting": excluded.map(|x| urls[x].clone()),
                                    "ms": r2(us as f64 / 1000.0), "error": e});
                log(format!("CLIENT ERROR {detail}"));
                r.error_details.push(detail);
            }
        }
        std::thread::sleep(period.saturating_sub(tick.elapsed()));
    }
    r
}

// ------------------------------------------------------------------------------------------------
// Summary

fn print_summary(doc: &Value, problems: &[String]) {
    let f = |v: &Value| v.as_f64().map_or("?".to_string(), |x| format!("{x:.1}"));
    let f2 = |v: &Value| v.as_f64().map_or("?".to_string(), |x| format!("{x:.2}"));
    let logs = |v: &Value| {
        format!(
            "node logs: {} snapshot copies installed, {} MB, first started +{} s, last installed +{} s -> {} MB/s",
            v["copies_installed"],
            f(&v["mb"]),
            f(&v["first_start_s"]),
            f(&v["last_installed_s"]),
            f(&v["mb_per_s"])
        )
    };
    println!(
        "\n== Self-healing benchmark (issue 7): {}",
        doc["label"].as_str().unwrap_or("")
    );
    let l = &doc["load"];
    if !l.is_null() {
        println!(
            "load: {} MB of JSON ({} entities, {} relations, {} chunks, {} documents, {} communities) -> primaries {} MB, all copies {} MB; applied after {} s, green after {} s",
            f(&json!(mb(l["json_bytes"].as_u64().unwrap_or(0)))),
            l["items"]["entities"], l["items"]["relations"], l["items"]["chunks"],
            l["items"]["documents"], l["items"]["communities"],
            f(&json!(mb(l["size_bytes_primaries"].as_u64().unwrap_or(0)))),
            f(&json!(mb(l["size_bytes_all_copies"].as_u64().unwrap_or(0)))),
            f(&l["applied_s"]), f(&l["green_s"])
        );
    }
    let k = &doc["kill"];
    if !k.is_null() {
        println!(
            "kill -9 {} ({} copies, {} MB): green after {} s from the kill, {} s from the nominal replace moment ({} s after kill), {} s from the first re-created copy",
            k["victim"].as_str().unwrap_or("?"),
            k["held_copies"],
            f(&json!(mb(k["held_bytes"].as_u64().unwrap_or(0)))),
            f(&k["green_after_kill_s"]),
            f(&k["green_after_replace_moment_s"]),
            f(&k["replace_after_s"]),
            f(&k["green_after_first_copy_s"])
        );
        println!(
            "  re-replication: {} copies, {} MB in {} s = {} MB/s (target >= 50: {}); fs::copy+fsync of the same shards' files: {} MB/s; ratio {}",
            k["transfer"]["copies_created"],
            f(&k["transfer"]["mb"]),
            f(&k["transfer"]["window_s"]),
            f(&k["re_replication_mb_per_s"]),
            match k["target_met"].as_bool() {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "?",
            },
            f(&k["fs_copy_baseline"]["mb_per_s"]),
            f2(&k["ratio_vs_fs_copy"])
        );
        println!(
            "  all moves until green: {} copies, {} MB; {}",
            k["transfer_all_moves"]["copies_created"],
            f(&k["transfer_all_moves"]["mb"]),
            logs(&k["node_logs"])
        );
    }
    for phase in ["return", "join"] {
        let j = &doc[phase];
        if !j.is_null() {
            println!(
                "{phase} of {}: green and balanced after {} s; {} copies moved, {} MB, {} MB/s (ratio to fs::copy {})",
                j["node"].as_str().unwrap_or("?"),
                f(&j["balanced_green_s"]),
                j["transfer"]["copies_created"],
                f(&j["transfer"]["mb"]),
                f(&j["transfer"]["mb_per_s"]),
                f2(&j["ratio_vs_fs_copy"])
            );
            println!("  {}", logs(&j["node_logs"]));
        }
    }
    let r = &doc["rolling"];
    if !r.is_null() {
        println!("rolling restart ({} s in all):", f(&r["rolling_s"]));
        for s in r["steps"].as_array().into_iter().flatten() {
            println!(
                "  {}: exit {} s after SIGTERM (drained {} copies, {} MB at {} MB/s), green+balanced {} s after restart ({} copies back, {} MB at {} MB/s)",
                s["node"].as_str().unwrap_or("?"),
                f(&s["exit_after_sigterm_s"]),
                s["drain"]["copies_created"],
                f(&s["drain"]["mb"]),
                f(&s["drain"]["mb_per_s"]),
                f(&s["green_balanced_after_start_s"]),
                s["refill"]["copies_created"],
                f(&s["refill"]["mb"]),
                f(&s["refill"]["mb_per_s"])
            );
        }
        let c = &r["client"];
        println!(
            "  client: {} errors ({} during the restarts; target 0), {} stale-marked reads",
            c["errors"], c["errors_during"], c["stale_reads"]
        );
        for op in ["write", "read"] {
            let l = &c["latency"][op];
            println!(
                "  {op:<5}: baseline p50 {} p99 {} ms (n {}); during p50 {} p99 {} ms (n {}); ratio p50 {} p99 {}",
                f(&l["baseline"]["p50_ms"]),
                f(&l["baseline"]["p99_ms"]),
                l["baseline"]["n"],
                f(&l["during"]["p50_ms"]),
                f(&l["during"]["p99_ms"]),
                l["during"]["n"],
                f2(&l["ratio_p50"]),
                f2(&l["ratio_p99"])
            );
        }
    }
    for phase in ["load", "kill", "return", "join", "rolling"] {
        let v = &doc["verify"][phase];
        if v.is_null() {
            continue;
        }
        println!(
            "verify after {phase}: {}",
            if v["ok"] == true {
                "ok".to_string()
            } else {
                format!("FAILED {}", v["problems"])
            }
        );
    }
    if problems.is_empty() {
        println!("problems: none");
    } else {
        println!("problems:");
        for p in problems {
            println!("  - {p}");
        }
    }
}

// ------------------------------------------------------------------------------------------------

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let bin = torua_testkit::torua_bin();
    let bin_time = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    json!({"cpus": cpus, "mem_total_mb": meminfo_mb("MemTotal:"), "mem_available_mb": meminfo_mb("MemAvailable:"),
           "load_1m": load_1m(), "git_head": git, "torua_bin": bin.display().to_string(), "torua_bin_mtime": bin_time,
           "temp_dir": std::env::temp_dir().display().to_string()})
}

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
    let mut env = a.env.clone();
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
        log: a.log.clone(),
        start_timeout: Duration::from_secs(120),
        ..ClusterOptions::default()
    };
    // One node more than started, for the join phase.
    let cluster = TestCluster::new(a.nodes + 1, options)?;
    let label = a.label.clone().unwrap_or_else(|| {
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
