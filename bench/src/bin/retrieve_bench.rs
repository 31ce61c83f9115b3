//! `POST /retrieve` benchmark: GraphRAG local search in one round trip, torua vs one embedded Kuzu
//! database doing the same steps, measured in the same run.
//!
//! ```text
//! retrieve_bench [--small] --entities 100000 --relations 1000000 --chunks 50000 --dim 384
//!                --queries 200 --nodes 1,3 --json FILE
//! ```
//!
//! Data (seeded, deterministic): `--entities` entities whose titles are two made-up names and whose
//! descriptions are words of a generated vocabulary, half of them the topic words of the entity's
//! cluster; embeddings are clustered pseudo-random unit vectors (cluster centre plus as much noise,
//! so cluster mates have cosine ~0.5); `--relations` relations drawn like graph_bench's (a bounded
//! power law over the entities, skew `--skew`), half of them inside the source's cluster, weights
//! 1-10; `--chunks` chunks (text units) with text and embeddings, each entity naming 1-4 of them
//! in `text_unit_ids`; communities: one per cluster at level 0 (entities / 400, at least 20) and
//! one per ten of those at level 1, each with `entity_ids`, a summary and a `full_content` report.
//!
//! torua: for each of `--nodes`, a fresh cluster (R=1 for one node, `--replicas` otherwise,
//! `TORUA_EMBEDDING_DIM=--dim`) loaded through `POST /graph/ingest` (entities, chunks,
//! communities, then relations; `--clients` threads round-robin over the nodes), then waited on
//! until every write is applied and a retrieve with `allow_partial: false` succeeds (indexes
//! rebuilt after bulk loads are back).
//!
//! Queries: `--queries` random entities (plus `--warmup`); the query text is one word of the
//! title and two of the description, the embedding the entity's plus noise (`--query-noise`).
//! Sequentially, one keep-alive client, requests round-robin over the nodes: `POST /retrieve`
//! (mode local, `--top-k`, `--hops`, the server's default budget) timed until the last byte of
//! the answer, interleaved query by query with the embedded baseline doing the same steps:
//!
//! 1. seeds: `QUERY_VECTOR_INDEX` top k (efs `--embedded-efs`, torua's per-shard value: 200
//!    since 243d303, 64 before), and
//!    `QUERY_FTS_INDEX` top k over the title alone and over title+description (as torua), fused
//!    by RRF (k 60, ties by id);
//! 2. expand: each seed's relations out and in (one primary-key statement per seed), then the
//!    properties of seeds and neighbours (one `UNWIND` statement or one per id, whichever the
//!    calibration at the start found cheaper for that many ids); relations and entities ranked
//!    as the spec says;
//! 3. text_units: the chunks named by the seeds (per id or `UNWIND`, by calibration), ranked by
//!    the summed seed scores;
//! 4. community_reports: communities whose `entity_ids` contain a seed (as torua and GraphRAG),
//!    by matches, rank, id.
//!
//! The baseline runs its steps one after the other on one connection (torua runs expansion, text
//! units and reports at once after the seeds), and does not count tokens nor build
//! `context_text` (torua's `assemble` stage).
//!
//! Recall (the first `--recall-queries` queries, not timed): torua's vector seeds (a request
//! with the embedding only, hops 0) and the baseline's HNSW top k against the exact top k by
//! brute force over the same vectors; BM25 seeds (text only) against the baseline's FTS top k.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use kuzu::{Connection, Database, LogicalType, PreparedStatement, SystemConfig, Value as KValue};
use serde::Serialize;
use serde_json::{json, Value};
use torua_testkit::kuzu_values::{string, struct_rows};
use torua_testkit::{ClusterOptions, TestCluster};

// ------------------------------------------------------------------------------------------------
// Arguments

const USAGE: &str = "usage: retrieve_bench [--small] [flags]
  data     --entities 100000 --relations 1000000 --chunks 50000 --dim 384 --seed 42 --skew 0.6
           (--small: 5000 entities, 50000 relations, 2500 chunks, 100 queries; later flags override)
  cluster  --nodes 1,3 (0: embedded baseline only) --replicas 2 (R for more than one node; one node: R=1) --shards 16
           --memory-mb 2048 --max-shard-gb 16 --env KEY=VALUE (repeatable) --log warn
  load     --batch 1000 (entities/chunks per body) --relation-batch 5000 --clients 4 --max-minutes 60
  queries  --queries 200 --warmup 10 --top-k 10 --hops 1 --max-tokens N (default: the server's)
           --include entities,relations,text_units,community_reports (default: not sent, all)
           --query-noise 0.35 --recall-queries 50
  baseline --embedded-efs 200 (torua's search list since 243d303; 64 before) --embedded-memory-mb 2048
  safety   --min-available-mb 1200 (stop, killing the cluster, when the machine has less free)
  output   --label TEXT --json FILE (one JSON document, rewritten after each target)
The torua binary is $TORUA_BIN, else the one next to this executable.";

#[derive(Debug, Clone, Serialize)]
struct Args {
    entities: usize,
    relations: usize,
    chunks: usize,
    dim: usize,
    seed: u64,
    skew: f64,
    nodes: Vec<usize>,
    replicas: usize,
    shards: u32,
    memory_mb: u64,
    max_shard_gb: u64,
    env: BTreeMap<String, String>,
    log: String,
    batch: usize,
    relation_batch: usize,
    clients: usize,
    max_minutes: f64,
    queries: usize,
    warmup: usize,
    top_k: usize,
    hops: u32,
    max_tokens: Option<u64>,
    include: Option<Vec<String>>,
    query_noise: f64,
    recall_queries: usize,
    embedded_efs: usize,
    embedded_memory_mb: u64,
    min_available_mb: f64,
    label: Option<String>,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        entities: 100_000,
        relations: 1_000_000,
        chunks: 50_000,
        dim: 384,
        seed: 42,
        skew: 0.6,
        nodes: vec![1, 3],
        replicas: 2,
        shards: 16,
        memory_mb: 2048,
        max_shard_gb: 16,
        env: BTreeMap::new(),
        log: "warn".into(),
        batch: 1000,
        relation_batch: 5000,
        clients: 4,
        max_minutes: 60.0,
        queries: 200,
        warmup: 10,
        top_k: 10,
        hops: 1,
        max_tokens: None,
        include: None,
        query_noise: 0.35,
        recall_queries: 50,
        embedded_efs: 200,
        embedded_memory_mb: 2048,
        min_available_mb: 1200.0,
        label: None,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--small" => {
                a.entities = 5000;
                a.relations = 50_000;
                a.chunks = 2500;
                a.queries = 100;
                a.recall_queries = 30;
                continue;
            }
            _ => {}
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value:?}: expected {what}");
        match flag.as_str() {
            "--entities" => a.entities = value.parse().with_context(|| bad("a count"))?,
            "--relations" => a.relations = value.parse().with_context(|| bad("a count"))?,
            "--chunks" => a.chunks = value.parse().with_context(|| bad("a count"))?,
            "--dim" => a.dim = value.parse().with_context(|| bad("a dimension"))?,
            "--seed" => a.seed = value.parse().with_context(|| bad("an integer"))?,
            "--skew" => a.skew = value.parse().with_context(|| bad("an exponent"))?,
            "--nodes" => {
                a.nodes = value
                    .split(',')
                    .map(|x| x.trim().parse())
                    .collect::<Result<_, _>>()
                    .with_context(|| bad("node counts like 1,3"))?
            }
            "--replicas" => a.replicas = value.parse().with_context(|| bad("a count"))?,
            "--shards" => a.shards = value.parse().with_context(|| bad("a count"))?,
            "--memory-mb" => a.memory_mb = value.parse().with_context(|| bad("megabytes"))?,
            "--max-shard-gb" => a.max_shard_gb = value.parse().with_context(|| bad("gigabytes"))?,
            "--env" => {
                let (k, v) = value.split_once('=').with_context(|| bad("KEY=VALUE"))?;
                a.env.insert(k.to_string(), v.to_string());
            }
            "--log" => a.log = value,
            "--batch" => a.batch = value.parse().with_context(|| bad("a count"))?,
            "--relation-batch" => {
                a.relation_batch = value.parse().with_context(|| bad("a count"))?
            }
            "--clients" => a.clients = value.parse().with_context(|| bad("a count"))?,
            "--max-minutes" => a.max_minutes = value.parse().with_context(|| bad("minutes"))?,
            "--queries" => a.queries = value.parse().with_context(|| bad("a count"))?,
            "--warmup" => a.warmup = value.parse().with_context(|| bad("a count"))?,
            "--top-k" => a.top_k = value.parse().with_context(|| bad("1..=100"))?,
            "--hops" => a.hops = value.parse().with_context(|| bad("0..=3"))?,
            "--max-tokens" => a.max_tokens = Some(value.parse().with_context(|| bad("tokens"))?),
            "--include" => {
                a.include = Some(value.split(',').map(|x| x.trim().to_string()).collect())
            }
            "--query-noise" => a.query_noise = value.parse().with_context(|| bad("a norm"))?,
            "--recall-queries" => {
                a.recall_queries = value.parse().with_context(|| bad("a count"))?
            }
            "--embedded-efs" => a.embedded_efs = value.parse().with_context(|| bad("a count"))?,
            "--embedded-memory-mb" => {
                a.embedded_memory_mb = value.parse().with_context(|| bad("megabytes"))?
            }
            "--min-available-mb" => {
                a.min_available_mb = value.parse().with_context(|| bad("megabytes"))?
            }
            "--label" => a.label = Some(value),
            "--json" => a.json = Some(PathBuf::from(value)),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    if a.entities < 100 || a.chunks == 0 || a.dim == 0 || a.queries == 0 {
        bail!("--entities at least 100, --chunks, --dim and --queries at least 1");
    }
    if !(1..=100).contains(&a.top_k) || a.hops > 3 || !(0.0..1.0).contains(&a.skew) {
        bail!("--top-k in 1..=100, --hops in 0..=3, --skew in [0, 1)");
    }
    if a.batch == 0 || a.relation_batch == 0 || a.clients == 0 {
        bail!("--batch, --relation-batch and --clients at least 1");
    }
    // `--nodes 0`: the embedded baseline's load and checks only.
    a.nodes.retain(|&n| n > 0);
    a.recall_queries = a.recall_queries.min(a.queries);
    Ok(a)
}

fn log(msg: impl AsRef<str>) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!(
        "retrieve_bench [{:02}:{:02}:{:02}]: {}",
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

/// Resident memory of a process in MB (from /proc).
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).round())
}

