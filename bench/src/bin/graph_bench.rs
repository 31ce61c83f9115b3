//! Graph store benchmarks (issue 4): bulk ingest and point reads of a GraphRAG-shaped graph, torua vs
//! one embedded Kuzu database, measured in the same run.
//!
//! ```text
//! graph_bench ingest      [flags]   ingest only (targets copy,single,cluster; no reads)
//! graph_bench point-read  [flags]   load copy + cluster, then point reads (--reads 2000)
//! graph_bench all         [flags]   ingest, then point reads on the torua targets
//! graph_bench statements  [flags]   diagnostics: torua's write/read statements timed on the embedded database
//! graph_bench queries     [flags]   load copy + single + cluster, then graph queries (issue 5, see below)
//!
//! data     --entities 100000 --relations 1000000 --seed 42 --skew 0.6
//! ingest   --batch 5000 --clients 4 --targets copy,single,cluster (also: unwind) --max-minutes 15
//! cluster  --nodes 3 --replicas 2 --shards 16 --memory-mb 2048 --max-shard-gb 16 --env KEY=VALUE --log warn
//! reads    --reads 2000 --read-warmup 200
//! queries  --query-reps 50 --query-warmup 3 --query-case-s 60 --query-seeds 1,10,100 --query-hops 1,2
//!          --query-max-nodes 100000 --query-max-relations 1000000 --query-embedded auto
//! output   --label TEXT --json FILE (JSON lines, appended; default: stdout after the tables)
//! ```
//!
//! The graph is generated from a seeded RNG: entities `ent-<i>` with a title, a type, a short
//! description and 1-4 text unit ids; relations `rel-<j>` whose source and target are drawn from a
//! bounded power law (density ∝ rank^-skew over two independent random permutations of the entities),
//! so a few hubs have thousands of relations and most entities a handful, like GraphRAG's output.
//!
//! Targets:
//! * `copy`: the baseline. One embedded Kuzu database with torua's schema (`src/storage/kuzu_shard.rs`),
//!   loaded the fastest way Kuzu can: the data written as CSV (not timed), then `COPY Entity FROM` and
//!   `COPY RELATED FROM` (timed).
//! * `unwind`: the same database loaded with set-wise `UNWIND $rows AS r CREATE ...` statements, one
//!   transaction per batch of `--batch` items, no existence checks: the fastest statement-based path, to
//!   tell the cost of the engine path from the cost of distribution.
//! * `single`: one `torua serve` process, R=1. `cluster`: `--nodes` processes, R=`--replicas`. Both get
//!   the same data through `POST /graph/ingest` (JSON bodies serialised before the clock starts),
//!   `--clients` threads round-robin over the nodes, entities first, then (after every entity batch is
//!   acknowledged) relations. The clock stops when every item is acknowledged *and* applied (visible:
//!   `/cluster/shards` reports no pending write), so the rate is like for like with the embedded
//!   load; the acknowledgement time alone is recorded as `acknowledged_s`.
//!   Rate = (entities + relations) / wall time. Afterwards `/cluster/shards`
//!   must show every entity once among the primaries, and each relation once per endpoint shard.
//!
//! Point reads: `--reads` random entity ids (uniform, seeded), sequential, one keep-alive HTTP agent,
//! `GET /graph/entities/{id}` through the first node; interleaved id by id with the embedded lookup of
//! the same id in the `copy` database (prepared once: `MATCH (e:Entity {id: $id}) RETURN e.*` plus its
//! outgoing and incoming relations, the same content the API returns). Torua's number includes HTTP,
//! JSON, and for shards the node holds no copy of, a QUIC hop to a node that does. Also measured: the
//! embedded lookup done the way torua's `get_entity` does it (a new connection and three statements
//! prepared per read). Relation counts of both answers are compared for every id.
//!
//! Graph queries (`queries`, after the ingest of each torua target): `POST /graph/neighborhood`
//! (direction both, hops `--query-hops` from `--query-seeds` random seeds, a new seed set per sample,
//! the same sets for every target) and `POST /query` (`MATCH (e:Entity) RETURN count(*)` and the
//! relation count), requests round-robin over the nodes, each sample interleaved with the same work
//! on the `copy` database (see the section "Graph queries" below); `--query-reps` samples per case
//! (a fifth, at least 10, for 100 seeds / 2 hops) after `--query-warmup`, a case stops after
//! `--query-case-s` once it has 10 samples. Every answer is compared with the embedded one; any
//! difference or failed request fails the run. `--targets copy` alone times the embedded side only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kuzu::{Connection, Database, LogicalType, SystemConfig, Value as KValue};
use serde::Serialize;
use serde_json::{json, Value};
use torua_testkit::kuzu_values::{string, strings, struct_rows};
use torua_testkit::{ClusterOptions, TestCluster};

// ------------------------------------------------------------------------------------------------
// Arguments

const USAGE: &str = "usage: graph_bench <ingest|point-read|all|statements|queries> [flags]
  data     --entities 100000 --relations 1000000 --seed 42 --skew 0.6
  ingest   --batch 5000 --clients 4 --targets copy,single,cluster (also: unwind) --max-minutes 15
  cluster  --nodes 3 --replicas 2 --shards 16 --memory-mb 2048 --max-shard-gb 16
           --env KEY=VALUE (repeatable, every node) --log warn
  reads    --reads 2000 --read-warmup 200 (0: no reads)
  queries  --query-reps 50 (0: none; default 50 for `queries`, else 0) --query-warmup 3
           --query-case-s 60 (time cap per case) --query-seeds 1,10,100 --query-hops 1,2
           --query-max-nodes 100000 --query-max-relations 1000000
           --query-embedded auto|unwind|per-id (how the embedded baseline runs its statements)
  output   --label TEXT --json FILE
The torua binary is $TORUA_BIN, else the one next to this executable.";

#[derive(Debug, Clone)]
struct Args {
    cmd: String,
    entities: usize,
    relations: usize,
    seed: u64,
    skew: f64,
    batch: usize,
    clients: usize,
    targets: Vec<String>,
    nodes: usize,
    replicas: usize,
    shards: u32,
    memory_mb: u64,
    max_shard_gb: u64,
    max_minutes: f64,
    env: BTreeMap<String, String>,
    log: String,
    reads: usize,
    read_warmup: usize,
    query_reps: usize,
    query_warmup: usize,
    query_case_s: f64,
    query_seeds: Vec<usize>,
    query_hops: Vec<u32>,
    query_max_nodes: usize,
    query_max_relations: usize,
    query_embedded: EmbeddedMode,
    label: Option<String>,
    json: Option<PathBuf>,
}

const TARGETS: [&str; 4] = ["copy", "unwind", "single", "cluster"];

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    if cmd.is_empty() || cmd == "-h" || cmd == "--help" {
        println!("{USAGE}");
        std::process::exit(if cmd.is_empty() { 2 } else { 0 });
    }
    let (targets, reads, query_reps): (&[&str], usize, usize) = match cmd.as_str() {
        "ingest" => (&["copy", "single", "cluster"], 0, 0),
        "point-read" => (&["copy", "cluster"], 2000, 0),
        "all" => (&["copy", "single", "cluster"], 2000, 0),
        "statements" => (&["copy"], 0, 0),
        "queries" => (&["copy", "single", "cluster"], 0, 50),
        _ => bail!("unknown subcommand {cmd:?}\n{USAGE}"),
    };
    let mut a = Args {
        cmd,
        entities: 100_000,
        relations: 1_000_000,
        seed: 42,
        skew: 0.6,
        batch: 5000,
        clients: 4,
        targets: targets.iter().map(|s| s.to_string()).collect(),
        nodes: 3,
        replicas: 2,
        shards: 16,
        memory_mb: 2048,
        max_shard_gb: 16,
        max_minutes: 15.0,
        env: BTreeMap::new(),
        log: "warn".into(),
        reads,
        read_warmup: 200,
        query_reps,
        query_warmup: 3,
        query_case_s: 60.0,
        query_seeds: vec![1, 10, 100],
        query_hops: vec![1, 2],
        query_max_nodes: 100_000,
        query_max_relations: 1_000_000,
        query_embedded: EmbeddedMode::Auto,
        label: None,
        json: None,
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value:?}: expected {what}");
        match flag.as_str() {
            "--entities" => a.entities = value.parse().with_context(|| bad("a count"))?,
            "--relations" => a.relations = value.parse().with_context(|| bad("a count"))?,
            "--seed" => a.seed = value.parse().with_context(|| bad("an integer"))?,
            "--skew" => {
                a.skew = value
                    .parse()
                    .with_context(|| bad("an exponent in [0, 1)"))?
            }
            "--batch" => a.batch = value.parse().with_context(|| bad("a count"))?,
            "--clients" => a.clients = value.parse().with_context(|| bad("a count"))?,
            "--targets" => {
                a.targets = value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }
            "--nodes" => a.nodes = value.parse().with_context(|| bad("a count"))?,
            "--replicas" => a.replicas = value.parse().with_context(|| bad("a count"))?,
            "--shards" => a.shards = value.parse().with_context(|| bad("a count"))?,
            "--memory-mb" => a.memory_mb = value.parse().with_context(|| bad("megabytes"))?,
            "--max-shard-gb" => a.max_shard_gb = value.parse().with_context(|| bad("gigabytes"))?,
            "--max-minutes" => a.max_minutes = value.parse().with_context(|| bad("minutes"))?,
            "--env" => {
                let (k, v) = value.split_once('=').with_context(|| bad("KEY=VALUE"))?;
                a.env.insert(k.to_string(), v.to_string());
            }
            "--log" => a.log = value,
            "--reads" => a.reads = value.parse().with_context(|| bad("a count"))?,
            "--read-warmup" => a.read_warmup = value.parse().with_context(|| bad("a count"))?,
            "--query-reps" => a.query_reps = value.parse().with_context(|| bad("a count"))?,
            "--query-warmup" => a.query_warmup = value.parse().with_context(|| bad("a count"))?,
            "--query-case-s" => a.query_case_s = value.parse().with_context(|| bad("seconds"))?,
            "--query-seeds" => {
                a.query_seeds = value
                    .split(',')
                    .map(|x| x.trim().parse())
                    .collect::<Result<_, _>>()
                    .with_context(|| bad("seed counts like 1,10,100"))?
            }
            "--query-hops" => {
                a.query_hops = value
                    .split(',')
                    .map(|x| x.trim().parse())
                    .collect::<Result<_, _>>()
                    .with_context(|| bad("hop counts like 1,2"))?
            }
            "--query-max-nodes" => {
                a.query_max_nodes = value.parse().with_context(|| bad("a count"))?
            }
            "--query-embedded" => {
                a.query_embedded = match value.as_str() {
                    "auto" => EmbeddedMode::Auto,
                    "unwind" => EmbeddedMode::Unwind,
                    "per-id" => EmbeddedMode::PerId,
                    _ => bail!("{}", bad("auto, unwind or per-id")),
                }
            }
            "--query-max-relations" => {
                a.query_max_relations = value.parse().with_context(|| bad("a count"))?
            }
            "--label" => a.label = Some(value),
            "--json" => a.json = Some(PathBuf::from(value)),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    for t in &a.targets {
        if !TARGETS.contains(&t.as_str()) {
            bail!(
                "--targets: unknown target {t:?} (known: {})",
                TARGETS.join(",")
            );
        }
    }
    if a.reads > 0 && !a.targets.iter().any(|t| t == "copy") {
        bail!(
            "point reads compare against the `copy` database: add copy to --targets (or --reads 0)"
        );
    }
    if a.query_reps > 0 && !a.targets.iter().any(|t| t == "copy") {
        bail!("queries compare against the `copy` database: add copy to --targets (or --query-reps 0)");
    }
    if a.query_seeds
        .iter()
        .any(|&n| n == 0 || n > 1000 || n > a.entities)
        || a.query_hops.iter().any(|&h| !(1..=3).contains(&h))
        || !(1..=100_000).contains(&a.query_max_nodes)
        || !(1..=1_000_000).contains(&a.query_max_relations)
    {
        bail!("--query-seeds in 1..=1000 (and at most --entities), --query-hops in 1..=3, --query-max-nodes in 1..=100000, --query-max-relations in 1..=1000000");
    }
    if a.entities < 2 || a.batch == 0 || a.clients == 0 || a.nodes == 0 || a.shards == 0 {
        bail!("--entities must be at least 2, --batch, --clients, --nodes and --shards at least 1");
    }
    if !(0.0..1.0).contains(&a.skew) {
        bail!("--skew must be in [0, 1)");
    }
    Ok(a)
}

