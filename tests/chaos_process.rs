//! The chaos suite: five real `torua` processes (8 shards, 2 copies each) under continuous
//! writes and reads, while about every 10 s a random node is killed with kill -9 — never before the
//! cluster is green again — and restarted after a random delay, one round in three with its data
//! directory wiped. Copies of a dead node are re-created elsewhere after `TORUA_REPLACE_AFTER` (5 s
//! here), so re-replication, catch-up, refills of empty nodes and rebalancing all happen during the run.
//!
//! - The writer ingests batches of 20 entities and 24 relations with unique ids to random live nodes
//!   and records every acknowledged batch (200 with every item ok); now and then it deletes an
//!   acknowledged entity. Failed writes are allowed and counted.
//! - The reader sends `GET /graph/entities/{id}` and one-hop `POST /graph/neighborhood` for
//!   acknowledged entities to random live nodes. An answer that does not say it is partial
//!   (`_shards.failed`) or possibly stale (`x-torua-stale`) must be right: the entity is there with
//!   exactly the relations written with it (minus those of entities deleted before the request).
//!   Wrong answers must be 0; partial, stale and refused answers are allowed and counted.
//! - At the end, with every node back: the cluster is green and balanced, every acknowledged entity
//!   and relation is listed by a full `/query` on every node and readable by id, deleted entities
//!   stay deleted, and the copies of each shard agree (counts and checksum).
//!
//! `TORUA_CHAOS_SECS` (default 60) sets the length of the chaos phase, `TORUA_CHAOS_SEED` replays a
//! kill schedule (victims, delays, wipes; the seed is printed). The figures are printed at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua::graph::partition::shard_of;
use torua_testkit::{ready_ids, wait, ClusterOptions, Failures, Rng, TestCluster};

const NODES: usize = 5;
const SHARDS: u32 = 8;
const REPLICAS: usize = 2;
const REPLACE_AFTER: &str = "5s";
const MEMORY_MB: &str = "256";
const BATCH_ENTITIES: usize = 20;
/// Relations besides the chain e0 -> e1 -> ... -> e19 of each batch (random pairs of the batch).
const EXTRA_RELATIONS: usize = 5;
/// The writer deletes one acknowledged entity after every this many batches.
const DELETE_EVERY: u64 = 6;
/// Pause of the writer between two batches (and while no node is live): a steady load that the
/// cluster absorbs while it heals, not a saturation test.
const WRITE_PAUSE: Duration = Duration::from_millis(80);
/// Pause of the reader between two reads (and while there is nothing to read or no live node).
const READ_PAUSE: Duration = Duration::from_millis(25);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(25);
/// Time between two kills (the next kill also waits for green).
const KILL_EVERY_MS: (usize, usize) = (8_000, 12_000);
const MAX_RESTART_DELAY_MS: usize = 8_000;
/// Longest wait for green after one kill before the chaos phase is abandoned.
const ROUND_HEAL_TIMEOUT: Duration = Duration::from_secs(90);
/// Once green, how long to wait for copies per node to even out before going on anyway.
const ROUND_BALANCE_GRACE: Duration = Duration::from_secs(30);
const FINAL_HEAL_TIMEOUT: Duration = Duration::from_secs(180);
const FINAL_BALANCE_GRACE: Duration = Duration::from_secs(60);
/// How often the cluster's state is asked while waiting for it to settle.
const POLL: Duration = Duration::from_millis(300);
const T: Duration = Duration::from_secs(10);

/// The wall clock (UTC, like the nodes' logs) as `HH:MM:SS.mmm`.
fn clock() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (s, ms) = (t.as_secs() % 86_400, t.subsec_millis());
    format!("{:02}:{:02}:{:02}.{ms:03}", s / 3600, s / 60 % 60, s % 60)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// HTTP with the status, the staleness header and the body, whatever the status.

struct Reply {
    status: u16,
    stale: Option<String>,
    body: Value,
}

/// Err is a short class of transport failure ("timeout", "ConnectionFailed", ...).
fn http(method: &str, url: &str, body: Option<&Value>, timeout: Duration) -> Result<Reply, String> {
    let req = ureq::request(method, url).timeout(timeout);
    let resp = torua_testkit::http::send(req, body).map_err(|t| {
        if t.to_string().contains("timed out") {
            "timeout".to_string()
        } else {
            format!("{:?}", t.kind())
        }
    })?;
    let status = resp.status();
    let stale = resp.header("x-torua-stale").map(String::from);
    let text = match resp.into_string() {
        Ok(t) => t,
        Err(e) if e.to_string().contains("timed out") => return Err("timeout".into()),
        Err(e) => return Err(format!("body: {:?}", e.kind())),
    };
    let body = torua_testkit::http::json_or_text(text);
    Ok(Reply {
        status,
        stale,
        body,
    })
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 700 {
        format!("{}...", s.chars().take(700).collect::<String>())
    } else {
        s
    }
}

