//! Locality (`graph_bench locality`): how much of a traversal stays on the node that holds its
//! seed when entities are placed by the hash of their id (`hash`) or by a routing key, their
//! community (`community`), and what that placement does to latency. Embedded Kuzu doing the same
//! 2-hop searches in the same run is the baseline.
//!
//! Data ([`planted`]): `--entities` entities (as graph_bench's generator makes them) in planted
//! communities of `--community-min`..=`--community-max` entities (consecutive runs of a seeded
//! random order), each community with a made-up topic word appended to its entities'
//! descriptions and its routing key `community-<k>`. Each relation's source is drawn by the
//! power law of `--skew` (as graph_bench's); its target, with probability `--inside`, uniformly
//! among the source's community, else by the same power law over all entities. Relations carry
//! their ends' keys (`source_routing`, `target_routing`) under community placement.
//!
//! For each `--nodes` count and each `--placements`: a fresh cluster (`--shards`, R=`--replicas`)
//! loaded as graph_bench's cluster target is (entities, then relations, waited on until applied,
//! counts checked against the placement), then `--samples` seeds drawn once for the whole run,
//! requests round-robin over the nodes:
//! 1. `POST /graph/neighborhood`, 1 hop, direction both, one seed per request: the local share
//!    is Σ `traversal.relations_local` / Σ (local + remote) over the seeds. A relation counts as
//!    local when the node that expanded its near end (here: a node holding the seed's shard)
//!    holds an in-sync copy of its far end's shard.
//! 2. The same with 2 hops, each request interleaved with embedded Kuzu's breadth-first search
//!    from the same seed (hood.rs, after a warm-up of `--query-warmup` requests); the answers are
//!    compared, the p50s give the ratio torua / embedded.
//! 3. `POST /retrieve` (local search, text only: BM25 seeds, no embeddings; top_k 10, 1 hop) for
//!    the first `--retrieve-queries` seeds, the query text being the seed's title and its
//!    community's topic word. No embedded baseline (the placement is what is compared).
//! 4. Point reads by id, `GET /graph/entities/{id}`, of `--reads` random entities (after
//!    `--read-warmup` others; the same ids for every case), each interleaved with embedded Kuzu's
//!    lookup of the same id (point_read.rs's [`Lookup`]: the entity and its relations) and its
//!    relation count compared. The reads are split by the id's community key: its shard is the
//!    shard of the id ("same") or not ("differs"). Under community placement a "differs" entity
//!    is stored in its key's shard and the id's shard holds a pointer, so its read takes one more
//!    step; under hash placement the split is a control (every entity is in its id's shard).
//!
//! Also per case, the ingest's placement lookup: every ingest request first asks the shards of
//! its entities' and relation ends' ids where they are stored. The nodes' `/metrics`
//! (`torua_ingest_placement_lookup_seconds` `_sum` and `_count`, `torua_ingest_entities_moved_total`)
//! are read before and after the ingest and summed over the nodes. The share of the ingest is
//! Σ lookup seconds / (`--clients` × acknowledged seconds): the clients each send one request at a
//! time, so that is the share of the time requests were in flight that went to the lookup.
//! Under load the lookup (a strict read) also waits for the appliers; to see it without that,
//! the first `--batch` relations are posted once more at the end of the case (idle, applied,
//! warm) and that one request's lookup is reported as "idle".
//!
//! Then the GraphRAG output of `--dulce` imported by `torua import graphrag` with
//! `--routing none` and with its default (community) routing, on a cluster of each `--nodes`
//! count: the 1-hop local share with every entity as the seed, and the import's placement lookups
//! (as above; the importer's requests are sequential), then the same import again on the warm,
//! idle cluster and its lookups. With `--placements none` only this part runs (e.g. at another
//! `--shards`: the importer splits communities larger than both 1.5 × the entities per shard and
//! its `--min-split`).

use super::*;
use torua_bench::stats::r3;
use torua_testkit::gen::vocabulary;
use torua_testkit::http::{send, with_key};

/// The placements measured: by id (no routing key) and by the planted community.
pub(crate) const PLACEMENTS: [&str; 2] = ["hash", "community"];

/// The `locality` subcommand's own flags.
#[derive(Debug, Clone)]
pub(crate) struct LocalityArgs {
    pub(crate) placements: Vec<String>,
    pub(crate) samples: usize,
    pub(crate) retrieve_queries: usize,
    pub(crate) community_min: usize,
    pub(crate) community_max: usize,
    pub(crate) inside: f64,
    /// The GraphRAG output folder to import (None: not measured).
    pub(crate) dulce: Option<PathBuf>,
}

impl Default for LocalityArgs {
    /// Both placements, 200 seeds, 100 retrievals, communities of 50-200 entities, 90 % of the
    /// relations inside, the Dulce folder of the test data.
    fn default() -> Self {
        LocalityArgs {
            placements: PLACEMENTS.iter().map(|s| s.to_string()).collect(),
            samples: 200,
            retrieve_queries: 100,
            community_min: 50,
            community_max: 200,
            inside: 0.9,
            dulce: Some(torua_testkit::dulce_dir()),
        }
    }
}

