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
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kuzu::{Connection, Database, LogicalType, PreparedStatement, Value as KValue};
use serde::Serialize;
use serde_json::{json, Value};
use torua_testkit::kuzu_values::{string, strings, struct_rows};
use torua_testkit::TestCluster;

mod data;
mod embedded;
mod load;
mod measure;
mod queries;

use data::*;
use embedded::*;
use load::*;
use measure::*;
use queries::*;
use torua_bench::cluster::{start_green, target_name, Sizing};
use torua_bench::flags::{Common, Flags, Generated};
use torua_bench::kuzu::{
    csv_list, open_embedded, rows_for_ids, EntityCsv, RelationCsv, ENTITY_CSV_HEADER, RELATIONS_IN,
    RELATIONS_OUT, RELATION_CSV_HEADER,
};
use torua_bench::out::write_doc;
use torua_bench::stats::{histogram, mean, median, summary, us};
use torua_bench::sys::{load_1m, mem_available_mb, memory_guard, rss_mb};
use torua_testkit::gen::{bodies, normalize, quantize, relations, shard_of, vocabulary, TYPES};
use torua_testkit::graphrag::{Chunk, Community, Entity, Items};
use torua_testkit::http::{post_timed, short};
use torua_testkit::ingest::post_all;
use torua_testkit::log;
use torua_testkit::rng::{permutation, power_law, Rng};

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
    #[serde(flatten)]
    graph: Generated,
    chunks: usize,
    dim: usize,
    nodes: Vec<usize>,
    #[serde(flatten)]
    sizing: Sizing,
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
    #[serde(flatten)]
    common: Common,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        graph: Generated::default(),
        chunks: 50_000,
        dim: 384,
        nodes: vec![1, 3],
        sizing: Sizing::default(),
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
        common: Common::new("warn"),
    };
    let mut f = Flags::from_env(USAGE);
    while let Some(flag) = f.next_flag() {
        if flag == "--small" {
            a.graph.entities = 5000;
            a.graph.relations = 50_000;
            a.chunks = 2500;
            a.queries = 100;
            a.recall_queries = 30;
            continue;
        }
        let v = f.value(&flag)?;
        match flag.as_str() {
            "--chunks" => a.chunks = v.parse("a count")?,
            "--dim" => a.dim = v.parse("a dimension")?,
            "--nodes" => a.nodes = v.list("node counts like 1,3")?,
            "--batch" => a.batch = v.parse("a count")?,
            "--relation-batch" => a.relation_batch = v.parse("a count")?,
            "--clients" => a.clients = v.parse("a count")?,
            "--max-minutes" => a.max_minutes = v.parse("minutes")?,
            "--queries" => a.queries = v.parse("a count")?,
            "--warmup" => a.warmup = v.parse("a count")?,
            "--top-k" => a.top_k = v.parse("1..=100")?,
            "--hops" => a.hops = v.parse("0..=3")?,
            "--max-tokens" => a.max_tokens = Some(v.parse("tokens")?),
            "--include" => {
                a.include = Some(v.text.split(',').map(|x| x.trim().to_string()).collect())
            }
            "--query-noise" => a.query_noise = v.parse("a norm")?,
            "--recall-queries" => a.recall_queries = v.parse("a count")?,
            "--embedded-efs" => a.embedded_efs = v.parse("a count")?,
            "--embedded-memory-mb" => a.embedded_memory_mb = v.parse("megabytes")?,
            "--min-available-mb" => a.min_available_mb = v.parse("megabytes")?,
            _ if a.graph.take(&flag, &v)? || a.sizing.take(&flag, &v)? => {}
            _ => f.common(&flag, v, &mut a.common)?,
        }
    }
    if a.graph.entities < 100 || a.chunks == 0 || a.dim == 0 || a.queries == 0 {
        bail!("--entities at least 100, --chunks, --dim and --queries at least 1");
    }
    if !(1..=100).contains(&a.top_k) || a.hops > 3 || !(0.0..1.0).contains(&a.graph.skew) {
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

// ------------------------------------------------------------------------------------------------
// Main

fn main() -> Result<()> {
    let a = parse_args()?;
    let t = Instant::now();
    let g = generate(&a);
    let mut degrees: Vec<i64> = g.items.entities.iter().map(|e| e.degree).collect();
    degrees.sort_unstable();
    let n = degrees.len();
    let list_ids: usize = g.items.communities.iter().map(|c| c.entity_ids.len()).sum();
    log(format!(
        "generated {} entities, {} relations, {} chunks, {} communities ({} entity ids) in {:.1} s; degree p50 {} p99 {} max {}",
        n,
        g.items.relations.len(),
        g.items.chunks.len(),
        g.items.communities.len(),
        list_ids,
        t.elapsed().as_secs_f64(),
        degrees[n / 2],
        degrees[(n * 99 / 100).min(n - 1)],
        degrees[n - 1]
    ));
    let queries = make_queries(&a, &g)?;
    let dir = std::env::temp_dir().join(format!("torua-retrieve-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = run(&a, &g, &queries, &dir, degrees[n / 2], degrees[n - 1]);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(
    a: &Args,
    g: &Graph,
    queries: &Queries,
    dir: &Path,
    degree_p50: i64,
    degree_max: i64,
) -> Result<()> {
    let mut doc = json!({
        "bench": "retrieve",
        "label": a.common.label.clone().unwrap_or_else(|| format!("{}, {} chunks, dim {}", a.graph.describe(), a.chunks, a.dim)),
        "args": a,
        "data": {"entities": g.items.entities.len(), "relations": g.items.relations.len(), "chunks": g.items.chunks.len(),
                 "communities": g.items.communities.len(), "dim": a.dim, "degree_p50": degree_p50, "degree_max": degree_max,
                 "clusters": g.cluster.iter().max().map_or(0, |m| m + 1)},
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        "targets": [],
    });
    log("embedded: CSV, COPY, indexes");
    let (db_path, emb_load) = load_embedded(a, g, dir)?;
    log(format!("embedded load: {emb_load}"));
    doc["embedded_load"] = emb_load;
    doc["embedded_check"] = check_embedded(a, &open_baseline(a, &db_path)?, g, queries)?;
    write_doc(a.common.json.as_deref(), &doc)?;
    let mut failures = Vec::new();
    for &nodes in &a.nodes {
        let replicas = if nodes == 1 {
            1
        } else {
            a.sizing.replicas.min(nodes)
        };
        let target = target_name(nodes, replicas);
        log(format!("{target}: start and load"));
        let outcome = (|| -> Result<Value> {
            let cluster = start_cluster(a, nodes, replicas)?;
            let load = load_torua(a, &cluster, g, &queries.all[0])?;
            if load["verify"]["ok"] != true {
                failures.push(format!("{target}: /cluster/shards does not add up"));
            }
            log(format!(
                "{target}: {} queries (+{} warm-up)",
                a.queries, a.warmup
            ));
            let q = measure(a, &cluster, &open_baseline(a, &db_path)?, g, queries)?;
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
        write_doc(a.common.json.as_deref(), &doc)?;
        if failed {
            break;
        }
    }
    print_tables(a, &doc);
    write_doc(a.common.json.as_deref(), &doc)?;
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
