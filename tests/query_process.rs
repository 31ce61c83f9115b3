//! Process-level correctness of the read endpoints: `POST /query`, `POST /graph/neighborhood`
//! and `POST /graph/path` on real 3-node clusters (8 shards, R=2), checked against ONE embedded Kuzu
//! database holding the same graph (the reference), on randomly generated graphs (seeded, so a failure
//! replays); then kill -9 of one and two nodes; then bad input.
//!
//! Each test collects every mismatch (request, answer, expectation) and fails at the end listing them
//! all, so one run shows every server-side problem, not just the first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use kuzu::{Connection, Database, LogicalType, SystemConfig, Value as Kv};
use serde_json::{json, Value};
use torua::graph::partition::shard_of;
use torua_testkit::graphrag::{Entity as Ent, Relation as Rel};
use torua_testkit::kuzu_values::{
    entity_fields, entity_row, relation_fields, relation_row, string, strings, struct_rows,
};
use torua_testkit::raw::post_raw;
use torua_testkit::{answers, wait, ClusterOptions, Failures, NodeProc, Rng, TestCluster};

const SETTLE: Duration = Duration::from_secs(60);
/// Client-side timeout of one request (the server's own default is 10 s).
const T: Duration = Duration::from_secs(70);
/// As in `ClusterOptions::graph`.
const SHARDS: u32 = 8;
/// Pause between two tries of a request whose answer is expected to change (after a kill).
const RETRY: Duration = Duration::from_millis(250);

/// A green 3-node graph cluster. Its nodes read traversals ahead (`TORUA_TRAVERSE_LOCALLY`), so
/// that the reference comparisons below also check the answers built from expansions read ahead;
/// the other suites run with the default, and `locality_process` compares the two.
fn green_cluster() -> TestCluster {
    let options = ClusterOptions::graph(3).set("TORUA_TRAVERSE_LOCALLY", "true");
    TestCluster::start_green(3, options, SETTLE).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Generated graphs.

type RelKey = (String, String, String);

fn key_of(r: &Rel) -> RelKey {
    (r.id.clone(), r.source.clone(), r.target.clone())
}

const TYPES: &[&str] = &["PERSON", "ORGANIZATION", "GEO", "EVENT", "CONCEPT", ""];
const WORDS: &[&str] = &[
    "alpha", "bridge", "cipher", "delta", "echo", "falcon", "granite", "harbor", "ion", "jade",
    "kelp", "lumen", "meadow", "nova", "orbit", "prism", "quartz", "raven", "signal", "tundra",
];

fn words(rng: &mut Rng, lo: usize, hi: usize) -> String {
    let n = rng.range(lo, hi);
    (0..n)
        .map(|_| *rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

fn text_units(rng: &mut Rng) -> Vec<String> {
    (0..rng.below(4))
        .map(|_| format!("t{}", rng.below(50)))
        .collect()
}

/// `n` entities with ids `<prefix>-...` (a few with a quote, a space or non-ASCII), and about
/// `n * avg_degree` relations: power-law sources and targets (hubs at random ids), ~2 % self-loops,
/// ~5 % parallel relations (same endpoints, new id), three relations sharing an id with another one
/// (different endpoints), and ~1 % isolated entities. Every endpoint is one of the entities.
fn gen_graph(rng: &mut Rng, prefix: &str, n: usize, avg_degree: f64) -> (Vec<Ent>, Vec<Rel>) {
    let mut entities = Vec::with_capacity(n);
    for i in 0..n {
        let id = match i % 97 {
            13 => format!("{prefix}-o'neil {i}"),
            29 => format!("{prefix}-\u{fc}ber{i}"),
            31 => format!("{prefix}-\u{65e5}\u{672c}{i}"),
            _ => format!("{prefix}-e{i}"),
        };
        let kind_at = ((rng.unit().powi(2)) * TYPES.len() as f64) as usize;
        let title = if i % 89 == 7 {
            format!("THE \"{}\" {i}", rng.pick(WORDS).to_uppercase())
        } else {
            format!("{} {i}", rng.pick(WORDS).to_uppercase())
        };
        entities.push(Ent {
            id,
            title,
            kind: TYPES[kind_at.min(TYPES.len() - 1)].to_string(),
            description: words(rng, 2, 8),
            text_unit_ids: text_units(rng),
            frequency: rng.below(50) as i64,
            degree: ((1.0 / (rng.unit() + 0.002)).powf(0.8) as i64).min(10_000),
            embedding: None,
            routing: None,
        });
    }
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        perm.swap(i, j);
    }
    let isolated = (n / 100).max(2);
    let connected = n - isolated;
    let pick = |rng: &mut Rng, exp: f64| -> usize {
        let at = (rng.unit().powf(exp) * connected as f64) as usize;
        perm[at.min(connected - 1)]
    };
    let m = (n as f64 * avg_degree) as usize;
    let mut relations: Vec<Rel> = Vec::with_capacity(m + 3);
    for k in 0..m {
        let (s, t) = if k > 0 && rng.chance(0.05) {
            let base = &relations[rng.below(relations.len())];
            (base.source.clone(), base.target.clone())
        } else if rng.chance(0.02) {
            let s = pick(rng, 2.5);
            (entities[s].id.clone(), entities[s].id.clone())
        } else {
            let s = pick(rng, 2.5);
            let t = pick(rng, 1.7);
            (entities[s].id.clone(), entities[t].id.clone())
        };
        relations.push(Rel {
            id: format!("{prefix}-r{k}"),
            source: s,
            target: t,
            description: words(rng, 1, 4),
            weight: rng.below(1001) as f64 / 1000.0,
            text_unit_ids: text_units(rng),
            source_routing: None,
            target_routing: None,
        });
    }
    let mut shared = 0;
    while shared < 3 {
        let base = relations[rng.below(m)].clone();
        let s = entities[pick(rng, 1.0)].id.clone();
        let t = entities[pick(rng, 1.0)].id.clone();
        if (s.as_str(), t.as_str()) == (base.source.as_str(), base.target.as_str()) {
            continue;
        }
        relations.push(Rel {
            id: base.id,
            source: s,
            target: t,
            description: words(rng, 1, 4),
            weight: rng.below(1001) as f64 / 1000.0,
            text_unit_ids: vec![],
            source_routing: None,
            target_routing: None,
        });
        shared += 1;
    }
    (entities, relations)
}

fn ent_json(e: &Ent) -> Value {
    json!({"id": e.id, "title": e.title, "type": e.kind, "description": e.description,
           "text_unit_ids": e.text_unit_ids, "frequency": e.frequency, "degree": e.degree})
}

fn rel_json(r: &Rel) -> Value {
    json!({"id": r.id, "source": r.source, "target": r.target, "description": r.description,
           "weight": r.weight, "text_unit_ids": r.text_unit_ids})
}

/// Loads a graph through `POST /graph/ingest` (entities first, then relations, in batches spread
/// over the nodes) and waits until every write is applied.
fn ingest(cluster: &TestCluster, ents: &[Ent], rels: &[Rel]) {
    let mut k = 0;
    let mut send = |body: Value| {
        let node = cluster.node(k % cluster.nodes.len());
        k += 1;
        let (status, answer) = node.post_json("/graph/ingest", &body, T).unwrap();
        assert!(
            status == 200 && answer["errors"] == false,
            "ingest on {}: {status} {}",
            node.id,
            short(&answer)
        );
    };
    for chunk in ents.chunks(600) {
        send(json!({"entities": chunk.iter().map(ent_json).collect::<Vec<_>>()}));
    }
    for chunk in rels.chunks(1500) {
        send(json!({"relations": chunk.iter().map(rel_json).collect::<Vec<_>>()}));
    }
    cluster.wait_applied(0, SETTLE).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The in-memory index: the test's own check of the reference (every expectation computed with Kuzu
// is also computed here, and the two must agree before the server is compared).

#[derive(Default)]
struct Index {
    ents: HashMap<String, Ent>,
    rels: HashMap<RelKey, Rel>,
    out: HashMap<String, Vec<RelKey>>,
    inn: HashMap<String, Vec<RelKey>>,
}

impl Index {
    fn add(&mut self, ents: &[Ent], rels: &[Rel]) {
        for e in ents {
            self.ents.insert(e.id.clone(), e.clone());
        }
        for r in rels {
            let key = key_of(r);
            assert!(
                self.rels.insert(key.clone(), r.clone()).is_none(),
                "generator made a duplicate relation {key:?}"
            );
            self.out
                .entry(r.source.clone())
                .or_default()
                .push(key.clone());
            self.inn.entry(r.target.clone()).or_default().push(key);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reference: one embedded Kuzu database holding the whole graph.

struct Reference {
    db: Database,
    _dir: tempfile::TempDir,
}

impl Reference {
    fn new() -> Reference {
        let dir = tempfile::tempdir().unwrap();
        let config = SystemConfig::default()
            .buffer_pool_size(256 << 20)
            .max_num_threads(2)
            .max_db_size(1 << 33);
        let db = Database::new(dir.path().join("reference.kz"), config).unwrap();
        let reference = Reference { db, _dir: dir };
        {
            let conn = reference.conn();
            conn.query(
                "CREATE NODE TABLE Entity(id STRING, title STRING, type STRING, description STRING, \
                 text_unit_ids STRING[], frequency INT64, degree INT64, pagerank DOUBLE, \
                 component STRING, community STRING, routing STRING, PRIMARY KEY(id))",
            )
            .unwrap();
            conn.query(
                "CREATE REL TABLE RELATED(FROM Entity TO Entity, id STRING, description STRING, \
                 weight DOUBLE, text_unit_ids STRING[], source_routing STRING, target_routing STRING)",
            )
            .unwrap();
            // The other tables Cypher may name (empty in these tests).
            conn.query("CREATE NODE TABLE Chunk(id STRING, text STRING, n_tokens INT64, document_id STRING, entity_ids STRING[], PRIMARY KEY(id))").unwrap();
            conn.query("CREATE NODE TABLE Community(id STRING, level INT64, parent STRING, title STRING, entity_ids STRING[], summary STRING, full_content STRING, rank DOUBLE, PRIMARY KEY(id))").unwrap();
            conn.query("CREATE NODE TABLE Document(id STRING, title STRING, text STRING, text_unit_ids STRING[], PRIMARY KEY(id))").unwrap();
        }
        reference
    }

    fn conn(&self) -> Connection<'_> {
        Connection::new(&self.db).unwrap()
    }

    fn load(&self, ents: &[Ent], rels: &[Rel]) {
        let conn = self.conn();
        unwind(
            &conn,
            "UNWIND $rows AS r CREATE (:Entity {id: r.id, title: r.title, type: r.type, \
             description: r.description, text_unit_ids: r.text_unit_ids, frequency: r.frequency, \
             degree: r.degree})",
            &entity_fields(),
            ents,
            entity_row,
        );
        unwind(
            &conn,
            "UNWIND $rows AS r MATCH (a:Entity {id: r.source}), (b:Entity {id: r.target}) \
             CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, \
             text_unit_ids: r.text_unit_ids}]->(b)",
            &relation_fields(),
            rels,
            relation_row,
        );
    }

    /// Runs `cypher` with JSON params; returns (columns, rows as JSON).
    fn query(
        &self,
        cypher: &str,
        params: &Value,
    ) -> Result<(Vec<String>, Vec<Vec<Value>>), String> {
        let conn = self.conn();
        let mut stmt = conn.prepare(cypher).map_err(|e| e.to_string())?;
        let params: Vec<(String, Kv)> = params
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), json_kv(v))).collect())
            .unwrap_or_default();
        let result = conn
            .execute(
                &mut stmt,
                params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect(),
            )
            .map_err(|e| e.to_string())?;
        let columns = result.get_column_names();
        let rows = result
            .map(|row| row.iter().map(kv_json).collect())
            .collect();
        Ok((columns, rows))
    }
}

/// Runs `cypher` (which reads `$rows`) over `items` in chunks of 1000 rows of `fields`.
fn unwind<T>(
    conn: &Connection,
    cypher: &str,
    fields: &[(&str, LogicalType)],
    items: &[T],
    row: impl Fn(&T) -> Vec<Kv>,
) {
    for chunk in items.chunks(1000) {
        let rows = chunk.iter().map(&row).collect();
        run(conn, cypher, vec![("rows", struct_rows(fields, rows))]).unwrap();
    }
}

fn run(conn: &Connection, q: &str, params: Vec<(&str, Kv)>) -> Result<Vec<Vec<Kv>>, String> {
    let mut stmt = conn.prepare(q).map_err(|e| format!("{e} (in {q})"))?;
    let result = conn
        .execute(&mut stmt, params)
        .map_err(|e| format!("{e} (in {q})"))?;
    Ok(result.collect())
}

fn json_kv(v: &Value) -> Kv {
    match v {
        Value::Null => Kv::Null(LogicalType::String),
        Value::Bool(b) => Kv::Bool(*b),
        Value::Number(n) if n.is_i64() || n.is_u64() => Kv::Int64(n.as_i64().unwrap()),
        Value::Number(n) => Kv::Double(n.as_f64().unwrap()),
        Value::String(s) => string(s),
        Value::Array(xs) => Kv::List(LogicalType::String, xs.iter().map(json_kv).collect()),
        Value::Object(_) => panic!("object params are not used here"),
    }
}

fn kv_json(v: &Kv) -> Value {
    match v {
        Kv::Null(_) => Value::Null,
        Kv::Bool(b) => json!(b),
        Kv::Int64(i) => json!(i),
        Kv::Int32(i) => json!(i),
        Kv::Int16(i) => json!(i),
        Kv::Int8(i) => json!(i),
        Kv::UInt64(i) => json!(i),
        Kv::UInt32(i) => json!(i),
        Kv::UInt16(i) => json!(i),
        Kv::UInt8(i) => json!(i),
        Kv::Int128(i) => match i64::try_from(*i) {
            Ok(i) => json!(i),
            Err(_) => json!(*i as f64),
        },
        Kv::Double(d) => json!(d),
        Kv::Float(f) => json!(*f as f64),
        Kv::String(s) => json!(s),
        Kv::List(_, xs) | Kv::Array(_, xs) => Value::Array(xs.iter().map(kv_json).collect()),
        Kv::Struct(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), kv_json(v)))
                .collect(),
        ),
        Kv::Node(n) => labelled_json(n.get_properties(), n.get_label_name()),
        Kv::Rel(r) => labelled_json(r.get_properties(), r.get_label_name()),
        other => json!(format!("{other:?}")),
    }
}