/// A class of a failed request, for the tallies: "timeout", "503 no quorum ...", "200 with failed items".
fn failure_class(reply: &Result<Reply, String>) -> (String, String) {
    match reply {
        Err(e) => (e.clone(), e.clone()),
        Ok(r) => {
            let reason = r.body["error"]["reason"]
                .as_str()
                .map(String::from)
                .or_else(|| r.body["items"][0]["reason"].as_str().map(String::from))
                .unwrap_or_else(|| short(&r.body));
            // Keep the class short: the status and the first words of the reason, without ids.
            let words: Vec<&str> = reason
                .split_whitespace()
                .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
                .take(6)
                .collect();
            let class = if r.status == 200 {
                format!("200 with failed items: {}", words.join(" "))
            } else {
                format!("{} {}", r.status, words.join(" "))
            };
            (class, format!("{} {}", r.status, short(&r.body)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What was written: acknowledged batches and deletes.

struct Rel {
    id: String,
    source: String,
    target: String,
}

struct BatchRec {
    entities: Vec<String>,
    relations: Vec<Rel>,
    /// Where and when (UTC) the batch was acknowledged, for failure messages.
    acked: String,
}

impl BatchRec {
    fn new(n: u64, rng: &mut Rng) -> Self {
        let entities: Vec<String> = (0..BATCH_ENTITIES).map(|k| format!("c{n}-{k}")).collect();
        let mut relations: Vec<Rel> = Vec::new();
        for k in 0..BATCH_ENTITIES - 1 {
            relations.push(Rel {
                id: format!("c{n}-r{k}"),
                source: entities[k].clone(),
                target: entities[k + 1].clone(),
            });
        }
        for j in 0..EXTRA_RELATIONS {
            let a = rng.below(BATCH_ENTITIES);
            let b = (a + 1 + rng.below(BATCH_ENTITIES - 1)) % BATCH_ENTITIES;
            relations.push(Rel {
                id: format!("c{n}-x{j}"),
                source: entities[a].clone(),
                target: entities[b].clone(),
            });
        }
        BatchRec {
            entities,
            relations,
            acked: String::new(),
        }
    }

    fn to_json(&self, n: u64) -> Value {
        let entities: Vec<Value> = self
            .entities
            .iter()
            .map(|id| json!({"id": id, "title": id, "type": "CHAOS", "description": format!("chaos batch {n}")}))
            .collect();
        let relations: Vec<Value> = self
            .relations
            .iter()
            .map(|r| json!({"id": r.id, "source": r.source, "target": r.target, "description": "chaos", "weight": 1.0}))
            .collect();
        json!({"entities": entities, "relations": relations})
    }

    fn touching<'a>(&'a self, x: &'a str) -> impl Iterator<Item = &'a Rel> + 'a {
        self.relations
            .iter()
            .filter(move |r| r.source == x || r.target == x)
    }
}

#[derive(Default)]
struct Model {
    /// Acknowledged batches.
    batches: Vec<Arc<BatchRec>>,
    /// (batch, entity index) of every acknowledged entity.
    acked: Vec<(usize, usize)>,
    /// Entities a delete was sent for (inserted before sending): their state may change any time.
    deleting: HashSet<String>,
    /// Acknowledged deletes, with their order of acknowledgement (1, 2, ...).
    deleted: HashMap<String, u64>,
    deletes_acked: u64,
    /// Batch number -> index in `batches`.
    by_n: HashMap<u64, usize>,
}

impl Model {
    /// What a complete answer about `x` must say of its relations, `deleted_before` being the number
    /// of deletes acknowledged when the request was sent. `got` is (id, source, target) as answered.
    fn relation_problems(
        &self,
        batch: &BatchRec,
        x: &str,
        deleted_before: u64,
        got: &[(String, String, String)],
    ) -> Vec<String> {
        let gone_before = |id: &str| self.deleted.get(id).is_some_and(|&o| o <= deleted_before);
        let touching: BTreeMap<&str, &Rel> =
            batch.touching(x).map(|r| (r.id.as_str(), r)).collect();
        let mut problems = Vec::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for (id, s, t) in got {
            match touching.get(id.as_str()) {
                None => problems.push(format!(
                    "relation {id} ({s} -> {t}) was never written next to {x}"
                )),
                Some(r) => {
                    if r.source != *s || r.target != *t {
                        problems.push(format!(
                            "relation {id} answered as {s} -> {t}, written {} -> {}",
                            r.source, r.target
                        ));
                    }
                    if gone_before(&r.source) || gone_before(&r.target) {
                        problems.push(format!(
                            "relation {id} ({} -> {}) belongs to an entity deleted (acknowledged) before the request",
                            r.source, r.target
                        ));
                    }
                    if !seen.insert(r.id.as_str()) {
                        problems.push(format!("relation {id} listed twice"));
                    }
                }
            }
        }
        for (id, r) in &touching {
            let unsure = self.deleting.contains(&r.source) || self.deleting.contains(&r.target);
            if !unsure && !seen.contains(id) {
                problems.push(format!(
                    "acknowledged relation {id} ({} -> {}) missing",
                    r.source, r.target
                ));
            }
        }
        problems
    }
}

/// The verdict on one read.
enum Verdict {
    Right,
    Partial,
    Stale,
    /// Not an answer (transport error, 5xx, 429): allowed.
    Refused(String),
    /// A delete of the entity raced the read: nothing to check.
    Skipped,
    Wrong(String),
}

fn rel_triples(v: &Value) -> Vec<(String, String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["id"].as_str().unwrap_or("<no id>").to_string(),
                        r["source"].as_str().unwrap_or("").to_string(),
                        r["target"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The verdict on a read of the `k`-th entity `x` of `batch`: `GET /graph/entities/{x}`, or with
/// `neighborhood` `POST /graph/neighborhood` one hop around `x`, both directions. Skipped when
/// `x` is being deleted, refused when there was no answer.
fn judge(
    m: &Model,
    batch: &BatchRec,
    k: usize,
    deleted_before: u64,
    reply: &Result<Reply, String>,
    neighborhood: bool,
) -> Verdict {
    let x = batch.entities[k].as_str();
    if m.deleting.contains(x) {
        return Verdict::Skipped;
    }
    let r = match reply {
        Ok(r) => r,
        Err(e) => return Verdict::Refused(e.clone()),
    };
    let (what, problems) = if neighborhood {
        ("neighborhood of", neighborhood_problems(m, batch, x, r))
    } else {
        ("entity", entity_problems(x, r))
    };
    let mut problems = match problems {
        Ok(problems) => problems,
        Err(verdict) => return verdict,
    };
    problems.extend(m.relation_problems(
        batch,
        x,
        deleted_before,
        &rel_triples(&r.body["relations"]),
    ));
    if problems.is_empty() {
        Verdict::Right
    } else {
        Verdict::Wrong(format!(
            "{what} {x} (shard {}): {}; answer {}",
            shard_of(x, SHARDS),
            problems.join("; "),
            short(&r.body)
        ))
    }
}

/// What is wrong with the answer to `GET /graph/entities/{x}` besides its relations, or the
/// verdict without looking further.
fn entity_problems(x: &str, r: &Reply) -> Result<Vec<String>, Verdict> {
    if r.stale.is_some() {
        return Err(Verdict::Stale);
    }
    match r.status {
        200 => {}
        404 => {
            return Err(Verdict::Wrong(format!(
                "acknowledged entity {x} (shard {}) answered 404: {}",
                shard_of(x, SHARDS),
                short(&r.body)
            )))
        }
        s => return Err(Verdict::Refused(format!("{s}"))),
    }
    if r.body["entity"]["id"] != x || r.body["entity"]["title"] != x {
        return Err(Verdict::Wrong(format!(
            "entity {x}: wrong entity in the answer: {}",
            short(&r.body)
        )));
    }
    Ok(Vec::new())
}

/// What is wrong with the answer to `POST /graph/neighborhood` around `x` besides its relations,
/// or the verdict without looking further.
fn neighborhood_problems(
    m: &Model,
    batch: &BatchRec,
    x: &str,
    r: &Reply,
) -> Result<Vec<String>, Verdict> {
    if r.status != 200 {
        return Err(Verdict::Refused(format!("{}", r.status)));
    }
    let shards = &r.body["_shards"];
    if shards["failed"].as_u64() != Some(0)
        || shards["failures"].as_array().is_some_and(|f| !f.is_empty())
    {
        return Err(Verdict::Partial);
    }
    if r.stale.is_some() {
        return Err(Verdict::Stale);
    }
    let mut problems = Vec::new();
    if r.body["missing_seeds"]
        .as_array()
        .is_some_and(|a| a.iter().any(|s| s == x))
    {
        problems.push("the acknowledged seed is in missing_seeds".to_string());
    }
    if r.body["truncated"] != false {
        problems.push(format!("truncated = {}", r.body["truncated"]));
    }
    let hops: BTreeMap<String, u64> = r.body["entities"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["id"].as_str().unwrap_or("<no id>").to_string(),
                        e["hop"].as_u64().unwrap_or(999),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if hops.get(x) != Some(&0) {
        problems.push("the seed is not among the entities at hop 0".to_string());
    }
    for id in hops.keys() {
        if !batch.entities.contains(id) {
            problems.push(format!("entity {id} was never written next to {x}"));
        }
    }
    for rel in batch.touching(x) {
        let other = if rel.source == x {
            &rel.target
        } else {
            &rel.source
        };
        let unsure = m.deleting.contains(&rel.source) || m.deleting.contains(&rel.target);
        if !unsure && hops.get(other.as_str()) != Some(&1) {
            problems.push(format!(
                "neighbour {other} (relation {}) not at hop 1: {:?}",
                rel.id,
                hops.get(other.as_str())
            ));
        }
    }
    Ok(problems)
}

// ---------------------------------------------------------------------------------------------
// Shared by the writer, the reader and the chaos loop.

#[derive(Default)]
struct Tally {
    /// class -> (count, first example)
    classes: BTreeMap<String, (u64, String)>,
}

impl Tally {
    fn add(&mut self, class: String, example: String) {
        let e = self.classes.entry(class).or_insert((0, example));
        e.0 += 1;
    }
    fn total(&self) -> u64 {
        self.classes.values().map(|(n, _)| n).sum()
    }
    fn show(&self) -> String {
        if self.classes.is_empty() {
            return "none".into();
        }
        self.classes
            .iter()
            .map(|(c, (n, _))| format!("{n} x {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// Prints `{what}: {total} ({show})` and, when there are any, the first example of each class.
    fn print(&self, what: &str) {
        eprintln!("{what}: {} ({})", self.total(), self.show());
        for (c, (_, e)) in &self.classes {
            eprintln!("    {c}: e.g. {e}");
        }
    }
}

#[derive(Default)]
struct Stats {
    batches_acked: u64,
    entities_acked: u64,
    relations_acked: u64,
    write_failures: Tally,
    write_ms: Vec<u64>,
    last_ack: Option<Instant>,
    longest_ack_gap: Duration,
    deletes_acked: u64,
    delete_failures: Tally,
    reads_right: BTreeMap<&'static str, u64>,
    reads_partial: u64,
    reads_stale: u64,
    reads_skipped: u64,
    reads_refused: Tally,
    read_ms: Vec<u64>,
    wrong: Vec<String>,
    wrong_count: u64,
}

impl Stats {
    fn wrong(&mut self, msg: String) {
        self.wrong_count += 1;
        eprintln!("chaos: WRONG ANSWER: {msg}");
        if self.wrong.len() < 30 {
            self.wrong.push(msg);
        }
    }
}

struct Ctx {
    ids: Vec<String>,
    urls: Vec<String>,
    live: Vec<AtomicBool>,
    stop: AtomicBool,
    model: Mutex<Model>,
    stats: Mutex<Stats>,
}

impl Ctx {
    fn pick_live(&self, rng: &mut Rng) -> Option<usize> {
        let live: Vec<usize> = (0..self.urls.len())
            .filter(|&i| self.live[i].load(Ordering::SeqCst))
            .collect();
        if live.is_empty() {
            return None;
        }
        Some(live[rng.below(live.len())])
    }
}

fn writer(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut n: u64 = 0;
    while !ctx.stop.load(Ordering::SeqCst) {
        let Some(node) = ctx.pick_live(&mut rng) else {
            std::thread::sleep(WRITE_PAUSE);
            continue;
        };
        let batch = BatchRec::new(n, &mut rng);
        let body = batch.to_json(n);
        n += 1;
        let started = Instant::now();
        let reply = http(
            "POST",
            &format!("{}/graph/ingest", ctx.urls[node]),
            Some(&body),
            REQUEST_TIMEOUT,
        );
        let took = started.elapsed();
        let acked = matches!(&reply, Ok(r) if r.status == 200 && r.body["errors"] == false && r.body["failed"] == 0);
        if acked {
            let mut batch = batch;
            batch.acked = format!(
                "batch c{} acknowledged by {} at {} UTC after {} ms",
                n - 1,
                ctx.ids[node],
                clock(),
                took.as_millis()
            );
            let (entities, relations) = (batch.entities.len(), batch.relations.len());
            {
                let mut m = ctx.model.lock().unwrap();
                let b = m.batches.len();
                m.batches.push(Arc::new(batch));
                m.acked.extend((0..entities).map(|k| (b, k)));
                m.by_n.insert(n - 1, b);
            }
            let mut s = ctx.stats.lock().unwrap();
            s.batches_acked += 1;
            s.entities_acked += entities as u64;
            s.relations_acked += relations as u64;
            s.write_ms.push(took.as_millis() as u64);
            let now = Instant::now();
            if let Some(last) = s.last_ack {
                s.longest_ack_gap = s.longest_ack_gap.max(now - last);
            }
            s.last_ack = Some(now);
        } else {
            let (class, example) = failure_class(&reply);
            ctx.stats.lock().unwrap().write_failures.add(
                class,
                format!(
                    "via {} after {} ms: {example}",
                    ctx.ids[node],
                    took.as_millis()
                ),
            );
        }
        #[allow(clippy::manual_is_multiple_of)] // the crate supports Rust 1.86
        if n % DELETE_EVERY == 0 {
            delete_one(&ctx, &mut rng);
        }
        std::thread::sleep(WRITE_PAUSE);
    }
}

/// Deletes one acknowledged entity (not the newest batches: their readers are busiest).
fn delete_one(ctx: &Ctx, rng: &mut Rng) {
    let Some(node) = ctx.pick_live(rng) else {
        return;
    };
    let id = {
        let mut m = ctx.model.lock().unwrap();
        if m.acked.is_empty() {
            return;
        }
        let mut chosen = None;
        for _ in 0..10 {
            let (b, k) = m.acked[rng.below(m.acked.len())];
            let id = m.batches[b].entities[k].clone();
            if !m.deleting.contains(&id) {
                chosen = Some(id);
                break;
            }
        }
        let Some(id) = chosen else { return };
        m.deleting.insert(id.clone());
        id
    };
    let reply = http(
        "DELETE",
        &format!("{}/graph/entities/{id}", ctx.urls[node]),
        None,
        REQUEST_TIMEOUT,
    );
    match &reply {
        Ok(r) if r.status == 200 => {
            let mut m = ctx.model.lock().unwrap();
            m.deletes_acked += 1;
            let order = m.deletes_acked;
            m.deleted.insert(id, order);
            drop(m);
            ctx.stats.lock().unwrap().deletes_acked += 1;
        }
        Ok(r) if r.status == 404 && r.stale.is_none() => {
            ctx.stats.lock().unwrap().wrong(format!(
                "DELETE of acknowledged entity {id} (shard {}) via {} answered 404 (not found): {}",
                shard_of(&id, SHARDS),
                ctx.ids[node],
                short(&r.body)
            ));
        }
        _ => {
            let (class, example) = failure_class(&reply);
            ctx.stats
                .lock()
                .unwrap()
                .delete_failures
                .add(class, format!("{id} via {}: {example}", ctx.ids[node]));
        }
    }
}

fn reader(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = Rng::new(seed);
    while !ctx.stop.load(Ordering::SeqCst) {
        let picked = {
            let m = ctx.model.lock().unwrap();
            if m.acked.is_empty() {
                None
            } else {
                let (b, k) = m.acked[rng.below(m.acked.len())];
                let batch = m.batches[b].clone();
                if m.deleting.contains(&batch.entities[k]) {
                    None
                } else {
                    Some((batch, k, m.deletes_acked))
                }
            }
        };
        let (Some((batch, k, deleted_before)), Some(node)) = (picked, ctx.pick_live(&mut rng))
        else {
            std::thread::sleep(READ_PAUSE);
            continue;
        };
        let x = batch.entities[k].clone();
        let neighborhood = rng.chance(0.5);
        let sent_at = clock();
        let started = Instant::now();
        let reply = if neighborhood {
            http(
                "POST",
                &format!("{}/graph/neighborhood", ctx.urls[node]),
                Some(&json!({"seeds": [x], "hops": 1, "direction": "both"})),
                REQUEST_TIMEOUT,
            )
        } else {
            http(
                "GET",
                &format!("{}/graph/entities/{x}", ctx.urls[node]),
                None,
                REQUEST_TIMEOUT,
            )
        };
        let took = started.elapsed();
        let verdict = {
            let m = ctx.model.lock().unwrap();
            judge(&m, &batch, k, deleted_before, &reply, neighborhood)
        };
        let kind = if neighborhood { "neighborhood" } else { "get" };
        let mut s = ctx.stats.lock().unwrap();
        match verdict {
            Verdict::Right => {
                *s.reads_right.entry(kind).or_default() += 1;
                s.read_ms.push(took.as_millis() as u64);
            }
            Verdict::Partial => s.reads_partial += 1,
            Verdict::Stale => s.reads_stale += 1,
            Verdict::Skipped => s.reads_skipped += 1,
            Verdict::Refused(class) => {
                let example = match &reply {
                    Ok(r) => short(&r.body),
                    Err(e) => e.clone(),
                };
                s.reads_refused.add(
                    format!("{kind} {class}"),
                    format!("{x} via {}: {example}", ctx.ids[node]),
                );
            }
            Verdict::Wrong(msg) => s.wrong(format!(
                "{kind} via {} sent at {} UTC, answered after {} ms ({}): {msg}",
                ctx.ids[node],
                sent_at,
                took.as_millis(),
                batch.acked
            )),
        }
        drop(s);
        std::thread::sleep(READ_PAUSE);
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster state: green, placement, balance.

/// Copies per node from a `/cluster/shards` answer (every node of the cluster, 0 if it holds none).
fn copies_per_node(shards: &Value, ids: &[String]) -> BTreeMap<String, usize> {
    let mut per: BTreeMap<String, usize> = ids.iter().map(|id| (id.clone(), 0)).collect();
    for c in shards["copies"].as_array().into_iter().flatten() {
        *per.entry(c["node"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    per
}

/// Why the placement in a `/cluster/shards` answer is not the settled one (empty when it is).
fn placement_problems(shards: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_shard: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for c in shards["copies"].as_array().into_iter().flatten() {
        by_shard
            .entry(c["shard"].as_u64().unwrap_or(u64::MAX))
            .or_default()
            .push(c);
    }
    for shard in 0..SHARDS as u64 {
        let copies = by_shard.remove(&shard).unwrap_or_default();
        let nodes: BTreeSet<&str> = copies.iter().filter_map(|c| c["node"].as_str()).collect();
        let primaries = copies.iter().filter(|c| c["primary"] == true).count();
        let bad: Vec<String> = copies
            .iter()
            .filter(|c| c["state"] != "started" || c["in_sync"] != true)
            .map(|c| format!("{}={}/in_sync={}", c["node"], c["state"], c["in_sync"]))
            .collect();
        if copies.len() != REPLICAS || nodes.len() != REPLICAS || primaries != 1 || !bad.is_empty()
        {
            problems.push(format!(
                "shard {shard}: {} copies on {:?}, {primaries} primaries, not started/in sync: {bad:?}",
                copies.len(),
                nodes
            ));
        }
    }
    if !by_shard.is_empty() {
        problems.push(format!(
            "copies of unknown shards: {:?}",
            by_shard.keys().collect::<Vec<_>>()
        ));
    }
    for field in ["moves", "draining"] {
        if shards[field].as_array().is_some_and(|a| !a.is_empty()) {
            problems.push(format!("{field}: {}", short(&shards[field])));
        }
    }
    problems
}

struct Observation {
    /// Green, every node running and ready, every shard fully copied and in sync, nothing moving.
    green: Result<(), String>,
    /// Copies per node differ by at most one.
    balanced: Result<(), String>,
}

fn observe(cluster: &mut TestCluster) -> Observation {
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    let not = |why: String| Observation {
        green: Err(why),
        balanced: Err("unknown".into()),
    };
    for i in 0..cluster.nodes.len() {
        if !cluster.nodes[i].is_running() {
            return not(format!("{} is not running", ids[i]));
        }
        let h = match cluster.nodes[i].get_json("/cluster/health", Duration::from_secs(5)) {
            Ok(h) => h,
            Err(e) => return not(format!("{e:#}")),
        };
        if h["status"] != "green" {
            return not(format!(
                "{} says {} ({})",
                ids[i],
                h["status"],
                short(&h["reasons"])
            ));
        }
        let ready = ready_ids(&h);
        let missing: Vec<&String> = ids.iter().filter(|id| !ready.contains(id)).collect();
        if !missing.is_empty() {
            return not(format!("{} does not list {missing:?} as ready", ids[i]));
        }
    }
    let shards = match cluster.nodes[0].get_json("/cluster/shards", T) {
        Ok(s) => s,
        Err(e) => return not(format!("{e:#}")),
    };
    let problems = placement_problems(&shards);
    let per = copies_per_node(&shards, &ids);
    let (lo, hi) = (
        per.values().copied().min().unwrap_or(0),
        per.values().copied().max().unwrap_or(0),
    );
    Observation {
        green: if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "green, but /cluster/shards: {}",
                problems.join("; ")
            ))
        },
        balanced: if hi - lo <= 1 {
            Ok(())
        } else {
            Err(format!("copies per node {per:?}"))
        },
    }
}

struct Settled {
    /// When the final stretch of green began.
    green_at: Instant,
    balanced: Result<(), String>,
}

/// Waits until the cluster is green on every node (two polls in a row) and balanced; once green,
/// waits at most `balance_grace` for the balance.
fn wait_settled(
    cluster: &mut TestCluster,
    timeout: Duration,
    balance_grace: Duration,
) -> Result<Settled, String> {
    let mut green_since: Option<Instant> = None;
    let mut greens = 0;
    wait::poll(timeout, POLL, || {
        let now = Instant::now();
        let o = observe(cluster);
        match o.green {
            Ok(()) => {
                let since = *green_since.get_or_insert(now);
                greens += 1;
                if greens >= 2 && (o.balanced.is_ok() || since.elapsed() >= balance_grace) {
                    return Ok(Settled {
                        green_at: since,
                        balanced: o.balanced,
                    });
                }
                Err(format!(
                    "green, not balanced: {}",
                    o.balanced.err().unwrap_or_default()
                ))
            }
            Err(e) => {
                green_since = None;
                greens = 0;
                Err(e)
            }
        }
    })
}

/// Nodes that exited although the test did not kill them: a failure each, and restarted.
fn restart_crashed(cluster: &mut TestCluster, ctx: &Ctx, f: &mut Failures) {
    for i in 0..cluster.nodes.len() {
        if ctx.live[i].load(Ordering::SeqCst) && !cluster.nodes[i].is_running() {
            ctx.live[i].store(false, Ordering::SeqCst);
            let status = cluster.nodes[i].exit_status();
            f.fail(format!(
                "{} exited on its own (not killed by the test) before {} UTC, exit status {status:?}; log tail:\n{}",
                cluster.nodes[i].id,
                clock(),
                cluster.nodes[i].log_tail(40)
            ));
            if let Err(e) = cluster
                .node_mut(i)
                .start()
                .and_then(|_| cluster.wait_node_up(i, Duration::from_secs(60)))
            {
                f.fail(format!("restarting {} failed: {e:#}", cluster.nodes[i].id));
                continue;
            }
            ctx.live[i].store(true, Ordering::SeqCst);
        }
    }
}

fn log_tails(cluster: &TestCluster, lines: usize) -> String {
    cluster
        .nodes
        .iter()
        .map(|n| format!("--- {} ---\n{}", n.id, n.log_tail(lines)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The median and 99th percentile of the latencies `v` (ms), for the figures.
fn latency(v: &[u64]) -> String {
    format!("p50 {} ms, p99 {} ms", pct(v, 0.5), pct(v, 0.99))
}

fn pct(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    s[((s.len() - 1) as f64 * p).round() as usize]
}

struct Round {
    node: String,
    /// Wall clock (UTC) of the kill and of the restart.
    killed_at: String,
    restarted_at: String,
    wipe: bool,
    delay: Duration,
    /// From the restart to `/health` answering.
    up_in: Option<Duration>,
    /// From the kill to green again (every node ready, every copy in sync).
    green_after_kill: Option<Duration>,
    balanced: Option<Result<(), String>>,
    batches_acked_meanwhile: u64,
}

impl Round {
    fn show(&self, n: usize) -> String {
        format!(
            "round {n}: kill -9 {} at {}{}, restarted {:.1} s later at {}, up in {}, green {} after the kill{}, {} batches acknowledged meanwhile",
            self.node,
            self.killed_at,
            if self.wipe { " + wiped data dir" } else { "" },
            self.delay.as_secs_f64(),
            self.restarted_at,
            self.up_in.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or("-".into()),
            self.green_after_kill.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or("NEVER".into()),
            match &self.balanced {
                Some(Ok(())) => " (balanced)".to_string(),
                Some(Err(e)) => format!(" (NOT balanced: {e})"),
                None => String::new(),
            },
            self.batches_acked_meanwhile,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Final checks.

/// `POST /query` on node `i`, every row's first column.
fn query_ids(url: &str, cypher: &str) -> Result<HashSet<String>, String> {
    let body = json!({"cypher": cypher, "timeout_ms": 60000, "allow_partial": false});
    let r = http(
        "POST",
        &format!("{url}/query"),
        Some(&body),
        Duration::from_secs(90),
    )?;
    if r.status != 200 {
        return Err(format!("{} {}", r.status, short(&r.body)));
    }
    if r.body["_shards"]["failed"] != 0 {
        return Err(format!("partial: {}", short(&r.body["_shards"])));
    }
    if let Some(stale) = r.stale {
        return Err(format!("marked stale: {stale}"));
    }
    Ok(r.body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| row[0].as_str().map(String::from))
        .collect())
}

/// The first `n` ids with their shard and where/when their batch was acknowledged.
fn first<'a>(m: &Model, it: impl Iterator<Item = &'a String>, n: usize) -> Vec<String> {
    it.take(n)
        .map(|id| {
            let batch = id
                .strip_prefix('c')
                .and_then(|rest| rest.split('-').next())
                .and_then(|n| n.parse::<u64>().ok())
                .and_then(|n| m.by_n.get(&n))
                .map(|&b| m.batches[b].acked.as_str())
                .unwrap_or("batch not acknowledged");
            format!("{id} (shard {}; {batch})", shard_of(id, SHARDS))
        })
        .collect()
}

/// A failure when `ids` (found wrong on `node`: `what`) is not empty, with up to 10 of them.
/// The ids of `want` that `listed` lacks, and the ids of `unwanted` that it has.
fn missing_and_listed<'a>(
    listed: &HashSet<String>,
    want: &[&'a String],
    unwanted: impl Iterator<Item = &'a String>,
) -> (Vec<&'a String>, Vec<&'a String>) {
    let missing = want.iter().copied().filter(|id| !listed.contains(*id));
    (
        missing.collect(),
        unwanted.filter(|id| listed.contains(*id)).collect(),
    )
}

fn check_none(f: &mut Failures, m: &Model, node: &str, ids: &[&String], what: &str) {
    f.check(ids.is_empty(), || {
        format!(
            "{node}: {} {what}, e.g. {:?}",
            ids.len(),
            first(m, ids.iter().copied(), 10)
        )
    });
}

/// Every acknowledged entity and relation listed by a full query on every node; no deleted one.
fn check_listed_everywhere(ctx: &Ctx, f: &mut Failures) -> usize {
    let m = ctx.model.lock().unwrap();
    let alive: Vec<&String> = m
        .acked
        .iter()
        .map(|&(b, k)| &m.batches[b].entities[k])
        .filter(|id| !m.deleting.contains(*id))
        .collect();
    let unsure = |r: &Rel| m.deleting.contains(&r.source) || m.deleting.contains(&r.target);
    let gone = |r: &Rel| m.deleted.contains_key(&r.source) || m.deleted.contains_key(&r.target);
    let rels: Vec<&Rel> = m.batches.iter().flat_map(|b| b.relations.iter()).collect();
    let want_rels: Vec<&String> = rels.iter().filter(|r| !unsure(r)).map(|r| &r.id).collect();
    let gone_rels: Vec<&String> = rels.iter().filter(|r| gone(r)).map(|r| &r.id).collect();
    for (i, url) in ctx.urls.iter().enumerate() {
        let node = &ctx.ids[i];
        f.cases += 1;
        match query_ids(url, "MATCH (e:Entity) RETURN e.id") {
            Err(e) => f.fail(format!("listing entities on {node}: {e}")),
            Ok(got) => {
                let (missing, resurrected) = missing_and_listed(&got, &alive, m.deleted.keys());
                eprintln!(
                    "chaos: {node} lists {} entities: {} of {} acknowledged missing, {} of {} deleted present",
                    got.len(),
                    missing.len(),
                    alive.len(),
                    resurrected.len(),
                    m.deleted.len()
                );
                check_none(
                    f,
                    &m,
                    node,
                    &missing,
                    "acknowledged entities missing from MATCH (e:Entity) RETURN e.id",
                );
                check_none(
                    f,
                    &m,
                    node,
                    &resurrected,
                    "entities whose delete was acknowledged are listed again",
                );
            }
        }
        f.cases += 1;
        match query_ids(url, "MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN r.id") {
            Err(e) => f.fail(format!("listing relations on {node}: {e}")),
            Ok(got) => {
                let (missing, resurrected) =
                    missing_and_listed(&got, &want_rels, gone_rels.iter().copied());
                check_none(
                    f,
                    &m,
                    node,
                    &missing,
                    "acknowledged relations missing from the relation listing",
                );
                check_none(
                    f,
                    &m,
                    node,
                    &resurrected,
                    "relations of deleted entities are listed",
                );
            }
        }
    }
    alive.len()
}

/// Every acknowledged entity read by id (each from one node, in turn), and each deleted one from
/// every node. Returns the number of reads.
fn check_readable_by_id(ctx: &Ctx, f: &mut Failures) -> usize {
    let m = ctx.model.lock().unwrap();
    let alive: Vec<(usize, usize)> = m
        .acked
        .iter()
        .copied()
        .filter(|&(b, k)| !m.deleting.contains(&m.batches[b].entities[k]))
        .collect();
    let deleted: Vec<&String> = m.deleted.keys().collect();
    let problems: Mutex<Vec<String>> = Mutex::default();
    let threads = 4;
    std::thread::scope(|scope| {
        for w in 0..threads {
            let (m, alive, deleted, problems) = (&*m, &alive, &deleted, &problems);
            scope.spawn(move || {
                for (j, &(b, k)) in alive.iter().enumerate().skip(w).step_by(threads) {
                    let node = j % NODES;
                    let batch = &m.batches[b];
                    let x = &batch.entities[k];
                    let reply = http(
                        "GET",
                        &format!("{}/graph/entities/{x}", ctx.urls[node]),
                        None,
                        T,
                    );
                    let problem = match judge(m, batch, k, u64::MAX, &reply, false) {
                        Verdict::Right => None,
                        Verdict::Wrong(msg) => Some(msg),
                        Verdict::Partial | Verdict::Skipped => None,
                        Verdict::Stale => Some(format!("GET {x}: marked stale on a green cluster")),
                        Verdict::Refused(c) => Some(format!(
                            "GET {x}: refused on a green cluster: {c} {}",
                            reply.as_ref().map(|r| short(&r.body)).unwrap_or_default()
                        )),
                    };
                    if let Some(p) = problem {
                        problems
                            .lock()
                            .unwrap()
                            .push(format!("via {}: {p}", ctx.ids[node]));
                    }
                }
                for x in deleted.iter().skip(w).step_by(threads) {
                    for node in 0..NODES {
                        match http(
                            "GET",
                            &format!("{}/graph/entities/{x}", ctx.urls[node]),
                            None,
                            T,
                        ) {
                            Ok(r) if r.status == 404 => {}
                            Ok(r) => problems.lock().unwrap().push(format!(
                                "deleted entity {x} (shard {}) via {}: {} {}",
                                shard_of(x, SHARDS),
                                ctx.ids[node],
                                r.status,
                                short(&r.body)
                            )),
                            Err(e) => problems
                                .lock()
                                .unwrap()
                                .push(format!("deleted entity {x} via {}: {e}", ctx.ids[node])),
                        }
                    }
                }
            });
        }
    });
    let problems = problems.into_inner().unwrap();
    let reads = alive.len() + deleted.len() * NODES;
    f.cases += reads;
    if !problems.is_empty() {
        f.fail(format!(
            "{} of {reads} reads by id after the run were wrong or refused:\n{}",
            problems.len(),
            problems
                .iter()
                .take(15)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    reads
}

/// `GET /cluster/shards?checksum=true`, asked again (3 tries, 3 s apart) while some copy's
/// checksum is an error: a node that was restarted last may not answer a peer's first call
/// (its dial backoff). The last answer is returned, errors and all, for the caller to judge.
fn shards_with_checksums(url: &str) -> Result<Reply, String> {
    let mut tries = 0;
    loop {
        tries += 1;
        let r = http(
            "GET",
            &format!("{url}/cluster/shards?checksum=true"),
            None,
            Duration::from_secs(90),
        )?;
        let missing: Vec<String> = r.body["copies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| !c["checksum"].is_string())
            .map(|c| format!("{} shard {}: {}", c["node"], c["shard"], c["checksum"]))
            .collect();
        if r.status != 200 || missing.is_empty() || tries == 3 {
            return Ok(r);
        }
        eprintln!(
            "chaos: {url}: no checksum for {} copies ({}), asking again",
            missing.len(),
            missing.first().cloned().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// `GET /cluster/shards?checksum=true` on every node: each shard's copies agree (counts and
/// checksum), and every node sees the same placement and checksums.
fn check_copies_agree(ctx: &Ctx, f: &mut Failures) -> String {
    let mut reference: Option<(String, BTreeMap<u64, Vec<String>>)> = None;
    let mut summary = String::new();
    let mut disagree: Vec<(u64, String)> = Vec::new();
    for (i, url) in ctx.urls.iter().enumerate() {
        let node = &ctx.ids[i];
        f.cases += 1;
        let r = match shards_with_checksums(url) {
            Ok(r) if r.status == 200 => r,
            Ok(r) => {
                f.fail(format!(
                    "{node}: /cluster/shards?checksum=true answered {} {}",
                    r.status,
                    short(&r.body)
                ));
                continue;
            }
            Err(e) => {
                f.fail(format!("{node}: /cluster/shards?checksum=true: {e}"));
                continue;
            }
        };
        let mut by_shard: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
        for c in r.body["copies"].as_array().into_iter().flatten() {
            by_shard
                .entry(c["shard"].as_u64().unwrap_or(u64::MAX))
                .or_default()
                .push(c);
        }
        let mut seen: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut lines = Vec::new();
        for (shard, copies) in &by_shard {
            let key = |c: &Value| {
                format!(
                    "entities={} relations={} chunks={} checksum={}",
                    c["entities"], c["relations"], c["chunks"], c["checksum"]
                )
            };
            let keys: BTreeSet<String> = copies.iter().map(|c| key(c)).collect();
            let no_checksum = copies
                .iter()
                .any(|c| !c["checksum"].is_string() || c["checksum"] == "");
            // Every node reports the same copies (checked below): judge the first answer only.
            if reference.is_none() && (keys.len() != 1 || no_checksum) {
                disagree.push((
                    *shard,
                    format!(
                        "{node}: copies of shard {shard} disagree or lack a checksum: {}",
                        copies
                            .iter()
                            .map(|c| format!(
                                "{}{}: {}",
                                c["node"],
                                if c["primary"] == true {
                                    "(primary)"
                                } else {
                                    ""
                                },
                                key(c)
                            ))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    ),
                ));
            }
            let mut placed: Vec<String> = copies
                .iter()
                .map(|c| {
                    format!(
                        "{}{} {}",
                        c["node"],
                        if c["primary"] == true { "*" } else { "" },
                        key(c)
                    )
                })
                .collect();
            placed.sort();
            lines.push(format!(
                "shard {shard}: {}",
                copies
                    .iter()
                    .map(|c| format!(
                        "{}{} e={} r={} {}",
                        c["node"].as_str().unwrap_or("?"),
                        if c["primary"] == true { "*" } else { "" },
                        c["entities"],
                        c["relations"],
                        c["checksum"].as_str().unwrap_or("-")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            seen.insert(*shard, placed);
        }
        let problems = placement_problems(&r.body);
        if reference.is_none() {
            f.check(problems.is_empty(), || {
                format!("{node}: final placement: {}", problems.join("; "))
            });
        }
        match &reference {
            None => {
                summary = lines.join("\n    ");
                reference = Some((node.clone(), seen));
            }
            Some((ref_node, ref_seen)) => {
                f.check(ref_seen == &seen, || {
                    format!("{node} and {ref_node} report different copies/checksums:\n{node}: {seen:?}\n{ref_node}: {ref_seen:?}")
                });
            }
        }
    }
    for (shard, msg) in disagree {
        let diff = diff_copies(ctx, shard as u32);
        f.fail(format!("{msg}\n  {diff}"));
    }
    summary
}

/// Which entities and relations one copy of `shard` holds and another lacks: the same per-shard
/// query sent until two different copies answered it (copies take turns).
fn diff_copies(ctx: &Ctx, shard: u32) -> String {
    let m = ctx.model.lock().unwrap();
    let mut out = Vec::new();
    for (what, cypher) in [
        (
            "entities",
            "MATCH (e:Entity) WHERE e.stub = false RETURN e.id",
        ),
        (
            "relations",
            "MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN r.id",
        ),
    ] {
        let mut by_node: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for attempt in 0..12 {
            if by_node.len() >= REPLICAS {
                break;
            }
            let url = &ctx.urls[attempt % ctx.urls.len()];
            let body = json!({"cypher": cypher, "merge": "per_shard", "shards": [shard], "timeout_ms": 30000});
            let Ok(r) = http(
                "POST",
                &format!("{url}/query"),
                Some(&body),
                Duration::from_secs(40),
            ) else {
                continue;
            };
            for s in r.body["shards"].as_array().into_iter().flatten() {
                let ids: BTreeSet<String> = s["rows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|row| row[0].as_str().map(String::from))
                    .collect();
                by_node.insert(s["node"].as_str().unwrap_or("?").to_string(), ids);
            }
        }
        let nodes: Vec<&String> = by_node.keys().collect();
        if nodes.len() < 2 {
            out.push(format!(
                "{what}: only {nodes:?} answered the per-shard query"
            ));
            continue;
        }
        for a in &nodes {
            for b in &nodes {
                if a == b {
                    continue;
                }
                let only: Vec<&String> = by_node[*a].difference(&by_node[*b]).collect();
                if !only.is_empty() {
                    out.push(format!(
                        "{what} on {a} but not on {b} ({}): {:?}",
                        only.len(),
                        first(&m, only.iter().copied(), 8)
                    ));
                }
            }
        }
    }
    out.join("\n  ")
}

/// Panics written to the nodes' logs during the run.
fn check_logs_for_panics(cluster: &TestCluster, f: &mut Failures) {
    for n in &cluster.nodes {
        let text = std::fs::read_to_string(&n.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("panicked at")).collect();
        f.cases += 1;
        f.check(lines.is_empty(), || {
            format!(
                "{} logged {} panics, e.g.:\n{}",
                n.id,
                lines.len(),
                lines.iter().take(5).copied().collect::<Vec<_>>().join("\n")
            )
        });
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn chaos_kill_9_restarts_and_wipes_under_load_lose_nothing() {
    let started = Instant::now();
    let chaos = Duration::from_secs(env_u64("TORUA_CHAOS_SECS").unwrap_or(60));
    let seed = env_u64("TORUA_CHAOS_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)
    });
    eprintln!(
        "chaos: seed {seed} (TORUA_CHAOS_SEED={seed} replays this kill schedule), {} s of chaos (TORUA_CHAOS_SECS)",
        chaos.as_secs()
    );
    let mut rng = Rng::new(seed);
    let mut f = Failures::default();

    let mut opts = ClusterOptions::graph(NODES);
    for (k, v) in [
        ("TORUA_SHARDS", SHARDS.to_string()),
        ("TORUA_REPLICAS", REPLICAS.to_string()),
        ("TORUA_REPLACE_AFTER", REPLACE_AFTER.to_string()),
        ("TORUA_MEMORY_MB", MEMORY_MB.to_string()),
    ] {
        opts.env.insert(k.into(), v);
    }
    let mut cluster = TestCluster::start(NODES, opts).unwrap();
    eprintln!(
        "chaos: cluster in {} (logs kept there when the test fails), started at {} UTC",
        cluster.dir.display(),
        clock()
    );
    if let Err(e) = wait_settled(&mut cluster, Duration::from_secs(120), Duration::ZERO) {
        panic!(
            "the fresh cluster never became green: {e}\n{}",
            log_tails(&cluster, 20)
        );
    }
    eprintln!(
        "chaos: {NODES} nodes green after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let ctx = Arc::new(Ctx {
        ids: cluster.nodes.iter().map(|n| n.id.clone()).collect(),
        urls: cluster.nodes.iter().map(|n| n.url("")).collect(),
        live: (0..NODES).map(|_| AtomicBool::new(true)).collect(),
        stop: AtomicBool::new(false),
        model: Mutex::default(),
        stats: Mutex::default(),
    });
    let writer_thread = {
        let (ctx, seed) = (ctx.clone(), rng.next_u64());
        std::thread::spawn(move || writer(ctx, seed))
    };
    let reader_thread = {
        let (ctx, seed) = (ctx.clone(), rng.next_u64());
        std::thread::spawn(move || reader(ctx, seed))
    };

    // The chaos: kill, wait, (wipe,) restart, wait for green; again.
    let chaos_start = Instant::now();
    let mut next_kill = chaos_start + Duration::from_secs(5);
    let mut rounds: Vec<Round> = Vec::new();
    let mut wipes = 0;
    let mut abandoned = false;
    while chaos_start.elapsed() < chaos {
        let now = Instant::now();
        if now < next_kill {
            // The kill schedule is the point: until the next kill is due, only look (every second)
            // for nodes that died on their own.
            let left = chaos.saturating_sub(chaos_start.elapsed());
            std::thread::sleep((next_kill - now).min(left).min(Duration::from_secs(1)));
            restart_crashed(&mut cluster, &ctx, &mut f);
            continue;
        }
        restart_crashed(&mut cluster, &ctx, &mut f);
        // Never kill before the cluster is green again.
        if let Err(e) = wait_settled(&mut cluster, ROUND_HEAL_TIMEOUT, Duration::ZERO) {
            f.fail(format!(
                "not green before round {} within {ROUND_HEAL_TIMEOUT:?}: {e}",
                rounds.len() + 1
            ));
            abandoned = true;
            break;
        }
        let victim = rng.below(NODES);
        let wipe = rng.below(3) == 0 || (rounds.len() == 1 && wipes == 0);
        let delay = Duration::from_millis(rng.range(0, MAX_RESTART_DELAY_MS) as u64);
        let acked_before = ctx.stats.lock().unwrap().batches_acked;
        let node_id = cluster.nodes[victim].id.clone();
        eprintln!(
            "chaos: [{:.0} s] round {}: kill -9 {node_id}, restart in {:.1} s{}",
            chaos_start.elapsed().as_secs_f64(),
            rounds.len() + 1,
            delay.as_secs_f64(),
            if wipe { " with its data dir wiped" } else { "" }
        );
        ctx.live[victim].store(false, Ordering::SeqCst);
        cluster.node_mut(victim).kill9();
        let killed_at = Instant::now();
        let killed_clock = clock();
        // The node stays dead for the drawn delay: the cluster must cope meanwhile.
        std::thread::sleep(delay);
        if wipe {
            wipes += 1;
            let dir = cluster.nodes[victim].data_dir.clone();
            std::fs::remove_dir_all(&dir)
                .unwrap_or_else(|e| panic!("wiping {}: {e}", dir.display()));
        }
        let restarted_at = Instant::now();
        let mut round = Round {
            node: node_id.clone(),
            killed_at: killed_clock,
            restarted_at: clock(),
            wipe,
            delay,
            up_in: None,
            green_after_kill: None,
            balanced: None,
            batches_acked_meanwhile: 0,
        };
        // A node that dies while starting is a failure; it is started again (up to twice more)
        // so that the run goes on and the final checks still happen.
        for attempt in 1..=3 {
            let up = cluster
                .node_mut(victim)
                .start()
                .and_then(|_| cluster.wait_node_up(victim, Duration::from_secs(60)));
            match up {
                Ok(()) => {
                    round.up_in = Some(restarted_at.elapsed());
                    ctx.live[victim].store(true, Ordering::SeqCst);
                    break;
                }
                Err(e) => {
                    let status = cluster.nodes[victim].exit_status();
                    f.fail(format!(
                        "restarting {node_id} (attempt {attempt}) at {} UTC: exit status {status:?}: {e:#}",
                        clock()
                    ))
                }
            }
        }
        match wait_settled(&mut cluster, ROUND_HEAL_TIMEOUT, ROUND_BALANCE_GRACE) {
            Ok(s) => {
                round.green_after_kill = Some(s.green_at - killed_at);
                round.balanced = Some(s.balanced);
            }
            Err(e) => {
                f.fail(format!(
                    "round {}: not green within {ROUND_HEAL_TIMEOUT:?} of restarting {node_id}: {e}\nlogs:\n{}",
                    rounds.len() + 1,
                    log_tails(&cluster, 25)
                ));
                abandoned = true;
            }
        }
        round.batches_acked_meanwhile = ctx.stats.lock().unwrap().batches_acked - acked_before;
        eprintln!("chaos: {}", round.show(rounds.len() + 1));
        rounds.push(round);
        if abandoned {
            break;
        }
        next_kill =
            killed_at + Duration::from_millis(rng.range(KILL_EVERY_MS.0, KILL_EVERY_MS.1) as u64);
    }
    let chaos_took = chaos_start.elapsed();

    ctx.stop.store(true, Ordering::SeqCst);
    writer_thread.join().expect("writer thread");
    reader_thread.join().expect("reader thread");

    // Everything back, then green and balanced.
    restart_crashed(&mut cluster, &ctx, &mut f);
    for i in 0..NODES {
        if !cluster.nodes[i].is_running() {
            if let Err(e) = cluster
                .node_mut(i)
                .start()
                .and_then(|_| cluster.wait_node_up(i, Duration::from_secs(60)))
            {
                f.fail(format!("final restart of {}: {e:#}", cluster.nodes[i].id));
            }
            ctx.live[i].store(true, Ordering::SeqCst);
        }
    }
    let final_start = Instant::now();
    let final_green = match wait_settled(&mut cluster, FINAL_HEAL_TIMEOUT, FINAL_BALANCE_GRACE) {
        Ok(s) => {
            if let Err(e) = &s.balanced {
                f.fail(format!(
                    "final: green but not balanced {FINAL_BALANCE_GRACE:?} later: {e}"
                ));
            }
            Some(s.green_at.saturating_duration_since(final_start))
        }
        Err(e) => {
            f.fail(format!(
                "final: not green within {FINAL_HEAL_TIMEOUT:?}: {e}\nlogs:\n{}",
                log_tails(&cluster, 30)
            ));
            None
        }
    };

    let checks_start = Instant::now();
    let copies = check_copies_agree(&ctx, &mut f);
    let alive = check_listed_everywhere(&ctx, &mut f);
    let by_id = check_readable_by_id(&ctx, &mut f);
    check_logs_for_panics(&cluster, &mut f);
    let checks_took = checks_start.elapsed();

    // The figures.
    let s = ctx.stats.lock().unwrap();
    let m = ctx.model.lock().unwrap();
    let right: u64 = s.reads_right.values().sum();
    eprintln!("\n===== chaos figures (seed {seed}) =====");
    eprintln!(
        "setup: {NODES} nodes, {SHARDS} shards, R={REPLICAS}, TORUA_REPLACE_AFTER={REPLACE_AFTER}, TORUA_MEMORY_MB={MEMORY_MB}; chaos {:.0} s (asked {} s){}",
        chaos_took.as_secs_f64(),
        chaos.as_secs(),
        if abandoned { ", ABANDONED (cluster did not heal)" } else { "" }
    );
    eprintln!(
        "writes: {} batches acknowledged ({} entities, {} relations); ingest {}, max {} ms; longest time without an acknowledged write {:.1} s",
        s.batches_acked,
        s.entities_acked,
        s.relations_acked,
        latency(&s.write_ms),
        s.write_ms.iter().max().copied().unwrap_or(0),
        s.longest_ack_gap.as_secs_f64()
    );
    s.write_failures.print("  failed writes");
    eprintln!("deletes: {} acknowledged", s.deletes_acked);
    s.delete_failures.print("  failed deletes");
    eprintln!(
        "reads: {right} complete and right ({:?}), {} partial, {} stale, {} skipped (raced a delete), {} WRONG; right answers {}",
        s.reads_right,
        s.reads_partial,
        s.reads_stale,
        s.reads_skipped,
        s.wrong_count,
        latency(&s.read_ms)
    );
    s.reads_refused.print("  refused reads");
    let greens: Vec<String> = rounds
        .iter()
        .map(|r| {
            r.green_after_kill
                .map(|d| format!("{:.1}", d.as_secs_f64()))
                .unwrap_or("never".into())
        })
        .collect();
    eprintln!(
        "kills: {} ({} with a wiped data dir); time to green after each kill (s): [{}]",
        rounds.len(),
        wipes,
        greens.join(", ")
    );
    for (i, r) in rounds.iter().enumerate() {
        eprintln!("  {}", r.show(i + 1));
    }
    eprintln!(
        "final: green {} after the last restart; {} acknowledged entities (not deleted) listed on every node; {} deleted entities; {} reads by id; checks took {:.1} s",
        final_green.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or("NEVER".into()),
        alive,
        m.deleted.len(),
        by_id,
        checks_took.as_secs_f64()
    );
    eprintln!("copies (* = primary):\n    {copies}");
    eprintln!("=====\n");

    f.cases += (right + s.reads_partial + s.reads_stale) as usize;
    f.check(s.wrong_count == 0, || {
        format!(
            "{} wrong answers during the run, e.g.:\n{}",
            s.wrong_count,
            s.wrong.join("\n")
        )
    });
    f.check(s.entities_acked >= 200, || {
        format!(
            "only {} entities acknowledged during the run: the cluster barely took writes ({})",
            s.entities_acked,
            s.write_failures.show()
        )
    });
    f.check(right >= 50, || {
        format!("only {right} complete reads during the run: the cluster barely served reads")
    });
    f.check(!rounds.is_empty(), || "no node was killed".into());
    drop((s, m));
    f.finish("chaos", started);
}
