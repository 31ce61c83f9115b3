//! Graph store benchmarks: bulk ingest and point reads of a GraphRAG-shaped graph, torua vs
//! one embedded Kuzu database, measured in the same run.
//!
//! ```text
//! graph_bench ingest      [flags]   ingest only (targets copy,single,cluster; no reads)
//! graph_bench point-read  [flags]   load copy + cluster, then point reads (--reads 2000)
//! graph_bench all         [flags]   ingest, then point reads on the torua targets
//! graph_bench statements  [flags]   diagnostics: torua's write/read statements timed on the embedded database
//! graph_bench queries     [flags]   load copy + single + cluster, then graph queries (see below)
//! graph_bench algorithms  [flags]   load copy + cluster, then PageRank, components, degree (algorithms.rs)
//! graph_bench locality    [flags]   planted communities: hash vs community placement (locality.rs)
//!
//! data     --entities 100000 --relations 1000000 --seed 42 --skew 0.6
//! ingest   --batch 5000 --clients 4 --targets copy,single,cluster (also: unwind) --max-minutes 15
//! cluster  --nodes 3 --replicas 2 --shards 16 --memory-mb 2048 --max-shard-gb 16 --env KEY=VALUE --log warn
//! reads    --reads 2000 --read-warmup 200 (locality: --reads 300)
//! queries  --query-reps 50 --query-warmup 3 --query-case-s 60 --query-seeds 1,10,100 --query-hops 1,2
//!          --query-max-nodes 100000 --query-max-relations 1000000 --query-embedded auto
//! algos    --algo-reps 3 --algorithms pagerank,wcc,degree,louvain[,degree-write]
//! locality --nodes 3,5 --placements hash,community|none --samples 200 --retrieve-queries 100
//!          --community-min 50 --community-max 200 --inside 0.9 --dulce DIR|none
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
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kuzu::{Connection, Database, LogicalType, Value as KValue};
use serde_json::{json, Value};
use torua_testkit::kuzu_values::{
    entity_fields, entity_row, relation_fields, relation_row, string, strings, struct_rows,
};
use torua_testkit::TestCluster;

mod algorithms;
mod data;
mod embedded;
mod hood;
mod ingest;
mod locality;
mod point_read;
mod query_phase;
mod statements;

use algorithms::*;
use data::*;
use embedded::*;
use hood::*;
use ingest::*;
use locality::*;
use point_read::*;
use query_phase::*;
use statements::*;
use torua_bench::cluster::{start_green, target_name, Sizing};
use torua_bench::flags::{Common, Flags, Generated};
use torua_bench::kuzu::{
    open_embedded, rows_for_ids, EntityCsv, RelationCsv, ENTITY_CSV_HEADER, RELATIONS_IN,
    RELATIONS_OUT, RELATION_CSV_HEADER,
};
use torua_bench::out::Out;
use torua_bench::stats::{pct, r1, us, Pct};
use torua_testkit::gen::{bodies, relations, shard_of, TYPES};
use torua_testkit::graphrag::{Entity, Relation};
use torua_testkit::http::{post_timed, short};
use torua_testkit::ingest::{post_all, Loaded};
use torua_testkit::log;
use torua_testkit::rng::{permutation, power_law, Rng};

// ------------------------------------------------------------------------------------------------
// Arguments