/// A node's or relationship's properties as a JSON object, with its label as `_label`.
fn labelled_json(properties: &[(String, Kv)], label: &str) -> Value {
    let mut o: serde_json::Map<String, Value> = properties
        .iter()
        .map(|(k, v)| (k.clone(), kv_json(v)))
        .collect();
    o.insert("_label".into(), json!(label));
    Value::Object(o)
}

// ---------------------------------------------------------------------------------------------
// Comparing JSON: integers exactly, floats with a relative tolerance.

fn json_eq(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::Number(e), Value::Number(g)) => {
            if e.is_f64() {
                let (x, y) = (e.as_f64().unwrap(), g.as_f64().unwrap());
                x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) + 1e-12
            } else {
                !g.is_f64() && e.as_i64() == g.as_i64()
            }
        }
        (Value::Array(e), Value::Array(g)) => {
            e.len() == g.len() && e.iter().zip(g).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(e), Value::Object(g)) => {
            e.len() == g.len()
                && e.iter()
                    .all(|(k, v)| g.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => expected == got,
    }
}

/// A row's sort key for multiset comparison: floats (aggregates here) left out.
fn row_key(row: &Value) -> String {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Number(n) if n.is_f64() => Value::Null,
            Value::Array(xs) => Value::Array(xs.iter().map(strip).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), strip(v))).collect())
            }
            other => other.clone(),
        }
    }
    strip(row).to_string()
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 1200 {
        format!(
            "{}... ({} bytes)",
            s.chars().take(1200).collect::<String>(),
            s.len()
        )
    } else {
        s
    }
}

fn post(node: &NodeProc, path: &str, body: &Value) -> (u16, Value) {
    match node.post_json(path, body, T) {
        Ok(r) => r,
        Err(e) => (0, Value::String(format!("request failed: {e:#}"))),
    }
}

fn shards_clean(answer: &Value) -> bool {
    answer["_shards"]["failed"] == 0
        && answer["_shards"]["total"].as_u64().is_some()
        && answer["_shards"]["successful"] == answer["_shards"]["total"]
}

fn error_reason(answer: &Value) -> Option<&str> {
    answer["error"]["reason"].as_str().filter(|r| !r.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Neighborhood.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dir {
    Out,
    In,
    Both,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Out => "out",
            Dir::In => "in",
            Dir::Both => "both",
        }
    }
    fn random(rng: &mut Rng) -> Dir {
        *rng.pick(&[Dir::Out, Dir::In, Dir::Both])
    }
}

#[derive(Clone, Debug)]
struct NbCase {
    seeds: Vec<String>,
    hops: u32,
    dir: Dir,
    min_weight: Option<f64>,
    contains: Option<String>,
}

impl NbCase {
    fn body(&self, max_nodes: u64, max_relations: u64) -> Value {
        let mut body = json!({"seeds": self.seeds, "hops": self.hops, "direction": self.dir.name(),
                              "max_nodes": max_nodes, "max_relations": max_relations});
        let mut filter = serde_json::Map::new();
        if let Some(w) = self.min_weight {
            filter.insert("min_weight".into(), json!(w));
        }
        if let Some(c) = &self.contains {
            filter.insert("description_contains".into(), json!(c));
        }
        if !filter.is_empty() {
            body["relation_filter"] = Value::Object(filter);
        }
        body
    }
    fn passes(&self, r: &Rel) -> bool {
        self.min_weight.is_none_or(|w| r.weight >= w)
            && self
                .contains
                .as_ref()
                .is_none_or(|c| r.description.contains(c.as_str()))
    }
}

#[derive(Debug, PartialEq)]
struct NbExpect {
    hop: BTreeMap<String, u32>,
    missing: BTreeSet<String>,
    rels: BTreeSet<RelKey>,
}

/// Per-hop frontier BFS with Cypher on the reference database.
fn ref_neighborhood(reference: &Reference, c: &NbCase) -> NbExpect {
    let conn = reference.conn();
    let asked: BTreeSet<String> = c.seeds.iter().cloned().collect();
    let asked_v: Vec<String> = asked.iter().cloned().collect();
    let found: BTreeSet<String> = run(
        &conn,
        "UNWIND $ids AS i MATCH (e:Entity {id: i}) RETURN e.id",
        vec![("ids", strings(&asked_v))],
    )
    .unwrap()
    .iter()
    .map(|row| kv_json(&row[0]).as_str().unwrap().to_string())
    .collect();
    let missing = asked.difference(&found).cloned().collect();
    let mut hop: BTreeMap<String, u32> = found.iter().map(|id| (id.clone(), 0)).collect();
    let mut rels = BTreeSet::new();
    let mut frontier: Vec<String> = found.into_iter().collect();
    // (Kuzu's contains(x, '') is false, so the description test is only there when asked for.)
    let filter = if c.contains.is_some() {
        "r.weight >= $w AND contains(r.description, $c)"
    } else {
        "r.weight >= $w AND $c = ''"
    };
    let out_q = format!(
        "UNWIND $f AS fid MATCH (a:Entity {{id: fid}})-[r:RELATED]->(b:Entity) WHERE {filter} \
         RETURN r.id, a.id, b.id, b.id AS nb"
    );
    let in_q = format!(
        "UNWIND $f AS fid MATCH (b:Entity)-[r:RELATED]->(a:Entity {{id: fid}}) WHERE {filter} \
         RETURN r.id, b.id, a.id, b.id AS nb"
    );
    let queries: Vec<&str> = match c.dir {
        Dir::Out => vec![out_q.as_str()],
        Dir::In => vec![in_q.as_str()],
        Dir::Both => vec![out_q.as_str(), in_q.as_str()],
    };
    for h in 0..c.hops {
        if frontier.is_empty() {
            break;
        }
        let mut next = BTreeSet::new();
        for q in &queries {
            let rows = run(
                &conn,
                q,
                vec![
                    ("f", strings(&frontier)),
                    ("w", Kv::Double(c.min_weight.unwrap_or(-1.0))),
                    ("c", string(c.contains.as_deref().unwrap_or(""))),
                ],
            )
            .unwrap();
            for row in rows {
                let s: Vec<String> = row
                    .iter()
                    .map(|v| kv_json(v).as_str().unwrap().to_string())
                    .collect();
                rels.insert((s[0].clone(), s[1].clone(), s[2].clone()));
                if !hop.contains_key(&s[3]) {
                    next.insert(s[3].clone());
                }
            }
        }
        for id in &next {
            hop.insert(id.clone(), h + 1);
        }
        frontier = next.into_iter().collect();
    }
    NbExpect { hop, missing, rels }
}