impl LocalityArgs {
    /// Takes `flag` if it is one of the locality flags (with its value `v`); false for any other.
    pub(crate) fn take(&mut self, flag: &str, v: &torua_bench::flags::Value) -> Result<bool> {
        match flag {
            "--placements" if v.text == "none" => self.placements.clear(),
            "--placements" => self.placements = v.known_names("placement", &PLACEMENTS)?,
            "--samples" => self.samples = v.parse("a count")?,
            "--retrieve-queries" => self.retrieve_queries = v.parse("a count")?,
            "--community-min" => self.community_min = v.parse("a count")?,
            "--community-max" => self.community_max = v.parse("a count")?,
            "--inside" => self.inside = v.parse("a share in [0, 1]")?,
            "--dulce" => {
                self.dulce = (v.text != "none").then(|| PathBuf::from(&v.text));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(crate) fn check(&self, entities: usize) -> Result<()> {
        if self.samples == 0
            || self.community_min == 0
            || self.community_min > self.community_max
            || !(0.0..=1.0).contains(&self.inside)
            || self.retrieve_queries > self.samples
            || self.samples > entities
        {
            bail!("locality: --samples in 1..=--entities, --retrieve-queries at most --samples, 1 <= --community-min <= --community-max, --inside in [0, 1]");
        }
        Ok(())
    }
}

/// The index of a generated entity id `ent-<i>`.
fn index_of(id: &str) -> usize {
    id.strip_prefix("ent-")
        .and_then(|i| i.parse().ok())
        .expect("a generated entity id")
}

/// The graph with planted communities (see the module doc), placed by community: every entity
/// carries its community's key, every relation its ends' keys.
pub(crate) fn planted(shape: &Generated, la: &LocalityArgs) -> Graph {
    let Generated {
        entities: n,
        relations: m,
        seed,
        skew,
    } = *shape;
    let mut rng = Rng(seed ^ 0x10CA_1177);
    let pool = (n / 2).max(1);
    let mut entities = entities(&mut rng, n, pool);
    let order = permutation(&mut rng, n);
    let mut members: Vec<&[usize]> = Vec::new();
    let mut rest = order.as_slice();
    while !rest.is_empty() {
        let size = rng
            .range(la.community_min, la.community_max)
            .min(rest.len());
        let (this, next) = rest.split_at(size);
        members.push(this);
        rest = next;
    }
    let mut community = vec![0usize; n];
    for (c, list) in members.iter().enumerate() {
        for &e in *list {
            community[e] = c;
        }
    }
    let topics = vocabulary(&mut rng, members.len(), 4, 5);
    for (i, e) in entities.iter_mut().enumerate() {
        let c = community[i];
        e.description = format!("{} {}", e.description, topics[c]);
        e.routing = Some(format!("community-{c}"));
    }
    let sources = permutation(&mut rng, n);
    let targets = permutation(&mut rng, n);
    let mut relations = relations(
        &mut rng,
        &mut entities,
        m,
        |rng| {
            let s = sources[power_law(rng, n, skew)];
            let t = if rng.chance(la.inside) {
                let list = members[community[s]];
                list[rng.below(list.len())]
            } else {
                targets[power_law(rng, n, skew)]
            };
            (s, t)
        },
        |rng, _| words(rng, 5, 12),
        |rng| text_units(rng, 1, 2, pool),
    );
    let key = |id: &str| entities[index_of(id)].routing.clone();
    for r in &mut relations {
        r.source_routing = key(&r.source);
        r.target_routing = key(&r.target);
    }
    Graph {
        entities,
        relations,
    }
}

/// Places `g` by `keys` (each entity's community key, by index) or, without, by id.
fn place(g: &mut Graph, keys: &[String], by_community: bool) {
    let key = |id: &str| by_community.then(|| keys[index_of(id)].clone());
    for e in &mut g.entities {
        e.routing = key(&e.id);
    }
    for r in &mut g.relations {
        r.source_routing = key(&r.source);
        r.target_routing = key(&r.target);
    }
}

/// Relations followed locally and remotely, and network rounds, summed over answers.
#[derive(Debug, Default, Clone, Copy)]
struct Followed {
    local: u64,
    remote: u64,
    rounds: u64,
}

impl Followed {
    /// Adds an answer's `traversal` counts; returns them as (local, remote).
    fn add(&mut self, answer: &Value) -> (u64, u64) {
        let t = &answer["traversal"];
        let (l, r) = (
            t["relations_local"].as_u64().unwrap_or(0),
            t["relations_remote"].as_u64().unwrap_or(0),
        );
        self.local += l;
        self.remote += r;
        self.rounds += t["rounds"].as_u64().unwrap_or(0);
        (l, r)
    }

    fn share(&self) -> f64 {
        share(self.local, self.remote)
    }

    fn json(&self) -> Value {
        json!({"relations_local": self.local, "relations_remote": self.remote,
               "rounds": self.rounds, "local_share": r3(self.share())})
    }
}

fn share(local: u64, remote: u64) -> f64 {
    if local + remote == 0 {
        f64::NAN
    } else {
        local as f64 / (local + remote) as f64
    }
}

/// Latencies in µs and the traversal counts of one kind of request.
#[derive(Default)]
struct Series {
    torua_us: Vec<f64>,
    embedded_us: Vec<f64>,
    followed: Followed,
    /// Per answer: its local share (answers that followed no relation are left out).
    shares: Vec<f64>,
    errors: usize,
    mismatches: usize,
    notes: Vec<String>,
}

impl Series {
    fn note(&mut self, what: &str, msg: String) {
        if self.notes.len() < 3 {
            log(format!("  {what}: {msg}"));
            self.notes.push(msg);
        }
    }

    /// Records a torua answer: its time, its traversal counts; the parsed body when it is a 200.
    fn answer(
        &mut self,
        what: &str,
        measured: bool,
        answer: Result<(f64, u16, Vec<u8>)>,
    ) -> Option<Value> {
        let (t_us, status, bytes) = match answer {
            Ok(x) => x,
            Err(e) => {
                self.errors += 1;
                self.note(what, format!("{e:#}"));
                return None;
            }
        };
        if status != 200 {
            self.errors += 1;
            self.note(
                what,
                format!("{status}: {}", short(&String::from_utf8_lossy(&bytes), 300)),
            );
            return None;
        }
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                self.errors += 1;
                self.note(what, format!("not JSON: {e}"));
                return None;
            }
        };
        if measured {
            self.torua_us.push(t_us);
            let (l, r) = self.followed.add(&v);
            if l + r > 0 {
                self.shares.push(share(l, r));
            }
        }
        Some(v)
    }

    fn json(&self) -> Value {
        let ms = |v: &[f64]| {
            pct(v).map(|p| {
                json!({"n": p.n, "p50_ms": r3(p.p50 / 1e3), "p90_ms": r3(p.p90 / 1e3),
                                  "p99_ms": r3(p.p99 / 1e3), "mean_ms": r3(p.mean / 1e3)})
            })
        };
        let seeds = pct(&self.shares);
        json!({
            "torua": ms(&self.torua_us), "embedded": ms(&self.embedded_us),
            "ratio_p50": self.ratio(), "traversal": self.followed.json(),
            "per_answer_share": seeds.map(|p| json!({"n": p.n, "min": r3(p.min), "p50": r3(p.p50),
                "all_local": self.shares.iter().filter(|&&s| s == 1.0).count()})),
            "errors": self.errors, "mismatches": self.mismatches, "notes": self.notes,
        })
    }

    fn p50_ms(v: &[f64]) -> f64 {
        pct(v).map_or(f64::NAN, |p| p.p50 / 1e3)
    }

    /// torua p50 / embedded p50 (NaN without an embedded side).
    fn ratio(&self) -> f64 {
        Self::p50_ms(&self.torua_us) / Self::p50_ms(&self.embedded_us)
    }
}

/// One measured (placement, nodes) case.
struct Case {
    placement: String,
    nodes: usize,
    ingest_s: f64,
    one_hop: Series,
    two_hop: Series,
    retrieve: Series,
    reads: Reads,
    lookup: LookupCost,
    /// Σ lookup seconds / (clients × acknowledged seconds), see the module doc.
    lookup_share: f64,
    /// One relation batch posted again when idle: its lookup, and the request's seconds.
    idle: (LookupCost, f64),
}

/// The nearest-rank `q` quantile of `v` in ms (`v` in µs; NaN when empty).
fn quantile_ms(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    s[((q * n as f64).ceil() as usize).clamp(1, n) - 1] / 1e3
}

fn ms_json(v: &[f64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    json!({"n": v.len(), "p50_ms": r3(quantile_ms(v, 0.5)), "p95_ms": r3(quantile_ms(v, 0.95)),
           "p99_ms": r3(quantile_ms(v, 0.99)),
           "mean_ms": r3(v.iter().sum::<f64>() / v.len() as f64 / 1e3)})
}

/// Point reads by id (item 4 of the module doc): latencies in µs.
#[derive(Default)]
struct Reads {
    embedded_us: Vec<f64>,
    /// torua, the ids whose community key's shard is their id's shard.
    same_us: Vec<f64>,
    /// torua, the other ids.
    differs_us: Vec<f64>,
    errors: usize,
    mismatches: usize,
    notes: Vec<String>,
}

impl Reads {
    fn note(&mut self, msg: String) {
        if self.notes.len() < 3 {
            log(format!("  point read: {msg}"));
            self.notes.push(msg);
        }
    }

    fn all_us(&self) -> Vec<f64> {
        self.same_us
            .iter()
            .chain(&self.differs_us)
            .copied()
            .collect()
    }

    fn ratio(&self) -> f64 {
        quantile_ms(&self.all_us(), 0.5) / quantile_ms(&self.embedded_us, 0.5)
    }

    fn json(&self) -> Value {
        json!({"torua": ms_json(&self.all_us()), "key_shard_is_id_shard": ms_json(&self.same_us),
               "key_shard_differs": ms_json(&self.differs_us), "embedded": ms_json(&self.embedded_us),
               "ratio_p50": r3(self.ratio()), "errors": self.errors,
               "mismatches": self.mismatches, "notes": self.notes})
    }
}

/// The ingest placement lookups counted by the nodes' `/metrics`, summed over the nodes.
#[derive(Debug, Default, Clone, Copy)]
struct LookupCost {
    seconds: f64,
    requests: f64,
    moved: f64,
}

impl LookupCost {
    /// Reads every node's `/metrics`.
    fn scrape(cluster: &TestCluster) -> Result<LookupCost> {
        let agent = agent();
        let mut c = LookupCost::default();
        for i in 0..cluster.nodes.len() {
            let url = cluster.node(i).url("/metrics");
            let resp =
                send(with_key(agent.get(&url)), None).with_context(|| format!("GET {url}"))?;
            if resp.status() != 200 {
                bail!("GET {url}: {}", resp.status());
            }
            for line in resp.into_string()?.lines() {
                let mut parts = line.split_whitespace();
                let (Some(name), Some(Ok(v))) = (parts.next(), parts.next().map(str::parse::<f64>))
                else {
                    continue;
                };
                match name {
                    "torua_ingest_placement_lookup_seconds_sum" => c.seconds += v,
                    "torua_ingest_placement_lookup_seconds_count" => c.requests += v,
                    "torua_ingest_entities_moved_total" => c.moved += v,
                    _ => {}
                }
            }
        }
        Ok(c)
    }

    /// What was counted since `before`.
    fn since(self, before: LookupCost) -> LookupCost {
        LookupCost {
            seconds: self.seconds - before.seconds,
            requests: self.requests - before.requests,
            moved: self.moved - before.moved,
        }
    }

    fn mean_ms(&self) -> f64 {
        self.seconds * 1e3 / self.requests
    }

    fn json(&self) -> Value {
        json!({"seconds": r3(self.seconds), "requests": self.requests, "mean_ms": r3(self.mean_ms()),
               "entities_moved": self.moved})
    }
}

/// A neighbourhood request from one seed.
fn hood_body(args: &Args, seed: &str, hops: u32) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "seeds": [seed], "hops": hops, "direction": "both",
        "max_nodes": args.query_max_nodes, "max_relations": args.query_max_relations,
        "timeout_ms": 60000, "allow_partial": false,
    }))?)
}