impl Args {
    fn has(&self, target: &str) -> bool {
        self.targets.iter().any(|t| t == target)
    }
    fn label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("{} entities, {} relations", self.entities, self.relations))
    }
}

// ------------------------------------------------------------------------------------------------
// Output (same shape as membership_bench: human tables on stdout, JSON lines to --json or stdout)

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
            "bench": "graph", "cmd": args.cmd, "label": args.label(),
            "entities": args.entities, "relations": args.relations, "seed": args.seed, "skew": args.skew,
            "batch": args.batch, "clients": args.clients, "shards": args.shards,
            "memory_mb": args.memory_mb, "env": args.env,
        });
        Ok(Out {
            file,
            pending: Vec::new(),
            base,
        })
    }

    fn emit(&mut self, record: Value) -> Result<()> {
        let mut line = self.base.clone();
        line["unix_time"] = json!(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
        line["load_1m"] = json!(load_1m());
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

fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn log(msg: impl AsRef<str>) {
    eprintln!("graph_bench: {}", msg.as_ref());
}

// ------------------------------------------------------------------------------------------------
// Deterministic data

/// SplitMix64: tiny, seeded, good enough for generating test data.
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

struct Graph {
    entities: Vec<Entity>,
    relations: Vec<Relation>,
}

const WORDS: [&str; 48] = [
    "agent",
    "alliance",
    "archive",
    "signal",
    "operation",
    "protocol",
    "research",
    "facility",
    "contact",
    "mission",
    "network",
    "council",
    "treaty",
    "harbor",
    "river",
    "engine",
    "theory",
    "message",
    "control",
    "region",
    "market",
    "capital",
    "project",
    "system",
    "memory",
    "battle",
    "journey",
    "record",
    "station",
    "frontier",
    "command",
    "expedition",
    "colony",
    "alien",
    "team",
    "leader",
    "report",
    "decision",
    "crisis",
    "partner",
    "source",
    "vessel",
    "device",
    "language",
    "pattern",
    "archive",
    "venture",
    "summit",
];
const SYLLABLES: [&str; 16] = [
    "KA", "RO", "MI", "DEL", "TAN", "VER", "LO", "SA", "NIX", "OR", "BEL", "QUA", "ZE", "HA",
    "TOR", "UA",
];
const TYPES: [&str; 6] = [
    "PERSON",
    "ORGANIZATION",
    "GEO",
    "EVENT",
    "CONCEPT",
    "TECHNOLOGY",
];

fn words(rng: &mut Rng, lo: usize, hi: usize) -> String {
    let n = rng.range(lo, hi);
    let mut s = String::with_capacity(n * 8);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

fn text_units(rng: &mut Rng, lo: usize, hi: usize, pool: usize) -> Vec<String> {
    (0..rng.range(lo, hi))
        .map(|_| format!("tu-{}", rng.below(pool)))
        .collect()
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

fn generate(n_entities: usize, n_relations: usize, seed: u64, skew: f64) -> Graph {
    let mut rng = Rng(seed);
    let pool = (n_entities / 2).max(1);
    let mut entities: Vec<Entity> = (0..n_entities)
        .map(|i| {
            let name: String = (0..rng.range(2, 3))
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            let text_unit_ids = text_units(&mut rng, 1, 4, pool);
            Entity {
                id: format!("ent-{i}"),
                title: format!("{name} {}", rng.below(1000)),
                kind: TYPES[rng.below(TYPES.len())].to_string(),
                description: words(&mut rng, 8, 20),
                frequency: text_unit_ids.len() as i64,
                text_unit_ids,
                degree: 0,
            }
        })
        .collect();
    let sources = permutation(&mut rng, n_entities);
    let targets = permutation(&mut rng, n_entities);
    let mut degree = vec![0i64; n_entities];
    let relations: Vec<Relation> = (0..n_relations)
        .map(|j| {
            let s = sources[power_law(&mut rng, n_entities, skew)];
            let mut t = targets[power_law(&mut rng, n_entities, skew)];
            while t == s {
                t = rng.below(n_entities);
            }
            degree[s] += 1;
            degree[t] += 1;
            Relation {
                id: format!("rel-{j}"),
                source: entities[s].id.clone(),
                target: entities[t].id.clone(),
                description: words(&mut rng, 5, 12),
                weight: (1 + rng.below(10)) as f64,
                text_unit_ids: text_units(&mut rng, 1, 2, pool),
            }
        })
        .collect();
    for (e, d) in entities.iter_mut().zip(degree) {
        e.degree = d;
    }
    Graph {
        entities,
        relations,
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
// Embedded Kuzu (the baseline)

/// torua's schema, as in src/storage/kuzu_shard.rs (no embeddings).
const SCHEMA: [&str; 6] = [
    "CREATE NODE TABLE IF NOT EXISTS Entity(id STRING, title STRING, type STRING, description STRING, \
     text_unit_ids STRING[], frequency INT64, degree INT64, stub BOOLEAN, PRIMARY KEY(id))",
    "CREATE REL TABLE IF NOT EXISTS RELATED(FROM Entity TO Entity, id STRING, description STRING, \
     weight DOUBLE, text_unit_ids STRING[], source STRING, target STRING)",
    "CREATE NODE TABLE IF NOT EXISTS Chunk(id STRING, text STRING, n_tokens INT64, document_id STRING, \
     entity_ids STRING[], PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Community(id STRING, level INT64, parent STRING, title STRING, \
     entity_ids STRING[], summary STRING, full_content STRING, rank DOUBLE, PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Document(id STRING, title STRING, text STRING, text_unit_ids STRING[], \
     PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Meta(key STRING, value INT64, PRIMARY KEY(key))",
];

/// Kuzu's threads per database in torua (src/storage/mod.rs): the cores, at most 2.
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
        .max_db_size(1 << 36)
        .enable_compression(true);
    let db =
        Database::new(path, config).with_context(|| format!("cannot open {}", path.display()))?;
    {
        let conn = Connection::new(&db)?;
        for ddl in SCHEMA {
            conn.query(ddl).with_context(|| format!("schema: {ddl}"))?;
        }
    }
    Ok(db)
}

fn csv_list(items: &[String]) -> String {
    format!("\"[{}]\"", items.join(","))
}

/// Writes entities.csv and relations.csv in the column order of the schema. The generated text has no
/// commas or quotes; list columns are quoted.
fn write_csv(dir: &Path, g: &Graph) -> Result<(PathBuf, PathBuf)> {
    let ep = dir.join("entities.csv");
    let rp = dir.join("relations.csv");
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&ep)?);
    writeln!(
        w,
        "id,title,type,description,text_unit_ids,frequency,degree,stub"
    )?;
    for e in &g.entities {
        writeln!(
            w,
            "{},{},{},{},{},{},{},false",
            e.id,
            e.title,
            e.kind,
            e.description,
            csv_list(&e.text_unit_ids),
            e.frequency,
            e.degree
        )?;
    }
    w.flush()?;
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&rp)?);
    writeln!(
        w,
        "from,to,id,description,weight,text_unit_ids,source,target"
    )?;
    for r in &g.relations {
        writeln!(
            w,
            "{},{},{},{},{},{},{},{}",
            r.source,
            r.target,
            r.id,
            r.description,
            r.weight,
            csv_list(&r.text_unit_ids),
            r.source,
            r.target
        )?;
    }
    w.flush()?;
    Ok((ep, rp))
}

fn count(conn: &Connection, q: &str) -> Result<u64> {
    let mut r = conn.query(q)?;
    Ok(match r.next().as_ref().and_then(|row| row.first()) {
        Some(KValue::Int64(n)) => *n as u64,
        Some(KValue::UInt64(n)) => *n,
        _ => 0,
    })
}

fn check_counts(db: &Database, g: &Graph) -> Result<()> {
    let conn = Connection::new(db)?;
    let e = count(&conn, "MATCH (e:Entity) RETURN count(*)")?;
    let r = count(&conn, "MATCH ()-[r:RELATED]->() RETURN count(*)")?;
    if e as usize != g.entities.len() || r as usize != g.relations.len() {
        bail!(
            "embedded database holds {e} entities and {r} relations; expected {} and {}",
            g.entities.len(),
            g.relations.len()
        );
    }
    Ok(())
}

struct IngestResult {
    target: String,
    wall: Duration,
    entities_s: f64,
    relations_s: f64,
    /// Items acknowledged (all of them unless the run hit --max-minutes).
    entities_done: usize,
    relations_done: usize,
    complete: bool,
    retries: usize,
    extra: Value,
}

impl IngestResult {
    fn rate(&self) -> f64 {
        (self.entities_done + self.relations_done) as f64 / self.wall.as_secs_f64()
    }
    fn entity_rate(&self) -> f64 {
        self.entities_done as f64 / self.entities_s.max(1e-9)
    }
    fn relation_rate(&self) -> f64 {
        self.relations_done as f64 / self.relations_s.max(1e-9)
    }
}

fn ingest_copy(dir: &Path, g: &Graph, memory_mb: u64) -> Result<(Database, IngestResult)> {
    let started = Instant::now();
    let (ep, rp) = write_csv(dir, g)?;
    let csv_s = started.elapsed().as_secs_f64();
    let db = open_embedded(&dir.join("copy.kz"), memory_mb)?;
    let conn = Connection::new(&db)?;
    let t0 = Instant::now();
    conn.query(&format!(
        "COPY Entity FROM '{}' (HEADER=true)",
        ep.display()
    ))
    .context("COPY Entity")?;
    let entities_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    conn.query(&format!(
        "COPY RELATED FROM '{}' (HEADER=true)",
        rp.display()
    ))
    .context("COPY RELATED")?;
    let relations_s = t1.elapsed().as_secs_f64();
    let wall = t0.elapsed();
    drop(conn);
    check_counts(&db, g)?;
    let csv_bytes = std::fs::metadata(&ep)?.len() + std::fs::metadata(&rp)?.len();
    Ok((
        db,
        IngestResult {
            target: "embedded Kuzu, COPY from CSV".into(),
            wall,
            entities_s,
            relations_s,
            entities_done: g.entities.len(),
            relations_done: g.relations.len(),
            complete: true,
            retries: 0,
            extra: json!({"csv_write_s": csv_s, "csv_bytes": csv_bytes,
                          "rate_with_csv_write": (g.entities.len() + g.relations.len()) as f64 / (wall.as_secs_f64() + csv_s)}),
        },
    ))
}

fn string_list() -> LogicalType {
    LogicalType::List {
        child_type: Box::new(LogicalType::String),
    }
}

fn exec(conn: &Connection, q: &str, params: Vec<(&str, KValue)>) -> Result<()> {
    let mut stmt = conn.prepare(q).with_context(|| format!("prepare {q}"))?;
    conn.execute(&mut stmt, params)
        .with_context(|| format!("execute {q}"))?;
    Ok(())
}

/// torua's statement-based path without distribution: the set-wise `UNWIND ... CREATE` statements of
/// src/storage/kuzu_shard.rs (without its existence checks), one transaction per batch.
fn ingest_unwind(
    dir: &Path,
    g: &Graph,
    memory_mb: u64,
    batch: usize,
    deadline: Instant,
) -> Result<IngestResult> {
    let db = open_embedded(&dir.join("unwind.kz"), memory_mb)?;
    let conn = Connection::new(&db)?;
    let efields = [
        ("id", LogicalType::String),
        ("title", LogicalType::String),
        ("type", LogicalType::String),
        ("description", LogicalType::String),
        ("text_unit_ids", string_list()),
        ("frequency", LogicalType::Int64),
        ("degree", LogicalType::Int64),
    ];
    let rfields = [
        ("id", LogicalType::String),
        ("source", LogicalType::String),
        ("target", LogicalType::String),
        ("description", LogicalType::String),
        ("weight", LogicalType::Double),
        ("text_unit_ids", string_list()),
    ];
    let t0 = Instant::now();
    let (mut entities_done, mut relations_done) = (0, 0);
    for chunk in g.entities.chunks(batch) {
        if Instant::now() > deadline {
            break;
        }
        entities_done += chunk.len();
        let rows = chunk
            .iter()
            .map(|e| {
                vec![
                    string(&e.id),
                    string(&e.title),
                    string(&e.kind),
                    string(&e.description),
                    strings(&e.text_unit_ids),
                    KValue::Int64(e.frequency),
                    KValue::Int64(e.degree),
                ]
            })
            .collect();
        exec(
            &conn,
            "UNWIND $rows AS r CREATE (:Entity {id: r.id, title: r.title, type: r.type, description: r.description, \
             text_unit_ids: r.text_unit_ids, frequency: r.frequency, degree: r.degree, stub: false})",
            vec![("rows", struct_rows(&efields, rows))],
        )?;
    }
    let entities_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for chunk in g.relations.chunks(batch) {
        if Instant::now() > deadline {
            break;
        }
        relations_done += chunk.len();
        let rows = chunk
            .iter()
            .map(|r| {
                vec![
                    string(&r.id),
                    string(&r.source),
                    string(&r.target),
                    string(&r.description),
                    KValue::Double(r.weight),
                    strings(&r.text_unit_ids),
                ]
            })
            .collect();
        exec(
            &conn,
            "UNWIND $rows AS r MATCH (a:Entity {id: r.source}), (b:Entity {id: r.target}) \
             CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, text_unit_ids: r.text_unit_ids, source: r.source, target: r.target}]->(b)",
            vec![("rows", struct_rows(&rfields, rows))],
        )?;
    }
    let relations_s = t1.elapsed().as_secs_f64();
    let wall = t0.elapsed();
    drop(conn);
    let complete = entities_done == g.entities.len() && relations_done == g.relations.len();
    if complete {
        check_counts(&db, g)?;
    }
    Ok(IngestResult {
        target: "embedded Kuzu, torua's UNWIND CREATE".into(),
        wall,
        entities_s,
        relations_s,
        entities_done,
        relations_done,
        complete,
        retries: 0,
        extra: json!({}),
    })
}

// ------------------------------------------------------------------------------------------------
// torua

fn start_cluster(args: &Args, nodes: usize, replicas: usize) -> Result<TestCluster> {
    let mut env = args.env.clone();
    env.insert("TORUA_SHARDS".into(), args.shards.to_string());
    env.insert("TORUA_REPLICAS".into(), replicas.to_string());
    env.insert("TORUA_BOOTSTRAP_EXPECT".into(), nodes.to_string());
    env.insert("TORUA_MEMORY_MB".into(), args.memory_mb.to_string());
    env.insert("TORUA_MAX_SHARD_GB".into(), args.max_shard_gb.to_string());
    let options = ClusterOptions {
        env,
        log: args.log.clone(),
        start_timeout: Duration::from_secs(60),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(nodes, options)?;
    cluster
        .wait_health_agree(Duration::from_secs(120), |v| {
            v["status"] == "green" && v["shards"]["active_shards"].as_u64() > Some(0)
        })
        .context("the cluster did not turn green")?;
    Ok(cluster)
}

/// JSON bodies of the batches (with their item counts): entities first, then relations.
type Bodies = Vec<(usize, Vec<u8>)>;

fn bodies(g: &Graph, batch: usize) -> Result<(Bodies, Bodies)> {
    let e = g
        .entities
        .chunks(batch)
        .map(|c| serde_json::to_vec(&json!({ "entities": c })).map(|b| (c.len(), b)))
        .collect::<Result<Vec<_>, _>>()?;
    let r = g
        .relations
        .chunks(batch)
        .map(|c| serde_json::to_vec(&json!({ "relations": c })).map(|b| (c.len(), b)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((e, r))
}

/// How long one batch is retried before the ingest is declared failed.
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

/// Sends the bodies with `clients` threads, thread k posting to node k mod n; no new batch is
/// started after `deadline`, nor after a batch failed for good (see [`post_batch`]).
/// Returns (retries, items acknowledged, the failure if any).
fn post_all(
    urls: &[String],
    bodies: &[(usize, Vec<u8>)],
    clients: usize,
    deadline: Instant,
) -> (usize, usize, Option<String>) {
    let next = AtomicUsize::new(0);
    let retries = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
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
                    if i >= bodies.len()
                        || Instant::now() > deadline
                        || failure.lock().expect("lock").is_some()
                    {
                        return;
                    }
                    match post_batch(&agent, url, &bodies[i].1) {
                        Ok(n) => {
                            retries.fetch_add(n, Ordering::SeqCst);
                            let before = done.fetch_add(bodies[i].0, Ordering::SeqCst);
                            let after = before + bodies[i].0;
                            // Progress at every tenth.
                            if after * 10 / total.max(1) > before * 10 / total.max(1) {
                                let secs = started.elapsed().as_secs_f64();
                                log(format!(
                                    "  {after}/{total} items in {secs:.0} s ({:.0}/s)",
                                    after as f64 / secs
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
    let failure = failure
        .into_inner()
        .expect("lock")
        .map(|e| format!("{e:#}"));
    (retries.into_inner(), done.into_inner(), failure)
}

/// What /cluster/shards says after the ingest, checked against the data.
fn verify_shards(cluster: &TestCluster, g: &Graph, shards: u32) -> Result<Value> {
    let expected_relations: u64 = g
        .relations
        .iter()
        .map(|r| {
            if shard_of(&r.source, shards) == shard_of(&r.target, shards) {
                1
            } else {
                2
            }
        })
        .sum();
    let answer = cluster
        .node(0)
        .get_json("/cluster/shards", Duration::from_secs(120))?;
    let copies = answer["copies"]
        .as_array()
        .context("no copies in /cluster/shards")?;
    let (mut entities, mut relations) = (0u64, 0u64);
    let in_sync = copies.iter().filter(|c| c["in_sync"] == true).count();
    let mut per_shard: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for c in copies {
        let e = c["entities"]
            .as_u64()
            .context("a copy without an entity count")?;
        let r = c["relations"]
            .as_u64()
            .context("a copy without a relation count")?;
        if c["primary"] == true {
            entities += e;
            relations += r;
        }
        if c["in_sync"] == true {
            per_shard
                .entry(c["shard"].as_u64().unwrap_or(0))
                .or_default()
                .push((e, r));
        }
    }
    let disagreeing: Vec<u64> = per_shard
        .iter()
        .filter(|(_, v)| v.iter().any(|x| *x != v[0]))
        .map(|(s, _)| *s)
        .collect();
    let ok = entities == g.entities.len() as u64
        && relations == expected_relations
        && disagreeing.is_empty();
    let size: u64 = copies.iter().filter_map(|c| c["size_bytes"].as_u64()).sum();
    let health = cluster
        .node(0)
        .get_json("/cluster/health", Duration::from_secs(10))?;
    let result = json!({
        "health": health["status"], "health_reasons": health["reasons"], "in_sync_copies": in_sync,
        "ok": ok, "primary_entities": entities, "expected_entities": g.entities.len(),
        "primary_relation_copies": relations, "expected_relation_copies": expected_relations,
        "in_sync_copies_disagree_on_shards": disagreeing, "copies": copies.len(), "size_bytes_all_copies": size,
    });
    if !ok {
        log(format!("VERIFICATION FAILED: {result}"));
    }
    Ok(result)
}

fn ingest_torua(
    args: &Args,
    cluster: &TestCluster,
    g: &Graph,
    nodes: usize,
    replicas: usize,
) -> Result<(IngestResult, Value)> {
    let (ebodies, rbodies) = bodies(g, args.batch)?;
    let body_bytes: usize = ebodies.iter().chain(&rbodies).map(|b| b.1.len()).sum();
    let urls: Vec<String> = (0..nodes)
        .map(|i| cluster.node(i).url("/graph/ingest"))
        .collect();
    log(format!(
        "torua {nodes} node(s): POST {} + {} batches ({:.0} MB of JSON)",
        ebodies.len(),
        rbodies.len(),
        body_bytes as f64 / 1e6
    ));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(args.max_minutes * 60.0);
    let (mut retries, entities_done, mut failure) =
        post_all(&urls, &ebodies, args.clients, deadline);
    let entities_s = t0.elapsed().as_secs_f64();
    log(format!("  entities done in {entities_s:.1} s"));
    let t1 = Instant::now();
    let mut relations_done = 0;
    if failure.is_none() {
        let (r, done, f) = post_all(&urls, &rbodies, args.clients, deadline);
        (retries, relations_done, failure) = (retries + r, done, f);
    }
    let relations_s = t1.elapsed().as_secs_f64();
    let acked = t0.elapsed();
    // Acknowledged = durable in every in-sync copy's log; the rate counts until it is all
    // applied (visible to reads), so the comparison with embedded Kuzu is like for like.
    if failure.is_none() {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(60);
        if let Err(e) = cluster.wait_applied(0, left) {
            failure = Some(format!("{e:#}"));
        }
    }
    let wall = t0.elapsed();
    log(format!(
        "  acknowledged after {:.1} s, applied after {:.1} s",
        acked.as_secs_f64(),
        wall.as_secs_f64()
    ));
    log(format!("  relations done in {relations_s:.1} s"));
    let complete = entities_done == g.entities.len() && relations_done == g.relations.len();
    let verify = if complete {
        verify_shards(cluster, g, args.shards)?
    } else {
        let why = match &failure {
            Some(e) => format!(
                "a batch failed for good: {}",
                e.chars().take(400).collect::<String>()
            ),
            None => format!("stopped at --max-minutes {}", args.max_minutes),
        };
        log(format!("  INCOMPLETE ({why}): {entities_done} entities, {relations_done} relations acknowledged"));
        let health = cluster
            .node(0)
            .get_json("/cluster/health", Duration::from_secs(30))
            .ok();
        json!({"ok": null, "incomplete": why,
               "health": health.as_ref().map(|h| h["status"].clone()),
               "health_reasons": health.as_ref().map(|h| h["reasons"].clone())})
    };
    Ok((
        IngestResult {
            target: format!(
                "torua {nodes} node{} R={replicas}",
                if nodes == 1 { "" } else { "s" }
            ),
            wall,
            entities_s,
            relations_s,
            entities_done,
            relations_done,
            complete,
            retries,
            extra: json!({"nodes": nodes, "replicas": replicas, "json_bytes": body_bytes,
                          "acknowledged_s": acked.as_secs_f64(), "verify": verify.clone()}),
        },
        verify,
    ))
}

// ------------------------------------------------------------------------------------------------
// Point reads

/// The embedded lookup: entity plus outgoing and incoming relations, all values materialised.
struct Lookup<'c, 'db> {
    conn: &'c Connection<'db>,
    entity: kuzu::PreparedStatement,
    out: kuzu::PreparedStatement,
    inc: kuzu::PreparedStatement,
}

const Q_ENTITY: &str = "MATCH (e:Entity {id: $id}) RETURN e.*";
const Q_OUT: &str =
    "MATCH (a:Entity {id: $id})-[x:RELATED]->(b:Entity) RETURN x.id, a.id, b.id, x.description, x.weight, x.text_unit_ids";
const Q_IN: &str = "MATCH (a:Entity)-[x:RELATED]->(b:Entity {id: $id}) WHERE a.id <> b.id \
                    RETURN x.id, a.id, b.id, x.description, x.weight, x.text_unit_ids";

impl<'c, 'db> Lookup<'c, 'db> {
    fn new(conn: &'c Connection<'db>) -> Result<Self> {
        Ok(Lookup {
            conn,
            entity: conn.prepare(Q_ENTITY)?,
            out: conn.prepare(Q_OUT)?,
            inc: conn.prepare(Q_IN)?,
        })
    }

    /// Number of relations (None if the entity is absent).
    fn get(&mut self, id: &str) -> Result<Option<usize>> {
        let rows: Vec<Vec<KValue>> = self
            .conn
            .execute(&mut self.entity, vec![("id", string(id))])?
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let out: Vec<Vec<KValue>> = self
            .conn
            .execute(&mut self.out, vec![("id", string(id))])?
            .collect();
        let inc: Vec<Vec<KValue>> = self
            .conn
            .execute(&mut self.inc, vec![("id", string(id))])?
            .collect();
        Ok(Some(out.len() + inc.len()))
    }
}

/// The same lookup the way torua's `get_entity` does it today: a new connection and every statement
/// prepared for this one read.
fn lookup_per_call(db: &Database, id: &str) -> Result<Option<usize>> {
    let conn = Connection::new(db)?;
    let run = |q: &str| -> Result<Vec<Vec<KValue>>> {
        let mut stmt = conn.prepare(q)?;
        Ok(conn.execute(&mut stmt, vec![("id", string(id))])?.collect())
    };
    if run("MATCH (e:Entity {id: $id}) WHERE e.stub = false RETURN e.id, e.title, e.type, e.description, e.text_unit_ids, e.frequency, e.degree")?
        .is_empty()
    {
        return Ok(None);
    }
    Ok(Some(run(Q_OUT)?.len() + run(Q_IN)?.len()))
}

#[derive(Debug, Clone, Copy)]
struct Pct {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

/// Nearest-rank percentiles of microsecond samples.
fn pct(values: &[f64]) -> Option<Pct> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let rank = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    Some(Pct {
        n,
        p50: rank(0.5),
        p90: rank(0.9),
        p99: rank(0.99),
        max: v[n - 1],
        mean: v.iter().sum::<f64>() / n as f64,
    })
}

fn pct_json(p: Option<Pct>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => {
            json!({"n": p.n, "p50_us": r1(p.p50), "p90_us": r1(p.p90), "p99_us": r1(p.p99), "max_us": r1(p.max), "mean_us": r1(p.mean)})
        }
    }
}

fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct ReadResult {
    embedded: Vec<f64>,
    per_call: Vec<f64>,
    torua: Vec<f64>,
    torua_local: Vec<f64>,
    torua_remote: Vec<f64>,
    mismatches: usize,
    relations_mean: f64,
}

/// Shards of which `node` holds an in-sync copy (reads of these are answered locally).
fn local_shards(cluster: &TestCluster, node: usize) -> Result<Vec<u64>> {
    let answer = cluster
        .node(node)
        .get_json("/cluster/shards", Duration::from_secs(60))?;
    let me = cluster.node(node).id.as_str();
    Ok(answer["copies"]
        .as_array()
        .map(|copies| {
            copies
                .iter()
                .filter(|c| c["node"] == me && c["in_sync"] == true)
                .filter_map(|c| c["shard"].as_u64())
                .collect()
        })
        .unwrap_or_default())
}

fn point_reads(args: &Args, db: &Database, cluster: &TestCluster, g: &Graph) -> Result<ReadResult> {
    let local = local_shards(cluster, 0)?;
    let conn = Connection::new(db)?;
    let mut lookup = Lookup::new(&conn)?;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let base = cluster.node(0).url("/graph/entities/");
    let mut rng = Rng(args.seed ^ 0x005E_ED0F_4EAD);
    let mut r = ReadResult {
        embedded: vec![],
        per_call: vec![],
        torua: vec![],
        torua_local: vec![],
        torua_remote: vec![],
        mismatches: 0,
        relations_mean: 0.0,
    };
    let mut relations_total = 0usize;
    for i in 0..args.read_warmup + args.reads {
        let id = &g.entities[rng.below(g.entities.len())].id;
        let t = Instant::now();
        let want = lookup
            .get(id)?
            .with_context(|| format!("{id} missing in the embedded database"))?;
        let embedded = us(t.elapsed());
        let t = Instant::now();
        let per_call = lookup_per_call(db, id)?;
        let per_call_us = us(t.elapsed());
        let t = Instant::now();
        let resp = agent
            .get(&format!("{base}{id}"))
            .call()
            .with_context(|| format!("GET /graph/entities/{id}"))?;
        let body: Value = resp.into_json()?;
        let torua = us(t.elapsed());
        let got = body["relations"].as_array().map(Vec::len);
        if got != Some(want) || per_call != Some(want) || body["entity"]["id"] != id.as_str() {
            r.mismatches += 1;
            if r.mismatches <= 3 {
                log(format!("read mismatch for {id}: embedded {want} relations, per-call {per_call:?}, torua {got:?}"));
            }
        }
        if i < args.read_warmup {
            continue;
        }
        relations_total += want;
        r.embedded.push(embedded);
        r.per_call.push(per_call_us);
        r.torua.push(torua);
        if local.contains(&u64::from(shard_of(id, args.shards))) {
            r.torua_local.push(torua);
        } else {
            r.torua_remote.push(torua);
        }
    }
    r.relations_mean = relations_total as f64 / args.reads.max(1) as f64;
    Ok(r)
}

fn report_reads(out: &mut Out, target: &str, r: &ReadResult) -> Result<()> {
    let base = pct(&r.embedded);
    let ratio = |p: Option<Pct>| -> Option<f64> { Some(p?.p50 / base?.p50) };
    let rows: [(&str, &[f64]); 5] = [
        ("embedded Kuzu, prepared once", &r.embedded),
        ("embedded Kuzu, torua's per-read way", &r.per_call),
        (target, &r.torua),
        ("  of which: a copy on the node", &r.torua_local),
        ("  of which: a QUIC hop away", &r.torua_remote),
    ];
    println!(
        "\npoint reads through {target} ({} reads, mean {:.1} relations per entity)",
        r.embedded.len(),
        r.relations_mean
    );
    println!(
        "{:<40} {:>6} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "", "n", "p50 µs", "p90 µs", "p99 µs", "mean µs", "p50 ratio"
    );
    for (name, v) in rows {
        let p = pct(v);
        match p {
            None => println!("{name:<40} {:>6}", 0),
            Some(p) => println!(
                "{name:<40} {:>6} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.2}x",
                p.n,
                p.p50,
                p.p90,
                p.p99,
                p.mean,
                ratio(Some(p)).unwrap_or(f64::NAN)
            ),
        }
    }
    let torua = pct(&r.torua);
    let met = ratio(torua).is_some_and(|x| x <= 2.0);
    println!(
        "target p50 <= 2x embedded: {} ({:.2}x); relation-count mismatches: {}",
        if met { "met" } else { "NOT met" },
        ratio(torua).unwrap_or(f64::NAN),
        r.mismatches
    );
    out.emit(json!({
        "kind": "point_read", "target": target, "reads": r.embedded.len(), "relations_mean": r1(r.relations_mean),
        "embedded": pct_json(base), "embedded_per_read_prepare": pct_json(pct(&r.per_call)),
        "torua": pct_json(torua), "torua_local_copy": pct_json(pct(&r.torua_local)),
        "torua_remote_copy": pct_json(pct(&r.torua_remote)), "p50_ratio": ratio(torua),
        "target_p50_ratio_max": 2.0, "target_met": met, "mismatches": r.mismatches,
    }))
}

// ------------------------------------------------------------------------------------------------
// Graph queries (issue 5): POST /graph/neighborhood and POST /query, interleaved sample by sample
// with the same work done by Cypher on the embedded `copy` database (one database, whole graph).
//
// Embedded neighbourhood = the breadth-first search of the contract, direction both: per hop the
// relations of the frontier in both directions, new frontier = endpoints not seen yet; then the
// properties of every entity found; then the contract's (hop, id) / (id, source, target) order and
// caps. Each of the three steps runs either as one `UNWIND $ids AS i MATCH (a:Entity {id: i}) ...`
// statement or as one primary-key statement per id, whichever is cheaper for the number of ids
// (`--query-embedded auto`, costs measured on 20 ids before the cases): Kuzu 0.11 plans the UNWIND
// form as a hash join over the whole table (~150-200 ms per direction at 1M relations, even for one
// id) while a per-id statement costs ~1.5 ms, so either form alone would be a weak baseline for
// part of the cases. `--query-embedded unwind|per-id` forces one form. All statements are prepared
// once. Torua's time is the HTTP request until the last byte of the answer (JSON parsing on the
// client is not timed); every sample is checked: the (hop, id) of every entity, the (id, source,
// target) of every relation and the truncated flag must equal the embedded answer's.

const Q_HOOD_OUT: &str = "UNWIND $ids AS i MATCH (a:Entity {id: i})-[r:RELATED]->(b:Entity) \
                          RETURN a.id, b.id, r.id, r.description, r.weight";
const Q_HOOD_IN: &str = "UNWIND $ids AS i MATCH (a:Entity)-[r:RELATED]->(b:Entity {id: i}) \
                         RETURN a.id, b.id, r.id, r.description, r.weight";
const Q_HOOD_PROPS: &str = "UNWIND $ids AS i MATCH (e:Entity {id: i}) \
                            RETURN e.id, e.title, e.type, e.description, e.degree, e.frequency";
const COUNT_QUERIES: [(&str, &str); 2] = [
    ("count entities", "MATCH (e:Entity) RETURN count(*) AS n"),
    (
        "count relations",
        "MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN count(*) AS n",
    ),
];
/// Samples a case gets at least before its time cap may stop it.
const QUERY_MIN_SAMPLES: usize = 10;
/// Target of the issue: 1 hop from 10 seeds, p50, on the multi-node cluster.
const TARGET_HOOD_MS: f64 = 20.0;
/// Target of the issue: every query's p50 at most this many times the embedded one.
const TARGET_QUERY_RATIO: f64 = 3.0;

/// A neighbourhood answer reduced to what is compared, in the contract's order.
#[derive(Debug, Default, PartialEq)]
struct Hood {
    /// (hop, id), sorted.
    entities: Vec<(u64, String)>,
    /// (id, source, target), sorted.
    relations: Vec<(String, String, String)>,
    truncated: bool,
}

fn kstring(v: KValue) -> String {
    match v {
        KValue::String(s) => s,
        other => other.to_string(),
    }
}

fn kcount(v: Option<&KValue>) -> Option<u64> {
    match v? {
        KValue::Int64(n) => u64::try_from(*n).ok(),
        KValue::UInt64(n) => Some(*n),
        KValue::Int32(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// Per-id forms of the three statements (prepared once, executed once per frontier id).
/// Like torua's shards, the baseline reads the endpoints' ids stored on the relation (reading them
/// through the far node costs Kuzu a join over the node table: ~1.4 ms instead of ~0.35 ms per id).
const Q_HOOD_OUT_ONE: &str = "MATCH (a:Entity {id: $id})-[r:RELATED]->() \
                              RETURN r.source, r.target, r.id, r.description, r.weight";
const Q_HOOD_IN_ONE: &str = "MATCH (b:Entity {id: $id})<-[r:RELATED]-() \
                             RETURN r.source, r.target, r.id, r.description, r.weight";
const Q_HOOD_PROPS_ONE: &str = "MATCH (e:Entity {id: $id}) \
                                RETURN e.id, e.title, e.type, e.description, e.degree, e.frequency";

/// How the embedded search runs each of its three steps (relations out, relations in, properties).
#[derive(Debug, Clone, Copy, PartialEq)]
enum EmbeddedMode {
    /// Per step, whichever is cheaper for the number of ids, by the costs measured at the start:
    /// one `UNWIND $ids` statement (Kuzu 0.11 plans it as a hash join over the whole table, so its
    /// cost hardly depends on the number of ids) or one primary-key statement per id.
    Auto,
    /// Always the `UNWIND $ids` statements.
    Unwind,
    /// Always one statement per id.
    PerId,
}

/// The embedded breadth-first search (statements prepared once).
struct Bfs<'c, 'db> {
    conn: &'c Connection<'db>,
    mode: EmbeddedMode,
    /// [out, in, props]: the `UNWIND $ids` form and the per-id form.
    set: [kuzu::PreparedStatement; 3],
    one: [kuzu::PreparedStatement; 3],
    /// Measured costs per step: (µs per id of the per-id form, µs of one set statement).
    costs: [(f64, f64); 3],
    /// Statements executed since the last reset: (per-id, set).
    executed: (usize, usize),
}

/// One found entity with the properties the API returns.
#[allow(dead_code)]
struct HoodEntity {
    hop: u64,
    id: String,
    title: String,
    kind: String,
    description: String,
    degree: i64,
    frequency: i64,
}

impl<'c, 'db> Bfs<'c, 'db> {
    fn new(conn: &'c Connection<'db>, mode: EmbeddedMode) -> Result<Self> {
        Ok(Bfs {
            conn,
            mode,
            set: [
                conn.prepare(Q_HOOD_OUT)?,
                conn.prepare(Q_HOOD_IN)?,
                conn.prepare(Q_HOOD_PROPS)?,
            ],
            one: [
                conn.prepare(Q_HOOD_OUT_ONE)?,
                conn.prepare(Q_HOOD_IN_ONE)?,
                conn.prepare(Q_HOOD_PROPS_ONE)?,
            ],
            costs: [(1.0, f64::INFINITY); 3],
            executed: (0, 0),
        })
    }

    /// Measures both forms of each step on `sample` ids (the set form with all of them at once).
    fn calibrate(&mut self, sample: &[String]) -> Result<()> {
        for step in 0..3 {
            let (mut one_us, mut set_us) = (Vec::new(), Vec::new());
            for round in 0..4 {
                let t = Instant::now();
                for id in sample {
                    let _: Vec<Vec<KValue>> = self
                        .conn
                        .execute(&mut self.one[step], vec![("id", string(id))])?
                        .collect();
                }
                let per_id = us(t.elapsed()) / sample.len() as f64;
                let t = Instant::now();
                let _: Vec<Vec<KValue>> = self
                    .conn
                    .execute(&mut self.set[step], vec![("ids", str_list(sample))])?
                    .collect();
                let set = us(t.elapsed());
                if round > 0 {
                    one_us.push(per_id);
                    set_us.push(set);
                }
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            self.costs[step] = (median(&mut one_us), median(&mut set_us));
        }
        Ok(())
    }

    /// Whether `step` runs as one set statement for `n` ids.
    fn use_set(&self, step: usize, n: usize) -> bool {
        match self.mode {
            EmbeddedMode::Unwind => true,
            EmbeddedMode::PerId => false,
            EmbeddedMode::Auto => n as f64 * self.costs[step].0 > self.costs[step].1,
        }
    }

    /// Rows of `step` for the ids, by the form chosen for their number.
    fn rows(&mut self, step: usize, ids: &[String]) -> Result<Vec<Vec<KValue>>> {
        if self.use_set(step, ids.len()) {
            self.executed.1 += 1;
            Ok(self
                .conn
                .execute(&mut self.set[step], vec![("ids", str_list(ids))])?
                .collect())
        } else {
            self.executed.0 += ids.len();
            let mut rows = Vec::new();
            for id in ids {
                rows.extend(
                    self.conn
                        .execute(&mut self.one[step], vec![("id", string(id))])?,
                );
            }
            Ok(rows)
        }
    }

    fn run(
        &mut self,
        seeds: &[&str],
        hops: u32,
        max_nodes: usize,
        max_relations: usize,
    ) -> Result<Hood> {
        let mut hop: HashMap<String, u64> = HashMap::new();
        let mut frontier: Vec<String> = Vec::new();
        for seed in seeds {
            if hop.insert(seed.to_string(), 0).is_none() {
                frontier.push(seed.to_string());
            }
        }
        // (id, source, target) -> (description, weight)
        let mut rels: HashMap<(String, String, String), (String, f64)> = HashMap::new();
        for h in 1..=u64::from(hops) {
            if frontier.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for step in [0, 1] {
                for row in self.rows(step, &frontier)? {
                    let mut it = row.into_iter();
                    let mut take = || it.next().map(kstring).unwrap_or_default();
                    let (a, b, id, description) = (take(), take(), take(), take());
                    let weight = match it.next() {
                        Some(KValue::Double(w)) => w,
                        _ => f64::NAN,
                    };
                    for end in [&a, &b] {
                        if !hop.contains_key(end.as_str()) {
                            hop.insert(end.clone(), h);
                            next.push(end.clone());
                        }
                    }
                    rels.entry((id, a, b)).or_insert((description, weight));
                }
            }
            frontier = next;
        }
        let all: Vec<String> = hop.keys().cloned().collect();
        let mut entities: Vec<HoodEntity> = Vec::with_capacity(all.len());
        for row in self.rows(2, &all)? {
            let mut it = row.into_iter();
            let id = it.next().map(kstring).unwrap_or_default();
            let mut take = || it.next().map(kstring).unwrap_or_default();
            let (title, kind, description) = (take(), take(), take());
            let mut int = || match it.next() {
                Some(KValue::Int64(n)) => n,
                _ => 0,
            };
            let (degree, frequency) = (int(), int());
            entities.push(HoodEntity {
                hop: hop.get(&id).copied().unwrap_or(u64::MAX),
                id,
                title,
                kind,
                description,
                degree,
                frequency,
            });
        }
        entities.sort_unstable_by(|x, y| (x.hop, &x.id).cmp(&(y.hop, &y.id)));
        // ((id, source, target), (description, weight))
        #[allow(clippy::type_complexity)]
        let mut relations: Vec<((String, String, String), (String, f64))> =
            rels.into_iter().collect();
        relations.sort_unstable_by(|x, y| x.0.cmp(&y.0));
        let mut truncated = false;
        if entities.len() > max_nodes {
            entities.truncate(max_nodes);
            let kept: HashSet<&str> = entities.iter().map(|e| e.id.as_str()).collect();
            relations
                .retain(|((_, a, b), _)| kept.contains(a.as_str()) && kept.contains(b.as_str()));
            truncated = true;
        }
        if relations.len() > max_relations {
            relations.truncate(max_relations);
            truncated = true;
        }
        Ok(Hood {
            entities: entities.into_iter().map(|e| (e.hop, e.id)).collect(),
            relations: relations.into_iter().map(|(k, _)| k).collect(),
            truncated,
        })
    }
}

fn str_list(v: &[String]) -> KValue {
    KValue::List(LogicalType::String, v.iter().map(|x| string(x)).collect())
}

/// Torua's answer reduced to a [`Hood`] (sorted here), and whether it came in the contract's order.
fn parse_hood(v: &Value) -> Result<(Hood, bool)> {
    let str_of = |x: &Value, k: &str| -> Result<String> {
        Ok(x[k]
            .as_str()
            .with_context(|| format!("no string {k:?} in {}", short(&x.to_string(), 200)))?
            .to_string())
    };
    let mut entities = Vec::new();
    for e in v["entities"].as_array().context("no \"entities\" array")? {
        let hop = e["hop"]
            .as_u64()
            .with_context(|| format!("no hop in {}", short(&e.to_string(), 200)))?;
        entities.push((hop, str_of(e, "id")?));
    }
    let mut relations = Vec::new();
    for r in v["relations"]
        .as_array()
        .context("no \"relations\" array")?
    {
        relations.push((str_of(r, "id")?, str_of(r, "source")?, str_of(r, "target")?));
    }
    let ordered =
        entities.windows(2).all(|w| w[0] <= w[1]) && relations.windows(2).all(|w| w[0] <= w[1]);
    entities.sort_unstable();
    relations.sort_unstable();
    Ok((
        Hood {
            entities,
            relations,
            truncated: v["truncated"].as_bool().unwrap_or(false),
        },
        ordered,
    ))
}

/// What differs between two answers, for the report.
fn hood_diff(want: &Hood, got: &Hood) -> String {
    fn only<T: Ord + Clone + std::fmt::Debug>(a: &[T], b: &[T]) -> (usize, Vec<T>) {
        let set: std::collections::BTreeSet<&T> = b.iter().collect();
        let v: Vec<T> = a.iter().filter(|x| !set.contains(x)).cloned().collect();
        (v.len(), v.into_iter().take(3).collect())
    }
    let (en, es) = only(&want.entities, &got.entities);
    let (tn, ts) = only(&got.entities, &want.entities);
    let (rn, rs) = only(&want.relations, &got.relations);
    let (sn, ss) = only(&got.relations, &want.relations);
    // The differing relations grouped by the hops of their endpoints (from the embedded answer;
    // "-": not among its entities).
    let hop_of: HashMap<&str, u64> = want
        .entities
        .iter()
        .map(|(h, id)| (id.as_str(), *h))
        .collect();
    let by_hops = |a: &[(String, String, String)], b: &[(String, String, String)]| -> String {
        let set: HashSet<&(String, String, String)> = b.iter().collect();
        let mut groups: BTreeMap<String, usize> = BTreeMap::new();
        for r in a.iter().filter(|r| !set.contains(r)) {
            let h = |id: &str| hop_of.get(id).map_or("-".to_string(), |h| h.to_string());
            *groups
                .entry(format!("{}-{}", h(&r.1), h(&r.2)))
                .or_default() += 1;
        }
        format!("{groups:?}")
    };
    let (rh, sh) = (
        by_hops(&want.relations, &got.relations),
        by_hops(&got.relations, &want.relations),
    );
    format!(
        "embedded {} entities / {} relations (truncated {}), torua {} / {} (truncated {}); \
         (hop, id) only embedded: {en} e.g. {es:?}; only torua: {tn} e.g. {ts:?}; \
         relations only embedded: {rn} e.g. {rs:?} (by source-target hop {rh}); \
         only torua: {sn} e.g. {ss:?} (by source-target hop {sh})",
        want.entities.len(),
        want.relations.len(),
        want.truncated,
        got.entities.len(),
        got.relations.len(),
        got.truncated
    )
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

/// POST a prepared body; (µs until the whole answer is read, status, body). Err: no HTTP answer.
fn post_timed(
    agent: &ureq::Agent,
    url: &str,
    body: &[u8],
) -> std::result::Result<(f64, u16, Vec<u8>), String> {
    use std::io::Read;
    let t = Instant::now();
    let resp = match agent
        .post(url)
        .set("content-type", "application/json")
        .send_bytes(body)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("POST {url}: {e}")),
    };
    let status = resp.status();
    let mut buf = Vec::with_capacity(1 << 16);
    resp.into_reader()
        .read_to_end(&mut buf)
        .map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
    Ok((us(t.elapsed()), status, buf))
}

#[derive(Debug, Clone, Copy)]
enum QuerySpec {
    Hood {
        hops: u32,
        seeds: usize,
    },
    Count {
        name: &'static str,
        cypher: &'static str,
    },
}

impl QuerySpec {
    fn name(&self) -> String {
        match self {
            QuerySpec::Hood { hops, seeds } => format!(
                "neighborhood {hops} hop{}, {seeds} seed{}",
                if *hops == 1 { "" } else { "s" },
                if *seeds == 1 { "" } else { "s" }
            ),
            QuerySpec::Count { name, .. } => format!("query: {name}"),
        }
    }
}

struct QueryCase {
    spec: QuerySpec,
    torua: Vec<f64>,
    embedded: Vec<f64>,
    /// Sizes of the embedded answers of the measured samples (entities, relations), or the count.
    sizes: Vec<(usize, usize)>,
    /// Measured samples whose answer is cut by the caps (embedded, with the same caps).
    truncated: usize,
    torua_bytes: usize,
    mismatches: usize,
    errors: usize,
    /// Answers not in the contract's order (not counted as mismatches).
    unordered: usize,
    notes: Vec<String>,
    stopped_by_time: bool,
    wall_s: f64,
    /// Embedded statements per sample: (per-id, set).
    embedded_statements: (f64, f64),
}

impl QueryCase {
    fn note(&mut self, msg: String) {
        if self.notes.len() < 3 {
            log(format!("  {}: {msg}", self.spec.name()));
            self.notes.push(msg);
        }
    }
}

fn query_specs(args: &Args) -> Vec<QuerySpec> {
    let mut v = Vec::new();
    for &hops in &args.query_hops {
        for &seeds in &args.query_seeds {
            v.push(QuerySpec::Hood { hops, seeds });
        }
    }
    for (name, cypher) in COUNT_QUERIES {
        v.push(QuerySpec::Count { name, cypher });
    }
    v
}

/// Runs every query case against `cluster` (None: the embedded database alone), requests to the
/// nodes round-robin.
fn query_phase(
    args: &Args,
    db: &Database,
    cluster: Option<&TestCluster>,
    g: &Graph,
) -> Result<QueryPhase> {
    let conn = Connection::new(db)?;
    let mut bfs = Bfs::new(&conn, args.query_embedded)?;
    let mut rng = Rng(args.seed ^ 0xCA1B_0000);
    let sample: Vec<String> = (0..20)
        .map(|_| g.entities[rng.below(g.entities.len())].id.clone())
        .collect();
    bfs.calibrate(&sample)?;
    log(format!(
        "  embedded statement costs (per-id µs per id / set µs): out {:.0}/{:.0}, in {:.0}/{:.0}, properties {:.0}/{:.0}; mode {:?}",
        bfs.costs[0].0, bfs.costs[0].1, bfs.costs[1].0, bfs.costs[1].1, bfs.costs[2].0, bfs.costs[2].1, bfs.mode
    ));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let nodes = cluster.map_or(0, |c| c.nodes.len());
    let hood_urls: Vec<String> = (0..nodes)
        .map(|i| cluster.expect("cluster").node(i).url("/graph/neighborhood"))
        .collect();
    let query_urls: Vec<String> = (0..nodes)
        .map(|i| cluster.expect("cluster").node(i).url("/query"))
        .collect();
    let mut next_node = 0usize;
    let cap = Duration::from_secs_f64(args.query_case_s);
    let mut cases = Vec::new();
    for spec in query_specs(args) {
        let (reps, mut rng, mut count_stmt) = match spec {
            QuerySpec::Hood { hops, seeds } => {
                let heavy = seeds >= 100 && hops >= 2;
                let reps = if heavy {
                    (args.query_reps / 5)
                        .max(QUERY_MIN_SAMPLES)
                        .min(args.query_reps)
                } else {
                    args.query_reps
                };
                // The same seed sets for every target of the run.
                let rng = Rng(args.seed
                    ^ 0x6E16_4B0D_0000_0000
                    ^ (u64::from(hops) << 40)
                    ^ ((seeds as u64) << 8));
                (reps, rng, None)
            }
            QuerySpec::Count { cypher, .. } => {
                (args.query_reps, Rng(0), Some(conn.prepare(cypher)?))
            }
        };
        let mut c = QueryCase {
            spec,
            torua: vec![],
            embedded: vec![],
            sizes: vec![],
            truncated: 0,
            torua_bytes: 0,
            mismatches: 0,
            errors: 0,
            unordered: 0,
            notes: vec![],
            stopped_by_time: false,
            wall_s: 0.0,
            embedded_statements: (0.0, 0.0),
        };
        bfs.executed = (0, 0);
        log(format!(
            "  {} ({} samples + {} warm-up, at most ~{:.0} s)",
            spec.name(),
            reps,
            args.query_warmup,
            args.query_case_s
        ));
        let started = Instant::now();
        let mut torua_ok = 0usize;
        for i in 0..args.query_warmup + reps {
            let measured = i.saturating_sub(args.query_warmup);
            let elapsed = started.elapsed();
            if i >= args.query_warmup
                && ((elapsed >= cap && measured >= QUERY_MIN_SAMPLES.min(reps))
                    || elapsed >= 3 * cap)
            {
                c.stopped_by_time = true;
                break;
            }
            if nodes > 0 && c.errors >= 3 && torua_ok == 0 {
                c.note("giving up on this case: every request failed".into());
                break;
            }
            // Inputs, prepared before any clock starts.
            let (body, seeds): (Vec<u8>, Vec<&str>) = match spec {
                QuerySpec::Hood { hops, seeds: k } => {
                    let mut picked: Vec<usize> = Vec::with_capacity(k);
                    while picked.len() < k {
                        let x = rng.below(g.entities.len());
                        if !picked.contains(&x) {
                            picked.push(x);
                        }
                    }
                    let seeds: Vec<&str> =
                        picked.iter().map(|&x| g.entities[x].id.as_str()).collect();
                    let body = serde_json::to_vec(&json!({
                        "seeds": seeds, "hops": hops, "direction": "both",
                        "max_nodes": args.query_max_nodes, "max_relations": args.query_max_relations,
                        "timeout_ms": 60000, "allow_partial": false,
                    }))?;
                    (body, seeds)
                }
                QuerySpec::Count { cypher, .. } => (
                    serde_json::to_vec(
                        &json!({"cypher": cypher, "timeout_ms": 60000, "allow_partial": false}),
                    )?,
                    vec![],
                ),
            };
            let url = match spec {
                QuerySpec::Hood { .. } => hood_urls.get(next_node % nodes.max(1)),
                QuerySpec::Count { .. } => query_urls.get(next_node % nodes.max(1)),
            };
            next_node += 1;
            // Alternate which side goes first, so neither always runs on the other's warm caches.
            let mut embedded = |c: &mut QueryCase| -> Result<(f64, Hood, u64)> {
                let t = Instant::now();
                match spec {
                    QuerySpec::Hood { hops, .. } => {
                        let h =
                            bfs.run(&seeds, hops, args.query_max_nodes, args.query_max_relations)?;
                        Ok((us(t.elapsed()), h, 0))
                    }
                    QuerySpec::Count { .. } => {
                        let stmt = count_stmt.as_mut().expect("prepared");
                        let rows: Vec<Vec<KValue>> = conn.execute(stmt, vec![])?.collect();
                        let n = kcount(rows.first().and_then(|r| r.first()));
                        let took = us(t.elapsed());
                        let n = match n {
                            Some(n) => n,
                            None => {
                                c.note(format!("embedded count returned {rows:?}"));
                                u64::MAX
                            }
                        };
                        Ok((took, Hood::default(), n))
                    }
                }
            };
            let torua = |url: Option<&String>| url.map(|u| post_timed(&agent, u, &body));
            let (emb, answer) = if i % 2 == 0 {
                let e = embedded(&mut c)?;
                (e, torua(url))
            } else {
                let a = torua(url);
                (embedded(&mut c)?, a)
            };
            let (emb_us, want, want_n) = emb;
            let is_measured = i >= args.query_warmup;
            if is_measured {
                c.embedded.push(emb_us);
                c.truncated += usize::from(want.truncated);
                c.sizes.push(match spec {
                    QuerySpec::Hood { .. } => (want.entities.len(), want.relations.len()),
                    QuerySpec::Count { .. } => (want_n as usize, 0),
                });
            }
            let Some(answer) = answer else { continue };
            let what = format!("sample {i} via {}", url.map(|u| u.as_str()).unwrap_or("-"));
            let (t_us, status, bytes) = match answer {
                Ok(x) => x,
                Err(e) => {
                    c.errors += 1;
                    c.note(format!("{what}: {e}"));
                    continue;
                }
            };
            let text = || short(&String::from_utf8_lossy(&bytes), 400);
            let v: Value = match serde_json::from_slice(&bytes) {
                Ok(v) if status == 200 => v,
                _ => {
                    c.errors += 1;
                    c.note(format!(
                        "{what}: HTTP {status}: {}; request {}",
                        text(),
                        short(&String::from_utf8_lossy(&body), 300)
                    ));
                    continue;
                }
            };
            torua_ok += 1;
            if v["_shards"]["failed"].as_u64().unwrap_or(0) > 0 {
                c.errors += 1;
                c.note(format!("{what}: _shards {}", v["_shards"]));
                continue;
            }
            let ok = match spec {
                QuerySpec::Hood { .. } => match parse_hood(&v) {
                    Ok((got, ordered)) => {
                        c.unordered += usize::from(!ordered);
                        if v["missing_seeds"].as_array().is_some_and(|m| !m.is_empty()) {
                            c.note(format!(
                                "{what}: missing_seeds {} (every seed exists)",
                                short(&v["missing_seeds"].to_string(), 200)
                            ));
                        }
                        if got != want {
                            c.note(format!(
                                "{what}: seeds {:?}: {}",
                                short(&format!("{seeds:?}"), 120),
                                hood_diff(&want, &got)
                            ));
                            false
                        } else {
                            true
                        }
                    }
                    Err(e) => {
                        c.note(format!("{what}: unreadable answer ({e:#}): {}", text()));
                        false
                    }
                },
                QuerySpec::Count { .. } => {
                    let got = v["rows"][0][0].as_u64();
                    if got != Some(want_n) {
                        c.note(format!(
                            "{what}: embedded n = {want_n}, torua rows {} (columns {})",
                            short(&v["rows"].to_string(), 200),
                            v["columns"]
                        ));
                        false
                    } else {
                        true
                    }
                }
            };
            if !ok {
                c.mismatches += 1;
            }
            if is_measured {
                c.torua.push(t_us);
                c.torua_bytes += bytes.len();
            }
        }
        c.wall_s = started.elapsed().as_secs_f64();
        let p50 = |v: &[f64]| pct(v).map_or("-".to_string(), |p| format!("{:.2} ms", ms(p.p50)));
        log(format!(
            "    {} samples in {:.1} s: torua p50 {}, embedded p50 {}; {} mismatches, {} errors",
            c.embedded.len(),
            c.wall_s,
            p50(&c.torua),
            p50(&c.embedded),
            c.mismatches,
            c.errors
        ));
        let samples = (args.query_warmup + reps).max(1) as f64;
        c.embedded_statements = (
            bfs.executed.0 as f64 / samples,
            bfs.executed.1 as f64 / samples,
        );
        bfs.executed = (0, 0);
        cases.push(c);
    }
    Ok(QueryPhase {
        cases,
        mode: bfs.mode,
        costs: bfs.costs,
    })
}

/// The cases of one target, with how the embedded side ran.
struct QueryPhase {
    cases: Vec<QueryCase>,
    mode: EmbeddedMode,
    /// [out, in, properties]: (µs per id of the per-id statement, µs of one `UNWIND $ids` statement).
    costs: [(f64, f64); 3],
}

fn ms(v: f64) -> f64 {
    v / 1000.0
}

/// Prints the table of one target and emits its JSON lines; returns the failures.
fn report_queries(
    out: &mut Out,
    args: &Args,
    target: &str,
    nodes: usize,
    phase: &QueryPhase,
    // Some(what /cluster/shards said) when the target's ingest did not verify.
    unverified: Option<String>,
) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    let cases = &phase.cases;
    println!(
        "\ngraph queries: {target} vs one embedded Kuzu database (same seeds, interleaved sample by sample), \
         direction both, max_nodes {}, max_relations {}; times in ms; p99 is nearest-rank (the maximum below 100 samples)",
        args.query_max_nodes, args.query_max_relations
    );
    if let Some(v) = &unverified {
        println!(
            "!!! WARNING: the ingest of {target} did NOT verify, data is missing or copies disagree, so answers \
             can differ for that reason alone: {}",
            short(v, 600)
        );
    }
    let cost = |i: usize| {
        format!(
            "{:.2} ms per id / {:.1} ms",
            phase.costs[i].0 / 1000.0,
            phase.costs[i].1 / 1000.0
        )
    };
    println!(
        "embedded search: {:?} (relations out {}, in {}, properties {}: per-id statement vs one UNWIND $ids statement; \
         `embd stmts` = per-id + UNWIND statements per sample)",
        phase.mode, cost(0), cost(1), cost(2)
    );
    println!(
        "{:<34} {:>4} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>20} {:>10} {:>5} {:>5} {:>4}  targets",
        "",
        "n",
        "torua p50",
        "p99",
        "embd p50",
        "p99",
        "p50 x",
        "p99 x",
        "answer (mean)",
        "embd stmts",
        "trunc",
        "mism",
        "err"
    );
    for c in cases {
        let (t, e) = (pct(&c.torua), pct(&c.embedded));
        let ratio = |f: fn(&Pct) -> f64| -> Option<f64> { Some(f(&t?) / f(&e?)) };
        let (r50, r99) = (ratio(|p| p.p50), ratio(|p| p.p99));
        let n = c.embedded.len().max(1) as f64;
        let answer = match c.spec {
            QuerySpec::Hood { .. } => format!(
                "E {:.0} R {:.0}",
                c.sizes.iter().map(|x| x.0).sum::<usize>() as f64 / n,
                c.sizes.iter().map(|x| x.1).sum::<usize>() as f64 / n
            ),
            QuerySpec::Count { .. } => format!("n = {}", c.sizes.first().map_or(0, |x| x.0)),
        };
        let hood_target = matches!(c.spec, QuerySpec::Hood { hops: 1, seeds: 10 }) && nodes > 1;
        let ratio_met = r50.map(|x| x <= TARGET_QUERY_RATIO);
        let ms_met = hood_target.then(|| t.is_some_and(|p| ms(p.p50) <= TARGET_HOOD_MS));
        let mut targets = Vec::new();
        if nodes > 0 {
            targets.push(format!(
                "p50 <= {TARGET_QUERY_RATIO}x: {}",
                match ratio_met {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "no data",
                }
            ));
        }
        if let Some(m) = ms_met {
            targets.push(format!(
                "p50 <= {TARGET_HOOD_MS} ms: {}",
                if m { "met" } else { "NOT met" }
            ));
        }
        let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
        println!(
            "{:<34} {:>4} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>20} {:>10} {:>5} {:>5} {:>4}  {}{}",
            c.spec.name(),
            c.embedded.len(),
            f(t.map(|p| ms(p.p50))),
            f(t.map(|p| ms(p.p99))),
            f(e.map(|p| ms(p.p50))),
            f(e.map(|p| ms(p.p99))),
            f(r50),
            f(r99),
            answer,
            match c.spec {
                QuerySpec::Hood { .. } => format!("{:.0}+{:.0}", c.embedded_statements.0, c.embedded_statements.1),
                QuerySpec::Count { .. } => "1".into(),
            },
            c.truncated,
            if nodes > 0 { c.mismatches.to_string() } else { "-".into() },
            if nodes > 0 { c.errors.to_string() } else { "-".into() },
            targets.join(", "),
            if c.stopped_by_time { " (time cap)" } else { "" }
        );
        let (hops, seeds, cypher) = match c.spec {
            QuerySpec::Hood { hops, seeds } => (Some(hops), Some(seeds), None),
            QuerySpec::Count { cypher, .. } => (None, None, Some(cypher)),
        };
        out.emit(json!({
            "kind": "query", "target": target, "nodes": nodes, "case": c.spec.name(),
            "query": if hops.is_some() { "neighborhood" } else { "cypher" },
            "hops": hops, "seeds": seeds, "cypher": cypher, "direction": "both",
            "max_nodes": args.query_max_nodes, "max_relations": args.query_max_relations,
            "samples": c.embedded.len(), "warmup": args.query_warmup, "wall_s": r1(c.wall_s),
            "stopped_by_time": c.stopped_by_time,
            "torua": pct_json(t), "embedded": pct_json(e), "p50_ratio": r50, "p99_ratio": r99,
            "entities_mean": hops.map(|_| r1(c.sizes.iter().map(|x| x.0).sum::<usize>() as f64 / n)),
            "relations_mean": hops.map(|_| r1(c.sizes.iter().map(|x| x.1).sum::<usize>() as f64 / n)),
            "count": cypher.map(|_| c.sizes.first().map(|x| x.0)),
            "torua_bytes_mean": (c.torua_bytes as f64 / c.torua.len().max(1) as f64).round(),
            "truncated_samples": c.truncated, "mismatches": c.mismatches, "errors": c.errors,
            "unordered_answers": c.unordered, "notes": c.notes,
            "target_ratio_max": TARGET_QUERY_RATIO, "target_ratio_met": ratio_met,
            "target_p50_ms_max": hood_target.then_some(TARGET_HOOD_MS), "target_p50_ms_met": ms_met,
            "ingest_verified": unverified.is_none(),
            "embedded_mode": format!("{:?}", phase.mode),
            "embedded_costs_us": {"out": phase.costs[0], "in": phase.costs[1], "properties": phase.costs[2]},
            "embedded_statements_per_sample": {"per_id": r1(c.embedded_statements.0), "set": r1(c.embedded_statements.1)},
        }))?;
    }
    for c in cases {
        if c.truncated > 0 {
            println!(
                "note: {}: {} of {} samples truncated by max_nodes {} / max_relations {} (compared with the embedded answer cut the same way)",
                c.spec.name(), c.truncated, c.embedded.len(), args.query_max_nodes, args.query_max_relations
            );
        }
        if c.unordered > 0 {
            println!(
                "note: {}: {} answers not in the contract's order",
                c.spec.name(),
                c.unordered
            );
        }
        if nodes > 0 && (c.mismatches > 0 || c.errors > 0) {
            println!(
                "!!! {target}: {}: {} ANSWERS DIFFER FROM THE EMBEDDED DATABASE, {} FAILED",
                c.spec.name(),
                c.mismatches,
                c.errors
            );
            for n in &c.notes {
                println!("!!!   {n}");
            }
            failures.push(format!(
                "{target}: {}: {} mismatches, {} errors{}",
                c.spec.name(),
                c.mismatches,
                c.errors,
                if unverified.is_some() {
                    " (its ingest did not verify)"
                } else {
                    ""
                }
            ));
        }
    }
    if nodes > 0 && failures.is_empty() {
        println!("every answer of {target} equals the embedded database's (entities with their hop, relations, truncation; counts)");
    }
    Ok(failures)
}

// ------------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut out = Out::new(&args)?;
    let t = Instant::now();
    let g = generate(args.entities, args.relations, args.seed, args.skew);
    let mut degrees: Vec<i64> = g.entities.iter().map(|e| e.degree).collect();
    degrees.sort_unstable();
    let n = degrees.len();
    log(format!(
        "generated {} entities, {} relations in {:.1} s; degree p50 {} p99 {} max {}",
        n,
        g.relations.len(),
        t.elapsed().as_secs_f64(),
        degrees[n / 2],
        degrees[(n * 99 / 100).min(n - 1)],
        degrees[n - 1]
    ));
    let dir = std::env::temp_dir().join(format!("torua-graph-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = run(&args, &g, &dir, &mut out);
    let _ = std::fs::remove_dir_all(&dir);
    out.finish();
    result
}

fn run(args: &Args, g: &Graph, dir: &Path, out: &mut Out) -> Result<()> {
    if args.cmd == "statements" {
        return statements(args, g, dir, out);
    }
    let mut results: Vec<IngestResult> = Vec::new();
    let mut copy_db = None;
    let mut failures = Vec::new();
    let cap = Duration::from_secs_f64(args.max_minutes * 60.0);
    if args.has("copy") {
        log("embedded: CSV + COPY");
        let (db, r) = ingest_copy(dir, g, args.memory_mb)?;
        copy_db = Some(db);
        results.push(r);
    }
    if args.has("unwind") {
        log("embedded: torua's UNWIND CREATE statements, one transaction per batch");
        results.push(ingest_unwind(
            dir,
            g,
            args.memory_mb,
            args.batch,
            Instant::now() + cap,
        )?);
        let _ = std::fs::remove_file(dir.join("unwind.kz"));
    }
    let mut reads: Vec<(String, ReadResult)> = Vec::new();
    let mut torua_targets = Vec::new();
    if args.has("single") {
        torua_targets.push((1, 1));
    }
    if args.has("cluster") {
        torua_targets.push((args.nodes, args.replicas.min(args.nodes)));
    }
    for (nodes, replicas) in torua_targets {
        let cluster = start_cluster(args, nodes, replicas)?;
        let (r, verify) = ingest_torua(args, &cluster, g, nodes, replicas)?;
        if r.complete && verify["ok"] != true {
            failures.push(format!("{}: /cluster/shards does not add up", r.target));
        }
        if args.reads > 0 && r.complete {
            let db = copy_db.as_ref().context("reads need the copy database")?;
            log(format!(
                "{}: {} point reads (+{} warm-up)",
                r.target, args.reads, args.read_warmup
            ));
            let rr = point_reads(args, db, &cluster, g)?;
            if rr.mismatches > 0 {
                failures.push(format!(
                    "{}: {} point reads disagree with the embedded database",
                    r.target, rr.mismatches
                ));
            }
            reads.push((r.target.clone(), rr));
        }
        if args.query_reps > 0 && r.complete {
            let db = copy_db.as_ref().context("queries need the copy database")?;
            log(format!("{}: graph queries", r.target));
            let phase = query_phase(args, db, Some(&cluster), g)?;
            // Reported at once (not with the tables at the end): a long run that dies later keeps it.
            let unverified = (verify["ok"] != true).then(|| verify.to_string());
            failures.extend(report_queries(
                out, args, &r.target, nodes, &phase, unverified,
            )?);
        }
        results.push(r);
        drop(cluster);
    }

    // Ingest table.
    let baseline = results
        .iter()
        .find(|r| r.target.contains("COPY"))
        .map(IngestResult::rate);
    println!(
        "\ngraph ingest: {} entities + {} relations (seed {}, skew {}), batches of {}, {} client threads, {} shards, {} MB per node",
        g.entities.len(),
        g.relations.len(),
        args.seed,
        args.skew,
        args.batch,
        args.clients,
        args.shards,
        args.memory_mb
    );
    println!(
        "{:<40} {:>10} {:>12} {:>12} {:>9} {:>8} {:>9}  complete",
        "", "items/s", "entities/s", "relations/s", "wall s", "retries", "vs COPY"
    );
    let is_cluster =
        |r: &IngestResult| r.target.starts_with("torua") && !r.target.contains("1 node ");
    for r in &results {
        let rate = r.rate();
        let ratio = baseline.map(|b| rate / b);
        println!(
            "{:<40} {:>10.0} {:>12.0} {:>12.0} {:>9.2} {:>8} {:>8.1}%  {}",
            r.target,
            rate,
            r.entity_rate(),
            r.relation_rate(),
            r.wall.as_secs_f64(),
            r.retries,
            ratio.map_or(f64::NAN, |x| x * 100.0),
            if r.complete {
                "yes".to_string()
            } else {
                format!(
                    "NO ({}): {} entities, {} relations acknowledged",
                    if r.extra["verify"]["incomplete"]
                        .as_str()
                        .is_some_and(|w| w.starts_with("a batch failed"))
                    {
                        "a batch failed for 5 minutes".to_string()
                    } else {
                        format!("stopped at {} min", args.max_minutes)
                    },
                    r.entities_done,
                    r.relations_done
                )
            }
        );
        if let Some(v) = r.extra.get("verify").filter(|v| v.get("health").is_some()) {
            println!(
                "{:<40} after the ingest: health {}, {} of {} copies in sync {}, counts {}",
                "",
                v["health"],
                v["in_sync_copies"],
                v["copies"],
                v["health_reasons"],
                match v["ok"].as_bool() {
                    Some(true) => "add up",
                    Some(false) => "DO NOT add up",
                    None => "not checked",
                }
            );
        }
        let met = is_cluster(r).then(|| ratio.is_some_and(|x| x >= 0.25));
        out.emit(json!({
            "kind": "ingest", "target": r.target, "complete": r.complete, "items_per_s": r1(rate),
            "wall_s": r.wall.as_secs_f64(), "entities_s": r.entities_s, "relations_s": r.relations_s,
            "entities_done": r.entities_done, "relations_done": r.relations_done,
            "entities_per_s": r1(r.entity_rate()), "relations_per_s": r1(r.relation_rate()),
            "retries": r.retries, "ratio_vs_copy": ratio, "target_ratio_min": is_cluster(r).then_some(0.25),
            "target_met": met, "extra": r.extra,
        }))?;
    }
    if let Some(b) = baseline {
        for r in results.iter().filter(|r| is_cluster(r)) {
            let ratio = r.rate() / b;
            println!(
                "target {} >= 25% of embedded COPY: {} ({:.1}%)",
                r.target,
                if ratio >= 0.25 { "met" } else { "NOT met" },
                ratio * 100.0
            );
        }
    }
    for (target, rr) in &reads {
        report_reads(out, target, rr)?;
    }
    if args.query_reps > 0 && !args.has("single") && !args.has("cluster") {
        // No torua target: the embedded side alone (to look at the baseline).
        let db = copy_db.as_ref().context("queries need the copy database")?;
        log("embedded only: graph queries");
        let phase = query_phase(args, db, None, g)?;
        report_queries(out, args, "embedded only", 0, &phase, None)?;
    }
    if !failures.is_empty() {
        bail!("verification failed: {}", failures.join("; "));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Diagnostics: the statements torua's shard writer and reader run, timed one by one on the embedded
// database (loaded by COPY) with `--batch` new relations between existing entities.

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64() * 1000.0))
}

fn statements(args: &Args, g: &Graph, dir: &Path, out: &mut Out) -> Result<()> {
    let (db, _) = ingest_copy(dir, g, args.memory_mb)?;
    let conn = Connection::new(&db)?;
    let mut rng = Rng(args.seed ^ 0xD1A6);
    let rfields = [
        ("id", LogicalType::String),
        ("source", LogicalType::String),
        ("target", LogicalType::String),
        ("description", LogicalType::String),
        ("weight", LogicalType::Double),
        ("text_unit_ids", string_list()),
    ];
    let n = g.entities.len();
    let new: Vec<Vec<KValue>> = (0..args.batch)
        .map(|j| {
            let a = &g.entities[rng.below(n)].id;
            let b = &g.entities[rng.below(n)].id;
            vec![
                string(&format!("new-{j}")),
                string(a),
                string(b),
                string("a new relation"),
                KValue::Double(1.0),
                strings(&["tu-1".to_string()]),
            ]
        })
        .collect();
    let existing: Vec<Vec<KValue>> = g.relations[..args.batch.min(g.relations.len())]
        .iter()
        .map(|r| {
            vec![
                string(&r.id),
                string(&r.source),
                string(&r.target),
                string(&r.description),
                KValue::Double(r.weight),
                strings(&r.text_unit_ids),
            ]
        })
        .collect();
    let mut distinct: Vec<&str> = g.relations[..args.batch.min(g.relations.len())]
        .iter()
        .map(|r| r.source.as_str())
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let sources: Vec<KValue> = distinct.iter().map(|x| string(x)).collect();
    let ids: Vec<KValue> = (0..args.batch)
        .map(|_| string(&g.entities[rng.below(n)].id))
        .collect();
    let rows = |v: &Vec<Vec<KValue>>| struct_rows(&rfields, v.clone());
    let create_rel = "CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, text_unit_ids: r.text_unit_ids, source: r.source, target: r.target}]->(b)";
    let cases: Vec<(&str, String, KValue, bool)> = vec![
        ("existing(): UNWIND $ids MATCH (n:Entity {id: i}) RETURN n.id", "UNWIND $rows AS i MATCH (n:Entity {id: i}) RETURN n.id".into(), KValue::List(LogicalType::String, ids.clone()), false),
        (
            "present check: UNWIND MATCH (a {id: r.source})-[x]->(b {id: r.target}) WHERE x.id = r.id (existing rows)",
            "UNWIND $rows AS r MATCH (a:Entity {id: r.source})-[x:RELATED]->(b:Entity {id: r.target}) WHERE x.id = r.id RETURN x.id".into(),
            rows(&existing),
            false,
        ),
        (
            "torua's CREATE: UNWIND MATCH (a {id: r.source}), (b {id: r.target}) CREATE",
            format!("UNWIND $rows AS r MATCH (a:Entity {{id: r.source}}), (b:Entity {{id: r.target}}) {create_rel}"),
            rows(&new),
            true,
        ),
        (
            "two MATCH clauses: UNWIND MATCH (a {id: r.source}) MATCH (b {id: r.target}) CREATE",
            format!("UNWIND $rows AS r MATCH (a:Entity {{id: r.source}}) MATCH (b:Entity {{id: r.target}}) {create_rel}"),
            rows(&new),
            true,
        ),
        (
            "WHERE form: UNWIND MATCH (a), (b) WHERE a.id = r.source AND b.id = r.target CREATE",
            format!("UNWIND $rows AS r MATCH (a:Entity), (b:Entity) WHERE a.id = r.source AND b.id = r.target {create_rel}"),
            rows(&new),
            true,
        ),
        (
            "present check, join on x.id: UNWIND MATCH (a)-[x]->(b) WHERE x.id = r.id AND a.id = r.source AND b.id = r.target",
            "UNWIND $rows AS r MATCH (a:Entity)-[x:RELATED]->(b:Entity) WHERE x.id = r.id AND a.id = r.source AND b.id = r.target RETURN x.id".into(),
            rows(&existing),
            false,
        ),
        (
            "present check by relation id: UNWIND MATCH ()-[x {id: r.id}]->() RETURN x.id, a.id, b.id",
            "UNWIND $rows AS r MATCH (a:Entity)-[x:RELATED {id: r.id}]->(b:Entity) RETURN x.id, a.id, b.id".into(),
            rows(&existing),
            false,
        ),
        (
            "present check via the sources' adjacency: UNWIND $ids MATCH (a {id: i})-[x]->(b) RETURN a.id, x.id, b.id",
            "UNWIND $rows AS i MATCH (a:Entity {id: i})-[x:RELATED]->(b:Entity) RETURN a.id, x.id, b.id".into(),
            KValue::List(LogicalType::String, sources.clone()),
            false,
        ),
        (
            "WITH form: UNWIND MATCH (a {id: r.source}) WITH a, r MATCH (b {id: r.target}) CREATE",
            format!("UNWIND $rows AS r MATCH (a:Entity {{id: r.source}}) WITH a, r MATCH (b:Entity {{id: r.target}}) {create_rel}"),
            rows(&new),
            true,
        ),
        (
            "COPY RELATED FROM (UNWIND $rows RETURN ...)",
            "COPY RELATED FROM (UNWIND $rows AS r RETURN r.source, r.target, r.id, r.description, r.weight, r.text_unit_ids, r.source, r.target)".into(),
            rows(&new),
            true,
        ),
    ];
    println!("\nstatements on one embedded database holding {} entities and {} relations; {} rows per statement", n, g.relations.len(), args.batch);
    for (name, q, param, write) in cases {
        let plan: Vec<String> = match conn.prepare(&format!("EXPLAIN {q}")) {
            Ok(mut stmt) => conn
                .execute(&mut stmt, vec![("rows", param.clone())])
                .map(|r| {
                    r.map(|row| {
                        row.iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect()
                })
                .unwrap_or_else(|e| vec![format!("EXPLAIN failed: {e}")]),
            Err(e) => vec![format!("EXPLAIN failed: {e}")],
        };
        if write {
            conn.query("BEGIN TRANSACTION")?;
        }
        let result = timed(|| {
            let mut stmt = conn.prepare(&q)?;
            let r: Vec<Vec<KValue>> = conn
                .execute(&mut stmt, vec![("rows", param.clone())])?
                .collect();
            Ok(r.len())
        });
        if write {
            // What the write did, seen from inside its transaction.
            let total = count(&conn, "MATCH ()-[r:RELATED]->() RETURN count(*)")?;
            println!("{:>17} relations in the transaction after: {total}", "");
        }
        if write {
            let _ = conn.query("ROLLBACK");
        }
        match result {
            Ok((returned, ms)) => {
                let rate = args.batch as f64 / (ms / 1000.0);
                println!(
                    "{:>10.1} ms {:>10.0} rows/s  {name} (returned {returned})",
                    ms, rate
                );
                out.emit(json!({"kind": "statement", "statement": name, "ms": ms, "rows_per_s": rate, "plan": plan}))?;
            }
            Err(e) => {
                println!("{:>10} {:>17}  {name}: {e:#}", "failed", "");
                out.emit(json!({"kind": "statement", "statement": name, "error": format!("{e:#}"), "plan": plan}))?;
            }
        }
        if let Some(text) = plan.first() {
            println!("      plan: {}", operators(text));
        }
    }
    // The point-read queries, one id at a time (prepared once), averaged over 200 ids.
    let mut lookup = Lookup::new(&conn)?;
    let mut sums = [0.0f64; 3];
    let reads = 200;
    for _ in 0..reads {
        let id = string(&g.entities[rng.below(n)].id);
        for (k, stmt) in [&mut lookup.entity, &mut lookup.out, &mut lookup.inc]
            .into_iter()
            .enumerate()
        {
            let t = Instant::now();
            let _: Vec<Vec<KValue>> = conn.execute(stmt, vec![("id", id.clone())])?.collect();
            sums[k] += t.elapsed().as_secs_f64() * 1e6;
        }
    }
    for (k, q) in [Q_ENTITY, Q_OUT, Q_IN].iter().enumerate() {
        let mean = sums[k] / reads as f64;
        println!("{mean:>10.0} µs mean  {q}");
        let plan: Vec<String> = conn
            .query(&format!("EXPLAIN {}", q.replace("$id", "'ent-1'")))
            .map(|r| {
                r.map(|row| {
                    row.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
            })
            .unwrap_or_default();
        if let Some(text) = plan.first() {
            println!("      plan: {}", operators(text));
        }
        out.emit(json!({"kind": "read_statement", "statement": q, "mean_us": mean, "plan": plan}))?;
    }
    Ok(())
}

/// The operator names of a Kuzu plan (`SCAN_NODE_TABLE[0]` ...), root first, on one line.
fn operators(plan: &str) -> String {
    let mut ops = Vec::new();
    for cell in plan.split('│') {
        let t = cell.trim();
        if let Some(open) = t.find('[') {
            let (name, rest) = t.split_at(open);
            let digits = rest.trim_start_matches('[').trim_end_matches(']');
            if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                && !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && rest.ends_with(']')
            {
                ops.push(t.to_string());
            }
        }
    }
    ops.join(" <- ")
}