fn mem_available_mb() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).round())
}

// ------------------------------------------------------------------------------------------------
// Deterministic data

/// SplitMix64 (as graph_bench).
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
    /// Standard normal (Box-Muller).
    fn gauss(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Rank in `0..n` from a bounded power law with density ∝ x^-skew on [1, n+1].
fn power_law(rng: &mut Rng, n: usize, skew: f64) -> usize {
    let e = 1.0 - skew;
    let top = ((n + 1) as f64).powf(e) - 1.0;
    let x = (1.0 + rng.unit() * top).powf(1.0 / e);
    (x as usize).saturating_sub(1).min(n - 1)
}

fn permutation(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
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
    embedding: Vec<f32>,
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
    embedding: Vec<f32>,
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

struct Graph {
    entities: Vec<Entity>,
    relations: Vec<Relation>,
    chunks: Vec<Chunk>,
    communities: Vec<Community>,
    /// Cluster (level-0 community) of each entity.
    cluster: Vec<usize>,
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
/// Words of the general vocabulary, of names, and topic words per cluster.
const VOCAB: usize = 5000;
const NAMES: usize = 20_000;
const TOPIC_WORDS: usize = 30;

/// `n` distinct made-up words of `lo..=hi` syllables.
fn vocabulary(rng: &mut Rng, n: usize, lo: usize, hi: usize) -> Vec<String> {
    let mut seen = HashSet::new();
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

/// `lo..=hi` words, each a topic word with probability 1/2, else a word of the vocabulary
/// (frequent words more likely).
fn text(rng: &mut Rng, vocab: &[String], topic: &[usize], lo: usize, hi: usize) -> String {
    let n = rng.range(lo, hi);
    let mut s = String::with_capacity(n * 9);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        let w = if rng.below(2) == 0 {
            topic[rng.below(topic.len())]
        } else {
            power_law(rng, vocab.len(), 0.7)
        };
        s.push_str(&vocab[w]);
    }
    s
}

fn normalize(v: &mut [f64]) {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// Unit vector, rounded to 1e-4 (short JSON; both systems store exactly these f32 values).
fn quantize(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| ((x * 1e4).round() / 1e4) as f32).collect()
}

/// `centre` plus gaussian noise of expected norm `noise`, normalised.
fn around(rng: &mut Rng, centre: &[f64], noise: f64) -> Vec<f64> {
    let s = noise / (centre.len() as f64).sqrt();
    let mut v: Vec<f64> = centre.iter().map(|c| c + s * rng.gauss()).collect();
    normalize(&mut v);
    v
}

fn generate(a: &Args) -> Graph {
    let mut rng = Rng(a.seed);
    let vocab = vocabulary(&mut rng, VOCAB, 2, 3);
    let names: Vec<String> = vocabulary(&mut rng, NAMES, 3, 4)
        .into_iter()
        .map(|w| w.to_uppercase())
        .collect();
    let n0 = (a.entities / 400).max(20);
    let n1 = n0.div_ceil(10);
    let centres: Vec<Vec<f64>> = (0..n0)
        .map(|_| {
            let mut c: Vec<f64> = (0..a.dim).map(|_| rng.gauss()).collect();
            normalize(&mut c);
            c
        })
        .collect();
    let topics: Vec<Vec<usize>> = (0..n0)
        .map(|_| {
            (0..TOPIC_WORDS)
                .map(|_| power_law(&mut rng, VOCAB, 0.3))
                .collect()
        })
        .collect();
    // Chunks: a cluster each.
    let chunk_cluster: Vec<usize> = (0..a.chunks).map(|_| rng.below(n0)).collect();
    let mut chunks: Vec<Chunk> = (0..a.chunks)
        .map(|i| {
            let c = chunk_cluster[i];
            let text = text(&mut rng, &vocab, &topics[c], 60, 120);
            let words = text.split(' ').count();
            Chunk {
                id: format!("tu-{i}"),
                n_tokens: (words as f64 * 1.3).round() as i64,
                text,
                document_id: format!("doc-{}", i / 10),
                entity_ids: vec![],
                embedding: quantize(&around(&mut rng, &centres[c], 1.0)),
            }
        })
        .collect();
    let cluster: Vec<usize> = (0..a.entities).map(|_| rng.below(n0)).collect();
    let mut members: Vec<Vec<usize>> = vec![vec![]; n0];
    for (i, &c) in cluster.iter().enumerate() {
        members[c].push(i);
    }
    let mut entities: Vec<Entity> = (0..a.entities)
        .map(|i| {
            let c = cluster[i];
            let mut text_unit_ids: Vec<String> = (0..rng.range(1, 4))
                .map(|_| format!("tu-{}", rng.below(a.chunks)))
                .collect();
            text_unit_ids.sort();
            text_unit_ids.dedup();
            for t in &text_unit_ids {
                let k: usize = t[3..].parse().expect("chunk index");
                chunks[k].entity_ids.push(format!("ent-{i}"));
            }
            Entity {
                id: format!("ent-{i}"),
                title: format!("{} {}", names[rng.below(NAMES)], names[rng.below(NAMES)]),
                kind: TYPES[rng.below(TYPES.len())].to_string(),
                description: text(&mut rng, &vocab, &topics[c], 12, 30),
                frequency: text_unit_ids.len() as i64,
                text_unit_ids,
                degree: 0,
                embedding: quantize(&around(&mut rng, &centres[c], 1.0)),
            }
        })
        .collect();
    let sources = permutation(&mut rng, a.entities);
    let targets = permutation(&mut rng, a.entities);
    let mut degree = vec![0i64; a.entities];
    let relations: Vec<Relation> = (0..a.relations)
        .map(|j| {
            let s = sources[power_law(&mut rng, a.entities, a.skew)];
            let mut t = if rng.below(2) == 0 {
                let m = &members[cluster[s]];
                m[rng.below(m.len())]
            } else {
                targets[power_law(&mut rng, a.entities, a.skew)]
            };
            while t == s {
                t = rng.below(a.entities);
            }
            degree[s] += 1;
            degree[t] += 1;
            Relation {
                id: format!("rel-{j}"),
                source: entities[s].id.clone(),
                target: entities[t].id.clone(),
                description: text(&mut rng, &vocab, &topics[cluster[s]], 5, 12),
                weight: (1 + rng.below(10)) as f64,
                text_unit_ids: vec![format!("tu-{}", rng.below(a.chunks))],
            }
        })
        .collect();
    for (e, d) in entities.iter_mut().zip(degree) {
        e.degree = d;
    }
    let mut communities = Vec::with_capacity(n0 + n1);
    for c in 0..n0 {
        let topic = &topics[c];
        communities.push(Community {
            id: format!("comm-0-{c}"),
            level: 0,
            parent: format!("comm-1-{}", c % n1),
            title: format!("Community {c} {} and {}", vocab[topic[0]], vocab[topic[1]]),
            entity_ids: members[c].iter().map(|&i| entities[i].id.clone()).collect(),
            summary: text(&mut rng, &vocab, topic, 20, 40),
            full_content: text(&mut rng, &vocab, topic, 150, 300),
            rank: (1 + rng.below(100)) as f64 / 10.0,
        });
    }
    for (p, topic) in topics.iter().enumerate().take(n1) {
        communities.push(Community {
            id: format!("comm-1-{p}"),
            level: 1,
            parent: String::new(),
            title: format!("Community group {p} {}", vocab[topic[2]]),
            entity_ids: (p..n0)
                .step_by(n1)
                .flat_map(|c| members[c].iter().map(|&i| entities[i].id.clone()))
                .collect(),
            summary: text(&mut rng, &vocab, topic, 20, 40),
            full_content: text(&mut rng, &vocab, topic, 200, 400),
            rank: (1 + rng.below(100)) as f64 / 10.0,
        });
    }
    Graph {
        entities,
        relations,
        chunks,
        communities,
        cluster,
    }
}

// The placement of src/graph/partition.rs (FNV-1a-64 mod shards), to check /cluster/shards.
fn shard_of(id: &str, shards: u32) -> u32 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h % u64::from(shards.max(1))) as u32
}

// ------------------------------------------------------------------------------------------------
// Queries

/// A `/retrieve` request (serialised directly: embeddings as short f32 decimals).
#[derive(Serialize, Default)]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<&'a [f32]>,
    mode: &'static str,
    top_k: usize,
    hops: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    include: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_partial: Option<bool>,
}

struct Query {
    /// The entity it was made from.
    source: usize,
    text: String,
    embedding: Vec<f32>,
    /// The timed request's body.
    body: Vec<u8>,
}