/// A text-only local retrieval (BM25 seeds) about entity `e`: its title and its community's
/// topic (the last word of its description).
fn retrieve_body(e: &Entity) -> Result<Vec<u8>> {
    let topic = e.description.rsplit(' ').next().unwrap_or_default();
    Ok(serde_json::to_vec(&json!({
        "query": format!("{} {topic}", e.title.to_lowercase()), "mode": "local",
        "top_k": 10, "hops": 1, "timeout_ms": 60000, "allow_partial": false,
    }))?)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

/// Measures 1-hop shares, 2-hop latency (against `bfs`) and retrieval on `cluster`.
fn measure(
    args: &Args,
    cluster: &TestCluster,
    bfs: &mut Bfs,
    g: &Graph,
    seeds: &[usize],
) -> Result<(Series, Series, Series)> {
    let la = &args.locality;
    let agent = agent();
    let nodes = cluster.nodes.len();
    let url = |i: usize, path: &str| cluster.node(i % nodes).url(path);
    let seed_id = |i: usize| g.entities[seeds[i % seeds.len()]].id.as_str();

    log(format!("  1 hop from {} seeds", seeds.len()));
    let mut one = Series::default();
    for i in 0..seeds.len() {
        let body = hood_body(args, seed_id(i), 1)?;
        let answer = post_timed(&agent, &url(i, "/graph/neighborhood"), &body);
        one.answer("1 hop", true, answer);
    }

    log(format!(
        "  2 hops from {} seeds (+{} warm-up), each with embedded Kuzu",
        seeds.len(),
        args.query_warmup
    ));
    let mut two = Series::default();
    for i in 0..args.query_warmup + seeds.len() {
        let measured = i >= args.query_warmup;
        let seed = seed_id(i.wrapping_sub(args.query_warmup));
        let body = hood_body(args, seed, 2)?;
        let u = url(i, "/graph/neighborhood");
        let mut embedded = || -> Result<(f64, Hood)> {
            let t = Instant::now();
            let h = bfs.run(&[seed], 2, args.query_max_nodes, args.query_max_relations)?;
            Ok((us(t.elapsed()), h))
        };
        // Alternate which side goes first, so neither always runs on the other's warm caches.
        let (emb, answer) = if i % 2 == 0 {
            let e = embedded()?;
            (e, post_timed(&agent, &u, &body))
        } else {
            let a = post_timed(&agent, &u, &body);
            (embedded()?, a)
        };
        let (emb_us, want) = emb;
        if measured {
            two.embedded_us.push(emb_us);
        }
        if let Some(v) = two.answer("2 hops", measured, answer) {
            let (got, _) = parse_hood(&v)?;
            if got != want {
                two.mismatches += 1;
                two.note("2 hops", format!("seed {seed}: {}", hood_diff(&want, &got)));
            }
        }
    }

    let mut ret = Series::default();
    if la.retrieve_queries > 0 {
        // The full-text indexes are rebuilt after a bulk load: wait for a retrieval to succeed.
        let probe = retrieve_body(&g.entities[seeds[0]])?;
        let every = Duration::from_millis(500);
        torua_testkit::wait::poll(Duration::from_secs(180), every, || {
            match post_timed(&agent, &url(0, "/retrieve"), &probe)? {
                (_, 200, _) => Ok(()),
                (_, status, bytes) => bail!(
                    "no retrieval succeeded in 180 s: {status} {}",
                    short(&String::from_utf8_lossy(&bytes), 300)
                ),
            }
        })?;
        log(format!(
            "  /retrieve: {} queries (+{} warm-up)",
            la.retrieve_queries, args.query_warmup
        ));
        for i in 0..args.query_warmup + la.retrieve_queries {
            let measured = i >= args.query_warmup;
            let e = &g.entities[seeds[i.wrapping_sub(args.query_warmup) % seeds.len()]];
            let body = retrieve_body(e)?;
            let answer = post_timed(&agent, &url(i, "/retrieve"), &body);
            ret.answer("retrieve", measured, answer);
        }
    }
    Ok((one, two, ret))
}

/// Point reads by id of `ids` (the first `--read-warmup` not measured), each with the embedded
/// lookup of the same id, round-robin over the nodes; split by whether the id's community key
/// (`keys`, by index) is in the id's shard.
fn reads_by_id(
    args: &Args,
    cluster: &TestCluster,
    lookup: &mut Lookup,
    g: &Graph,
    keys: &[String],
    ids: &[usize],
) -> Result<Reads> {
    let agent = agent();
    let nodes = cluster.nodes.len();
    let shards = args.sizing.shards;
    log(format!(
        "  {} point reads by id (+{} warm-up), each with embedded Kuzu",
        ids.len() - args.read_warmup.min(ids.len()),
        args.read_warmup.min(ids.len())
    ));
    let mut r = Reads::default();
    for (i, &e) in ids.iter().enumerate() {
        let id = g.entities[e].id.as_str();
        let url = cluster
            .node(i % nodes)
            .url(&format!("/graph/entities/{id}"));
        let mut embedded = || -> Result<(f64, Option<usize>)> {
            let t = Instant::now();
            let n = lookup.get(id)?;
            Ok((us(t.elapsed()), n))
        };
        let torua = || -> Result<(f64, u16, String)> {
            let t = Instant::now();
            let resp =
                send(with_key(agent.get(&url)), None).with_context(|| format!("GET {url}"))?;
            let status = resp.status();
            let text = resp.into_string()?;
            Ok((us(t.elapsed()), status, text))
        };
        // Alternate which side goes first, as for the 2-hop searches.
        let (emb, answer) = if i % 2 == 0 {
            let e = embedded()?;
            (e, torua())
        } else {
            let a = torua();
            (embedded()?, a)
        };
        let (emb_us, want) = emb;
        let want = want.with_context(|| format!("{id} missing in the embedded database"))?;
        let (t_us, body) = match answer {
            Ok((t, 200, text)) => match serde_json::from_str::<Value>(&text) {
                Ok(v) => (t, v),
                Err(e) => {
                    r.errors += 1;
                    r.note(format!("{id}: not JSON: {e}"));
                    continue;
                }
            },
            Ok((_, status, text)) => {
                r.errors += 1;
                r.note(format!("{id}: {status}: {}", short(&text, 300)));
                continue;
            }
            Err(e) => {
                r.errors += 1;
                r.note(format!("{e:#}"));
                continue;
            }
        };
        let got = body["relations"].as_array().map(Vec::len);
        if got != Some(want) || body["entity"]["id"] != id {
            r.mismatches += 1;
            r.note(format!("{id}: embedded {want} relations, torua {got:?}"));
        }
        if i < args.read_warmup {
            continue;
        }
        r.embedded_us.push(emb_us);
        if shard_of(&keys[e], shards) == shard_of(id, shards) {
            r.same_us.push(t_us);
        } else {
            r.differs_us.push(t_us);
        }
    }
    Ok(r)
}

/// The first `--batch` relations posted again (through node 0) once the cluster has applied
/// everything: the placement lookup with no applier to wait for, and the request's seconds.
fn idle_lookup(args: &Args, cluster: &TestCluster, g: &Graph) -> Result<(LookupCost, f64)> {
    let n = args.batch.min(g.relations.len());
    let (_, body) = bodies(&g.relations[..n], "relations", n)?.remove(0);
    cluster.wait_applied(0, Duration::from_secs(120))?;
    let before = LookupCost::scrape(cluster)?;
    let t = Instant::now();
    torua_testkit::ingest::post_batch(&agent(), &cluster.node(0).url("/graph/ingest"), &body)?;
    let took = t.elapsed().as_secs_f64();
    let cost = LookupCost::scrape(cluster)?.since(before);
    log(format!(
        "  idle: {n} relations posted again in {:.0} ms, placement lookup {:.0} ms",
        took * 1e3,
        cost.seconds * 1e3
    ));
    cluster.wait_applied(0, Duration::from_secs(120))?;
    Ok((cost, took))
}

/// The locality benchmark (see the module doc) on the planted graph `g`.
pub(crate) fn locality(args: &Args, g: &mut Graph, dir: &Path, out: &mut Out) -> Result<()> {
    let la = &args.locality;
    let keys: Vec<String> = g
        .entities
        .iter()
        .map(|e| {
            e.routing
                .clone()
                .expect("the planted graph keys every entity")
        })
        .collect();
    let communities: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let inside = g
        .relations
        .iter()
        .filter(|r| r.source_routing == r.target_routing)
        .count();
    log(format!(
        "{} communities; {:.1} % of the relations inside one",
        communities.len(),
        100.0 * inside as f64 / g.relations.len() as f64
    ));
    out.emit(json!({"kind": "graph", "communities": communities.len(),
                    "community_size": [la.community_min, la.community_max],
                    "inside_share": r3(inside as f64 / g.relations.len() as f64)}))?;

    if la.placements.is_empty() {
        let dulce = match &la.dulce {
            Some(folder) => dulce(args, folder, out)?,
            None => Vec::new(),
        };
        report(args, g, &[], &dulce);
        return Ok(());
    }
    log("embedded: CSV + COPY (the baseline)");
    let (db, copy) = ingest_copy(dir, g, args.sizing.memory_mb)?;
    log(format!("  loaded in {:.1} s", copy.wall.as_secs_f64()));
    let conn = Connection::new(&db)?;
    let mut rng = Rng(args.graph.seed ^ 0x5EED_10CA);
    let mut bfs = Bfs::calibrated(&conn, args.query_embedded, &g.entities, &mut rng)?;
    let seeds: Vec<usize> = (0..la.samples)
        .map(|_| rng.below(g.entities.len()))
        .collect();
    let mut lookup = Lookup::new(&conn)?;
    let mut rng = Rng(args.graph.seed ^ 0x1D_4EAD);
    let read_ids: Vec<usize> = (0..args.read_warmup + args.reads)
        .map(|_| rng.below(g.entities.len()))
        .collect();
    let shards = args.sizing.shards;
    let differ = read_ids[args.read_warmup..]
        .iter()
        .filter(|&&e| shard_of(&keys[e], shards) != shard_of(&g.entities[e].id, shards))
        .count();
    log(format!(
        "point reads: {differ} of {} ids have their community key in another shard than the id",
        args.reads
    ));

    let mut cases = Vec::new();
    let mut failures = Vec::new();
    for &nodes in &args.node_counts {
        let replicas = args.sizing.replicas.min(nodes);
        for placement in &la.placements {
            let by_community = placement == "community";
            place(g, &keys, by_community);
            let name = format!("{}, {placement} placement", target_name(nodes, replicas));
            log(name.clone());
            let cluster = start_green(nodes, replicas, args.sizing, &args.common, &[])?;
            let before = LookupCost::scrape(&cluster)?;
            let (r, verify) = ingest_torua(args, &cluster, g, nodes, replicas)?;
            let lookup_cost = LookupCost::scrape(&cluster)?.since(before);
            let acked_s = r.extra["acknowledged_s"].as_f64().unwrap_or(f64::NAN);
            let lookup_share = lookup_cost.seconds / (args.clients as f64 * acked_s);
            log(format!(
                "  placement lookup: {:.2} s over {} requests ({:.1} ms each), {:.1} % of {} clients x {:.1} s acknowledged",
                lookup_cost.seconds,
                lookup_cost.requests,
                lookup_cost.mean_ms(),
                lookup_share * 100.0,
                args.clients,
                acked_s
            ));
            if !r.complete {
                failures.push(format!("{name}: the ingest did not complete"));
                out.emit(
                    json!({"kind": "case", "target": name, "placement": placement,
                                "nodes": nodes, "complete": false, "verify": verify,
                                "placement_lookup": lookup_cost.json()}),
                )?;
                continue;
            }
            if verify["ok"] != true {
                failures.push(format!("{name}: /cluster/shards does not add up"));
            }
            let (one_hop, two_hop, retrieve) = measure(args, &cluster, &mut bfs, g, &seeds)?;
            let reads = reads_by_id(args, &cluster, &mut lookup, g, &keys, &read_ids)?;
            let idle = idle_lookup(args, &cluster, g)?;
            drop(cluster);
            if two_hop.mismatches > 0 || two_hop.errors + one_hop.errors + retrieve.errors > 0 {
                failures.push(format!(
                    "{name}: {} 2-hop answers differ from the embedded ones; errors: 1 hop {}, 2 hops {}, retrieve {}",
                    two_hop.mismatches, one_hop.errors, two_hop.errors, retrieve.errors
                ));
            }
            if reads.mismatches + reads.errors > 0 {
                failures.push(format!(
                    "{name}: point reads: {} differ from the embedded ones, {} failed",
                    reads.mismatches, reads.errors
                ));
            }
            let case = Case {
                placement: placement.clone(),
                nodes,
                ingest_s: r.wall.as_secs_f64(),
                one_hop,
                two_hop,
                retrieve,
                reads,
                lookup: lookup_cost,
                lookup_share,
                idle,
            };
            out.emit(json!({
                "kind": "case", "target": name, "placement": placement, "nodes": nodes,
                "replicas": replicas, "complete": true, "ingest_s": r1(case.ingest_s),
                "ingest_items_per_s": r1(r.rate()), "retries": r.retries, "verify": verify,
                "one_hop": case.one_hop.json(), "two_hop": case.two_hop.json(),
                "retrieve": case.retrieve.json(), "point_reads": case.reads.json(),
                "acknowledged_s": r1(acked_s), "clients": args.clients,
                "placement_lookup": case.lookup.json(),
                "placement_lookup_share": r3(case.lookup_share),
                "idle_batch": {"relations": args.batch.min(g.relations.len()),
                               "request_s": r3(case.idle.1), "placement_lookup": case.idle.0.json()},
            }))?;
            cases.push(case);
        }
    }
    drop(bfs);
    drop(lookup);
    drop(conn);
    drop(db);
    let dulce = match &la.dulce {
        Some(folder) => dulce(args, folder, out)?,
        None => Vec::new(),
    };
    report(args, g, &cases, &dulce);
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// One Dulce import measured.
struct DulceCase {
    placement: String,
    nodes: usize,
    /// The importer's placement line.
    line: String,
    one_hop: Series,
    import_s: f64,
    lookup: LookupCost,
    /// The same import again on the warm, idle cluster: its seconds and lookups.
    again: (f64, LookupCost),
}

/// Imports the GraphRAG output `folder` without and with routing, on a cluster of each node
/// count, and measures the 1-hop local share from every entity.
fn dulce(args: &Args, folder: &Path, out: &mut Out) -> Result<Vec<DulceCase>> {
    let mut cases = Vec::new();
    for &nodes in &args.node_counts {
        let replicas = args.sizing.replicas.min(nodes);
        for (placement, routing) in [("hash", "none"), ("community", "community")] {
            let name = format!(
                "Dulce, {}, {placement} placement",
                target_name(nodes, replicas)
            );
            log(name.clone());
            let cluster = start_green(nodes, replicas, args.sizing, &args.common, &[])?;
            // (the importer's placement line, seconds, lookups)
            let import = || -> Result<(String, f64, LookupCost)> {
                let before = LookupCost::scrape(&cluster)?;
                let t = Instant::now();
                let run = std::process::Command::new(torua_testkit::torua_bin())
                    .args(["import", "graphrag"])
                    .arg(folder)
                    .args(["--url", &cluster.node(0).url(""), "--quiet"])
                    .args(["--routing", routing])
                    .output()
                    .context("running torua import")?;
                let printed = String::from_utf8_lossy(&run.stdout).into_owned();
                if !run.status.success() {
                    bail!(
                        "{name}: torua import failed: {}{}",
                        printed,
                        String::from_utf8_lossy(&run.stderr)
                    );
                }
                let line = printed
                    .lines()
                    .find(|l| l.starts_with("placed entities"))
                    .unwrap_or_default()
                    .to_string();
                let import_s = t.elapsed().as_secs_f64();
                let lookup = LookupCost::scrape(&cluster)?.since(before);
                cluster.wait_applied(0, Duration::from_secs(120))?;
                Ok((line, import_s, lookup))
            };
            let (line, import_s, lookup) = import()?;
            let (status, answer) = cluster.node(0).post_json(
                "/query",
                &json!({"cypher": "MATCH (e:Entity) RETURN e.id AS id ORDER BY id", "allow_partial": false}),
                Duration::from_secs(60),
            )?;
            if status != 200 {
                bail!("{name}: listing the entities: {status} {answer}");
            }
            let ids: Vec<String> = answer["rows"]
                .as_array()
                .context("no rows")?
                .iter()
                .filter_map(|r| r[0].as_str().map(String::from))
                .collect();
            let agent = agent();
            let mut s = Series::default();
            let mut per_seed = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let body = hood_body(args, id, 1)?;
                let u = cluster.node(i % nodes).url("/graph/neighborhood");
                if let Some(v) = s.answer("dulce 1 hop", true, post_timed(&agent, &u, &body)) {
                    let t = &v["traversal"];
                    per_seed.push(json!([id, t["relations_local"], t["relations_remote"]]));
                }
            }
            let (_, again_s, again) = import()?;
            drop(cluster);
            log(format!(
                "  {} entities; 1-hop local share {:.3}; import {import_s:.1} s, placement lookup {:.3} s over {} requests; again {again_s:.1} s, lookup {:.3} s",
                ids.len(),
                s.followed.share(),
                lookup.seconds,
                lookup.requests,
                again.seconds
            ));
            out.emit(
                json!({"kind": "dulce", "target": name, "placement": placement, "nodes": nodes,
                            "importer": line, "entities": ids.len(), "one_hop": s.json(),
                            "import_s": r3(import_s), "placement_lookup": lookup.json(),
                            "import_again": {"s": r3(again_s), "placement_lookup": again.json()},
                            "per_seed_local_remote": per_seed}),
            )?;
            cases.push(DulceCase {
                placement: placement.to_string(),
                nodes,
                line,
                one_hop: s,
                import_s,
                lookup,
                again: (again_s, again),
            });
        }
    }
    Ok(cases)
}

/// The run's table.
fn report(args: &Args, g: &Graph, cases: &[Case], dulce: &[DulceCase]) {
    if !cases.is_empty() {
        report_cases(args, g, cases);
    }
    if !dulce.is_empty() {
        report_dulce(dulce);
    }
}

/// The generated graph's table: one line per (nodes, placement), then the goals.
fn report_cases(args: &Args, g: &Graph, cases: &[Case]) {
    println!(
        "\nlocality: {} entities, {} relations in planted communities of {}-{} ({:.0} % of relations inside), seed {}, {} shards, R={}; {} seeds",
        g.entities.len(),
        g.relations.len(),
        args.locality.community_min,
        args.locality.community_max,
        args.locality.inside * 100.0,
        args.graph.seed,
        args.sizing.shards,
        args.sizing.replicas,
        args.locality.samples
    );
    println!(
        "{:<6} {:<10} {:>9} {:>10} {:>11} {:>11} {:>11} {:>9} {:>10} {:>13} {:>9}",
        "nodes",
        "placement",
        "ingest s",
        "1-hop loc",
        "2-hop p50",
        "2-hop p90",
        "embedded",
        "x embed",
        "2-hop loc",
        "retrieve p50",
        "ret. loc"
    );
    for c in cases {
        let p = |v: &[f64], q: fn(&Pct) -> f64| pct(v).map_or(f64::NAN, |x| q(&x) / 1e3);
        println!(
            "{:<6} {:<10} {:>9.1} {:>9.1}% {:>8.2} ms {:>8.2} ms {:>8.2} ms {:>8.2}x {:>9.1}% {:>10.2} ms {:>8.1}%",
            c.nodes,
            c.placement,
            c.ingest_s,
            c.one_hop.followed.share() * 100.0,
            p(&c.two_hop.torua_us, |x| x.p50),
            p(&c.two_hop.torua_us, |x| x.p90),
            p(&c.two_hop.embedded_us, |x| x.p50),
            c.two_hop.ratio(),
            c.two_hop.followed.share() * 100.0,
            p(&c.retrieve.torua_us, |x| x.p50),
            c.retrieve.followed.share() * 100.0,
        );
    }
    println!(
        "\npoint reads by id (GET /graph/entities/{{id}}, {} ids, round-robin over the nodes) and the ingest's placement lookup",
        args.reads
    );
    println!(
        "  same: the id's community key is in the id's shard; differs: it is not (under community placement a pointer is followed)"
    );
    println!(
        "{:<6} {:<10} {:>13} {:>13} {:>9} {:>7} {:>19} {:>19} {:>9} {:>9} {:>9} {:>8} {:>17}",
        "nodes",
        "placement",
        "read p50/p95",
        "embedded p50",
        "x embed",
        "same n",
        "same p50/p95 ms",
        "differs p50/p95 ms",
        "lookups",
        "lookup s",
        "ms/req",
        "share",
        "idle lookup/req"
    );
    for c in cases {
        let r = &c.reads;
        let all = r.all_us();
        println!(
            "{:<6} {:<10} {:>6.2}/{:<6.2} {:>10.3} ms {:>8.2}x {:>7} {:>8.2}/{:<10.2} {:>8.2}/{:<10.2} {:>9} {:>9.2} {:>9.1} {:>7.1}% {:>7.1}/{:<6.0} ms",
            c.nodes,
            c.placement,
            quantile_ms(&all, 0.5),
            quantile_ms(&all, 0.95),
            quantile_ms(&r.embedded_us, 0.5),
            r.ratio(),
            r.same_us.len(),
            quantile_ms(&r.same_us, 0.5),
            quantile_ms(&r.same_us, 0.95),
            quantile_ms(&r.differs_us, 0.5),
            quantile_ms(&r.differs_us, 0.95),
            c.lookup.requests,
            c.lookup.seconds,
            c.lookup.mean_ms(),
            c.lookup_share * 100.0,
            c.idle.0.seconds * 1e3,
            c.idle.1 * 1e3
        );
    }
    println!(
        "  share = lookup s / ({} clients x acknowledged s): the part of the time requests were in flight spent on the lookup;\n  idle: {} relations posted again once all is applied (one request through node 0): lookup ms / request ms",
        args.clients,
        args.batch.min(g.relations.len())
    );
    for &nodes in &args.node_counts {
        let of = |p: &str| cases.iter().find(|c| c.nodes == nodes && c.placement == p);
        if let Some(c) = of("community") {
            let s = c.one_hop.followed.share();
            println!(
                "{nodes} nodes: goal 1-hop local share >= 80 % with community placement: {} ({:.1} %)",
                if s >= 0.8 { "met" } else { "NOT met" },
                s * 100.0
            );
        }
        if let (Some(h), Some(c)) = (of("hash"), of("community")) {
            let two = Series::p50_ms(&c.two_hop.torua_us) / Series::p50_ms(&h.two_hop.torua_us);
            let ret = Series::p50_ms(&c.retrieve.torua_us) / Series::p50_ms(&h.retrieve.torua_us);
            println!(
                "{nodes} nodes: community / hash p50: 2 hops {two:.2}, retrieve {ret:.2} (below 1: community faster); x embedded {:.2} vs {:.2}",
                c.two_hop.ratio(),
                h.two_hop.ratio()
            );
        }
    }
}

/// The Dulce imports' lines.
fn report_dulce(dulce: &[DulceCase]) {
    println!("\nDulce (GraphRAG output), 1 hop from every entity:");
    for c in dulce {
        let s = &c.one_hop;
        let per = pct(&s.shares);
        println!(
            "{} nodes {:<10} local share {:>5.1} % ({} local, {} remote); per seed: min {:.2}, p50 {:.2}, {} of {} all local; import {:.2} s, placement lookup {:.1} ms over {} requests; again (warm): {:.2} s, lookup {:.1} ms{}",
            c.nodes,
            c.placement,
            s.followed.share() * 100.0,
            s.followed.local,
            s.followed.remote,
            per.map_or(f64::NAN, |p| p.min),
            per.map_or(f64::NAN, |p| p.p50),
            s.shares.iter().filter(|&&x| x == 1.0).count(),
            s.shares.len(),
            c.import_s,
            c.lookup.seconds * 1e3,
            c.lookup.requests,
            c.again.0,
            c.again.1.seconds * 1e3,
            if c.line.is_empty() { String::new() } else { format!("\n    importer: {}", c.line) }
        );
    }
}