const USAGE: &str =
    "usage: graph_bench <ingest|point-read|all|statements|queries|algorithms|locality> [flags]
  data     --entities 100000 --relations 1000000 --seed 42 --skew 0.6
  ingest   --batch 5000 --clients 4 --targets copy,single,cluster (also: unwind) --max-minutes 15
  cluster  --nodes 3 --replicas 2 --shards 16 --memory-mb 2048 --max-shard-gb 16
           --env KEY=VALUE (repeatable, every node) --log warn
  reads    --reads 2000 --read-warmup 200 (0: no reads; `locality`: --reads 300)
  queries  --query-reps 50 (0: none; default 50 for `queries`, else 0) --query-warmup 3
           --query-case-s 60 (time cap per case) --query-seeds 1,10,100 --query-hops 1,2
           --query-max-nodes 100000 --query-max-relations 1000000
           --query-embedded auto|unwind|per-id (how the embedded baseline runs its statements)
  algos    --algo-reps 3 (runs per algorithm and side, after one check run; default 3 for
           `algorithms`, else 0) --algorithms pagerank,wcc,degree,louvain (also degree-write:
           degree written back to every entity)
  locality --nodes 3,5 (one cluster per count and placement) --placements hash,community
           (none: the generated graph is not loaded, only --dulce measured)
           --samples 200 (seeds for 1 and 2 hops) --retrieve-queries 100 (0: none)
           --community-min 50 --community-max 200 --inside 0.9 (share of relations inside)
           --dulce DIR|none (GraphRAG output imported both ways; default: the test data's Dulce)
  output   --label TEXT --json FILE
The torua binary is $TORUA_BIN, else the one next to this executable.";

#[derive(Debug, Clone)]
struct Args {
    cmd: String,
    graph: Generated,
    batch: usize,
    clients: usize,
    targets: Vec<String>,
    nodes: usize,
    /// Every `--nodes` count (`locality` takes several; `nodes` is the first).
    node_counts: Vec<usize>,
    sizing: Sizing,
    max_minutes: f64,
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
    algo_reps: usize,
    algorithms: Vec<String>,
    locality: LocalityArgs,
    common: Common,
}

const TARGETS: [&str; 4] = ["copy", "unwind", "single", "cluster"];

fn parse_args() -> Result<Args> {
    let mut f = Flags::from_env(USAGE);
    let cmd = f.command();
    let (targets, reads, query_reps): (&[&str], usize, usize) = match cmd.as_str() {
        "ingest" => (&["copy", "single", "cluster"], 0, 0),
        "point-read" => (&["copy", "cluster"], 2000, 0),
        "all" => (&["copy", "single", "cluster"], 2000, 0),
        "statements" => (&["copy"], 0, 0),
        "queries" => (&["copy", "single", "cluster"], 0, 50),
        "algorithms" => (&["copy", "cluster"], 0, 0),
        "locality" => (&["copy", "cluster"], 300, 0),
        _ => bail!("unknown subcommand {cmd:?}\n{USAGE}"),
    };
    let algo_reps = if cmd == "algorithms" { 3 } else { 0 };
    let mut a = Args {
        cmd,
        graph: Generated::default(),
        batch: 5000,
        clients: 4,
        targets: targets.iter().map(|s| s.to_string()).collect(),
        nodes: 3,
        node_counts: vec![3],
        sizing: Sizing::default(),
        max_minutes: 15.0,
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
        algo_reps,
        algorithms: ALGORITHMS.iter().map(|s| s.to_string()).collect(),
        locality: LocalityArgs::default(),
        common: Common::new("warn"),
    };
    while let Some(flag) = f.next_flag() {
        let v = f.value(&flag)?;
        match flag.as_str() {
            "--batch" => a.batch = v.parse("a count")?,
            "--clients" => a.clients = v.parse("a count")?,
            "--targets" => a.targets = v.known_names("target", &TARGETS)?,
            "--nodes" => a.node_counts = v.list("node counts like 3 or 3,5")?,
            "--max-minutes" => a.max_minutes = v.parse("minutes")?,
            "--reads" => a.reads = v.parse("a count")?,
            "--read-warmup" => a.read_warmup = v.parse("a count")?,
            "--query-reps" => a.query_reps = v.parse("a count")?,
            "--query-warmup" => a.query_warmup = v.parse("a count")?,
            "--query-case-s" => a.query_case_s = v.parse("seconds")?,
            "--query-seeds" => a.query_seeds = v.list("seed counts like 1,10,100")?,
            "--query-hops" => a.query_hops = v.list("hop counts like 1,2")?,
            "--query-max-nodes" => a.query_max_nodes = v.parse("a count")?,
            "--query-embedded" => {
                a.query_embedded = match v.text.as_str() {
                    "auto" => EmbeddedMode::Auto,
                    "unwind" => EmbeddedMode::Unwind,
                    "per-id" => EmbeddedMode::PerId,
                    _ => bail!("{}", v.bad("auto, unwind or per-id")),
                }
            }
            "--query-max-relations" => a.query_max_relations = v.parse("a count")?,
            "--algo-reps" => a.algo_reps = v.parse("a count")?,
            "--algorithms" => a.algorithms = v.known_names("algorithm", &KNOWN_ALGORITHMS)?,
            _ if a.graph.take(&flag, &v)?
                || a.sizing.take(&flag, &v)?
                || (a.cmd == "locality" && a.locality.take(&flag, &v)?) => {}
            _ => f.common(&flag, v, &mut a.common)?,
        }
    }
    a.nodes = a.node_counts.first().copied().unwrap_or(0);
    if a.node_counts.len() > 1 && a.cmd != "locality" {
        bail!("--nodes takes one count (several only for `locality`)");
    }
    if a.cmd == "locality" {
        a.locality.check(a.graph.entities)?;
    }
    if a.reads > 0 && !a.targets.iter().any(|t| t == "copy") {
        bail!(
            "point reads compare against the `copy` database: add copy to --targets (or --reads 0)"
        );
    }
    if a.algo_reps > 0 && !a.targets.iter().any(|t| t == "copy") {
        bail!("algorithms compare against the `copy` database: add copy to --targets");
    }
    if a.query_reps > 0 && !a.targets.iter().any(|t| t == "copy") {
        bail!("queries compare against the `copy` database: add copy to --targets (or --query-reps 0)");
    }
    if a.query_seeds
        .iter()
        .any(|&n| n == 0 || n > 1000 || n > a.graph.entities)
        || a.query_hops.iter().any(|&h| !(1..=3).contains(&h))
        || !(1..=100_000).contains(&a.query_max_nodes)
        || !(1..=1_000_000).contains(&a.query_max_relations)
    {
        bail!("--query-seeds in 1..=1000 (and at most --entities), --query-hops in 1..=3, --query-max-nodes in 1..=100000, --query-max-relations in 1..=1000000");
    }
    if a.graph.entities < 2
        || a.batch == 0
        || a.clients == 0
        || a.node_counts.contains(&0)
        || a.sizing.shards == 0
    {
        bail!("--entities must be at least 2, --batch, --clients, --nodes and --shards at least 1");
    }
    if !(0.0..1.0).contains(&a.graph.skew) {
        bail!("--skew must be in [0, 1)");
    }
    Ok(a)
}

impl Args {
    fn has(&self, target: &str) -> bool {
        self.targets.iter().any(|t| t == target)
    }
    fn label(&self) -> String {
        self.common
            .label
            .clone()
            .unwrap_or_else(|| self.graph.describe())
    }
}

// ------------------------------------------------------------------------------------------------
// Output (same shape as membership_bench: human tables on stdout, JSON lines to --json or stdout)

// ------------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut out = Out::new(
        args.common.json.as_deref(),
        json!({
            "bench": "graph", "cmd": args.cmd, "label": args.label(),
            "entities": args.graph.entities, "relations": args.graph.relations, "seed": args.graph.seed, "skew": args.graph.skew,
            "batch": args.batch, "clients": args.clients, "shards": args.sizing.shards,
            "memory_mb": args.sizing.memory_mb, "env": args.common.env,
        }),
        true,
    )?;
    let t = Instant::now();
    let mut g = if args.cmd == "locality" {
        planted(&args.graph, &args.locality)
    } else {
        generate(&args.graph)
    };
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
    let result = if args.cmd == "locality" {
        locality(&args, &mut g, &dir, &mut out)
    } else {
        run(&args, &g, &dir, &mut out)
    };
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
        let (db, r) = ingest_copy(dir, g, args.sizing.memory_mb)?;
        copy_db = Some(db);
        results.push(r);
    }
    if args.has("unwind") {
        log("embedded: torua's UNWIND CREATE statements, one transaction per batch");
        results.push(ingest_unwind(
            dir,
            g,
            args.sizing.memory_mb,
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
        torua_targets.push((args.nodes, args.sizing.replicas.min(args.nodes)));
    }
    for (nodes, replicas) in torua_targets {
        let cluster = start_green(nodes, replicas, args.sizing, &args.common, &[])?;
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
        if args.algo_reps > 0 && r.complete {
            let db = copy_db
                .as_ref()
                .context("algorithms need the copy database")?;
            log(format!("{}: graph algorithms", r.target));
            let problems = algorithm_phase(args, db, Some(&cluster), &r.target, g, out)?;
            // Printed loudly, not failed on: the times are still worth keeping.
            for m in problems {
                println!("!!! {}: {m}", r.target);
            }
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
        args.graph.seed,
        args.graph.skew,
        args.batch,
        args.clients,
        args.sizing.shards,
        args.sizing.memory_mb
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
    if args.algo_reps > 0 && !args.has("single") && !args.has("cluster") {
        let db = copy_db
            .as_ref()
            .context("algorithms need the copy database")?;
        log("embedded only: graph algorithms");
        algorithm_phase(args, db, None, "embedded only", g, out)?;
    }
    if !failures.is_empty() {
        bail!("verification failed: {}", failures.join("; "));
    }
    Ok(())
}