fn make_queries(a: &Args, g: &Graph) -> Result<Vec<Query>> {
    let mut rng = Rng(a.seed ^ 0x5eed_9e7e);
    (0..a.warmup + a.queries)
        .map(|_| {
            let i = rng.below(g.entities.len());
            let e = &g.entities[i];
            let title: Vec<&str> = e.title.split(' ').collect();
            let desc: Vec<&str> = e.description.split(' ').collect();
            let text = format!(
                "{} {} {}",
                title[rng.below(title.len())].to_lowercase(),
                desc[rng.below(desc.len())],
                desc[rng.below(desc.len())]
            );
            let centre: Vec<f64> = e.embedding.iter().map(|&x| f64::from(x)).collect();
            let embedding = quantize(&around(&mut rng, &centre, a.query_noise));
            let body = serde_json::to_vec(&Request {
                query: Some(&text),
                embedding: Some(&embedding),
                mode: "local",
                top_k: a.top_k,
                hops: a.hops,
                max_tokens: a.max_tokens,
                include: a.include.as_deref(),
                allow_partial: None,
            })?;
            Ok(Query {
                source: i,
                body,
                text,
                embedding,
            })
        })
        .collect()
}

/// Exact top `k` entity ids by cosine similarity (brute force over the stored vectors).
fn exact_top(g: &Graph, norms: &[f32], q: &[f32], k: usize) -> Vec<String> {
    let qn = q.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut scored: Vec<(f32, usize)> = g
        .entities
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let dot: f32 = e.embedding.iter().zip(q).map(|(a, b)| a * b).sum();
            (dot / (norms[i] * qn), i)
        })
        .collect();
    scored.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
    scored.truncate(k);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .map(|(_, i)| g.entities[i].id.clone())
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Embedded Kuzu (the baseline)

fn schema(dim: usize) -> Vec<String> {
    vec![
        "CREATE NODE TABLE Entity(id STRING, title STRING, type STRING, description STRING, \
         text_unit_ids STRING[], frequency INT64, degree INT64, PRIMARY KEY(id))"
            .into(),
        format!("CREATE NODE TABLE EntityVec(id STRING, embedding FLOAT[{dim}], PRIMARY KEY(id))"),
        "CREATE REL TABLE RELATED(FROM Entity TO Entity, id STRING, description STRING, \
         weight DOUBLE, text_unit_ids STRING[], source STRING, target STRING)"
            .into(),
        "CREATE NODE TABLE Chunk(id STRING, text STRING, n_tokens INT64, document_id STRING, \
         entity_ids STRING[], PRIMARY KEY(id))"
            .into(),
        "CREATE NODE TABLE Community(id STRING, level INT64, parent STRING, title STRING, \
         entity_ids STRING[], summary STRING, full_content STRING, rank DOUBLE, PRIMARY KEY(id))"
            .into(),
    ]
}

const INDEX_DDL: [(&str, &str); 4] = [
    (
        "entity_vec (HNSW)",
        "CALL CREATE_VECTOR_INDEX('EntityVec', 'entity_vec', 'embedding', metric := 'cosine', mu := 16, ml := 32, efc := 100)",
    ),
    (
        "entity_text (FTS)",
        "CALL CREATE_FTS_INDEX('Entity', 'entity_text', ['title', 'description'])",
    ),
    (
        "entity_title (FTS)",
        "CALL CREATE_FTS_INDEX('Entity', 'entity_title', ['title'])",
    ),
    (
        "chunk_text (FTS)",
        "CALL CREATE_FTS_INDEX('Chunk', 'chunk_text', ['text'])",
    ),
];

fn kuzu_threads() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
        .min(2)
}

fn open_embedded(path: &Path, memory_mb: u64) -> Result<Database> {
    let config = SystemConfig::default()
        .buffer_pool_size(memory_mb << 20)
        .max_num_threads(kuzu_threads())
        .max_db_size(1 << 37)
        .enable_compression(true);
    Database::new(path, config).with_context(|| format!("cannot open {}", path.display()))
}

fn csv_list<T: std::fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(|x| x.to_string()).collect();
    format!("\"[{}]\"", parts.join(","))
}

fn csv_file(
    dir: &Path,
    name: &str,
    header: &str,
    rows: impl Iterator<Item = String>,
) -> Result<PathBuf> {
    let path = dir.join(name);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    writeln!(w, "{header}")?;
    for row in rows {
        writeln!(w, "{row}")?;
    }
    w.flush()?;
    Ok(path)
}

/// Writes the CSVs (generated text has no commas or quotes), COPYs them and builds the indexes.
fn load_embedded(a: &Args, g: &Graph, dir: &Path) -> Result<(PathBuf, Value)> {
    let t = Instant::now();
    let files = [
        (
            "Entity",
            csv_file(
                dir,
                "entities.csv",
                "id,title,type,description,text_unit_ids,frequency,degree",
                g.entities.iter().map(|e| {
                    format!(
                        "{},{},{},{},{},{},{}",
                        e.id,
                        e.title,
                        e.kind,
                        e.description,
                        csv_list(&e.text_unit_ids),
                        e.frequency,
                        e.degree
                    )
                }),
            )?,
        ),
        (
            "RELATED",
            csv_file(
                dir,
                "relations.csv",
                "from,to,id,description,weight,text_unit_ids,source,target",
                g.relations.iter().map(|r| {
                    format!(
                        "{},{},{},{},{},{},{},{}",
                        r.source,
                        r.target,
                        r.id,
                        r.description,
                        r.weight,
                        csv_list(&r.text_unit_ids),
                        r.source,
                        r.target
                    )
                }),
            )?,
        ),
        (
            "Chunk",
            csv_file(
                dir,
                "chunks.csv",
                "id,text,n_tokens,document_id,entity_ids",
                g.chunks.iter().map(|c| {
                    format!(
                        "{},{},{},{},{}",
                        c.id,
                        c.text,
                        c.n_tokens,
                        c.document_id,
                        csv_list(&c.entity_ids)
                    )
                }),
            )?,
        ),
        (
            "Community",
            csv_file(
                dir,
                "communities.csv",
                "id,level,parent,title,entity_ids,summary,full_content,rank",
                g.communities.iter().map(|c| {
                    format!(
                        "{},{},{},{},{},{},{},{}",
                        c.id,
                        c.level,
                        c.parent,
                        c.title,
                        csv_list(&c.entity_ids),
                        c.summary,
                        c.full_content,
                        c.rank
                    )
                }),
            )?,
        ),
    ];
    let csv_s = t.elapsed().as_secs_f64();
    let path = dir.join("embedded.kz");
    let db = open_embedded(&path, a.embedded_memory_mb)?;
    let conn = Connection::new(&db)?;
    for ddl in schema(a.dim) {
        conn.query(&ddl).with_context(|| format!("schema: {ddl}"))?;
    }
    let mut steps = serde_json::Map::new();
    let t0 = Instant::now();
    for (table, file) in &files {
        let t = Instant::now();
        conn.query(&format!(
            "COPY {table} FROM '{}' (HEADER=true)",
            file.display()
        ))
        .with_context(|| format!("COPY {table}"))?;
        let s = t.elapsed().as_secs_f64();
        log(format!("  embedded: COPY {table} {s:.1} s"));
        steps.insert(format!("copy {table} s"), json!(s));
        let _ = std::fs::remove_file(file);
    }
    // Vectors are not COPYed from CSV: Kuzu 0.11 parses FLOAT[384] from CSV very slowly (5k rows in
    // 0.3 s, 100k rows not done after 7 minutes). Batches of parameter rows instead, the way
    // torua's shards insert them.
    let t = Instant::now();
    let mut stmt = conn.prepare(&format!(
        "COPY EntityVec FROM (UNWIND $rows AS r RETURN r.id, CAST(r.embedding AS FLOAT[{}]))",
        a.dim
    ))?;
    let fields = [
        ("id", LogicalType::String),
        (
            "embedding",
            LogicalType::List {
                child_type: Box::new(LogicalType::Float),
            },
        ),
    ];
    for batch in g.entities.chunks(5000) {
        let rows = batch
            .iter()
            .map(|e| vec![string(&e.id), float_list(&e.embedding)])
            .collect();
        conn.execute(&mut stmt, vec![("rows", struct_rows(&fields, rows))])
            .context("COPY EntityVec")?;
    }
    let s = t.elapsed().as_secs_f64();
    log(format!(
        "  embedded: COPY EntityVec (parameter batches) {s:.1} s"
    ));
    steps.insert("copy EntityVec s".into(), json!(s));
    for (name, ddl) in INDEX_DDL {
        let t = Instant::now();
        // Index DDL expands to several statements, which Kuzu cannot prepare.
        conn.query(ddl).with_context(|| format!("index: {ddl}"))?;
        let s = t.elapsed().as_secs_f64();
        log(format!("  embedded: index {name} {s:.1} s"));
        steps.insert(format!("index {name} s"), json!(s));
    }
    let total = t0.elapsed().as_secs_f64();
    let counts: Vec<u64> = [
        "MATCH (e:Entity) RETURN count(*)",
        "MATCH ()-[r:RELATED]->() RETURN count(*)",
        "MATCH (c:Chunk) RETURN count(*)",
        "MATCH (c:Community) RETURN count(*)",
    ]
    .iter()
    .map(|q| -> Result<u64> {
        let mut r = conn.query(q)?;
        Ok(match r.next().as_ref().and_then(|row| row.first()) {
            Some(KValue::Int64(n)) => *n as u64,
            _ => 0,
        })
    })
    .collect::<Result<_>>()?;
    let expected = [
        g.entities.len(),
        g.relations.len(),
        g.chunks.len(),
        g.communities.len(),
    ];
    if counts.iter().zip(expected).any(|(&c, e)| c as usize != e) {
        bail!("embedded database holds {counts:?} (entities, relations, chunks, communities); expected {expected:?}");
    }
    drop(conn);
    drop(db);
    let size = dir_size(&path);
    Ok((
        path,
        json!({"csv_write_s": csv_s, "load_and_index_s": total, "steps": steps, "size_bytes": size}),
    ))
}

fn dir_size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

