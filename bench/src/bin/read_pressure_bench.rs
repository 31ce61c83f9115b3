//! Reads under write pressure: point reads while writers keep every shard's applier busy, with
//! `freshness=bounded` (the default: answer from the applied writes after `TORUA_READ_WAIT`,
//! marked `x-torua-behind`) and `freshness=strict` (read-your-writes: wait, or 503), against one
//! embedded Kuzu database doing the same reads while one writer commits the same batches.
//!
//! ```text
//! read_pressure_bench [flags]
//!   --entities 20000 (preloaded) --batch 2000 --writers 4 --seconds 60 --seed 7
//!   --nodes 3 --replicas 2 --shards 16 --memory-mb 2048 --max-shard-gb 16
//!   --env KEY=VALUE --log warn --label TEXT --json FILE
//! ```
//!
//! Half of the reads ask for the entity a writer had acknowledged last (a read-your-writes probe),
//! half for a random preloaded one. A probe that answers 404 is *behind* when the answer says so
//! (`x-torua-behind`), and *lost* when it does not: lost must stay 0. Latency percentiles are
//! per freshness; the embedded database reads the same way between its writer's commits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kuzu::{Connection, Value as KValue};
use serde_json::{json, Value};
use torua_bench::cluster::{start_green, target_name, wait_applied, Sizing};
use torua_bench::flags::{Common, Flags};
use torua_bench::kuzu::kuzu_threads;
use torua_bench::out::{existing_torua_bin, Out};
use torua_bench::stats::{pct, r1, r2, Pct};
use torua_testkit::http::{send, with_key};
use torua_testkit::ingest::post_batch;
use torua_testkit::kuzu_values::string;
use torua_testkit::{log, Rng, TestCluster};

const USAGE: &str = "read_pressure_bench [flags]
  --entities 20000 (preloaded) --batch 2000 --writers 4 --seconds 60 --seed 7
  --nodes 3 --replicas 2 --shards 16 --memory-mb 2048 --max-shard-gb 16
  --env KEY=VALUE (repeatable, every node) --log warn --label TEXT --json FILE";

#[derive(Clone)]
struct Args {
    entities: usize,
    batch: usize,
    writers: usize,
    seconds: u64,
    seed: u64,
    nodes: usize,
    sizing: Sizing,
    common: Common,
}

fn parse_args() -> Result<Args> {
    let mut flags = Flags::from_env(USAGE);
    let mut a = Args {
        entities: 20_000,
        batch: 2_000,
        writers: 4,
        seconds: 60,
        seed: 7,
        nodes: 3,
        sizing: Sizing::default(),
        common: Common::new("warn"),
    };
    while let Some(flag) = flags.next_flag() {
        let v = flags.value(&flag)?;
        if a.sizing.take(&flag, &v)? {
            continue;
        }
        match flag.as_str() {
            "--entities" => a.entities = v.parse("a count")?,
            "--batch" => a.batch = v.parse("a count")?,
            "--writers" => a.writers = v.parse("a count")?,
            "--seconds" => a.seconds = v.parse("seconds")?,
            "--seed" => a.seed = v.parse("an integer")?,
            "--nodes" => a.nodes = v.parse("a count")?,
            _ => flags.common(&flag, v, &mut a.common)?,
        }
    }
    if a.entities < 1 || a.batch < 1 || a.writers < 1 || a.seconds < 1 || a.nodes < 1 {
        bail!("--entities, --batch, --writers, --seconds and --nodes must be at least 1");
    }
    Ok(a)
}

fn entity(i: usize) -> Value {
    json!({"id": format!("rp-{i}"), "title": format!("ENTITY {i}"), "type": "THING",
           "description": format!("entity {i} of the read-pressure benchmark")})
}

fn body(ids: std::ops::Range<usize>) -> Vec<u8> {
    let entities: Vec<Value> = ids.map(entity).collect();
    serde_json::to_vec(&json!({ "entities": entities })).expect("JSON")
}