fn mem_neighborhood(idx: &Index, c: &NbCase) -> NbExpect {
    let mut hop = BTreeMap::new();
    let mut missing = BTreeSet::new();
    for s in &c.seeds {
        if idx.ents.contains_key(s) {
            hop.insert(s.clone(), 0);
        } else {
            missing.insert(s.clone());
        }
    }
    let mut frontier: Vec<String> = hop.keys().cloned().collect();
    let mut rels = BTreeSet::new();
    for h in 0..c.hops {
        let mut next = BTreeSet::new();
        for id in &frontier {
            let mut visit = |keys: Option<&Vec<RelKey>>, forward: bool| {
                for key in keys.into_iter().flatten() {
                    let r = &idx.rels[key];
                    if !c.passes(r) {
                        continue;
                    }
                    rels.insert(key.clone());
                    let other = if forward { &r.target } else { &r.source };
                    if !hop.contains_key(other) {
                        next.insert(other.clone());
                    }
                }
            };
            if c.dir != Dir::In {
                visit(idx.out.get(id), true);
            }
            if c.dir != Dir::Out {
                visit(idx.inn.get(id), false);
            }
        }
        for id in &next {
            hop.insert(id.clone(), h + 1);
        }
        frontier = next.into_iter().collect();
    }
    NbExpect { hop, missing, rels }
}

/// Compares one neighborhood answer with the expectation (after the caps).
#[allow(clippy::too_many_arguments)]
fn check_neighborhood(
    f: &mut Failures,
    idx: &Index,
    what: &str,
    body: &Value,
    exp: &NbExpect,
    max_nodes: usize,
    max_relations: usize,
    status: u16,
    ans: &Value,
) {
    let ctx = || format!("{what}: request {}", short(body));
    if !f.check(status == 200, || {
        format!("{}: expected 200, got {status} {}", ctx(), short(ans))
    }) {
        return;
    }
    let mut ents: Vec<(u32, String)> = exp.hop.iter().map(|(id, h)| (*h, id.clone())).collect();
    ents.sort();
    let mut truncated = ents.len() > max_nodes;
    ents.truncate(max_nodes);
    let kept: HashSet<&str> = ents.iter().map(|(_, id)| id.as_str()).collect();
    let mut rels: Vec<&RelKey> = exp
        .rels
        .iter()
        .filter(|(_, s, t)| kept.contains(s.as_str()) && kept.contains(t.as_str()))
        .collect();
    truncated |= rels.len() < exp.rels.len() || rels.len() > max_relations;
    rels.truncate(max_relations);

    let got_ents: Vec<(u32, String)> = ans["entities"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["hop"].as_u64().unwrap_or(999) as u32,
                        e["id"].as_str().unwrap_or("<no id>").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if got_ents != ents {
        let (missing, extra, _) = list_diff(&ents, &got_ents);
        f.fail(format!(
            "{}: entities (hop, id) differ: expected {} got {}; missing {:?}; unexpected {:?}; {}",
            ctx(),
            ents.len(),
            got_ents.len(),
            missing,
            extra,
            if missing.is_empty() && extra.is_empty() {
                "same set, wrong order (contract: sorted by (hop, id))"
            } else {
                ""
            }
        ));
    }
    check_fields(f, &ans["entities"], |e| {
        let want = e["id"].as_str().and_then(|id| idx.ents.get(id))?;
        let ok = e["title"] == want.title.as_str()
            && e["type"] == want.kind.as_str()
            && e["description"] == want.description.as_str()
            && e["degree"] == want.degree
            && e["frequency"] == want.frequency;
        (!ok).then(|| {
            format!(
                "{}: entity fields differ: got {} expected {}",
                ctx(),
                short(e),
                ent_json(want)
            )
        })
    });
    let got_rels: Vec<RelKey> = ans["relations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(rel_key)
        .collect();
    let want_rels: Vec<RelKey> = rels.iter().map(|k| (*k).clone()).collect();
    if got_rels != want_rels {
        let (missing, extra, distinct) = list_diff(&want_rels, &got_rels);
        f.fail(format!(
            "{}: relations (id, source, target) differ: expected {} got {} (duplicates in answer: {}); \
             missing {:?}; unexpected {:?}",
            ctx(),
            want_rels.len(),
            got_rels.len(),
            got_rels.len() - distinct,
            missing,
            extra
        ));
    }
    check_fields(f, &ans["relations"], |r| {
        let want = idx.rels.get(&rel_key(r))?;
        let ok = r["description"] == want.description.as_str()
            && r["weight"].as_f64() == Some(want.weight);
        (!ok).then(|| {
            format!(
                "{}: relation fields differ: got {} expected {}",
                ctx(),
                short(r),
                rel_json(want)
            )
        })
    });
    let got_missing: BTreeSet<String> = ans["missing_seeds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    f.check(got_missing == exp.missing, || {
        format!(
            "{}: missing_seeds {:?}, expected {:?}",
            ctx(),
            ans["missing_seeds"],
            exp.missing
        )
    });
    f.check(ans["truncated"] == truncated, || {
        format!(
            "{}: truncated = {}, expected {truncated} (entities {} of {}, relations {} of {})",
            ctx(),
            ans["truncated"],
            ents.len(),
            exp.hop.len(),
            rels.len(),
            exp.rels.len()
        )
    });
    f.check(shards_clean(ans) && ans["took_ms"].is_u64(), || {
        format!(
            "{}: took_ms = {}, _shards = {}",
            ctx(),
            ans["took_ms"],
            ans["_shards"]
        )
    });
}

/// (id, source, target) of a relation in an answer.
fn rel_key(r: &Value) -> RelKey {
    let field = |k: &str, none: &str| r[k].as_str().unwrap_or(none).to_string();
    (
        field("id", "<no id>"),
        field("source", ""),
        field("target", ""),
    )
}

/// Checks the fields of the answered `items` (an array) with `differ`, which says how an item
/// differs from what was written (None when it is right or unknown); fails at the first one.
fn check_fields(f: &mut Failures, items: &Value, differ: impl Fn(&Value) -> Option<String>) {
    if let Some(msg) = items.as_array().into_iter().flatten().find_map(differ) {
        f.fail(msg);
    }
}

/// For messages about two lists that should be equal: up to 8 items `want` has and `got` lacks,
/// up to 8 the other way round, and how many distinct items `got` holds.
fn list_diff<T: Ord + Clone>(want: &[T], got: &[T]) -> (Vec<T>, Vec<T>, usize) {
    let want: BTreeSet<&T> = want.iter().collect();
    let got: BTreeSet<&T> = got.iter().collect();
    let only = |a: &BTreeSet<&T>, b: &BTreeSet<&T>| -> Vec<T> {
        a.difference(b).take(8).map(|t| (*t).clone()).collect()
    };
    (only(&want, &got), only(&got, &want), got.len())
}

fn random_nb_case(rng: &mut Rng, own: &[String], all: &[String]) -> NbCase {
    let n = if rng.chance(0.5) {
        rng.range(1, 3)
    } else {
        rng.range(1, 20)
    };
    let mut seeds: Vec<String> = (0..n)
        .map(|_| {
            if rng.chance(0.9) {
                rng.pick(own).clone()
            } else {
                rng.pick(all).clone()
            }
        })
        .collect();
    if rng.chance(0.2) {
        let at = rng.below(seeds.len() + 1);
        seeds.insert(at, format!("no-such-entity-{}", rng.below(1000)));
    }
    let dir = Dir::random(rng);
    // Keep 3 hops over both directions rarer: on a skewed graph it is most of the graph.
    let roll = rng.below(10);
    let hops = if dir == Dir::Both {
        [1, 1, 1, 1, 1, 2, 2, 2, 2, 3][roll]
    } else {
        [1, 1, 1, 1, 2, 2, 2, 3, 3, 3][roll]
    };
    // Thresholds between the weights' 1/1000 steps: no tie, whether the filter is >= or >.
    let min_weight = rng
        .chance(0.3)
        .then(|| rng.below(900) as f64 / 1000.0 + 0.0005);
    let contains = rng.chance(0.15).then(|| rng.pick(WORDS).to_string());
    NbCase {
        seeds,
        hops,
        dir,
        min_weight,
        contains,
    }
}

/// The expected neighbourhood: computed on the reference, and checked against the in-memory BFS.
fn expected_neighborhood(reference: &Reference, idx: &Index, c: &NbCase) -> NbExpect {
    let exp = ref_neighborhood(reference, c);
    let mem = mem_neighborhood(idx, c);
    assert_eq!(
        exp, mem,
        "test bug: reference and in-memory BFS disagree for {c:?}"
    );
    exp
}

/// The expected shortest path length: computed on the reference, checked against the in-memory BFS.
fn expected_path(
    reference: &Reference,
    idx: &Index,
    from: &str,
    to: &str,
    max_hops: u32,
    dir: Dir,
) -> Option<u32> {
    let expected = ref_path_len(reference, from, to, max_hops, dir);
    let mem = mem_path_len(idx, from, to, max_hops, dir);
    assert_eq!(
        expected, mem,
        "test bug: reference and in-memory path lengths disagree for {from} -> {to} ({max_hops}, {dir:?})"
    );
    expected
}

/// How a case reaches the cluster: `(path, body)` posted to some node, answered with that node's
/// id, the status and the answer.
trait Ask: FnOnce(&str, &Value) -> (String, u16, Value) {}
impl<F: FnOnce(&str, &Value) -> (String, u16, Value)> Ask for F {}

/// Asks node `i` once.
fn ask_node(cluster: &TestCluster, i: usize) -> impl Ask + '_ {
    move |path, body| {
        let node = cluster.node(i);
        let (status, ans) = post(node, path, body);
        (node.id.clone(), status, ans)
    }
}

/// Runs one neighborhood case (reference vs in-memory, then the server through `ask`) with
/// large caps; failures start with `label`.
fn nb_case(
    f: &mut Failures,
    reference: &Reference,
    idx: &Index,
    label: &str,
    c: &NbCase,
    ask: impl Ask,
) {
    f.cases += 1;
    let exp = expected_neighborhood(reference, idx, c);
    let body = c.body(100_000, 1_000_000);
    let (via, status, ans) = ask("/graph/neighborhood", &body);
    check_neighborhood(
        f,
        idx,
        &format!("{label}neighborhood via {via}"),
        &body,
        &exp,
        100_000,
        1_000_000,
        status,
        &ans,
    );
}

// ---------------------------------------------------------------------------------------------
// Path.

fn ref_path_len(reference: &Reference, from: &str, to: &str, max: u32, dir: Dir) -> Option<u32> {
    let exists = reference
        .query(
            "MATCH (e:Entity) WHERE e.id = $a OR e.id = $b RETURN count(*)",
            &json!({"a": from, "b": to}),
        )
        .unwrap()
        .1[0][0]
        .as_i64()
        .unwrap();
    if from == to {
        return (exists == 1).then_some(0);
    }
    let pattern = match dir {
        Dir::Out => format!("-[r:RELATED* SHORTEST 1..{max}]->"),
        Dir::In => format!("<-[r:RELATED* SHORTEST 1..{max}]-"),
        Dir::Both => format!("-[r:RELATED* SHORTEST 1..{max}]-"),
    };
    let q = format!(
        "MATCH p = (a:Entity {{id: $f}}){pattern}(b:Entity {{id: $t}}) RETURN min(length(r))"
    );
    let (_, rows) = reference
        .query(&q, &json!({"f": from, "t": to}))
        .unwrap_or_else(|e| panic!("reference path query failed: {e}"));
    rows.first()
        .and_then(|row| row[0].as_u64())
        .map(|n| n as u32)
}