fn kstring(v: &KValue) -> String {
    match v {
        KValue::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn kf64(v: &KValue) -> f64 {
    match v {
        KValue::Double(x) => *x,
        KValue::Float(x) => f64::from(*x),
        KValue::Int64(x) => *x as f64,
        _ => f64::NAN,
    }
}

fn ki64(v: &KValue) -> i64 {
    match v {
        KValue::Int64(x) => *x,
        KValue::Int32(x) => i64::from(*x),
        KValue::UInt64(x) => *x as i64,
        _ => 0,
    }
}

fn kstrings(v: &KValue) -> Vec<String> {
    match v {
        KValue::List(_, items) | KValue::Array(_, items) => items.iter().map(kstring).collect(),
        _ => vec![],
    }
}

fn str_list(v: &[String]) -> KValue {
    KValue::List(LogicalType::String, v.iter().map(|x| string(x)).collect())
}

fn float_list(v: &[f32]) -> KValue {
    KValue::List(
        LogicalType::Float,
        v.iter().map(|&x| KValue::Float(x)).collect(),
    )
}

const RRF_K: f64 = 60.0;

/// A statement with a per-id form and an `UNWIND $ids` form; which one runs depends on the number
/// of ids and the costs measured by [`Embedded::calibrate`].
struct Lookup {
    one: PreparedStatement,
    set: PreparedStatement,
    /// (µs per id of the per-id form, µs of one set statement).
    cost: (f64, f64),
}

const Q_OUT: &str = "MATCH (a:Entity {id: $id})-[r:RELATED]->() \
                     RETURN r.source, r.target, r.id, r.description, r.weight";
const Q_IN: &str = "MATCH (b:Entity {id: $id})<-[r:RELATED]-() \
                    RETURN r.source, r.target, r.id, r.description, r.weight";
const Q_PROPS_ONE: &str = "MATCH (e:Entity {id: $id}) \
                           RETURN e.id, e.title, e.type, e.description, e.degree, e.text_unit_ids";
const Q_PROPS_SET: &str = "UNWIND $ids AS i MATCH (e:Entity {id: i}) \
                           RETURN e.id, e.title, e.type, e.description, e.degree, e.text_unit_ids";
const Q_CHUNK_ONE: &str =
    "MATCH (c:Chunk {id: $id}) RETURN c.id, c.text, c.n_tokens, c.document_id";
const Q_CHUNK_SET: &str = "UNWIND $ids AS i MATCH (c:Chunk {id: i}) \
                           RETURN c.id, c.text, c.n_tokens, c.document_id";
/// Local search's reports: communities holding any of `$ids`, by matches, rank, id. (A parameter
/// inside a list lambda, `list_filter(c.entity_ids, x -> list_contains($ids, x))`, trips an
/// assertion in Kuzu 0.11.3.) The second form is torua's; the calibration picks the cheaper.
const Q_COMMUNITIES: [&str; 2] = [
    "MATCH (c:Community) UNWIND c.entity_ids AS e WITH c, e WHERE list_contains($ids, e) \
     WITH c, count(*) AS m \
     RETURN c.id, c.title, c.level, c.rank, c.full_content, c.summary, m \
     ORDER BY m DESC, c.rank DESC, c.id LIMIT 200",
    "UNWIND $ids AS i MATCH (c:Community) WHERE list_contains(c.entity_ids, i) \
     WITH c, count(*) AS m \
     RETURN c.id, c.title, c.level, c.rank, c.full_content, c.summary, m \
     ORDER BY m DESC, c.rank DESC, c.id LIMIT 200",
];

/// A relation found by the expansion: source, target, description, weight.
type Rel = (String, String, String, f64);

struct Embedded<'c, 'db> {
    conn: &'c Connection<'db>,
    vector: PreparedStatement,
    text: PreparedStatement,
    title: PreparedStatement,
    out: PreparedStatement,
    inc: PreparedStatement,
    props: Lookup,
    chunks: Lookup,
    communities: [PreparedStatement; 2],
    /// Which of [`Q_COMMUNITIES`] runs.
    community_form: usize,
    /// Whether reports are asked for (`--include`).
    reports: bool,
    /// Statements run (per-id, set) since the start.
    executed: (usize, usize),
}

/// What one embedded retrieval found, and the time of each step (µs).
#[derive(Default)]
struct EmbeddedAnswer {
    seeds: Vec<String>,
    vector_ids: Vec<String>,
    text_ids: Vec<String>,
    entities: usize,
    relations: usize,
    text_units: usize,
    reports: usize,
    stages: Vec<(&'static str, f64)>,
    total_us: f64,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl<'c, 'db> Embedded<'c, 'db> {
    fn new(conn: &'c Connection<'db>, k: usize, efs: usize) -> Result<Self> {
        let prep = |q: &str| conn.prepare(q).with_context(|| format!("prepare {q}"));
        Ok(Embedded {
            conn,
            vector: prep(&format!(
                "CALL QUERY_VECTOR_INDEX('EntityVec', 'entity_vec', $q, {k}, efs := {efs}) RETURN node.id, distance"
            ))?,
            text: prep(&format!(
                "CALL QUERY_FTS_INDEX('Entity', 'entity_text', $text, top := {k}) RETURN node.id, score"
            ))?,
            title: prep(&format!(
                "CALL QUERY_FTS_INDEX('Entity', 'entity_title', $text, top := {k}) RETURN node.id, score"
            ))?,
            out: prep(Q_OUT)?,
            inc: prep(Q_IN)?,
            props: Lookup {
                one: prep(Q_PROPS_ONE)?,
                set: prep(Q_PROPS_SET)?,
                cost: (1.0, f64::INFINITY),
            },
            chunks: Lookup {
                one: prep(Q_CHUNK_ONE)?,
                set: prep(Q_CHUNK_SET)?,
                cost: (1.0, f64::INFINITY),
            },
            communities: [prep(Q_COMMUNITIES[0])?, prep(Q_COMMUNITIES[1])?],
            community_form: 0,
            reports: true,
            executed: (0, 0),
        })
    }

    /// Measures both forms of the property and chunk lookups (medians of three rounds).
    fn calibrate(
        &mut self,
        entity_ids: &[String],
        chunk_ids: &[String],
        seed_ids: &[String],
    ) -> Result<Value> {
        let conn = self.conn;
        let mut out = json!({});
        for (name, lookup, ids) in [
            ("entity properties", &mut self.props, entity_ids),
            ("chunks", &mut self.chunks, chunk_ids),
        ] {
            let (mut one, mut set) = (Vec::new(), Vec::new());
            for round in 0..4 {
                let t = Instant::now();
                for id in ids {
                    let _: Vec<Vec<KValue>> = conn
                        .execute(&mut lookup.one, vec![("id", string(id))])?
                        .collect();
                }
                let per_id = us(t.elapsed()) / ids.len() as f64;
                let t = Instant::now();
                let _: Vec<Vec<KValue>> = conn
                    .execute(&mut lookup.set, vec![("ids", str_list(ids))])?
                    .collect();
                if round > 0 {
                    one.push(per_id);
                    set.push(us(t.elapsed()));
                }
            }
            one.sort_by(f64::total_cmp);
            set.sort_by(f64::total_cmp);
            lookup.cost = (one[1], set[1]);
            out[name] = json!({"per_id_us": one[1], "set_us": set[1], "sample_ids": ids.len()});
        }
        let mut forms = vec![];
        for stmt in &mut self.communities {
            let mut t_us = vec![];
            for _ in 0..3 {
                let t = Instant::now();
                let _: Vec<Vec<KValue>> = conn
                    .execute(stmt, vec![("ids", str_list(seed_ids))])?
                    .collect();
                t_us.push(us(t.elapsed()));
            }
            t_us.sort_by(f64::total_cmp);
            forms.push(t_us[1]);
        }
        self.community_form = usize::from(forms[1] < forms[0]);
        let chosen = ["scan_unwind", "unwind_ids"][self.community_form];
        out["community reports"] =
            json!({"scan_unwind_us": forms[0], "unwind_ids_us": forms[1], "chosen": chosen});
        Ok(out)
    }

    fn lookup(&mut self, which: usize, ids: &[String]) -> Result<Vec<Vec<KValue>>> {
        let lookup = if which == 0 {
            &mut self.props
        } else {
            &mut self.chunks
        };
        if ids.len() as f64 * lookup.cost.0 > lookup.cost.1 {
            self.executed.1 += 1;
            Ok(self
                .conn
                .execute(&mut lookup.set, vec![("ids", str_list(ids))])?
                .collect())
        } else {
            self.executed.0 += ids.len();
            let mut rows = Vec::new();
            for id in ids {
                rows.extend(
                    self.conn
                        .execute(&mut lookup.one, vec![("id", string(id))])?,
                );
            }
            Ok(rows)
        }
    }

    fn vector_top(&mut self, q: &[f32]) -> Result<Vec<String>> {
        let rows: Vec<Vec<KValue>> = self
            .conn
            .execute(&mut self.vector, vec![("q", float_list(q))])?
            .collect();
        let mut hits: Vec<(f64, String)> =
            rows.iter().map(|r| (kf64(&r[1]), kstring(&r[0]))).collect();
        hits.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        Ok(hits.into_iter().map(|h| h.1).collect())
    }

    /// BM25 top k over title+description (or the title alone).
    fn text_top(&mut self, text: &str, title_only: bool) -> Result<Vec<String>> {
        let stmt = if title_only {
            &mut self.title
        } else {
            &mut self.text
        };
        let rows: Vec<Vec<KValue>> = self
            .conn
            .execute(stmt, vec![("text", string(text))])?
            .collect();
        let mut hits: Vec<(f64, String)> =
            rows.iter().map(|r| (kf64(&r[1]), kstring(&r[0]))).collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Ok(hits.into_iter().map(|h| h.1).collect())
    }

    /// Local search's steps for one query.
    fn retrieve(&mut self, q: &Query, k: usize, hops: u32) -> Result<EmbeddedAnswer> {
        let mut ans = EmbeddedAnswer::default();
        let start = Instant::now();
        // 1. Seeds.
        let t = Instant::now();
        ans.vector_ids = self.vector_top(&q.embedding)?;
        let title_ids = self.text_top(&q.text, true)?;
        ans.text_ids = self.text_top(&q.text, false)?;
        let mut fused: HashMap<&str, f64> = HashMap::new();
        for list in [&ans.vector_ids, &title_ids, &ans.text_ids] {
            for (rank, id) in list.iter().enumerate() {
                *fused.entry(id).or_default() += 1.0 / (RRF_K + (rank + 1) as f64);
            }
        }
        let mut seeds: Vec<(&str, f64)> = fused.into_iter().collect();
        seeds.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        seeds.truncate(k);
        let seeds: Vec<(String, f64)> =
            seeds.into_iter().map(|(i, s)| (i.to_string(), s)).collect();
        ans.stages.push(("seeds", us(t.elapsed())));

        // 2. Expansion, relations and entities ranked.
        let t = Instant::now();
        let mut hop: HashMap<String, u32> = seeds.iter().map(|s| (s.0.clone(), 0)).collect();
        let mut frontier: Vec<String> = seeds.iter().map(|s| s.0.clone()).collect();
        let mut rels: HashMap<String, Rel> = HashMap::new();
        for h in 1..=hops {
            let mut next = Vec::new();
            for id in &frontier {
                for stmt in [&mut self.out, &mut self.inc] {
                    self.executed.0 += 1;
                    for r in self.conn.execute(stmt, vec![("id", string(id))])? {
                        let (s, tg) = (kstring(&r[0]), kstring(&r[1]));
                        for end in [&s, &tg] {
                            if !hop.contains_key(end) {
                                hop.insert(end.clone(), h);
                                next.push(end.clone());
                            }
                        }
                        rels.entry(kstring(&r[2]))
                            .or_insert((s, tg, kstring(&r[3]), kf64(&r[4])));
                    }
                }
            }
            frontier = next;
        }
        let all: Vec<String> = hop.keys().cloned().collect();
        // id -> (degree, text_unit_ids, title+description length)
        let mut props: HashMap<String, (i64, Vec<String>, usize)> = HashMap::new();
        for r in self.lookup(0, &all)? {
            let len = kstring(&r[1]).len() + kstring(&r[2]).len() + kstring(&r[3]).len();
            props.insert(kstring(&r[0]), (ki64(&r[4]), kstrings(&r[5]), len));
        }
        let degree = |id: &str| props.get(id).map_or(0, |p| p.0);
        let is_seed: HashSet<&str> = seeds.iter().map(|s| s.0.as_str()).collect();
        let mut relations: Vec<(&String, &Rel)> = rels.iter().collect();
        relations.sort_by(|a, b| {
            let both = |r: &Rel| is_seed.contains(r.0.as_str()) && is_seed.contains(r.1.as_str());
            both(b.1)
                .cmp(&both(a.1))
                .then(b.1 .3.total_cmp(&a.1 .3))
                .then((degree(&b.1 .0) + degree(&b.1 .1)).cmp(&(degree(&a.1 .0) + degree(&a.1 .1))))
                .then(a.0.cmp(b.0))
        });
        let seed_rank: HashMap<&str, usize> = seeds
            .iter()
            .enumerate()
            .map(|(i, s)| (s.0.as_str(), i))
            .collect();
        let mut entities: Vec<&String> = hop.keys().collect();
        entities.sort_by(|a, b| {
            let (ha, hb) = (hop[*a], hop[*b]);
            ha.cmp(&hb)
                .then(
                    seed_rank
                        .get(a.as_str())
                        .unwrap_or(&0)
                        .cmp(seed_rank.get(b.as_str()).unwrap_or(&0)),
                )
                .then(degree(b).cmp(&degree(a)))
                .then(a.cmp(b))
        });
        ans.entities = entities.len();
        ans.relations = relations.len();
        ans.stages.push(("expand", us(t.elapsed())));

        // 3. Text units of the seeds.
        let t = Instant::now();
        let mut tu: HashMap<&str, f64> = HashMap::new();
        for (id, score) in &seeds {
            if let Some(p) = props.get(id) {
                for t in &p.1 {
                    *tu.entry(t).or_default() += score;
                }
            }
        }
        let mut ranked: Vec<(&str, f64)> = tu.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let ids: Vec<String> = ranked.iter().map(|r| r.0.to_string()).collect();
        let rows = if ids.is_empty() {
            vec![]
        } else {
            self.lookup(1, &ids)?
        };
        let found: HashMap<String, Vec<KValue>> =
            rows.into_iter().map(|r| (kstring(&r[0]), r)).collect();
        ans.text_units = ids.iter().filter(|i| found.contains_key(*i)).count();
        ans.stages.push(("text_units", us(t.elapsed())));

        // 4. Community reports.
        if self.reports {
            let t = Instant::now();
            let seed_ids: Vec<String> = seeds.iter().map(|s| s.0.clone()).collect();
            let rows: Vec<Vec<KValue>> = self
                .conn
                .execute(
                    &mut self.communities[self.community_form],
                    vec![("ids", str_list(&seed_ids))],
                )?
                .collect();
            self.executed.1 += 1;
            ans.reports = rows.len();
            ans.stages.push(("community_reports", us(t.elapsed())));
        }
        ans.total_us = us(start.elapsed());
        ans.seeds = seeds.into_iter().map(|s| s.0).collect();
        Ok(ans)
    }
}

// ------------------------------------------------------------------------------------------------
// torua: cluster, load

fn start_cluster(a: &Args, nodes: usize, replicas: usize) -> Result<TestCluster> {
    let mut env = a.env.clone();
    env.insert("TORUA_SHARDS".into(), a.shards.to_string());
    env.insert("TORUA_REPLICAS".into(), replicas.to_string());
    env.insert("TORUA_BOOTSTRAP_EXPECT".into(), nodes.to_string());
    env.insert("TORUA_MEMORY_MB".into(), a.memory_mb.to_string());
    env.insert("TORUA_MAX_SHARD_GB".into(), a.max_shard_gb.to_string());
    env.insert("TORUA_EMBEDDING_DIM".into(), a.dim.to_string());
    let options = ClusterOptions {
        env,
        log: a.log.clone(),
        start_timeout: Duration::from_secs(60),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(nodes, options)?;
    cluster
        .wait_green(Duration::from_secs(120))
        .context("the cluster did not turn green")?;
    Ok(cluster)
}

/// JSON bodies of one kind's batches, with their item counts. Serialised directly (not through
/// `serde_json::Value`, which would print every f32 as its f64 expansion).
fn bodies<T: Serialize>(items: &[T], key: &str, batch: usize) -> Result<Vec<(usize, Vec<u8>)>> {
    items
        .chunks(batch)
        .map(|c| {
            let mut body = format!("{{\"{key}\":").into_bytes();
            serde_json::to_writer(&mut body, c)?;
            body.push(b'}');
            Ok((c.len(), body))
        })
        .collect()
}

const GIVE_UP: Duration = Duration::from_secs(300);

/// POSTs one body until it is acknowledged without errors; returns the number of retries.
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
                text.chars().take(500).collect::<String>()
            );
        }
        if retries < 3 || retries % 20 == 0 {
            log(format!(
                "POST {url}: {status} {} (retrying)",
                text.chars().take(300).collect::<String>()
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

/// Sends the bodies with `clients` threads, thread k posting to node k mod n (graph_bench's
/// loader). Returns the retries; fails when a batch failed for good or the deadline passed.
fn post_all(
    what: &str,
    urls: &[String],
    bodies: &[(usize, Vec<u8>)],
    clients: usize,
    deadline: Instant,
) -> Result<usize> {
    let next = AtomicUsize::new(0);
    let retries = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let clients = clients.min(bodies.len()).max(1);
    let barrier = Barrier::new(clients);
    let total: usize = bodies.iter().map(|b| b.0).sum();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for k in 0..clients {
            let url = &urls[k % urls.len()];
            let (next, retries, done, failure, barrier) =
                (&next, &retries, &done, &failure, &barrier);
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(120))
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
                    match post_batch(&agent, url, &bodies[i].1) {
                        Ok(n) => {
                            retries.fetch_add(n, Ordering::SeqCst);
                            let before = done.fetch_add(bodies[i].0, Ordering::SeqCst);
                            let after = before + bodies[i].0;
                            if after * 10 / total.max(1) > before * 10 / total.max(1) {
                                let secs = started.elapsed().as_secs_f64();
                                log(format!(
                                    "  {what}: {after}/{total} acknowledged in {secs:.0} s ({:.0}/s)",
                                    after as f64 / secs.max(1e-9)
                                ));
                            }
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

fn cluster_rss(cluster: &TestCluster) -> Vec<Option<f64>> {
    cluster
        .nodes
        .iter()
        .map(|n| n.pid().and_then(rss_mb))
        .collect()
}

/// Fails when the machine is about to run out of memory (the machine is shared: better to stop
/// the cluster than to let the OOM killer pick).
fn memory_guard(a: &Args, cluster: &TestCluster) -> Result<()> {
    if let Some(avail) = mem_available_mb() {
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

/// Waits until no write is pending anywhere, logging progress.
fn wait_applied(a: &Args, cluster: &TestCluster, deadline: Instant) -> Result<()> {
    let mut last_log = Instant::now();
    loop {
        memory_guard(a, cluster)?;
        let answer = cluster
            .node(0)
            .get_json("/cluster/shards", Duration::from_secs(60));
        let pending = answer.as_ref().ok().map(|a| a["pending_writes"].clone());
        if pending == Some(json!(0)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("writes still pending at --max-minutes: {pending:?}");
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

/// Waits until a retrieve that may not be partial succeeds on every node (search indexes that a
/// bulk load dropped are back).
fn wait_searchable(cluster: &TestCluster, q: &Query, deadline: Instant) -> Result<()> {
    let include = ["entities".to_string()];
    let body: Value = serde_json::from_slice(&serde_json::to_vec(&Request {
        query: Some(&q.text),
        embedding: Some(&q.embedding),
        mode: "local",
        top_k: 10,
        hops: 0,
        include: Some(&include),
        allow_partial: Some(false),
        ..Request::default()
    })?)?;
    let mut last_log = Instant::now();
    for node in &cluster.nodes {
        loop {
            let (status, answer) = node.post_json("/retrieve", &body, Duration::from_secs(60))?;
            if status == 200 && answer["_shards"]["failed"] == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "retrieve on {} still fails: {status} {}",
                    node.id,
                    short(&answer.to_string(), 400)
                );
            }
            if last_log.elapsed() > Duration::from_secs(20) {
                log(format!(
                    "  not searchable yet ({}: {status} {})",
                    node.id,
                    short(&answer.to_string(), 200)
                ));
                last_log = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
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

/// Loads the graph into the cluster; returns the load record.
fn load_torua(a: &Args, cluster: &TestCluster, g: &Graph, probe: &Query) -> Result<Value> {
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.url("/graph/ingest"))
        .collect();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(a.max_minutes * 60.0);
    let mut phases = serde_json::Map::new();
    let mut retries = 0;
    let mut json_bytes = 0;
    for kind in ["entities", "chunks", "communities", "relations"] {
        let b = match kind {
            "entities" => bodies(&g.entities, kind, a.batch)?,
            "chunks" => bodies(&g.chunks, kind, a.batch)?,
            "communities" => bodies(&g.communities, kind, 20)?,
            _ => bodies(&g.relations, kind, a.relation_batch)?,
        };
        let bytes: usize = b.iter().map(|x| x.1.len()).sum();
        json_bytes += bytes;
        log(format!(
            "  {kind}: {} bodies, {:.0} MB of JSON",
            b.len(),
            bytes as f64 / 1e6
        ));
        let t = Instant::now();
        retries += post_all(kind, &urls, &b, a.clients, deadline)?;
        let s = t.elapsed().as_secs_f64();
        log(format!("  {kind} acknowledged in {s:.1} s"));
        phases.insert(format!("{kind}_acknowledged_s"), json!(s));
    }
    let acknowledged = t0.elapsed().as_secs_f64();
    // The request bodies are gone: give their memory back (the machine is tight during the load).
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    wait_applied(a, cluster, deadline)?;
    let applied = t0.elapsed().as_secs_f64();
    log(format!(
        "  acknowledged after {acknowledged:.1} s, applied after {applied:.1} s"
    ));
    wait_searchable(cluster, probe, deadline)?;
    let searchable = t0.elapsed().as_secs_f64();
    log(format!("  searchable after {searchable:.1} s"));
    let verify = verify_shards(cluster, g, a.shards)?;
    let rss = cluster_rss(cluster);
    log(format!(
        "  node RSS MB after the load {rss:?}; available MB {:?}",
        mem_available_mb()
    ));
    Ok(json!({
        "acknowledged_s": acknowledged, "applied_s": applied, "searchable_s": searchable,
        "phases": phases, "retries": retries, "json_bytes": json_bytes,
        "items_per_s": (g.entities.len() + g.chunks.len() + g.communities.len() + g.relations.len()) as f64 / searchable,
        "rss_mb_after_load": rss, "verify": verify,
    }))
}

/// Checks /cluster/shards against the data: each item once among the primaries, each relation
/// once per endpoint shard, in-sync copies agreeing.
fn verify_shards(cluster: &TestCluster, g: &Graph, shards: u32) -> Result<Value> {
    let expected_relations: u64 = g
        .relations
        .iter()
        .map(|r| 1 + u64::from(shard_of(&r.source, shards) != shard_of(&r.target, shards)))
        .sum();
    let answer = cluster
        .node(0)
        .get_json("/cluster/shards", Duration::from_secs(120))?;
    let copies = answer["copies"]
        .as_array()
        .context("no copies in /cluster/shards")?;
    let keys = ["entities", "relations", "chunks", "communities"];
    let mut sums = [0u64; 4];
    let mut per_shard: BTreeMap<u64, Vec<Vec<u64>>> = BTreeMap::new();
    for c in copies {
        let v: Vec<u64> = keys
            .iter()
            .map(|k| c[k].as_u64().unwrap_or(u64::MAX))
            .collect();
        if c["primary"] == true {
            for (s, x) in sums.iter_mut().zip(&v) {
                *s = s.saturating_add(*x);
            }
        }
        if c["in_sync"] == true {
            per_shard
                .entry(c["shard"].as_u64().unwrap_or(0))
                .or_default()
                .push(v);
        }
    }
    let disagree: Vec<u64> = per_shard
        .iter()
        .filter(|(_, v)| v.iter().any(|x| *x != v[0]))
        .map(|(s, _)| *s)
        .collect();
    let expected = [
        g.entities.len() as u64,
        expected_relations,
        g.chunks.len() as u64,
        g.communities.len() as u64,
    ];
    let ok = sums == expected && disagree.is_empty();
    let size: u64 = copies.iter().filter_map(|c| c["size_bytes"].as_u64()).sum();
    let result = json!({"ok": ok, "primaries": sums, "expected": expected,
                        "in_sync_copies_disagree_on_shards": disagree, "copies": copies.len(),
                        "size_bytes_all_copies": size});
    if !ok {
        log(format!("VERIFICATION FAILED: {result}"));
    }
    Ok(result)
}

// ------------------------------------------------------------------------------------------------
// Measurement

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

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn overlap(a: &[String], b: &[String]) -> f64 {
    if b.is_empty() {
        return f64::NAN;
    }
    let set: HashSet<&String> = a.iter().collect();
    b.iter().filter(|x| set.contains(x)).count() as f64 / b.len() as f64
}

/// POST a prepared body; (µs until the whole answer is read, status, body).
fn post_timed(agent: &ureq::Agent, url: &str, body: &[u8]) -> Result<(f64, u16, Vec<u8>)> {
    let t = Instant::now();
    let resp = match agent
        .post(url)
        .set("content-type", "application/json")
        .send_bytes(body)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => bail!("POST {url}: {e}"),
    };
    let status = resp.status();
    let mut buf = Vec::with_capacity(1 << 16);
    resp.into_reader()
        .read_to_end(&mut buf)
        .with_context(|| format!("POST {url}: reading the answer"))?;
    Ok((us(t.elapsed()), status, buf))
}

fn ids_of(v: &Value, pred: impl Fn(&Value) -> bool) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|x| pred(x))
                .filter_map(|x| x["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The timed queries on one cluster, interleaved with the embedded baseline.
fn measure(
    a: &Args,
    cluster: &TestCluster,
    db_path: &Path,
    g: &Graph,
    queries: &[Query],
    exact: &[Vec<String>],
) -> Result<Value> {
    let db = open_embedded(db_path, a.embedded_memory_mb)?;
    let conn = Connection::new(&db)?;
    let mut emb = Embedded::new(&conn, a.top_k, a.embedded_efs)?;
    emb.reports = a
        .include
        .as_ref()
        .is_none_or(|i| i.iter().any(|x| x == "community_reports"));
    // Calibration sample: neighbours-sized sets of entity ids, a seed-sized set of chunk ids.
    let mut rng = Rng(a.seed ^ 0xca1);
    let sample_e: Vec<String> = (0..200)
        .map(|_| g.entities[rng.below(g.entities.len())].id.clone())
        .collect();
    let sample_c: Vec<String> = (0..25)
        .map(|_| g.chunks[rng.below(g.chunks.len())].id.clone())
        .collect();
    let calibration = emb.calibrate(&sample_e, &sample_c, &sample_e[..a.top_k.min(200)])?;
    let load_at_start = load_1m();
    log(format!("  embedded lookup costs: {calibration}"));
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url("/retrieve")).collect();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();

    let (mut h_torua, mut h_emb) = (histogram(), histogram());
    let mut server: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut emb_stages: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut client_minus_server = Vec::new();
    let (mut n_ent, mut n_rel, mut n_tu, mut n_rep, mut tokens, mut bytes) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut e_ent, mut e_rel, mut e_tu, mut e_rep) = (vec![], vec![], vec![], vec![]);
    let (mut seed_overlap, mut torua_hit, mut emb_hit) = (vec![], vec![], vec![]);
    let mut errors: Vec<String> = Vec::new();
    let mut partial = 0;
    let started = Instant::now();
    for (i, q) in queries.iter().enumerate() {
        let measured = i >= a.warmup;
        if i % 10 == 0 {
            memory_guard(a, cluster)?;
        }
        let url = &urls[i % urls.len()];
        // Alternate which side runs first.
        let mut torua_answer = None;
        let mut emb_answer = None;
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                torua_answer = Some(post_timed(&agent, url, &q.body));
            } else {
                emb_answer = Some(emb.retrieve(q, a.top_k, a.hops)?);
            }
        }
        let ea = emb_answer.expect("embedded answer");
        let (lat, status, body) = torua_answer.expect("torua answer")?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 200 {
            errors.push(format!(
                "{status} {}",
                short(&String::from_utf8_lossy(&body), 300)
            ));
            if errors.len() <= 3 {
                log(format!(
                    "  retrieve failed: {}",
                    errors.last().expect("error")
                ));
            }
            continue;
        }
        if !measured {
            continue;
        }
        h_torua.record(lat.round().max(1.0) as u64)?;
        h_emb.record(ea.total_us.round().max(1.0) as u64)?;
        if let Some(t) = v["timings_ms"].as_object() {
            for (k, x) in t {
                if let Some(x) = x.as_f64() {
                    server.entry(k.clone()).or_default().push(x);
                }
            }
            if let Some(total) = t.get("total").and_then(Value::as_f64) {
                client_minus_server.push(lat / 1000.0 - total);
            }
        }
        for (name, x) in &ea.stages {
            emb_stages.entry(name).or_default().push(x / 1000.0);
        }
        emb_stages
            .entry("total")
            .or_default()
            .push(ea.total_us / 1000.0);
        if v["_shards"]["failed"].as_u64().unwrap_or(0) > 0 {
            partial += 1;
        }
        let len = |k: &str| v[k].as_array().map_or(0, Vec::len) as f64;
        n_ent.push(len("entities"));
        n_rel.push(len("relations"));
        n_tu.push(len("text_units"));
        n_rep.push(len("community_reports"));
        tokens.push(v["tokens"]["total"].as_f64().unwrap_or(f64::NAN));
        bytes.push(body.len() as f64);
        e_ent.push(ea.entities as f64);
        e_rel.push(ea.relations as f64);
        e_tu.push(ea.text_units as f64);
        e_rep.push(ea.reports as f64);
        let seeds = ids_of(&v["seeds"], |_| true);
        seed_overlap.push(overlap(&seeds, &ea.seeds));
        let src = &g.entities[q.source].id;
        torua_hit.push(f64::from(u8::from(seeds.contains(src))));
        emb_hit.push(f64::from(u8::from(ea.seeds.contains(src))));
        let done = i + 1 - a.warmup;
        if done.is_multiple_of(50) || done == a.queries {
            log(format!(
                "  {done}/{} queries in {:.0} s: torua p50 {:.1} ms, embedded p50 {:.1} ms",
                a.queries,
                started.elapsed().as_secs_f64(),
                h_torua.value_at_quantile(0.5) as f64 / 1000.0,
                h_emb.value_at_quantile(0.5) as f64 / 1000.0
            ));
        }
    }

    // Recall and isolated stages (not timed by the client): for each of the first
    // `--recall-queries` queries, a vector-only and a text-only request (hops 0: the seeds stage is
    // one kind of search), and requests that run one later stage alone (hops 0 with text units
    // only, hops 0 with reports only, hops 1 with entities and relations only), whose server
    // timings show each stage without the others running at the same time.
    let (mut r_torua, mut r_emb, mut bm25_agree) = (vec![], vec![], vec![]);
    let mut alone: BTreeMap<&str, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let probe = |query: Option<&str>, embedding: Option<&[f32]>, hops: u32, include: &[&str]| {
        let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
        serde_json::to_vec(&Request {
            query,
            embedding,
            mode: "local",
            top_k: a.top_k,
            hops,
            max_tokens: a.max_tokens,
            include: Some(&include),
            // A shard missing from a probe is an error, not a lower recall.
            allow_partial: Some(false),
        })
    };
    for (j, q) in queries[a.warmup..]
        .iter()
        .take(a.recall_queries)
        .enumerate()
    {
        let url = &urls[j % urls.len()];
        let (text, emb_q) = (Some(q.text.as_str()), Some(q.embedding.as_slice()));
        let probes = [
            ("vector seeds only", probe(None, emb_q, 0, &["entities"])?),
            ("text seeds only", probe(text, None, 0, &["entities"])?),
            ("text_units only", probe(text, emb_q, 0, &["text_units"])?),
            (
                "community_reports only",
                probe(text, emb_q, 0, &["community_reports"])?,
            ),
            (
                "expand only",
                probe(text, emb_q, a.hops, &["entities", "relations"])?,
            ),
        ];
        for (name, body) in probes {
            let (_, status, body) = post_timed(&agent, url, &body)?;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status != 200 {
                errors.push(format!(
                    "{name} probe: {status} {}",
                    short(&v.to_string(), 300)
                ));
                continue;
            }
            if let Some(t) = v["timings_ms"].as_object() {
                for (k, x) in t {
                    if let Some(x) = x.as_f64() {
                        alone
                            .entry(name)
                            .or_default()
                            .entry(k.clone())
                            .or_default()
                            .push(x);
                    }
                }
            }
            match name {
                "vector seeds only" => {
                    let ids = ids_of(&v["seeds"], |s| s["vector_rank"].is_u64());
                    r_torua.push(overlap(&ids, &exact[j]));
                }
                "text seeds only" => {
                    let ids = ids_of(&v["seeds"], |s| s["bm25_rank"].is_u64());
                    bm25_agree.push(overlap(&ids, &emb.text_top(&q.text, false)?));
                }
                _ => {}
            }
        }
        r_emb.push(overlap(&emb.vector_top(&q.embedding)?, &exact[j]));
    }

    let ratio =
        |q: f64| h_torua.value_at_quantile(q) as f64 / h_emb.value_at_quantile(q).max(1) as f64;
    let medians = |m: &BTreeMap<String, Vec<f64>>| -> Value {
        m.iter()
            .map(|(k, v)| (k.clone(), json!((median(v) * 100.0).round() / 100.0)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let emb_medians: BTreeMap<String, Vec<f64>> = emb_stages
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "torua": summary(&h_torua), "embedded": summary(&h_emb),
        "ratio_p50": r2(ratio(0.5)), "ratio_p99": r2(ratio(0.99)),
        "server_timings_median_ms": medians(&server),
        "embedded_stages_median_ms": medians(&emb_medians),
        "client_minus_server_total_median_ms": r2(median(&client_minus_server)),
        "errors": errors.len(), "error_examples": errors.iter().take(5).collect::<Vec<_>>(),
        "partial_answers": partial,
        "torua_answer_mean": {"entities": r2(mean(&n_ent)), "relations": r2(mean(&n_rel)),
            "text_units": r2(mean(&n_tu)), "community_reports": r2(mean(&n_rep)),
            "tokens": r2(mean(&tokens)), "bytes": r2(mean(&bytes))},
        "embedded_found_mean": {"entities": r2(mean(&e_ent)), "relations": r2(mean(&e_rel)),
            "text_units": r2(mean(&e_tu)), "community_reports": r2(mean(&e_rep))},
        "seed_overlap_mean": r2(mean(&seed_overlap)),
        "source_entity_in_seeds": {"torua": r2(mean(&torua_hit)), "embedded": r2(mean(&emb_hit))},
        "recall_at_k_vs_exact": {"queries": r_emb.len(), "torua_vector_seeds": r2(mean(&r_torua)),
            "embedded_hnsw": r2(mean(&r_emb)), "embedded_efs": a.embedded_efs},
        "bm25_top_k_overlap_torua_vs_embedded": r2(mean(&bm25_agree)),
        "server_timings_median_ms_one_stage_alone": alone
            .iter()
            .map(|(k, m)| (k.to_string(), medians(m)))
            .collect::<serde_json::Map<_, _>>(),
        "embedded_calibration": calibration,
        "embedded_statements": {"per_id": emb.executed.0, "set": emb.executed.1},
        "wall_s": started.elapsed().as_secs_f64(),
        "load_1m_at_start": load_at_start, "load_1m_at_end": load_1m(),
    }))
}

/// The baseline holds the vectors it was given (a few read back); its HNSW index's recall of the
/// recall queries against the exact top k, and the search's latency (the first queries warm up).
fn check_embedded(
    a: &Args,
    db_path: &Path,
    g: &Graph,
    queries: &[Query],
    exact: &[Vec<String>],
) -> Result<Value> {
    let db = open_embedded(db_path, a.embedded_memory_mb)?;
    let conn = Connection::new(&db)?;
    let mut read = conn.prepare("MATCH (v:EntityVec {id: $id}) RETURN v.embedding")?;
    for i in [0, g.entities.len() / 2, g.entities.len() - 1] {
        let e = &g.entities[i];
        let rows: Vec<Vec<KValue>> = conn
            .execute(&mut read, vec![("id", string(&e.id))])?
            .collect();
        let stored: Vec<f32> = match rows.first().and_then(|r| r.first()) {
            Some(KValue::Array(_, v)) | Some(KValue::List(_, v)) => v
                .iter()
                .map(|x| match x {
                    KValue::Float(f) => *f,
                    _ => f32::NAN,
                })
                .collect(),
            other => bail!("embedded: no vector for {}: {other:?}", e.id),
        };
        if stored != e.embedding {
            bail!(
                "embedded: the stored vector of {} differs from the generated one (first values {:?} vs {:?})",
                e.id,
                &stored[..4.min(stored.len())],
                &e.embedding[..4]
            );
        }
    }
    // The baseline's HNSW recall and latency at its efs, 64 and Kuzu's default (200).
    let mut by_efs = serde_json::Map::new();
    let mut list = vec![a.embedded_efs, 64, 200];
    list.sort_unstable();
    list.dedup();
    for efs in list {
        let mut emb = Embedded::new(&conn, a.top_k, efs)?;
        let (mut recall, mut ms) = (vec![], vec![]);
        for (q, x) in queries[a.warmup..].iter().zip(exact) {
            let t = Instant::now();
            let found = emb.vector_top(&q.embedding)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            recall.push(overlap(&found, x));
        }
        log(format!(
            "embedded: HNSW efs {efs}: recall@{} {:.3}, median {:.2} ms over {} queries",
            a.top_k,
            mean(&recall),
            median(&ms),
            recall.len()
        ));
        by_efs.insert(
            format!("efs {efs}"),
            json!({"recall": mean(&recall), "median_ms": median(&ms), "queries": recall.len()}),
        );
    }
    // torua's shard statement reads the hits' properties in the same statement (a join of the
    // index's answer with Entity by id); its cost on this database, against the bare search.
    let forms = [
        ("bare search", format!("CALL QUERY_VECTOR_INDEX('EntityVec', 'entity_vec', $q, {k}, efs := {efs}) RETURN node.id, distance", k = a.top_k, efs = a.embedded_efs)),
        ("search + MATCH Entity by id", format!("CALL QUERY_VECTOR_INDEX('EntityVec', 'entity_vec', $q, {k}, efs := {efs}) WITH node AS v, distance \
             MATCH (i:Entity {{id: v.id}}) RETURN i.id, i.title, i.type, i.description, i.degree, i.text_unit_ids, distance", k = a.top_k, efs = a.embedded_efs)),
    ];
    let mut join = serde_json::Map::new();
    for (name, q) in forms {
        let mut stmt = conn.prepare(&q)?;
        let mut ms = vec![];
        for q in queries[a.warmup..].iter().take(exact.len()) {
            let t = Instant::now();
            let _: Vec<Vec<KValue>> = conn
                .execute(&mut stmt, vec![("q", float_list(&q.embedding))])?
                .collect();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        log(format!(
            "embedded: vector statement, {name}: median {:.2} ms",
            median(&ms)
        ));
        join.insert(name.into(), json!(median(&ms)));
    }
    Ok(json!({"vectors_match": true, "hnsw": by_efs, "vector_statement_median_ms": join}))
}

// ------------------------------------------------------------------------------------------------
// Main

fn write_json(a: &Args, doc: &Value) -> Result<()> {
    if let Some(path) = &a.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let t = Instant::now();
    let g = generate(&a);
    let mut degrees: Vec<i64> = g.entities.iter().map(|e| e.degree).collect();
    degrees.sort_unstable();
    let n = degrees.len();
    let list_ids: usize = g.communities.iter().map(|c| c.entity_ids.len()).sum();
    log(format!(
        "generated {} entities, {} relations, {} chunks, {} communities ({} entity ids) in {:.1} s; degree p50 {} p99 {} max {}",
        n,
        g.relations.len(),
        g.chunks.len(),
        g.communities.len(),
        list_ids,
        t.elapsed().as_secs_f64(),
        degrees[n / 2],
        degrees[(n * 99 / 100).min(n - 1)],
        degrees[n - 1]
    ));
    let queries = make_queries(&a, &g)?;
    let norms: Vec<f32> = g
        .entities
        .iter()
        .map(|e| e.embedding.iter().map(|x| x * x).sum::<f32>().sqrt())
        .collect();
    let exact: Vec<Vec<String>> = queries[a.warmup..]
        .iter()
        .take(a.recall_queries)
        .map(|q| exact_top(&g, &norms, &q.embedding, a.top_k))
        .collect();
    let dir = std::env::temp_dir().join(format!("torua-retrieve-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = run(
        &a,
        &g,
        &queries,
        &exact,
        &dir,
        degrees[n / 2],
        degrees[n - 1],
    );
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(
    a: &Args,
    g: &Graph,
    queries: &[Query],
    exact: &[Vec<String>],
    dir: &Path,
    degree_p50: i64,
    degree_max: i64,
) -> Result<()> {
    let mut doc = json!({
        "bench": "retrieve",
        "label": a.label.clone().unwrap_or_else(|| format!("{} entities, {} relations, {} chunks, dim {}", a.entities, a.relations, a.chunks, a.dim)),
        "args": a,
        "data": {"entities": g.entities.len(), "relations": g.relations.len(), "chunks": g.chunks.len(),
                 "communities": g.communities.len(), "dim": a.dim, "degree_p50": degree_p50, "degree_max": degree_max,
                 "clusters": g.cluster.iter().max().map_or(0, |m| m + 1)},
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        "targets": [],
    });
    log("embedded: CSV, COPY, indexes");
    let (db_path, emb_load) = load_embedded(a, g, dir)?;
    log(format!("embedded load: {emb_load}"));
    doc["embedded_load"] = emb_load;
    doc["embedded_check"] = check_embedded(a, &db_path, g, queries, exact)?;
    write_json(a, &doc)?;
    let mut failures = Vec::new();
    for &nodes in &a.nodes {
        let replicas = if nodes == 1 { 1 } else { a.replicas.min(nodes) };
        let target = format!(
            "torua {nodes} node{} R={replicas}",
            if nodes == 1 { "" } else { "s" }
        );
        log(format!("{target}: start and load"));
        let outcome = (|| -> Result<Value> {
            let cluster = start_cluster(a, nodes, replicas)?;
            let load = load_torua(a, &cluster, g, &queries[0])?;
            if load["verify"]["ok"] != true {
                failures.push(format!("{target}: /cluster/shards does not add up"));
            }
            log(format!(
                "{target}: {} queries (+{} warm-up)",
                a.queries, a.warmup
            ));
            let q = measure(a, &cluster, &db_path, g, queries, exact)?;
            if q["errors"] != 0 {
                failures.push(format!(
                    "{target}: {} retrieve requests failed",
                    q["errors"]
                ));
            }
            Ok(json!({"load": load, "queries": q, "rss_mb_after_queries": cluster_rss(&cluster)}))
        })();
        let mut record =
            json!({"target": target, "nodes": nodes, "replicas": replicas, "load_1m": load_1m()});
        let failed = outcome.is_err();
        match outcome {
            Ok(v) => {
                if let (Some(r), Value::Object(v)) = (record.as_object_mut(), v) {
                    r.extend(v);
                }
            }
            Err(e) => {
                log(format!("{target}: FAILED: {e:#}"));
                failures.push(format!("{target}: {e:#}"));
                record["error"] = json!(format!("{e:#}"));
            }
        }
        doc["targets"].as_array_mut().expect("targets").push(record);
        write_json(a, &doc)?;
        if failed {
            break;
        }
    }
    print_tables(a, &doc);
    write_json(a, &doc)?;
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

fn print_tables(a: &Args, doc: &Value) {
    let d = &doc["data"];
    println!(
        "\nPOST /retrieve, mode local, top_k {}, hops {}: {} entities, {} relations, {} chunks, {} communities, dim {}; {} queries sequential (+{} warm-up)",
        a.top_k, a.hops, d["entities"], d["relations"], d["chunks"], d["communities"], a.dim, a.queries, a.warmup
    );
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    let f2 = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
    println!(
        "{:<22} {:>9} {:>9} {:>11} {:>11} {:>8} {:>8} {:>7} {:>8} {:>8} {:>6}",
        "target",
        "p50 ms",
        "p99 ms",
        "emb p50 ms",
        "emb p99 ms",
        "x p50",
        "x p99",
        "errors",
        "overlap",
        "recall",
        "emb rc"
    );
    let targets = doc["targets"].as_array().cloned().unwrap_or_default();
    for t in &targets {
        let q = &t["queries"];
        println!(
            "{:<22} {:>9} {:>9} {:>11} {:>11} {:>8} {:>8} {:>7} {:>8} {:>8} {:>6}",
            t["target"].as_str().unwrap_or("?"),
            f(&q["torua"]["p50_ms"]),
            f(&q["torua"]["p99_ms"]),
            f(&q["embedded"]["p50_ms"]),
            f(&q["embedded"]["p99_ms"]),
            f2(&q["ratio_p50"]),
            f2(&q["ratio_p99"]),
            q["errors"],
            f2(&q["seed_overlap_mean"]),
            f2(&q["recall_at_k_vs_exact"]["torua_vector_seeds"]),
            f2(&q["recall_at_k_vs_exact"]["embedded_hnsw"]),
        );
    }
    println!("\nstage medians (ms): server timings_ms | embedded steps");
    for t in &targets {
        let q = &t["queries"];
        let show = |m: &Value| {
            let Some(o) = m.as_object() else {
                return String::new();
            };
            let order = [
                "seeds",
                "expand",
                "text_units",
                "community_reports",
                "assemble",
                "total",
            ];
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_by_key(|k| order.iter().position(|x| x == k).unwrap_or(order.len()));
            keys.iter()
                .map(|k| format!("{k} {}", f(&o[*k])))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{:<22} torua: {}",
            t["target"].as_str().unwrap_or("?"),
            show(&q["server_timings_median_ms"])
        );
        println!(
            "{:<22} embedded: {}",
            "",
            show(&q["embedded_stages_median_ms"])
        );
        if let Some(alone) = q["server_timings_median_ms_one_stage_alone"].as_object() {
            for (name, m) in alone {
                println!("{:<22} torua, {name}: {}", "", show(m));
            }
        }
        println!(
            "{:<22} answer: {} | embedded found: {} | client - server total: {} ms",
            "",
            q["torua_answer_mean"],
            q["embedded_found_mean"],
            q["client_minus_server_total_median_ms"]
        );
    }
    println!("\nload");
    if let Some(e) = doc.get("embedded_load") {
        println!(
            "{:<22} COPY + indexes {:.1} s (CSV writing {:.1} s not counted): {}",
            "embedded Kuzu",
            e["load_and_index_s"].as_f64().unwrap_or(f64::NAN),
            e["csv_write_s"].as_f64().unwrap_or(f64::NAN),
            e["steps"]
        );
    }
    for t in &targets {
        if let Some(e) = t["error"].as_str() {
            println!("{:<22} FAILED: {e}", t["target"].as_str().unwrap_or("?"));
            continue;
        }
        let l = &t["load"];
        println!(
            "{:<22} acknowledged {:.1} s, applied {:.1} s, searchable {:.1} s ({:.0} items/s); phases {}; RSS MB {}; counts {}",
            t["target"].as_str().unwrap_or("?"),
            l["acknowledged_s"].as_f64().unwrap_or(f64::NAN),
            l["applied_s"].as_f64().unwrap_or(f64::NAN),
            l["searchable_s"].as_f64().unwrap_or(f64::NAN),
            l["items_per_s"].as_f64().unwrap_or(f64::NAN),
            l["phases"],
            l["rss_mb_after_load"],
            if l["verify"]["ok"] == true { "add up" } else { "DO NOT add up" }
        );
    }
}
