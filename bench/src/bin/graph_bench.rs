//! Graph store benchmarks (issue 4): bulk ingest and point reads of a GraphRAG-shaped graph, torua vs
//! one embedded Kuzu database, measured in the same run.
//!
//! ```text
//! graph_bench ingest      [flags]   ingest only (targets copy,single,cluster; no reads)
//! graph_bench point-read  [flags]   load copy + cluster, then point reads (--reads 2000)
//! graph_bench all         [flags]   ingest, then point reads on the torua targets
//! graph_bench statements  [flags]   diagnostics: torua's write/read statements timed on the embedded database
//!
//! data     --entities 100000 --relations 1000000 --seed 42 --skew 0.6
//! ingest   --batch 5000 --clients 4 --targets copy,single,cluster (also: unwind) --max-minutes 15
//! cluster  --nodes 3 --replicas 2 --shards 16 --memory-mb 2048 --max-shard-gb 16 --env KEY=VALUE --log warn
//! reads    --reads 2000 --read-warmup 200
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

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kuzu::{Connection, Database, LogicalType, SystemConfig, Value as KValue};
use serde::Serialize;
use serde_json::{json, Value};
use torua_bench::{ClusterOptions, TestCluster};

// ------------------------------------------------------------------------------------------------
// Arguments

const USAGE: &str = "usage: graph_bench <ingest|point-read|all> [flags]
  data     --entities 100000 --relations 1000000 --seed 42 --skew 0.6
  ingest   --batch 5000 --clients 4 --targets copy,single,cluster (also: unwind) --max-minutes 15
  cluster  --nodes 3 --replicas 2 --shards 16 --memory-mb 2048 --max-shard-gb 16
           --env KEY=VALUE (repeatable, every node) --log warn
  reads    --reads 2000 --read-warmup 200 (0: no reads)
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
    let (targets, reads): (&[&str], usize) = match cmd.as_str() {
        "ingest" => (&["copy", "single", "cluster"], 0),
        "point-read" => (&["copy", "cluster"], 2000),
        "all" => (&["copy", "single", "cluster"], 2000),
        "statements" => (&["copy"], 0),
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
     weight DOUBLE, text_unit_ids STRING[])",
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
    writeln!(w, "from,to,id,description,weight,text_unit_ids")?;
    for r in &g.relations {
        writeln!(
            w,
            "{},{},{},{},{},{}",
            r.source,
            r.target,
            r.id,
            r.description,
            r.weight,
            csv_list(&r.text_unit_ids)
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

fn s(v: &str) -> KValue {
    KValue::String(v.to_string())
}

fn strings(v: &[String]) -> KValue {
    KValue::List(LogicalType::String, v.iter().map(|x| s(x)).collect())
}

fn struct_rows(fields: &[(&str, LogicalType)], values: Vec<Vec<KValue>>) -> KValue {
    let ty = LogicalType::Struct {
        fields: fields
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect(),
    };
    KValue::List(
        ty,
        values
            .into_iter()
            .map(|vals| {
                KValue::Struct(
                    fields
                        .iter()
                        .map(|(n, _)| n.to_string())
                        .zip(vals)
                        .collect(),
                )
            })
            .collect(),
    )
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
                    s(&e.id),
                    s(&e.title),
                    s(&e.kind),
                    s(&e.description),
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
                    s(&r.id),
                    s(&r.source),
                    s(&r.target),
                    s(&r.description),
                    KValue::Double(r.weight),
                    strings(&r.text_unit_ids),
                ]
            })
            .collect();
        exec(
            &conn,
            "UNWIND $rows AS r MATCH (a:Entity {id: r.source}), (b:Entity {id: r.target}) \
             CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, text_unit_ids: r.text_unit_ids}]->(b)",
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
            .execute(&mut self.entity, vec![("id", s(id))])?
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let out: Vec<Vec<KValue>> = self
            .conn
            .execute(&mut self.out, vec![("id", s(id))])?
            .collect();
        let inc: Vec<Vec<KValue>> = self
            .conn
            .execute(&mut self.inc, vec![("id", s(id))])?
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
        Ok(conn.execute(&mut stmt, vec![("id", s(id))])?.collect())
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
                s(&format!("new-{j}")),
                s(a),
                s(b),
                s("a new relation"),
                KValue::Double(1.0),
                strings(&["tu-1".to_string()]),
            ]
        })
        .collect();
    let existing: Vec<Vec<KValue>> = g.relations[..args.batch.min(g.relations.len())]
        .iter()
        .map(|r| {
            vec![
                s(&r.id),
                s(&r.source),
                s(&r.target),
                s(&r.description),
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
    let sources: Vec<KValue> = distinct.iter().map(|x| s(x)).collect();
    let ids: Vec<KValue> = (0..args.batch)
        .map(|_| s(&g.entities[rng.below(n)].id))
        .collect();
    let rows = |v: &Vec<Vec<KValue>>| struct_rows(&rfields, v.clone());
    let create_rel = "CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, text_unit_ids: r.text_unit_ids}]->(b)";
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
            "COPY RELATED FROM (UNWIND $rows AS r RETURN r.source, r.target, r.id, r.description, r.weight, r.text_unit_ids)".into(),
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
        let id = s(&g.entities[rng.below(n)].id);
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