fn mem_path_len(idx: &Index, from: &str, to: &str, max: u32, dir: Dir) -> Option<u32> {
    if !idx.ents.contains_key(from) || !idx.ents.contains_key(to) {
        return None;
    }
    if from == to {
        return Some(0);
    }
    let mut seen: HashSet<&str> = HashSet::from([from]);
    let mut frontier = vec![from];
    for h in 1..=max {
        let mut next = Vec::new();
        for id in &frontier {
            let mut step = |keys: Option<&Vec<RelKey>>, forward: bool| {
                for key in keys.into_iter().flatten() {
                    let r = &idx.rels[key];
                    let other = if forward {
                        r.target.as_str()
                    } else {
                        r.source.as_str()
                    };
                    if seen.insert(other) {
                        next.push(other);
                    }
                }
            };
            if dir != Dir::In {
                step(idx.out.get(*id), true);
            }
            if dir != Dir::Out {
                step(idx.inn.get(*id), false);
            }
        }
        if next.contains(&to) {
            return Some(h);
        }
        frontier = next;
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn check_path(
    f: &mut Failures,
    idx: &Index,
    what: &str,
    body: &Value,
    from: &str,
    to: &str,
    dir: Dir,
    expected: Option<u32>,
    status: u16,
    ans: &Value,
) {
    let ctx = || format!("{what}: request {}", short(body));
    let exists = idx.ents.contains_key(from) && idx.ents.contains_key(to);
    if !exists {
        f.check(status == 404 && error_reason(ans).is_some(), || {
            format!(
                "{}: from/to does not exist: expected 404 with a reason, got {status} {}",
                ctx(),
                short(ans)
            )
        });
        return;
    }
    if !f.check(status == 200, || {
        format!("{}: expected 200, got {status} {}", ctx(), short(ans))
    }) {
        return;
    }
    f.check(shards_clean(ans), || {
        format!("{}: _shards = {}", ctx(), ans["_shards"])
    });
    match expected {
        None => {
            f.check(
                ans["found"] == false
                    && ans["length"].is_null()
                    && ans["reason"].as_str().is_some_and(|r| !r.is_empty()),
                || {
                    format!(
                        "{}: the reference has no path: expected found=false, length=null and a reason; got {}",
                        ctx(),
                        short(ans)
                    )
                },
            );
        }
        Some(len) => {
            if !f.check(ans["found"] == true && ans["length"] == len, || {
                format!(
                    "{}: expected found=true, length={len}; got found={} length={} {}",
                    ctx(),
                    ans["found"],
                    ans["length"],
                    short(ans)
                )
            }) {
                return;
            }
            let ents: Vec<&str> = ans["entities"]
                .as_array()
                .map(|a| a.iter().map(|e| e["id"].as_str().unwrap_or("")).collect())
                .unwrap_or_default();
            let rels: Vec<&Value> = ans["relations"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let mut problem = None;
            if ents.len() != len as usize + 1 || rels.len() != len as usize {
                problem = Some(format!(
                    "{} entities and {} relations for length {len}",
                    ents.len(),
                    rels.len()
                ));
            } else if ents.first() != Some(&from) || ents.last() != Some(&to) {
                problem = Some("the path does not run from `from` to `to`".into());
            } else {
                for (i, r) in rels.iter().enumerate() {
                    let key = (
                        r["id"].as_str().unwrap_or("").to_string(),
                        r["source"].as_str().unwrap_or("").to_string(),
                        r["target"].as_str().unwrap_or("").to_string(),
                    );
                    if !idx.rels.contains_key(&key) {
                        problem = Some(format!("relation {i} {key:?} does not exist"));
                        break;
                    }
                    let (a, b) = (ents[i], ents[i + 1]);
                    let fwd = key.1 == a && key.2 == b;
                    let bwd = key.1 == b && key.2 == a;
                    let ok = match dir {
                        Dir::Out => fwd,
                        Dir::In => bwd,
                        Dir::Both => fwd || bwd,
                    };
                    if !ok {
                        problem = Some(format!(
                            "relation {i} {key:?} does not lead from {a} to {b} in direction {}",
                            dir.name()
                        ));
                        break;
                    }
                }
                for e in ans["entities"].as_array().into_iter().flatten() {
                    let id = e["id"].as_str().unwrap_or("");
                    if idx
                        .ents
                        .get(id)
                        .is_none_or(|want| e["title"] != want.title.as_str())
                    {
                        problem = Some(format!(
                            "entity object {} is not the stored entity",
                            short(e)
                        ));
                    }
                }
            }
            if let Some(p) = problem {
                f.fail(format!(
                    "{}: returned path is not valid: {p}; answer {}",
                    ctx(),
                    short(ans)
                ));
            }
        }
    }
}

/// Runs one path case (reference vs in-memory, then the server through `ask`); failures start
/// with `label`.
#[allow(clippy::too_many_arguments)]
fn path_case(
    f: &mut Failures,
    reference: &Reference,
    idx: &Index,
    label: &str,
    from: &str,
    to: &str,
    max_hops: u32,
    dir: Dir,
    ask: impl Ask,
) {
    f.cases += 1;
    let expected = expected_path(reference, idx, from, to, max_hops, dir);
    let body = json!({"from": from, "to": to, "max_hops": max_hops, "direction": dir.name()});
    let (via, status, ans) = ask("/graph/path", &body);
    check_path(
        f,
        idx,
        &format!("{label}path via {via}"),
        &body,
        from,
        to,
        dir,
        expected,
        status,
        &ans,
    );
}

// ---------------------------------------------------------------------------------------------
// Cypher.

struct QCase {
    cypher: String,
    params: Value,
    /// The query has a total ORDER BY: rows must come in the same order.
    ordered: bool,
}

fn q(cypher: impl Into<String>, params: Value, ordered: bool) -> QCase {
    QCase {
        cypher: cypher.into(),
        params,
        ordered,
    }
}

/// Random instances of the mergeable shapes; `prefix` names one graph's ids.
fn random_query(rng: &mut Rng, prefix: &str, ids: &[String]) -> QCase {
    let template = rng.below(QUERY_TEMPLATES);
    query_template(rng, template, prefix, ids)
}

const QUERY_TEMPLATES: usize = 32;

/// Template `template` of the mergeable shapes, with random constants.
fn query_template(rng: &mut Rng, template: usize, prefix: &str, ids: &[String]) -> QCase {
    let d = rng.range(0, 12);
    let x = rng.below(1000) as f64 / 1000.0;
    let n = rng.range(1, 40);
    let k = rng.range(0, 60);
    let t = TYPES[rng.below(TYPES.len())];
    match template {
        0 => q(
            format!("MATCH (e:Entity) WHERE e.degree >= {d} RETURN count(*) AS n, sum(e.degree) AS s, \
                     min(e.frequency) AS lo, max(e.frequency) AS hi, avg(e.degree) AS a"),
            json!({}),
            false,
        ),
        1 => q(
            format!("MATCH (e:Entity) WHERE e.id STARTS WITH '{prefix}-' RETURN e.type AS t, count(*) AS n, avg(e.degree) AS a"),
            json!({}),
            false,
        ),
        2 => q(
            format!("MATCH (e:Entity) WHERE e.frequency < {k} RETURN DISTINCT e.type"),
            json!({}),
            false,
        ),
        3 => q(
            format!("MATCH (e:Entity) RETURN e.id, e.title ORDER BY e.id SKIP {k} LIMIT {n}"),
            json!({}),
            true,
        ),
        4 => q(
            format!("MATCH (e:Entity) WHERE e.type = $t RETURN e.id, e.degree ORDER BY e.degree DESC, e.id LIMIT {n}"),
            json!({"t": t}),
            true,
        ),
        5 => q(
            format!("MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE r.weight > {x} RETURN a.id, b.id, r.id \
                     ORDER BY r.id, a.id, b.id LIMIT {n}"),
            json!({}),
            true,
        ),
        6 => q(
            "MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE a.id STARTS WITH $p RETURN count(*)",
            json!({"p": format!("{prefix}-")}),
            false,
        ),
        7 => q(
            "MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE a.type = $t RETURN count(DISTINCT b.id) AS targets, count(*) AS n",
            json!({"t": t}),
            false,
        ),
        8 => q(
            "MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN a.type AS t, sum(r.weight) AS w, count(r) AS c",
            json!({}),
            false,
        ),
        9 => q(
            "MATCH (b:Entity)<-[r:RELATED]-(a:Entity) WHERE r.weight >= $w RETURN a.type, count(*) AS n, \
             min(r.weight) AS lo, max(r.weight) AS hi",
            json!({"w": x}),
            false,
        ),
        10 => q(
            "MATCH (e:Entity) WHERE e.id STARTS WITH $p RETURN e ORDER BY e.id LIMIT 5",
            json!({"p": format!("{prefix}-")}),
            true,
        ),
        11 => q(
            "MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE a.id = b.id RETURN DISTINCT a.id",
            json!({}),
            false,
        ),
        12 => q(
            format!("MATCH (e:Entity) WHERE e.degree > {d} RETURN e.id ORDER BY e.frequency DESC, e.id LIMIT {n}"),
            json!({}),
            true,
        ),
        13 => q(
            "MATCH (e:Entity) WHERE e.degree > 1000000 RETURN count(*) AS n, sum(e.degree) AS s, avg(e.degree) AS a, min(e.id) AS lo",
            json!({}),
            false,
        ),
        14 => q(
            "MATCH (e:Entity) WHERE e.degree > 1000000 RETURN e.type, count(*)",
            json!({}),
            false,
        ),
        15 => q(
            "MATCH (e:Entity) RETURN count(DISTINCT e.type) AS types, count(e.title) AS titled",
            json!({}),
            false,
        ),
        16 => q(
            "MATCH (e:Entity) WHERE e.id = $id RETURN e.title, e.degree, e.text_unit_ids",
            json!({"id": rng.pick(ids)}),
            false,
        ),
        17 => q(
            "MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE r.weight < $w RETURN r, a.id, b.id ORDER BY r.id, a.id, b.id LIMIT 7",
            json!({"w": x}),
            true,
        ),
        18 => q(
            "MATCH (e:Entity) RETURN e.type AS t, count(*) AS n ORDER BY n DESC, t",
            json!({}),
            true,
        ),
        19 => q(
            format!("MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE a.degree >= {d} RETURN b.id, count(*) AS indeg, sum(r.weight) AS w \
                     ORDER BY indeg DESC, b.id LIMIT {n}"),
            json!({}),
            true,
        ),
        20 => q("MATCH (c:Chunk) RETURN count(*)", json!({}), false),
        21 => q(
            "MATCH (e:Entity) WHERE e.frequency >= $lo AND e.frequency < $hi RETURN e.frequency AS f, count(*) AS n, max(e.degree) AS top \
             ORDER BY f",
            json!({"lo": k % 30, "hi": k % 30 + 8}),
            true,
        ),
        22 => q(
            format!("MATCH (e:Entity) WHERE contains(e.description, '{}') RETURN DISTINCT e.type AS t, e.frequency AS f ORDER BY t, f SKIP {} LIMIT {n}",
                    rng.pick(WORDS), k % 10),
            json!({}),
            true,
        ),
        23 => q(
            "MATCH (e:Entity) RETURN count(*) AS n, sum(e.frequency) AS s",
            json!({}),
            false,
        ),
        24 => q(
            "MATCH (e:Entity) WHERE e.degree >= $d RETURN e ORDER BY e.id LIMIT 5",
            json!({"d": d + 5}),
            true,
        ),
        // Keywords in lower case, and write/clause words inside string literals.
        25 => q(
            "match (e:Entity) where e.title <> 'CREATE' and e.description <> 'DELETE with SET' return count(*) as n, min(e.degree) as lo",
            json!({}),
            false,
        ),
        26 => q(
            format!("MATCH (e:Entity) WHERE e.id ENDS WITH '{}' RETURN count(*) AS n, max(e.degree) AS top", k % 10),
            json!({}),
            false,
        ),
        27 => q(
            "MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE b.id = $id RETURN a.id, r.id, a.type ORDER BY a.id, r.id",
            json!({"id": rng.pick(ids)}),
            true, // b is fixed and (r.id, source, target) is unique: a total order
        ),
        28 => q(
            "MATCH (e:Entity) RETURN e.id AS id ORDER BY id DESC LIMIT 6",
            json!({}),
            true,
        ),
        29 => {
            let some: Vec<&String> = (0..5).map(|_| rng.pick(ids)).collect();
            q(
                "MATCH (e:Entity) WHERE e.id IN $ids RETURN e.id, e.frequency ORDER BY e.id",
                json!({"ids": some}),
                true,
            )
        }
        30 => q(
            "MATCH (e:Entity) RETURN e.degree % 3 AS m, count(*) AS n, sum(e.frequency) AS s ORDER BY m",
            json!({}),
            true,
        ),
        _ => q(
            format!("MATCH (b:Entity)<-[r:RELATED]-(a:Entity) WHERE a.frequency < {k} RETURN b.id, count(*) AS n ORDER BY n DESC, b.id LIMIT {n}"),
            json!({}),
            true,
        ),
    }
}

/// Runs a Cypher case on the reference and on the cluster (through `ask`) and compares; failures
/// start with `label`.
fn query_case(f: &mut Failures, reference: &Reference, label: &str, c: &QCase, ask: impl Ask) {
    f.cases += 1;
    let (columns, rows) = reference
        .query(&c.cypher, &c.params)
        .unwrap_or_else(|e| panic!("test bug: reference refused {}: {e}", c.cypher));
    let body = json!({"cypher": c.cypher, "params": c.params});
    let (via, status, ans) = ask("/query", &body);
    compare_query(
        f,
        &format!("{label}query via {via}"),
        &body,
        c.ordered,
        &columns,
        &rows,
        status,
        &ans,
    );
}

#[allow(clippy::too_many_arguments)]
fn compare_query(
    f: &mut Failures,
    what: &str,
    body: &Value,
    ordered: bool,
    columns: &[String],
    rows: &[Vec<Value>],
    status: u16,
    ans: &Value,
) -> bool {
    let ctx = || format!("{what}: request {}", short(body));
    if !f.check(status == 200, || {
        format!("{}: expected 200, got {status} {}", ctx(), short(ans))
    }) {
        return false;
    }
    let mut ok = f.check(
        shards_clean(ans) && ans["merge"] == "global" && ans["took_ms"].is_u64(),
        || {
            format!(
                "{}: merge = {}, took_ms = {}, _shards = {}",
                ctx(),
                ans["merge"],
                ans["took_ms"],
                ans["_shards"]
            )
        },
    );
    ok &= f.check(ans["columns"] == json!(columns), || {
        format!(
            "{}: columns {} but the reference names them {:?}",
            ctx(),
            ans["columns"],
            columns
        )
    });
    let mut want: Vec<Value> = rows.iter().map(|r| Value::Array(r.clone())).collect();
    let mut got: Vec<Value> = ans["rows"].as_array().cloned().unwrap_or_default();
    // Relation values carry `source` and `target` ids besides their properties (the README documents
    // them as RELATED properties; one Kuzu database has internal ids there instead). They must be
    // strings; they are then left out of the comparison.
    for row in got.iter_mut().filter_map(Value::as_array_mut) {
        for cell in row.iter_mut().filter_map(Value::as_object_mut) {
            if cell.get("_label") == Some(&json!("RELATED")) {
                let ends = [cell.remove("source"), cell.remove("target")];
                ok &= f.check(
                    ends.iter()
                        .all(|v| v.as_ref().is_some_and(Value::is_string)),
                    || {
                        format!(
                            "{}: a relation value without string source/target: {}",
                            ctx(),
                            short(ans)
                        )
                    },
                );
            }
        }
    }
    if !ordered {
        want.sort_by_key(row_key);
        got.sort_by_key(row_key);
    }
    let same = json_eq(&Value::Array(want.clone()), &Value::Array(got.clone()));
    ok &= f.check(same, || {
        let first_diff = want
            .iter()
            .zip(&got)
            .position(|(a, b)| !json_eq(a, b))
            .unwrap_or(want.len().min(got.len()));
        format!(
            "{}: rows differ ({} expected, {} got{}); first difference at {first_diff}: expected {} got {}; expected rows {}; answer {}",
            ctx(),
            want.len(),
            got.len(),
            if ordered { ", ordered" } else { ", compared as multisets" },
            want.get(first_diff).map(short).unwrap_or_default(),
            got.get(first_diff).map(short).unwrap_or_default(),
            short(&Value::Array(want.clone())),
            short(ans)
        )
    });
    ok
}

// ---------------------------------------------------------------------------------------------
// 1. Randomised equivalence.

#[test]
fn random_graphs_answer_like_one_embedded_database() {
    let started = Instant::now();
    let cluster = green_cluster();
    eprintln!(
        "cluster green after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let reference = Reference::new();
    let mut idx = Index::default();
    let mut f = Failures::default();
    let mut rng = Rng::new(0x7042_0005_5eed);
    let mut all_ids: Vec<String> = Vec::new();
    // (prefix, entities, average out-degree, neighborhood cases, path cases, query cases)
    let plan = [
        ("g1", 300, 2.0, 30, 25, 20),
        ("g2", 900, 3.0, 30, 25, 20),
        ("g3", 2000, 3.0, 30, 25, 25),
    ];
    let mut last_graph: (Vec<Ent>, Vec<Rel>) = (vec![], vec![]);
    for (prefix, n, degree, n_nb, n_path, n_query) in plan {
        let t0 = Instant::now();
        let (ents, rels) = gen_graph(&mut rng, prefix, n, degree);
        ingest(&cluster, &ents, &rels);
        reference.load(&ents, &rels);
        idx.add(&ents, &rels);
        let own: Vec<String> = ents.iter().map(|e| e.id.clone()).collect();
        all_ids.extend(own.iter().cloned());
        eprintln!(
            "{prefix}: {} entities, {} relations loaded in {:.1} s",
            ents.len(),
            rels.len(),
            t0.elapsed().as_secs_f64()
        );
        let t0 = Instant::now();
        for _ in 0..n_nb {
            let c = random_nb_case(&mut rng, &own, &all_ids);
            nb_case(
                &mut f,
                &reference,
                &idx,
                "",
                &c,
                ask_node(&cluster, rng.below(3)),
            );
        }
        let t_nb = t0.elapsed();
        let t0 = Instant::now();
        for i in 0..n_path {
            let from = rng.pick(&own).clone();
            let to = match i % 8 {
                0 => from.clone(),
                1 => rng.pick(&all_ids).clone(),
                2 if i % 16 == 2 => "no-such-entity".to_string(),
                _ => rng.pick(&own).clone(),
            };
            let (from, to) = if i % 16 == 10 {
                ("no-such-entity".to_string(), to)
            } else {
                (from, to)
            };
            let max_hops = rng.range(1, 6) as u32;
            let dir = Dir::random(&mut rng);
            path_case(
                &mut f,
                &reference,
                &idx,
                "",
                &from,
                &to,
                max_hops,
                dir,
                ask_node(&cluster, rng.below(3)),
            );
        }
        let t_path = t0.elapsed();
        let t0 = Instant::now();
        for _ in 0..n_query {
            let c = random_query(&mut rng, prefix, &own);
            query_case(&mut f, &reference, "", &c, ask_node(&cluster, rng.below(3)));
        }
        eprintln!(
            "{prefix}: neighborhood {:.1} s, path {:.1} s, query {:.1} s; {} failures so far",
            t_nb.as_secs_f64(),
            t_path.as_secs_f64(),
            t0.elapsed().as_secs_f64(),
            f.list.len()
        );
        last_graph = (ents, rels);
    }

    // Every query shape once more, over all three graphs.
    for template in 0..QUERY_TEMPLATES {
        let c = query_template(&mut rng, template, "g3", &all_ids);
        query_case(&mut f, &reference, "", &c, ask_node(&cluster, template % 3));
    }

    // Aggregates where most shards (or all) have no row, and other edges of the merge.
    let (ents, rels) = &last_graph;
    let one_source = rels[0].source.clone();
    let few: Vec<&String> = all_ids.iter().step_by(97).take(6).collect();
    for c in [
        q("MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE a.degree > 1000000 RETURN count(DISTINCT b.id) AS targets, count(*) AS n", json!({}), false),
        q("MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE a.id = $id RETURN count(DISTINCT b.id) AS targets, count(*) AS n", json!({"id": one_source}), false),
        q("MATCH (e:Entity) WHERE e.id = $id RETURN count(DISTINCT e.type) AS n, avg(e.degree) AS a, min(e.title) AS lo, max(e.title) AS hi", json!({"id": one_source}), false),
        q("MATCH (e:Entity) WHERE e.id IN $ids RETURN e.type AS t, count(DISTINCT e.frequency) AS f, sum(e.degree) AS s", json!({"ids": few}), false),
        q("MATCH (e:Entity) RETURN DISTINCT e.type AS t ORDER BY t SKIP 100", json!({}), true),
        q("MATCH (e:Entity) RETURN e.id ORDER BY e.id LIMIT 0", json!({}), true),
        q("MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN sum(r.weight) AS w, avg(r.weight) AS a, min(r.weight) AS lo, max(r.weight) AS hi", json!({}), false),
        q("MATCH (e:Entity) RETURN count(DISTINCT e.type) AS types", json!({}), false),
    ] {
        query_case(&mut f, &reference, "", &c, ask_node(&cluster, 0));
    }

    // Caps, on the largest graph: a hub's 2-hop neighbourhood both ways.
    let mut out_degree: HashMap<&str, usize> = HashMap::new();
    for r in rels {
        *out_degree.entry(r.source.as_str()).or_default() += 1;
    }
    let hub = ents
        .iter()
        .max_by_key(|e| out_degree.get(e.id.as_str()).copied().unwrap_or(0))
        .unwrap()
        .id
        .clone();
    let c = NbCase {
        seeds: vec![hub.clone(), ents[5].id.clone()],
        hops: 2,
        dir: Dir::Both,
        min_weight: None,
        contains: None,
    };
    let exp = expected_neighborhood(&reference, &idx, &c);
    assert!(
        exp.hop.len() > 20,
        "the hub's neighbourhood is too small for the caps test"
    );
    let exact = exp.hop.len();
    for (max_nodes, max_relations) in [
        (7usize, 1_000_000usize),
        (1, 1_000_000),
        (exact, 1_000_000),
        (exact - 1, 1_000_000),
        (100_000, 5),
        (100_000, exp.rels.len()),
        (30, 10),
        (30, 1_000_000),
        (100_000, 10),
        (exact, 10),
    ] {
        f.cases += 1;
        let body = c.body(max_nodes as u64, max_relations as u64);
        let node = f.cases % 3;
        let (status, ans) = post(cluster.node(node), "/graph/neighborhood", &body);
        check_neighborhood(
            &mut f,
            &idx,
            &format!("caps max_nodes={max_nodes} max_relations={max_relations}"),
            &body,
            &exp,
            max_nodes,
            max_relations,
            status,
            &ans,
        );
    }
    // A filter threshold equal to stored weights: "min_weight" keeps weight >= it.
    let tie = rels
        .iter()
        .map(|r| r.weight)
        .find(|w| *w > 0.3 && *w < 0.7)
        .unwrap();
    let c = NbCase {
        seeds: vec![hub.clone()],
        hops: 2,
        dir: Dir::Out,
        min_weight: Some(tie),
        contains: None,
    };
    nb_case(&mut f, &reference, &idx, "", &c, ask_node(&cluster, 1));

    // Global mode on a shard subset, and per_shard mode: rows come from the named shards only.
    let subset = [0u32, 3];
    let in_subset = all_ids
        .iter()
        .filter(|id| subset.contains(&shard_of(id, SHARDS)))
        .count();
    f.cases += 1;
    let body = json!({"cypher": "MATCH (e:Entity) RETURN count(*) AS n", "shards": subset});
    let (status, ans) = post(cluster.node(2), "/query", &body);
    f.check(
        status == 200 && ans["rows"] == json!([[in_subset]]) && ans["_shards"]["total"] == 2,
        || format!("global count on shards {subset:?}: expected rows [[{in_subset}]] and _shards.total 2; got {status} {}", short(&ans)),
    );
    f.cases += 1;
    let body = json!({"cypher": "MATCH (e:Entity) RETURN count(*) AS n", "merge": "per_shard"});
    let (status, ans) = post(cluster.node(1), "/query", &body);
    let listed: BTreeSet<u64> = ans["shards"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["shard"].as_u64()).collect())
        .unwrap_or_default();
    f.check(
        status == 200
            && ans["merge"] == "per_shard"
            && listed == (0..SHARDS as u64).collect::<BTreeSet<_>>()
            && ans["shards"].as_array().is_some_and(|a| a.len() == SHARDS as usize && a.iter().all(|s| s["node"].is_string() && s["columns"].is_array() && s["rows"].is_array()))
            && shards_clean(&ans),
        || format!("per_shard over all shards: expected one entry per shard 0..{SHARDS} with node, columns, rows; got {status} {}", short(&ans)),
    );
    f.cases += 1;
    let body = json!({"cypher": "MATCH (e:Entity) WHERE e.title <> '' RETURN e.id ORDER BY e.id", "merge": "per_shard", "shards": subset});
    let (status, ans) = post(cluster.node(0), "/query", &body);
    let mut problem = None;
    if status != 200 || ans["_shards"]["total"] != 2 {
        problem = Some("not a 200 over 2 shards".to_string());
    } else {
        let mut seen = 0;
        for s in ans["shards"].as_array().into_iter().flatten() {
            let shard = s["shard"].as_u64().unwrap_or(999) as u32;
            if !subset.contains(&shard) {
                problem = Some(format!("shard {shard} was not asked for"));
            }
            for row in s["rows"].as_array().into_iter().flatten() {
                let id = row[0].as_str().unwrap_or("");
                seen += 1;
                if shard_of(id, SHARDS) != shard {
                    problem = Some(format!(
                        "{id} listed under shard {shard}, lives in {}",
                        shard_of(id, SHARDS)
                    ));
                }
            }
        }
        if seen != in_subset {
            problem = Some(format!(
                "{seen} entities listed, {in_subset} live in shards {subset:?}"
            ));
        }
    }
    f.check(problem.is_none(), || {
        format!(
            "per_shard on shards {subset:?}: {}; request {body}; answer {status} {}",
            problem.clone().unwrap_or_default(),
            short(&ans)
        )
    });
    // per_shard takes shapes global mode refuses; the shards' rows add up to the whole graph.
    f.cases += 1;
    let body = json!({"cypher": "MATCH (e:Entity) WITH e WHERE e.title <> '' RETURN count(*) AS n", "merge": "per_shard", "allow_partial": false});
    let (status, ans) = post(cluster.node(2), "/query", &body);
    let total: u64 = ans["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["rows"][0][0].as_u64())
        .sum();
    f.check(status == 200 && total == all_ids.len() as u64 && shards_clean(&ans), || {
        format!("per_shard WITH query {body}: expected 200 whose per-shard counts add up to {}; got {status}, sum {total}, {}", all_ids.len(), short(&ans))
    });
    f.finish("random_graphs_answer_like_one_embedded_database", started);
}

// ---------------------------------------------------------------------------------------------
// 2. Failures: kill -9 one node of three (R=2), then a second one.

#[test]
fn kill_9_keeps_answers_whole_then_partial_or_refused() {
    let started = Instant::now();
    let mut cluster = green_cluster();
    let reference = Reference::new();
    let mut idx = Index::default();
    let mut f = Failures::default();
    let mut rng = Rng::new(0xdead_0005);
    let (ents, rels) = gen_graph(&mut rng, "k", 400, 3.0);
    ingest(&cluster, &ents, &rels);
    reference.load(&ents, &rels);
    idx.add(&ents, &rels);
    let ids: Vec<String> = ents.iter().map(|e| e.id.clone()).collect();

    // Which nodes hold which shard (a dead node's copies stay in the map for TORUA_REPLACE_AFTER,
    // 30 s by default, before they are re-created elsewhere).
    let shards = cluster.wait_applied(0, SETTLE).unwrap();
    let holders = answers::holders(&shards);
    assert_eq!(holders.len(), SHARDS as usize, "{shards}");

    // The cases, with their expectations, checked on the whole cluster first.
    let nb_cases: Vec<NbCase> = (0..6)
        .map(|_| random_nb_case(&mut rng, &ids, &ids))
        .collect();
    let path_cases: Vec<(String, String, u32, Dir)> = (0..6)
        .map(|_| {
            (
                rng.pick(&ids).clone(),
                rng.pick(&ids).clone(),
                rng.range(2, 6) as u32,
                Dir::random(&mut rng),
            )
        })
        .collect();
    let mut q_cases: Vec<QCase> = (0..6).map(|_| random_query(&mut rng, "k", &ids)).collect();
    q_cases.push(q("MATCH (e:Entity) RETURN count(*) AS n", json!({}), false));
    q_cases.push(q(
        "MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN count(*) AS n, sum(r.weight) AS w",
        json!({}),
        false,
    ));
    let run_all = |f: &mut Failures, cluster: &TestCluster, nodes: &[usize], label: &str| {
        let t0 = Instant::now();
        let mut waited = Duration::ZERO;
        let mut k = 0;
        let mut next_node = || {
            k += 1;
            nodes[k % nodes.len()]
        };
        // Retry while the cluster notices the death: the final answer must be whole.
        let retry =
            |node: &NodeProc, path: &str, body: &Value, waited: &mut Duration| -> (u16, Value) {
                let t = Instant::now();
                let answer = wait::answer(
                    Duration::from_secs(20),
                    RETRY,
                    || {
                        let sent = Instant::now();
                        let (status, ans) = post(node, path, body);
                        let whole = status == 200 && shards_clean(&ans);
                        if !whole || sent.elapsed() > Duration::from_secs(1) {
                            eprintln!(
                                "  {} {path} answered {status} after {:.1} s: {}",
                                node.id,
                                sent.elapsed().as_secs_f64(),
                                if status == 200 {
                                    ans["_shards"].to_string()
                                } else {
                                    short(&ans)
                                }
                            );
                        }
                        (status, ans)
                    },
                    // Only what the death can explain is retried: no answer, a 5xx, or a partial 200.
                    |(status, ans)| {
                        !(*status == 0 || *status >= 500 || (*status == 200 && !shards_clean(ans)))
                    },
                );
                *waited = (*waited).max(t.elapsed());
                answer
            };
        let prefix = format!("{label}: ");
        let mut ask = |path: &str, body: &Value| {
            let node = cluster.node(next_node());
            let (status, ans) = retry(node, path, body, &mut waited);
            (node.id.clone(), status, ans)
        };
        for c in &nb_cases {
            nb_case(f, &reference, &idx, &prefix, c, &mut ask);
        }
        for (from, to, max_hops, dir) in &path_cases {
            path_case(
                f, &reference, &idx, &prefix, from, to, *max_hops, *dir, &mut ask,
            );
        }
        for c in &q_cases {
            query_case(f, &reference, &prefix, c, &mut ask);
        }
        eprintln!(
            "{label}: {} cases in {:.1} s; longest wait for a whole answer {:.1} s",
            nb_cases.len() + path_cases.len() + q_cases.len(),
            t0.elapsed().as_secs_f64(),
            waited.as_secs_f64()
        );
    };
    run_all(&mut f, &cluster, &[0, 1, 2], "all up");

    // kill -9 node-2: every shard still has a live copy.
    cluster.node_mut(1).kill9();
    run_all(&mut f, &cluster, &[0, 2], "node-2 killed");

    // kill -9 node-1 too: the shards held only by node-1 and node-2 have no live copy.
    cluster.node_mut(0).kill9();
    let survivor = cluster.node(2);
    let dead = answers::shards_not_on(&holders, &survivor.id);
    let live_ids: BTreeSet<&String> = ids
        .iter()
        .filter(|id| !dead.contains(&shard_of(id, SHARDS)))
        .collect();
    eprintln!("shards without a live copy: {dead:?}");

    // Global query: 200 with the live shards' rows and the dead shards listed ...
    f.cases += 1;
    let body = json!({"cypher": "MATCH (e:Entity) RETURN e.id ORDER BY e.id", "allow_partial": true, "timeout_ms": 5000});
    let (status, ans) = wait::answer(
        Duration::from_secs(20),
        RETRY,
        || post(survivor, "/query", &body),
        |(status, ans)| *status == 200 && ans["_shards"]["failed"] == dead.len(),
    );
    let failed_shards = answers::failed_shards(&ans);
    let reasons_ok = answers::failures_have_reasons(&ans);
    let got_ids: BTreeSet<&str> = ans["rows"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r[0].as_str()).collect())
        .unwrap_or_default();
    let want_ids: BTreeSet<&str> = live_ids.iter().map(|s| s.as_str()).collect();
    f.check(
        status == 200
            && ans["_shards"]["total"] == SHARDS
            && ans["_shards"]["failed"] == dead.len()
            && ans["_shards"]["successful"] == SHARDS as usize - dead.len()
            && failed_shards == dead
            && reasons_ok
            && got_ids == want_ids,
        || format!(
            "two of three nodes dead, allow_partial=true: expected 200, _shards total {SHARDS} failed {} with failures for shards {dead:?} (each with a reason), and the {} entities of the live shards; got {status}, {} rows, _shards {}",
            dead.len(),
            want_ids.len(),
            got_ids.len(),
            ans["_shards"]
        ),
    );
    // ... and without allow_partial a 503 with a reason.
    for (path, body) in [
        (
            "/query",
            json!({"cypher": "MATCH (e:Entity) RETURN count(*)", "allow_partial": false, "timeout_ms": 5000}),
        ),
        (
            "/query",
            json!({"cypher": "MATCH (e:Entity) RETURN e.id", "merge": "per_shard", "allow_partial": false, "timeout_ms": 5000}),
        ),
    ] {
        f.cases += 1;
        let (status, ans) = post(survivor, path, &body);
        f.check(status == 503 && error_reason(&ans).is_some(), || {
            format!("two of three nodes dead, allow_partial=false: {path} {body}: expected 503 with a reason, got {status} {}", short(&ans))
        });
    }
    // Neighborhood from a seed in a live shard and one in a dead shard.
    let live_seed = ids
        .iter()
        .find(|id| !dead.contains(&shard_of(id, SHARDS)) && idx.out.contains_key(*id))
        .unwrap();
    let dead_seed = ids
        .iter()
        .find(|id| dead.contains(&shard_of(id, SHARDS)))
        .unwrap();
    let c = NbCase {
        seeds: vec![live_seed.clone(), dead_seed.clone()],
        hops: 2,
        dir: Dir::Both,
        min_weight: None,
        contains: None,
    };
    let full = mem_neighborhood(&idx, &c);
    let mut body = c.body(100_000, 1_000_000);
    body["allow_partial"] = json!(true);
    body["timeout_ms"] = json!(5000);
    f.cases += 1;
    let (status, ans) = post(survivor, "/graph/neighborhood", &body);
    let failed_shards = answers::failed_shards(&ans);
    let bad_entities: Vec<String> = ans["entities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            let id = e["id"].as_str().unwrap_or("");
            let hop = e["hop"].as_u64().unwrap_or(0) as u32;
            full.hop.get(id).is_none_or(|h| hop < *h)
        })
        .map(|e| e.to_string())
        .collect();
    let has_live_seed = ans["entities"].as_array().is_some_and(|a| {
        a.iter()
            .any(|e| e["id"] == live_seed.as_str() && e["hop"] == 0)
    });
    f.check(
        status == 200
            && ans["_shards"]["failed"].as_u64() > Some(0)
            && !failed_shards.is_empty()
            && failed_shards.is_subset(&dead)
            && bad_entities.is_empty()
            && has_live_seed,
        || format!(
            "partial neighborhood (seed {live_seed} live, {dead_seed} in a dead shard): expected 200 with _shards.failed > 0, failures within {dead:?}, the live seed at hop 0 and no entity outside/closer than the full answer; got {status}, _shards {}, wrong entities {bad_entities:?}, answer {}",
            ans["_shards"], short(&ans)
        ),
    );
    body["allow_partial"] = json!(false);
    f.cases += 1;
    let (status, ans) = post(survivor, "/graph/neighborhood", &body);
    f.check(status == 503 && error_reason(&ans).is_some(), || {
        format!("partial neighborhood with allow_partial=false {body}: expected 503 with a reason, got {status} {}", short(&ans))
    });
    // Path to an entity whose shard is dead.
    for allow in [true, false] {
        f.cases += 1;
        let body = json!({"from": live_seed, "to": dead_seed, "max_hops": 4, "direction": "both", "allow_partial": allow, "timeout_ms": 5000});
        let (status, ans) = post(survivor, "/graph/path", &body);
        let ok = if allow {
            status == 200 && ans["_shards"]["failed"].as_u64() > Some(0)
        } else {
            status == 503 && error_reason(&ans).is_some()
        };
        f.check(ok, || {
            format!(
                "path to an entity in a dead shard {body}: expected {}, got {status} {}",
                if allow {
                    "200 with _shards.failed > 0"
                } else {
                    "503 with a reason"
                },
                short(&ans)
            )
        });
    }
    f.check(
        survivor.get_json("/health", Duration::from_secs(5)).is_ok(),
        || "the survivor stopped answering /health".into(),
    );
    f.finish(
        "kill_9_keeps_answers_whole_then_partial_or_refused",
        started,
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Bad input.

fn raw_post(node: &NodeProc, path: &str, body: &str) -> (u16, Value) {
    let (status, answer, _) = post_raw(&node.url(path), body, T);
    (status, answer)
}

#[test]
fn bad_input_gets_a_4xx_with_a_reason() {
    let started = Instant::now();
    let mut cluster = green_cluster();
    let reference = Reference::new();
    let mut f = Failures::default();
    let mut rng = Rng::new(0xbad_0005);
    let (ents, rels) = gen_graph(&mut rng, "b", 60, 2.0);
    ingest(&cluster, &ents, &rels);
    reference.load(&ents, &rels);
    let count_q = json!({"cypher": "MATCH (e:Entity) RETURN count(*) AS n"});
    let (_, before) = post(cluster.node(0), "/query", &count_q);
    let e1 = ents[1].id.clone();

    enum Body {
        Json(Value),
        Raw(&'static str),
    }
    use Body::*;
    // (endpoint, body, expected status, the reason must mention)
    let mut cases: Vec<(&str, Body, u16, &str)> = Vec::new();
    let writes = [
        "CREATE (e:Entity {id: 'x-created'})",
        "create (e:Entity {id: 'x-created'}) return e",
        "MATCH (e:Entity) WHERE e.id = 'b-e1' SET e.title = 'hacked'",
        "MATCH (e:Entity) WHERE e.id = 'b-e2' DELETE e",
        "MATCH (e:Entity) DETACH DELETE e",
        "MERGE (e:Entity {id: 'x-merged'})",
        "MATCH (e:Entity) REMOVE e.title",
        "MATCH (e:Entity) WHERE e.id = 'b-e3' CREATE (e)-[:RELATED {id: 'x-rel'}]->(e)",
        "DROP TABLE Entity",
        "ALTER TABLE Entity ADD extra INT64",
        "COPY Entity FROM '/tmp/nonexistent.csv'",
        "LOAD FROM '/etc/passwd' RETURN *",
        "EXPORT DATABASE '/tmp/torua-export-test'",
        "ATTACH '/tmp/other.kz' AS other (dbtype kuzu)",
        "BEGIN TRANSACTION",
        "CALL threads=1",
    ];
    for w in writes {
        cases.push(("/query", Json(json!({"cypher": w})), 400, ""));
    }
    cases.push((
        "/query",
        Json(json!({"cypher": "CREATE (e:Entity {id: 'x-created'})", "merge": "per_shard"})),
        400,
        "",
    ));
    cases.push(("/query", Json(json!({"cypher": "MATCH (e:Entity) SET e.title = 'hacked'", "merge": "per_shard", "shards": [0]})), 400, ""));
    let unmergeable = [
        "MATCH (a:Entity) MATCH (b:Entity) RETURN count(*)",
        "MATCH (e:Entity) WITH e RETURN e.id",
        "MATCH (a:Entity)-[r:RELATED*1..2]->(b:Entity) RETURN count(*)",
        "MATCH (a:Entity)-[r:RELATED]-(b:Entity) RETURN count(*)",
        "MATCH (e:Entity) RETURN count(*) + 1",
        "MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN b.title",
        "MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE b.degree > 2 RETURN a.id",
        "OPTIONAL MATCH (e:Entity) RETURN count(*)",
        "UNWIND [1, 2] AS x RETURN x",
        "MATCH (e) RETURN count(*)",
        "MATCH (a:Entity)-[:RELATED]->(b:Entity)-[:RELATED]->(c:Entity) RETURN count(*)",
        "MATCH (e:Entity) RETURN e.id UNION MATCH (c:Chunk) RETURN c.id",
        "MATCH (a:Entity), (b:Entity) RETURN count(*)",
        "RETURN 1",
    ];
    for u in unmergeable {
        cases.push(("/query", Json(json!({"cypher": u})), 400, "per_shard"));
    }
    let syntax = "MATCH (e:Entity RETURN e";
    let binder = "MATCH (e:Entity) RETURN e.nonexistent";
    cases.extend([
        ("/query", Json(json!({"cypher": "MATCH (e:Entity) RETURN count(*)", "shards": [9999]})), 400, "9999"),
        ("/query", Json(json!({"cypher": "MATCH (e:Entity) RETURN count(*)", "shards": [8]})), 400, "8"),
        ("/query", Json(json!({"cypher": "MATCH (e:Entity) RETURN e.id", "merge": "per_shard", "shards": [9999]})), 400, "9999"),
        ("/query", Json(json!({})), 400, "cypher"),
        ("/query", Json(json!({"cypher": ""})), 400, ""),
        ("/query", Json(json!({"cypher": "MATCH (e:Entity) RETURN count(*)", "merge": "bogus"})), 400, "bogus"),
        ("/query", Json(json!({"cypher": "MATCH (e:Entity) RETURN count(*)", "params": [1, 2]})), 400, ""),
        ("/query", Json(json!({"cypher": "MATCH (e:Entity) RETURN count(*)", "timeout_ms": 0})), 400, "timeout_ms"),
        ("/query", Json(json!({"cypher": "MATCH (e:Entity) RETURN count(*)", "timeout_ms": 1_000_000_000u64})), 400, "timeout_ms"),
        ("/query", Json(json!({"cypher": "MATCH (e:Entity) RETURN count(*)", "allow_partial": "yes"})), 400, ""),
        ("/query", Raw("{\"cypher\": \"MATCH (e:Entity) RETURN count(*)\""), 400, ""),
        ("/query", Raw("not json at all"), 400, ""),
    ]);
    // Bad bodies of the graph endpoints: (body, the reason must mention).
    let nb = |body: Value, why: &'static str| ("/graph/neighborhood", Json(body), 400, why);
    // (body, status, the reason must mention)
    let gp = |body: Value, status: u16, why: &'static str| ("/graph/path", Json(body), status, why);
    let seeds = |n: usize| -> Vec<String> { (0..n).map(|i| format!("b-e{}", i % 60)).collect() };
    cases.extend([
        nb(json!({"seeds": [e1], "hops": 0}), "hops"),
        nb(json!({"seeds": [e1], "hops": 4}), "hops"),
        nb(json!({"seeds": [], "hops": 1}), "seeds"),
        nb(json!({"seeds": seeds(10_000), "hops": 1}), "seeds"),
        nb(json!({"seeds": seeds(1001), "hops": 1}), "seeds"),
        nb(
            json!({"seeds": [e1], "max_nodes": 1_000_000_000u64}),
            "max_nodes",
        ),
        nb(json!({"seeds": [e1], "max_nodes": 0}), "max_nodes"),
        nb(json!({"seeds": [e1], "max_relations": 0}), "max_relations"),
        nb(
            json!({"seeds": [e1], "max_relations": 10_000_000u64}),
            "max_relations",
        ),
        nb(json!({"seeds": [e1], "direction": "sideways"}), "sideways"),
        nb(json!({"hops": 1}), "seeds"),
        nb(json!({"seeds": e1}), ""),
        nb(
            json!({"seeds": [e1], "relation_filter": {"min_weight": "high"}}),
            "",
        ),
        nb(json!({"seeds": [e1], "timeout_ms": 0}), "timeout_ms"),
        nb(
            json!({"seeds": [e1], "timeout_ms": 1_000_000_000u64}),
            "timeout_ms",
        ),
        nb(json!({"seeds": [e1], "timeout_ms": 60_001}), "timeout_ms"),
        ("/graph/neighborhood", Raw("{\"seeds\": [\"b-e1\""), 400, ""),
        gp(
            json!({"from": e1, "to": "b-e2", "max_hops": 99}),
            400,
            "max_hops",
        ),
        gp(
            json!({"from": e1, "to": "b-e2", "max_hops": 9}),
            400,
            "max_hops",
        ),
        gp(
            json!({"from": e1, "to": "b-e2", "max_hops": 0}),
            400,
            "max_hops",
        ),
        gp(
            json!({"from": e1, "to": "b-e2", "direction": "sideways"}),
            400,
            "sideways",
        ),
        gp(json!({"to": "b-e2"}), 400, "from"),
        gp(json!({"from": e1}), 400, "to"),
        gp(
            json!({"from": e1, "to": "b-e2", "timeout_ms": 0}),
            400,
            "timeout_ms",
        ),
        gp(
            json!({"from": e1, "to": "b-e2", "timeout_ms": 1_000_000_000u64}),
            400,
            "timeout_ms",
        ),
        gp(
            json!({"from": "no-such-entity", "to": "b-e2"}),
            404,
            "no-such-entity",
        ),
        gp(
            json!({"from": e1, "to": "no-such-entity"}),
            404,
            "no-such-entity",
        ),
        ("/graph/path", Raw("{\"from\": "), 400, ""),
    ]);
    for (k, (path, body, want, mention)) in cases.iter().enumerate() {
        f.cases += 1;
        let node = cluster.node(k % 3);
        let (status, ans, shown) = match body {
            Json(v) => {
                let (s, a) = post(node, path, v);
                (s, a, short(v))
            }
            Raw(text) => {
                let (s, a) = raw_post(node, path, text);
                (s, a, format!("raw {text:?}"))
            }
        };
        let reason = error_reason(&ans).unwrap_or("");
        f.check(
            status == *want
                && ans["error"]["status"] == *want
                && !reason.is_empty()
                && reason.contains(mention),
            || {
                format!(
                "bad input POST {path} {shown}: expected {want} with a reason{}; got {status} {}",
                if mention.is_empty() { String::new() } else { format!(" mentioning {mention:?}") },
                short(&ans)
            )
            },
        );
        f.check(
            node.get_json("/health", Duration::from_secs(5)).is_ok(),
            || {
                format!(
                    "{} stopped answering /health after POST {path} {shown}",
                    node.id
                )
            },
        );
    }

    // Kuzu's own errors come back once, not once per shard.
    for (cypher, kind) in [(syntax, "Parser exception"), (binder, "Binder exception")] {
        f.cases += 1;
        let kuzu_error = reference
            .query(cypher, &json!({}))
            .expect_err("the reference must refuse it");
        let kuzu_error = kuzu_error
            .trim_start_matches("Query execution failed: ")
            .to_string();
        let first_line = kuzu_error.lines().next().unwrap_or("").to_string();
        let (status, ans) = post(cluster.node(1), "/query", &json!({"cypher": cypher}));
        let reason = error_reason(&ans).unwrap_or("");
        f.check(
            status == 400 && reason.matches(kind).count() == 1 && reason.matches(first_line.as_str()).count() == 1,
            || format!(
                "Kuzu error for {cypher:?}: expected 400 whose reason holds Kuzu's message {first_line:?} exactly once; got {status}, {} occurrences of {kind:?}, {} of the message: {}",
                reason.matches(kind).count(),
                reason.matches(first_line.as_str()).count(),
                short(&ans)
            ),
        );
        let (status, ans) = post(
            cluster.node(2),
            "/query",
            &json!({"cypher": cypher, "merge": "per_shard"}),
        );
        let reason = error_reason(&ans).unwrap_or("");
        f.check(status == 400 && reason.matches(kind).count() == 1, || {
            format!("Kuzu error for {cypher:?} (per_shard): expected 400 with Kuzu's message once; got {status} {}", short(&ans))
        });
    }

    // A parameter without a value is refused before it reaches a shard (Kuzu 0.11 is reported to
    // crash on it; one database answers as if it were null).
    {
        f.cases += 1;
        let cypher = "MATCH (e:Entity) WHERE e.id = $missing RETURN e.id";
        let (status, ans) = post(cluster.node(0), "/query", &json!({"cypher": cypher}));
        f.check(
            status == 400 && error_reason(&ans).is_some_and(|r| r.contains("$missing")),
            || {
                format!(
                    "unbound $missing: expected 400 naming it, got {status} {}",
                    short(&ans)
                )
            },
        );
    }

    // Valid boundaries are accepted.
    for (path, body) in [
        (
            "/graph/neighborhood",
            json!({"seeds": seeds(1000), "hops": 3, "max_nodes": 100_000, "max_relations": 1_000_000, "timeout_ms": 60_000}),
        ),
        (
            "/graph/neighborhood",
            json!({"seeds": [e1], "max_nodes": 1, "max_relations": 1, "timeout_ms": 1}),
        ),
        (
            "/graph/path",
            json!({"from": e1, "to": "b-e2", "max_hops": 8, "direction": "in"}),
        ),
        (
            "/query",
            json!({"cypher": "MATCH (e:Entity) RETURN count(*)", "timeout_ms": 60_000, "shards": [0, 7]}),
        ),
    ] {
        f.cases += 1;
        let (status, ans) = post(cluster.node(0), path, &body);
        // timeout_ms 1 may legitimately time out (then with a reason), but never a 400.
        let ok = status == 200
            || (body["timeout_ms"] == 1 && status != 400 && error_reason(&ans).is_some());
        f.check(ok, || {
            format!(
                "valid boundary POST {path} {}: expected 200, got {status} {}",
                short(&body),
                short(&ans)
            )
        });
    }

    // Nothing was written.
    let (_, after) = post(cluster.node(1), "/query", &count_q);
    f.check(
        before["rows"] == json!([[ents.len()]]) && after["rows"] == before["rows"],
        || {
            format!(
                "entity count changed or wrong: {} entities loaded, before {} after {}",
                ents.len(),
                short(&before),
                short(&after)
            )
        },
    );
    for id in ["x-created", "x-merged"] {
        let got = cluster
            .node(0)
            .get_json(&format!("/graph/entities/{id}"), T)
            .unwrap();
        f.check(got["error"]["status"] == 404, || {
            format!("{id} exists after refused writes: {}", short(&got))
        });
    }
    let got = cluster.node(0).get_json("/graph/entities/b-e1", T).unwrap();
    f.check(got["entity"]["title"] == ents[1].title.as_str(), || {
        format!("b-e1 changed: {}", short(&got))
    });
    let shards = cluster.wait_applied(0, SETTLE).unwrap();
    let total = torua_testkit::answers::copies_total(&shards, "relations");
    let (_, ans) = post(
        cluster.node(0),
        "/query",
        &json!({"cypher": "MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN count(*)"}),
    );
    f.check(ans["rows"] == json!([[rels.len()]]), || {
        format!(
            "relation count {} after refused writes, {} loaded (copies hold {total})",
            short(&ans),
            rels.len()
        )
    });
    // A query past its time limit is interrupted on the shards, not just abandoned: the same
    // (practically endless) cross product six times in a row would otherwise keep every query
    // reader of every copy busy, and the count after it could not be answered.
    let endless = json!({
        "cypher": "MATCH (a:Entity), (b:Entity), (c:Entity), (d:Entity), (e:Entity), (g:Entity) \
                   WHERE a.id + b.id + c.id + d.id + e.id + g.id = 'never' RETURN count(*)",
        "merge": "per_shard",
        "timeout_ms": 300,
    });
    for round in 0..6 {
        let (status, ans) = post(cluster.node(round % 3), "/query", &endless);
        let reason = error_reason(&ans).unwrap_or("");
        f.check(status == 503 && reason.contains("time limit"), || {
            format!("round {round}: a query past timeout_ms should fail with 503 naming the time limit; got {status} {}", short(&ans))
        });
    }
    let (status, ans) = post(
        cluster.node(0),
        "/query",
        &json!({"cypher": "MATCH (e:Entity) RETURN count(*) AS n", "timeout_ms": 5000}),
    );
    f.check(status == 200 && ans["rows"] == json!([[ents.len()]]), || {
        format!(
            "after interrupted queries a count should answer {} within its time limit; got {status} {}",
            ents.len(),
            short(&ans)
        )
    });
    for i in 0..3 {
        f.check(cluster.node_mut(i).is_running(), || {
            format!("node {i} exited")
        });
    }
    f.finish("bad_input_gets_a_4xx_with_a_reason", started);
}