/// What the writers share with the readers: the next new id, the last acknowledged ids, stop.
struct Shared {
    next: AtomicU64,
    recent: Mutex<VecDeque<usize>>,
    written: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn new(first: usize) -> Self {
        Shared {
            next: AtomicU64::new(first as u64),
            recent: Mutex::new(VecDeque::new()),
            written: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// The next batch of new ids.
    fn take(&self, n: usize) -> std::ops::Range<usize> {
        let from = self.next.fetch_add(n as u64, Ordering::SeqCst) as usize;
        from..from + n
    }

    fn acked(&self, ids: std::ops::Range<usize>) {
        self.written.fetch_add(ids.len() as u64, Ordering::SeqCst);
        let mut recent = self.recent.lock().expect("recent");
        recent.push_back(ids.end - 1);
        if recent.len() > 64 {
            recent.pop_front();
        }
    }

    fn last_acked(&self) -> Option<usize> {
        self.recent.lock().expect("recent").back().copied()
    }
}

/// One freshness's reads: of the entity written last (`recent`), and of preloaded ones.
#[derive(Default)]
struct Reads {
    recent: Sample,
    other: Sample,
}

impl Reads {
    fn of(&mut self, probe: bool) -> &mut Sample {
        if probe {
            &mut self.recent
        } else {
            &mut self.other
        }
    }

    fn json(&self) -> Value {
        json!({"recent": self.recent.json(), "other": self.other.json()})
    }
}

/// Reads of one kind.
#[derive(Default)]
struct Sample {
    micros: Vec<f64>,
    found: u64,
    not_found: u64,
    behind: u64,
    /// A probe of an acknowledged entity answered 404 without saying the copy was behind.
    lost: u64,
    failed: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

impl Sample {
    fn json(&self) -> Value {
        let n = self.micros.len().max(1) as f64;
        json!({
            "reads": self.micros.len(), "latency_us": pct_json(pct(&self.micros)),
            "found": self.found, "not_found": self.not_found, "failed": self.failed,
            "behind_share": r2(self.behind as f64 / n), "lost": self.lost,
            "statuses": self.statuses,
        })
    }
}

fn pct_json(p: Option<Pct>) -> Value {
    p.map_or(Value::Null, |p| {
        json!({"p50": r1(p.p50), "p90": r1(p.p90), "p99": r1(p.p99), "max": r1(p.max), "n": p.n})
    })
}

/// A reader's next id: the last acknowledged one (a probe, for a reader of `recent` ones once a
/// write is acknowledged) or a random preloaded one.
fn pick(rng: &mut Rng, shared: &Shared, preloaded: usize, recent: bool) -> (usize, bool) {
    match shared.last_acked() {
        Some(id) if recent => (id, true),
        _ => (rng.below(preloaded), false),
    }
}

fn torua(a: &Args) -> Result<Value> {
    let cluster = start_green(a.nodes, a.sizing.replicas, a.sizing, &a.common, &[])?;
    let urls: Vec<String> = (0..a.nodes)
        .map(|i| cluster.node(i).url("/graph/ingest"))
        .collect();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    log(format!("preloading {} entities", a.entities));
    for (n, from) in (0..a.entities).step_by(a.batch).enumerate() {
        let to = (from + a.batch).min(a.entities);
        post_batch(&agent, &urls[n % urls.len()], &body(from..to))?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    wait_applied(
        &cluster,
        0,
        Duration::from_secs(30),
        512.0,
        deadline,
        "after the preload",
    )?;
    let idle = read_loop(&cluster, a, None, Duration::from_secs(10))?;
    let shared = Shared::new(a.entities);
    log(format!("{} writers, reads for {} s", a.writers, a.seconds));
    let (loaded, written_per_s) = std::thread::scope(|s| -> Result<_> {
        for w in 0..a.writers {
            let (shared, urls, agent) = (&shared, &urls, agent.clone());
            s.spawn(move || {
                let mut n = w;
                while !shared.stop.load(Ordering::SeqCst) {
                    let ids = shared.take(a.batch);
                    if post_batch(&agent, &urls[n % urls.len()], &body(ids.clone())).is_ok() {
                        shared.acked(ids);
                    }
                    n += 1;
                }
            });
        }
        let started = Instant::now();
        let reads = read_loop(&cluster, a, Some(&shared), Duration::from_secs(a.seconds));
        shared.stop.store(true, Ordering::SeqCst);
        let rate = shared.written.load(Ordering::SeqCst) as f64 / started.elapsed().as_secs_f64();
        Ok((reads?, rate))
    })?;
    let pending = cluster
        .node(0)
        .get_json("/cluster/shards", Duration::from_secs(30))?;
    Ok(json!({
        "target": target_name(a.nodes, a.sizing.replicas),
        "idle": {"bounded": idle[0].json(), "strict": idle[1].json()},
        "under_writes": {"bounded": loaded[0].json(), "strict": loaded[1].json()},
        "written_per_s": r1(written_per_s),
        "pending_writes_at_end": pending["pending_writes"],
    }))
}

/// Point reads on node 0 for `length`: one reader per freshness and kind (of the entity written
/// last, of preloaded ones), side by side, so that a read that waits holds up no other kind.
fn read_loop(
    cluster: &TestCluster,
    a: &Args,
    shared: Option<&Shared>,
    length: Duration,
) -> Result<[Reads; 2]> {
    let idle = Shared::new(a.entities);
    let shared = shared.unwrap_or(&idle);
    let end = Instant::now() + length;
    let reader = |freshness: &'static str, recent: bool, seed: u64| -> Result<Reads> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let mut rng = Rng::new(seed);
        let mut reads = Reads::default();
        while Instant::now() < end {
            let (id, probe) = pick(&mut rng, shared, a.entities, recent);
            let url = cluster
                .node(0)
                .url(&format!("/graph/entities/rp-{id}?freshness={freshness}"));
            let t = Instant::now();
            let resp = send(with_key(agent.get(&url)), None).context("a read had no answer")?;
            let r = reads.of(probe);
            r.micros.push(t.elapsed().as_secs_f64() * 1e6);
            let behind = resp.header("x-torua-behind").is_some();
            let status = resp.status();
            let _ = resp.into_string();
            *r.statuses.entry(status).or_default() += 1;
            r.behind += u64::from(behind);
            match status {
                200 => r.found += 1,
                404 => {
                    r.not_found += 1;
                    r.lost += u64::from(probe && !behind);
                }
                _ => r.failed += 1,
            }
        }
        Ok(reads)
    };
    std::thread::scope(|s| {
        let readers: Vec<_> = [
            ("bounded", false),
            ("bounded", true),
            ("strict", false),
            ("strict", true),
        ]
        .into_iter()
        .enumerate()
        .map(|(n, (freshness, recent))| {
            s.spawn(move || reader(freshness, recent, a.seed ^ n as u64))
        })
        .collect();
        let mut out = [Reads::default(), Reads::default()];
        for (n, r) in readers.into_iter().enumerate() {
            let r = r.join().expect("a reader")?;
            let slot = &mut out[n / 2];
            if n % 2 == 1 {
                slot.recent = r.recent;
            } else {
                slot.other = r.other;
            }
        }
        Ok(out)
    })
}

/// One embedded database: the same preload, one writer committing the same batches, the reader
/// reading the same way (one lookup statement; reads see every committed batch).
fn embedded(a: &Args) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("read-pressure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // As torua's copies: no checkpoint inside a commit (it waits for every read to end), one
    // between commits once the WAL passes 64 MiB, with reads held off meanwhile.
    let config = kuzu::SystemConfig::default()
        .buffer_pool_size(a.sizing.memory_mb << 20)
        .max_num_threads(kuzu_threads())
        .max_db_size(16 << 30)
        .enable_compression(true)
        .auto_checkpoint(false);
    let db_path = dir.join("db.kz");
    let db = kuzu::Database::new(&db_path, config)?;
    let setup = Connection::new(&db)?;
    setup.query(
        "CREATE NODE TABLE Entity(id STRING, title STRING, type STRING, description STRING, PRIMARY KEY(id))",
    )?;
    let insert = "UNWIND $rows AS r CREATE (:Entity {id: r.id, title: r.title, type: r.type, description: r.description})";
    let rows = |ids: std::ops::Range<usize>| -> KValue {
        let values: Vec<KValue> = ids
            .map(|i| {
                let e = entity(i);
                KValue::Struct(
                    ["id", "title", "type", "description"]
                        .iter()
                        .map(|k| (k.to_string(), string(e[*k].as_str().unwrap_or_default())))
                        .collect(),
                )
            })
            .collect();
        let fields = ["id", "title", "type", "description"]
            .iter()
            .map(|k| (k.to_string(), kuzu::LogicalType::String))
            .collect();
        KValue::List(kuzu::LogicalType::Struct { fields }, values)
    };
    let mut stmt = setup.prepare(insert)?;
    for from in (0..a.entities).step_by(a.batch) {
        let to = (from + a.batch).min(a.entities);
        setup.execute(&mut stmt, vec![("rows", rows(from..to))])?;
    }
    log(format!("embedded: preloaded {} entities", a.entities));
    let shared = Shared::new(a.entities);
    // Reads hold this gate shared, a checkpoint exclusive (torua's commit gate).
    let gate = std::sync::RwLock::new(());
    let (reads, rate) = std::thread::scope(|s| -> Result<_> {
        let (db, shared, gate, db_path) = (&db, &shared, &gate, &db_path);
        let writer = s.spawn(move || -> Result<()> {
            let conn = Connection::new(db)?;
            let mut stmt = conn.prepare(insert)?;
            while !shared.stop.load(Ordering::SeqCst) {
                let ids = shared.take(a.batch);
                conn.execute(&mut stmt, vec![("rows", rows(ids.clone()))])?;
                shared.acked(ids);
                let wal =
                    std::fs::metadata(db_path.with_extension("kz.wal")).map_or(0, |m| m.len());
                if wal > 64 << 20 {
                    let _no_reads = gate.write().expect("gate");
                    conn.query("CHECKPOINT")?;
                }
            }
            Ok(())
        });
        let started = Instant::now();
        let end = started + Duration::from_secs(a.seconds);
        let reader = move |recent: bool| -> Result<Sample> {
            let conn = Connection::new(db)?;
            let mut lookup = conn.prepare("MATCH (e:Entity {id: $id}) RETURN e.*")?;
            let mut rng = Rng::new(a.seed ^ u64::from(recent));
            let mut r = Sample::default();
            while Instant::now() < end {
                let (id, probe) = pick(&mut rng, shared, a.entities, recent);
                let t = Instant::now();
                let _reading = gate.read().expect("gate");
                let found = conn
                    .execute(&mut lookup, vec![("id", string(&format!("rp-{id}")))])?
                    .count()
                    > 0;
                r.micros.push(t.elapsed().as_secs_f64() * 1e6);
                if found {
                    r.found += 1;
                } else {
                    r.not_found += 1;
                    r.lost += u64::from(probe);
                }
            }
            Ok(r)
        };
        let recent = s.spawn(move || reader(true));
        let other = reader(false);
        let reads = Reads {
            recent: recent.join().expect("a reader")?,
            other: other?,
        };
        shared.stop.store(true, Ordering::SeqCst);
        log(format!(
            "embedded: {} reads, stopping the writer",
            reads.recent.micros.len() + reads.other.micros.len()
        ));
        writer.join().expect("writer")?;
        let rate = shared.written.load(Ordering::SeqCst) as f64 / started.elapsed().as_secs_f64();
        Ok((reads, rate))
    })?;
    drop(stmt);
    drop(setup);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({"target": "embedded kuzu", "under_writes": reads.json(), "written_per_s": r1(rate)}))
}

fn ratio(t: &Value, e: &Value, mode: &str, kind: &str, p: &str) -> Value {
    match (
        t["under_writes"][mode][kind]["latency_us"][p].as_f64(),
        e["under_writes"][kind]["latency_us"][p].as_f64(),
    ) {
        (Some(t), Some(e)) if e > 0.0 => json!(r2(t / e)),
        _ => Value::Null,
    }
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let label = a
        .common
        .label
        .clone()
        .unwrap_or_else(|| "read-pressure".into());
    let mut out = Out::new(
        a.common.json.as_deref(),
        json!({"label": label, "env": a.common.env}),
        true,
    )?;
    out.start(
        "read pressure",
        "read-pressure",
        &label,
        Some(existing_torua_bin()?),
    )?;
    let e = embedded(&a)?;
    let t = torua(&a)?;
    println!("| target | freshness | reads of | reads | p50 ms | p99 ms | max ms | behind | lost | failed | written/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let row = |target: &str, mode: &str, kind: &str, r: &Value, rate: &Value| {
        let ms = |p: &str| {
            r["latency_us"][p]
                .as_f64()
                .map_or("-".into(), |v| format!("{:.2}", v / 1000.0))
        };
        println!(
            "| {target} | {mode} | {kind} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r["reads"],
            ms("p50"),
            ms("p99"),
            ms("max"),
            r["behind_share"],
            r["lost"],
            r["failed"],
            rate
        );
    };
    for kind in ["recent", "other"] {
        row(
            "embedded kuzu",
            "-",
            kind,
            &e["under_writes"][kind],
            &e["written_per_s"],
        );
    }
    for phase in ["idle", "under_writes"] {
        for mode in ["bounded", "strict"] {
            for kind in ["recent", "other"] {
                let target = format!("{} ({phase})", t["target"].as_str().unwrap_or("torua"));
                let rate = if phase == "idle" {
                    json!(0)
                } else {
                    t["written_per_s"].clone()
                };
                row(&target, mode, kind, &t[phase][mode][kind], &rate);
            }
        }
    }
    let mut ratios = serde_json::Map::new();
    for mode in ["bounded", "strict"] {
        for kind in ["recent", "other"] {
            for p in ["p50", "p99"] {
                ratios.insert(format!("{mode}_{kind}_{p}"), ratio(&t, &e, mode, kind, p));
            }
        }
    }
    let ratios = Value::Object(ratios);
    println!("ratios torua/embedded under writes: {ratios}");
    out.emit(json!({"bench": "read-pressure", "embedded": e, "torua": t, "ratios": ratios}))?;
    out.finish();
    Ok(())
}
