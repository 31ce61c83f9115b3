//! Process-level tests of `POST /retrieve` (GraphRAG retrieval in one round trip) on real clusters:
//!
//! 1. Microsoft GraphRAG's Dulce output (no embeddings, BM25 only) in a 3-node (R=2) and a 1-node
//!    cluster: local, global and naive answers checked against expectations computed here from the
//!    parquet files (neighbourhoods, relation/text-unit/report rankings, budgets, token counts with
//!    tiktoken), and the same answer from every node of both clusters.
//! 2. Vector seeds (`TORUA_EMBEDDING_DIM=16`, 2000 entities): recall@10 against exact brute-force
//!    cosine, the same answer from every node, and the top-k following updates and deletes.
//! 3. kill -9 of one node (answers stay whole and unchanged), then of a second (a partial answer naming
//!    the missing shards, or a 503 with `allow_partial: false`).
//! 4. Bad input: a 400 with a reason, never a 5xx.
//!
//! Each test collects every mismatch (request, answer, expectation) and fails at the end listing them
//! all, so one run shows every server-side problem, not just the first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua::graph::model::{Batch, Community};
use torua::graph::partition::shard_of;
use torua_testkit::raw::post_raw;
use torua_testkit::{
    answers, dulce_dir, import_graphrag_with, summarize, torua_bin, wait, ClusterOptions, Failures,
    NodeProc, Rng, TestCluster,
};

const SETTLE: Duration = Duration::from_secs(60);
/// Client-side timeout of one request (the server's own default is 10 s).
const T: Duration = Duration::from_secs(70);
/// As in `ClusterOptions::graph`.
const SHARDS: u32 = 8;
/// The largest budget the endpoint accepts: everything of Dulce fits in it.
const ALL: u64 = 200_000;
/// Reciprocal rank fusion constant of the spec.
const RRF_K: f64 = 60.0;
/// Pause between two tries of a request whose answer is expected to change (after a kill).
const RETRY: Duration = Duration::from_millis(250);

fn options(nodes: usize, dim: usize) -> ClusterOptions {
    let mut o = ClusterOptions::graph(nodes);
    o.env.insert("TORUA_EMBEDDING_DIM".into(), dim.to_string());
    if nodes == 1 {
        o.env.insert("TORUA_REPLICAS".into(), "1".into());
    }
    o
}

/// Clusters of (nodes, embedding dimension), all started before each is waited for to turn green.
fn green_clusters<const N: usize>(specs: [(usize, usize); N]) -> [TestCluster; N] {
    let mut clusters =
        specs.map(|(nodes, dim)| TestCluster::start(nodes, options(nodes, dim)).unwrap());
    for cluster in &mut clusters {
        cluster.wait_green(SETTLE).unwrap();
    }
    clusters
}

/// Dulce placed by id: these tests compare with one database's BM25 over the whole collection,
/// which shards placed by id approach (placement by community makes the shards' term statistics
/// differ more; see the README's known limits), and they find an entity's shard from its id.
fn import(url: &str) {
    import_graphrag_with(&dulce_dir(), url, &["--routing", "none"]);
}

/// A vector with coordinates uniform in [-1, 1].
fn vector(rng: &mut Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect()
}

// ---------------------------------------------------------------------------------------------
// Failure collection and HTTP helpers.

/// An answer shortened for messages.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 1500 {
        format!(
            "{}... ({} bytes)",
            s.chars().take(1500).collect::<String>(),
            s.len()
        )
    } else {
        s
    }
}

/// POST /retrieve with a JSON body; status 0 when there is no answer at all.
fn retrieve(node: &NodeProc, body: &Value) -> (u16, Value) {
    match node.post_json("/retrieve", body, T) {
        Ok(r) => r,
        Err(e) => (0, Value::String(format!("request failed: {e:#}"))),
    }
}

/// POST a raw body; returns status, JSON (or text) and the Retry-After header.
fn raw_post(node: &NodeProc, path: &str, body: &str) -> (u16, Value, Option<String>) {
    post_raw(&node.url(path), body, T)
}

fn error_reason(answer: &Value) -> Option<&str> {
    answer["error"]["reason"].as_str().filter(|r| !r.is_empty())
}

fn shards_clean(answer: &Value) -> bool {
    answer["_shards"]["failed"] == 0
        && answer["_shards"]["total"].as_u64().is_some_and(|t| t > 0)
        && answer["_shards"]["successful"] == answer["_shards"]["total"]
}

fn ids(answer: &Value, key: &str) -> Vec<String> {
    answer[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["id"].as_str().unwrap_or("<no id>").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// What must be the same whichever node answers (timings and scores' last bits aside).
fn projection(answer: &Value) -> Value {
    json!({
        "seeds": ids(answer, "seeds"),
        "chunk_seeds": ids(answer, "chunk_seeds"),
        "entities": ids(answer, "entities"),
        "relations": ids(answer, "relations"),
        "text_units": ids(answer, "text_units"),
        "community_reports": ids(answer, "community_reports"),
        "context_text": answer["context_text"],
        "tokens": answer["tokens"],
    })
}

fn is_prefix(prefix: &[String], of: &[String]) -> bool {
    prefix.len() <= of.len() && of[..prefix.len()] == *prefix
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    dot / (na.sqrt() * nb.sqrt())
}

// ---------------------------------------------------------------------------------------------
// Token counts, as GraphRAG measures them.

fn count_tokens(tokenizer: &str, text: &str) -> usize {
    static CL: OnceLock<tiktoken_rs::CoreBPE> = OnceLock::new();
    static O2: OnceLock<tiktoken_rs::CoreBPE> = OnceLock::new();
    let bpe = match tokenizer {
        "o200k_base" => O2.get_or_init(|| tiktoken_rs::o200k_base().unwrap()),
        _ => CL.get_or_init(|| tiktoken_rs::cl100k_base().unwrap()),
    };
    bpe.encode_with_special_tokens(text).len()
}

// ---------------------------------------------------------------------------------------------
// A reference BM25 over entity title + description, with statistics of the whole collection.

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "has", "have",
    "he", "her", "his", "how", "in", "is", "it", "its", "of", "on", "or", "she", "that", "the",
    "their", "them", "they", "this", "to", "was", "were", "what", "when", "where", "which", "who",
    "whom", "why", "with",
];

fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// (id, score) best first, only documents with at least one query term.
fn bm25(docs: &[(String, String)], query: &str) -> Vec<(String, f64)> {
    let (k1, b) = (1.2, 0.75);
    let toks: Vec<Vec<String>> = docs.iter().map(|(_, t)| terms(t)).collect();
    let n = docs.len() as f64;
    let avgdl = toks.iter().map(Vec::len).sum::<usize>() as f64 / n;
    let q: BTreeSet<String> = terms(query).into_iter().collect();
    let mut out = Vec::new();
    for (i, (id, _)) in docs.iter().enumerate() {
        let dl = toks[i].len() as f64;
        let mut score = 0.0;
        for t in &q {
            let tf = toks[i].iter().filter(|w| *w == t).count() as f64;
            if tf == 0.0 {
                continue;
            }
            let df = toks.iter().filter(|d| d.contains(t)).count() as f64;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            score += idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * dl / avgdl));
        }
        if score > 0.0 {
            out.push((id.clone(), score));
        }
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// A crude stem (the server's full-text index stems words): without -ing, -ed, -es, -s.
fn stem(word: &str) -> String {
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(base) = word.strip_suffix(suffix) {
            if base.chars().count() >= 3 {
                return base.to_string();
            }
        }
    }
    word.to_string()
}

fn title_case(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let lower = w.to_lowercase();
            let mut c = lower.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// The context text.

const SECTIONS: [(&str, &str, &str); 4] = [
    ("community_reports", "-----Reports-----", "id|title|content"),
    (
        "entities",
        "-----Entities-----",
        "id|entity|description|number of relationships",
    ),
    (
        "relations",
        "-----Relationships-----",
        "id|source|target|description|weight",
    ),
    ("text_units", "-----Sources-----", "id|text"),
];

/// The first line of `s`, at most `n` characters (a key to find a row by).
fn row_key(s: &str, n: usize) -> String {
    s.trim_start()
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(n)
        .collect()
}

/// Checks the section layout of `context_text` against the rows of the answer.
fn check_context(f: &mut Failures, label: &str, ans: &Value) {
    let Some(text) = ans["context_text"].as_str() else {
        f.fail(format!("{label}: no context_text: {}", short(ans)));
        return;
    };
    // Header positions (a header is a whole line).
    let mut found: Vec<(usize, usize)> = Vec::new(); // (section index, byte offset)
    for (k, (_, header, _)) in SECTIONS.iter().enumerate() {
        let hits: Vec<usize> = text
            .match_indices(header)
            .map(|(p, _)| p)
            .filter(|&p| p == 0 || text[..p].ends_with('\n'))
            .collect();
        let rows = ans[SECTIONS[k].0].as_array().map(Vec::len).unwrap_or(0);
        f.check(hits.len() == usize::from(rows > 0), || {
            format!(
                "{label}: context_text has {} '{header}' header(s) but the answer lists {rows} {} rows (a section is present exactly when it has rows): {}",
                hits.len(),
                SECTIONS[k].0,
                short(&json!(text))
            )
        });
        if let Some(&p) = hits.first() {
            found.push((k, p));
        }
    }
    let order_ok = found.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
    f.check(order_ok, || {
        format!("{label}: context_text sections out of order (want Reports, Entities, Relationships, Sources): {found:?}")
    });
    if !text.is_empty() {
        f.check(found.first().map(|x| x.1) == Some(0), || {
            format!(
                "{label}: context_text does not start with a section header: {}",
                short(&json!(text))
            )
        });
    }
    for (i, &(k, start)) in found.iter().enumerate() {
        let end = found.get(i + 1).map(|x| x.1).unwrap_or(text.len());
        let section = &text[start..end];
        let (key, header, columns) = SECTIONS[k];
        if i + 1 < found.len() {
            f.check(section.ends_with("\n\n"), || {
                format!("{label}: section {header} is not followed by a blank line")
            });
        }
        let mut lines = section.lines();
        lines.next();
        let cols = lines.next().unwrap_or("");
        f.check(cols == columns, || {
            format!("{label}: section {header}: column line {cols:?}, want {columns:?}")
        });
        // Each row, in the answer's order, found in turn.
        let mut pos = header.len();
        for row in ans[key].as_array().into_iter().flatten() {
            let needle = match key {
                "community_reports" => row_key(row["title"].as_str().unwrap_or(""), 40),
                "entities" => row_key(row["title"].as_str().unwrap_or(""), 40),
                "relations" => row_key(row["description"].as_str().unwrap_or(""), 40),
                _ => row_key(row["text"].as_str().unwrap_or(""), 40),
            };
            if needle.chars().count() < 4 {
                continue;
            }
            match section[pos..].find(&needle) {
                Some(p) => pos += p + needle.len(),
                None => {
                    f.fail(format!(
                        "{label}: section {header}: row {} ({needle:?}) not found after offset {pos} (rows must appear in the answer's order)",
                        row["id"]
                    ));
                    break;
                }
            }
        }
    }
}

/// Checks what every 200 answer must satisfy: tokens, budget, layout, shards.
fn check_common(f: &mut Failures, label: &str, body: &Value, status: u16, ans: &Value) -> bool {
    if !f.check(status == 200, || {
        format!("{label}: {body}: expected 200, got {status} {}", short(ans))
    }) {
        return false;
    }
    let mode = body["mode"].as_str().unwrap_or("local");
    f.check(ans["mode"] == mode, || {
        format!("{label}: mode {} in the answer, asked {mode}", ans["mode"])
    });
    let budget = body["max_tokens"].as_u64().unwrap_or(12_000);
    let tokenizer = body["tokenizer"].as_str().unwrap_or("cl100k_base");
    let text = ans["context_text"].as_str().unwrap_or("");
    let counted = count_tokens(tokenizer, text) as u64;
    let total = ans["tokens"]["total"].as_u64();
    f.check(
        total == Some(counted)
            && counted <= budget
            && ans["tokens"]["budget"] == budget
            && ans["tokens"]["tokenizer"] == tokenizer,
        || {
            format!(
                "{label}: {body}: tokens {} but context_text has {counted} {tokenizer} tokens; budget {budget}",
                ans["tokens"]
            )
        },
    );
    f.check(shards_clean(ans), || {
        format!("{label}: {body}: _shards not whole: {}", ans["_shards"])
    });
    check_context(f, label, ans);
    true
}

// ---------------------------------------------------------------------------------------------
// Dulce: what a local answer must hold, computed from the parquet files.

/// Tokens of `text` as a row of the context (its text and about 20 tokens of row layout).
fn row_tokens(text: &str) -> u64 {
    count_tokens("cl100k_base", text) as u64 + 20
}

/// Each item's index in `items`, by its id.
fn index_by_id<T>(items: &[T], id: impl Fn(&T) -> &String) -> HashMap<String, usize> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| (id(item).clone(), i))
        .collect()
}

struct Dulce {
    batch: Batch,
    ent: HashMap<String, usize>,
    chunk: HashMap<String, usize>,
    /// Undirected adjacency (stubs included), relation indexes.
    adj: HashMap<String, Vec<usize>>,
    docs: Vec<(String, String)>,
}

impl Dulce {
    /// Each community report of a retrieval answer with the data's community of the same id
    /// (reports of no such community left out).
    fn reported_communities<'a>(
        &'a self,
        ans: &'a Value,
    ) -> impl Iterator<Item = (&'a Value, &'a Community)> + 'a {
        ans["community_reports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let c = self
                    .batch
                    .communities
                    .iter()
                    .find(|c| r["id"] == c.id.as_str());
                c.map(|c| (r, c))
            })
    }

    fn load() -> Dulce {
        let batch = torua::cmd::import::read_folder(&dulce_dir()).unwrap();
        let ent = index_by_id(&batch.entities, |e| &e.id);
        let chunk = index_by_id(&batch.chunks, |c| &c.id);
        let mut adj: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in batch.relations.iter().enumerate() {
            adj.entry(r.source.clone()).or_default().push(i);
            if r.target != r.source {
                adj.entry(r.target.clone()).or_default().push(i);
            }
        }
        let docs = batch
            .entities
            .iter()
            .map(|e| (e.id.clone(), format!("{} {}", e.title, e.description)))
            .collect();
        Dulce {
            batch,
            ent,
            chunk,
            adj,
            docs,
        }
    }

    /// The community report `id`, and its tokens as a context row.
    fn report(&self, id: &str) -> (&Community, u64) {
        let c = self.batch.communities.iter().find(|c| c.id == id).unwrap();
        (c, row_tokens(&c.full_content))
    }

    fn degree(&self, id: &str) -> i64 {
        self.ent
            .get(id)
            .map(|&i| self.batch.entities[i].degree)
            .unwrap_or(0)
    }

    /// Entity id -> hop, within `hops` of the seeds, both directions.
    fn neighbourhood(&self, seeds: &[String], hops: u64) -> BTreeMap<String, u64> {
        let mut seen: BTreeMap<String, u64> = seeds.iter().map(|s| (s.clone(), 0)).collect();
        let mut frontier: Vec<String> = seeds.to_vec();
        for hop in 1..=hops {
            let mut next = Vec::new();
            for id in &frontier {
                for &r in self.adj.get(id).into_iter().flatten() {
                    let r = &self.batch.relations[r];
                    let other = if &r.source == id {
                        &r.target
                    } else {
                        &r.source
                    };
                    if !seen.contains_key(other) {
                        seen.insert(other.clone(), hop);
                        next.push(other.clone());
                    }
                }
            }
            frontier = next;
        }
        seen
    }
}

/// Checks a local answer against the data. `full` is the answer with everything in budget (for a
/// smaller budget: every list must be a prefix of the full one). Returns the seed ids.
fn check_local(
    f: &mut Failures,
    d: &Dulce,
    label: &str,
    body: &Value,
    ans: &Value,
    full: Option<&Value>,
) -> Vec<String> {
    let query = body["query"].as_str().unwrap_or("");
    let hops = body["hops"].as_u64().unwrap_or(1);
    let top_k = body["top_k"].as_u64().unwrap_or(10) as usize;
    let budget = body["max_tokens"].as_u64().unwrap_or(12_000);
    let include: Vec<&str> = body["include"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_else(|| vec!["entities", "relations", "text_units", "community_reports"]);
    let ctx = format!("{label}: {body}");

    // Seeds: BM25 only (no embeddings) over titles and over title + description, fused by
    // reciprocal rank (score = sum over the lists of 1/(60 + rank)), best first, ties by id.
    let seeds: Vec<Value> = ans["seeds"].as_array().cloned().unwrap_or_default();
    let seed_ids: Vec<String> = ids(ans, "seeds");
    f.check(!seeds.is_empty() && seeds.len() <= top_k, || {
        format!(
            "{ctx}: expected 1..={top_k} seeds, got {}",
            short(&ans["seeds"])
        )
    });
    let words: Vec<String> = terms(query);
    let mut score_of: HashMap<String, f64> = HashMap::new();
    let mut prev: Option<(f64, String)> = None;
    for (i, s) in seeds.iter().enumerate() {
        let id = s["id"].as_str().unwrap_or("");
        score_of.insert(id.to_string(), s["score"].as_f64().unwrap_or(f64::NAN));
        let rrf: f64 = ["title_rank", "bm25_rank"]
            .iter()
            .filter_map(|k| s[*k].as_u64())
            .map(|r| 1.0 / (RRF_K + r as f64))
            .sum();
        let score = s["score"].as_f64().unwrap_or(-1.0);
        f.check(
            (s["bm25_rank"].is_u64() || s["title_rank"].is_u64())
                && s["vector_rank"].is_null()
                && (score - rrf).abs() < 1e-9,
            || format!("{ctx}: seed {i} {s}: a text-only seed has a title_rank and/or bm25_rank, no vector_rank, and score = sum of 1/(60 + rank)"),
        );
        f.check(
            prev.as_ref()
                .is_none_or(|p| p.0 > score || (p.0 == score && p.1.as_str() < id)),
            || format!("{ctx}: seed {i} {s}: seeds are ordered by score desc, then id (after {prev:?})"),
        );
        prev = Some((score, id.to_string()));
        match d.ent.get(id) {
            Some(&e) => {
                let e = &d.batch.entities[e];
                let text = format!("{} {}", e.title, e.description).to_lowercase();
                let hit = words.iter().any(|w| text.contains(&stem(w)));
                f.check(hit, || {
                    format!(
                        "{ctx}: seed {id} ({}) contains none of the query words {words:?}",
                        e.title
                    )
                });
            }
            None => f.fail(format!(
                "{ctx}: seed {id} is not an entity of the data (a stub?)"
            )),
        }
    }

    // Entities: seeds by score, then expanded entities by (hop, degree desc, id), each as in the data.
    let expected_hops = d.neighbourhood(&seed_ids, hops);
    let ents: Vec<Value> = ans["entities"].as_array().cloned().unwrap_or_default();
    let ent_ids = ids(ans, "entities");
    let mut prev: Option<(u64, i64, String)> = None;
    for (i, e) in ents.iter().enumerate() {
        let id = e["id"].as_str().unwrap_or("").to_string();
        if i < seed_ids.len() {
            f.check(
                id == seed_ids[i] && e["hop"] == 0 && e["score"].as_f64() == score_of.get(&id).copied(),
                || format!("{ctx}: entity row {i} {}: the seeds come first, in seed order, with hop 0 and their score (seeds {seed_ids:?})", short(e)),
            );
        } else {
            let hop = e["hop"].as_u64().unwrap_or(99);
            let key = (hop, -e["degree"].as_i64().unwrap_or(0), id.clone());
            f.check(
                e["score"].is_null()
                    && hop >= 1
                    && Some(&hop) == expected_hops.get(&id)
                    && prev.as_ref().is_none_or(|p| *p < key),
                || format!("{ctx}: expanded entity row {i} {}: expected score null, hop {:?} (from the data) and order by (hop, degree desc, id) after {prev:?}", short(e), expected_hops.get(&id)),
            );
            prev = Some(key);
        }
        if let Some(&k) = d.ent.get(&id) {
            let want = &d.batch.entities[k];
            f.check(
                e["title"] == want.title.as_str()
                    && e["type"] == want.kind.as_str()
                    && e["description"] == want.description.as_str()
                    && e["degree"] == want.degree,
                || format!("{ctx}: entity {id}: {} differs from the data (title {:?}, type {:?}, degree {})", short(e), want.title, want.kind, want.degree),
            );
        }
    }
    if !include.contains(&"entities") {
        f.check(ents.is_empty(), || {
            format!("{ctx}: entities not included but listed")
        });
    }
    let listed: HashSet<&String> = ent_ids.iter().collect();

    // Relations: each as in the data, ranked (relations of the best-ranked seed first, then
    // between two seeds first, weight desc, degree sum desc, id).
    let seed_set: HashSet<&String> = seed_ids.iter().collect();
    let rels: Vec<Value> = ans["relations"].as_array().cloned().unwrap_or_default();
    let rel_ids = ids(ans, "relations");
    let by_id: HashMap<&str, &torua::graph::model::Relation> = d
        .batch
        .relations
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();
    let seed_pos = |id: &String| seed_ids.iter().position(|x| x == id).unwrap_or(usize::MAX);
    let mut prev: Option<(usize, bool, f64, i64, String)> = None;
    for (i, r) in rels.iter().enumerate() {
        let id = r["id"].as_str().unwrap_or("");
        let Some(want) = by_id.get(id) else {
            f.fail(format!(
                "{ctx}: relation row {i} {} is not in the data",
                short(r)
            ));
            continue;
        };
        f.check(
            r["source"] == want.source.as_str()
                && r["target"] == want.target.as_str()
                && r["weight"].as_f64() == Some(want.weight)
                && r["description"] == want.description.as_str(),
            || format!("{ctx}: relation {id}: {} differs from the data", short(r)),
        );
        let s = want.source.clone();
        let t = want.target.clone();
        // A relation touches a seed or lies inside the neighbourhood; with hops 0 (README: seeds
        // only, no relations) there are none.
        let touches_seed = seed_set.contains(&s) || seed_set.contains(&t);
        let inside = expected_hops.contains_key(&s) && expected_hops.contains_key(&t);
        f.check(hops > 0 && (touches_seed || inside), || {
            format!("{ctx}: relation {id} ({s} -> {t}) neither touches a seed nor lies inside the neighbourhood of {hops} hops (with hops 0: no relations at all)")
        });
        let key = (
            seed_pos(&s).min(seed_pos(&t)),
            !(seed_set.contains(&s) && seed_set.contains(&t)),
            -want.weight,
            -(d.degree(&s) + d.degree(&t)),
            id.to_string(),
        );
        if let Some(p) = &prev {
            let ord =
                p.0.cmp(&key.0)
                    .then(p.1.cmp(&key.1))
                    .then(p.2.total_cmp(&key.2))
                    .then(p.3.cmp(&key.3))
                    .then(p.4.cmp(&key.4));
            f.check(ord == std::cmp::Ordering::Less, || {
                format!("{ctx}: relation row {i} {id} {key:?} out of order after {p:?} (want: best seed endpoint first, between seeds first, weight desc, degree sum desc, id)")
            });
        }
        prev = Some(key);
    }
    if !include.contains(&"relations") {
        f.check(rels.is_empty(), || {
            format!("{ctx}: relations not included but listed")
        });
    }

    // Text units: the chunks named by the seeds, by summed seed score desc, then id.
    let mut tu_score: BTreeMap<String, f64> = BTreeMap::new();
    for s in &seed_ids {
        if let Some(&k) = d.ent.get(s) {
            for t in &d.batch.entities[k].text_unit_ids {
                if d.chunk.contains_key(t) {
                    *tu_score.entry(t.clone()).or_default() += score_of[s];
                }
            }
        }
    }
    let mut tu_expected: Vec<(String, f64)> = tu_score.into_iter().collect();
    tu_expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut tu_expected: Vec<String> = tu_expected.into_iter().map(|x| x.0).collect();
    if body["mode"] == "hybrid" {
        // Hybrid: the seeds' text units and the chunks found by the query fused by rank.
        let found = ids(ans, "chunk_seeds");
        let mut fused: BTreeMap<String, f64> = BTreeMap::new();
        for list in [&tu_expected, &found] {
            for (r, id) in list.iter().enumerate() {
                *fused.entry(id.clone()).or_default() += 1.0 / (RRF_K + (r + 1) as f64);
            }
        }
        let mut fused: Vec<(String, f64)> = fused.into_iter().collect();
        fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        tu_expected = fused.into_iter().map(|x| x.0).collect();
    }
    let tu_ids = ids(ans, "text_units");
    if include.contains(&"text_units") {
        f.check(is_prefix(&tu_ids, &tu_expected), || {
            format!("{ctx}: text units {tu_ids:?} are not a prefix of the seeds' text units ranked by summed seed score {tu_expected:?}")
        });
    } else {
        f.check(tu_ids.is_empty(), || {
            format!("{ctx}: text units not included but listed")
        });
    }
    for t in ans["text_units"].as_array().into_iter().flatten() {
        if let Some(&k) = d.chunk.get(t["id"].as_str().unwrap_or("")) {
            let c = &d.batch.chunks[k];
            f.check(
                t["text"] == c.text.as_str()
                    && t["n_tokens"] == c.n_tokens
                    && t["document_id"] == c.document_id.as_str(),
                || format!("{ctx}: text unit {} differs from the data", c.id),
            );
        }
    }

    // Community reports: those holding seed entities, by how many (desc), rank desc, id. (The README
    // says seed entities, as GraphRAG's local search does; the first draft of the spec said seed or
    // expanded entities.)
    let mut reports: Vec<(usize, f64, String)> = Vec::new();
    for c in &d.batch.communities {
        let matches = c
            .entity_ids
            .iter()
            .filter(|e| seed_set.contains(*e))
            .count();
        if matches > 0 {
            reports.push((matches, c.rank, c.id.clone()));
        }
    }
    reports.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    let cr_ids = ids(ans, "community_reports");
    if include.contains(&"community_reports") {
        // One message per request: the ranking with the match counts.
        let got: Vec<(u64, f64, String)> = ans["community_reports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["matches"].as_u64().unwrap_or(u64::MAX),
                    r["rank"].as_f64().unwrap_or(f64::NAN),
                    r["id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want: Vec<(u64, f64, String)> = reports
            .iter()
            .map(|(m, r, id)| (*m as u64, *r, id.clone()))
            .collect();
        let complete = full.is_none();
        let ok = if complete {
            got == want
        } else {
            got.len() <= want.len() && got[..] == want[..got.len()]
        };
        f.check(ok, || {
            format!(
                "{ctx}: community reports (matches, rank, id) {got:?}; expected {} {want:?} (matches = seed entities in the report's entity_ids)",
                if complete { "all of" } else { "a prefix of" }
            )
        });
    } else {
        f.check(cr_ids.is_empty(), || {
            format!("{ctx}: reports not included but listed")
        });
    }
    for (r, c) in d.reported_communities(ans) {
        let content = if c.full_content.is_empty() {
            &c.summary
        } else {
            &c.full_content
        };
        f.check(
            r["content"] == content.as_str()
                && r["title"] == c.title.as_str()
                && r["level"] == c.level
                && r["rank"].as_f64() == Some(c.rank),
            || {
                format!(
                    "{ctx}: report {}: {} differs from the data",
                    c.id,
                    short(&json!({"title": r["title"], "level": r["level"], "rank": r["rank"]}))
                )
            },
        );
    }

    // Budget shares: reports at most 25 %.
    let reports_tokens = ans["tokens"]["community_reports"].as_u64().unwrap_or(0);
    f.check(reports_tokens <= budget / 4 + 1, || {
        format!("{ctx}: reports use {reports_tokens} tokens, more than 25 % of {budget}")
    });

    match full {
        // Everything fits: complete lists.
        None => {
            if include.contains(&"entities") {
                let want: BTreeSet<&String> = expected_hops.keys().collect();
                let got: BTreeSet<&String> = ent_ids.iter().collect();
                let stubs: BTreeSet<&String> = want
                    .iter()
                    .copied()
                    .filter(|id| !d.ent.contains_key(*id))
                    .collect();
                // Stubs (relation ends that are not entities of the data) may be left out.
                let ok = got.is_subset(&want) && want.difference(&got).all(|x| stubs.contains(x));
                f.check(ok, || {
                    format!("{ctx}: entities: missing {:?}, unexpected {:?} (neighbourhood within {hops} hops from the data)",
                        want.difference(&got).collect::<Vec<_>>(), got.difference(&want).collect::<Vec<_>>())
                });
            }
            if include.contains(&"relations") && hops > 0 {
                let have: HashSet<&String> = rel_ids.iter().collect();
                let missing: Vec<&String> = d
                    .batch
                    .relations
                    .iter()
                    .filter(|r| seed_set.contains(&r.source) || seed_set.contains(&r.target))
                    .map(|r| &r.id)
                    .filter(|id| !have.contains(id))
                    .collect();
                f.check(missing.is_empty(), || {
                    format!("{ctx}: relations of the seeds missing with everything in budget: {missing:?}")
                });
                if include.contains(&"entities") {
                    for r in &d.batch.relations {
                        if have.contains(&r.id) {
                            let ends_listed = (listed.contains(&r.source)
                                || !d.ent.contains_key(&r.source))
                                && (listed.contains(&r.target) || !d.ent.contains_key(&r.target));
                            f.check(ends_listed, || {
                                format!("{ctx}: relation {} lists an end that is not among the entities", r.id)
                            });
                        }
                    }
                }
            }
            if include.contains(&"text_units") {
                f.check(tu_ids == tu_expected, || {
                    format!("{ctx}: text units {tu_ids:?}, expected all of {tu_expected:?}")
                });
            }
        }
        // A smaller budget: prefixes of the complete lists, cut only where the next row does not fit.
        Some(full) => {
            for key in ["entities", "relations", "text_units", "community_reports"] {
                let (got, all) = (ids(ans, key), ids(full, key));
                f.check(is_prefix(&got, &all), || {
                    format!("{ctx}: {key} {got:?} are not a prefix of the same request's {key} with everything in budget {all:?}")
                });
            }
            let total = ans["tokens"]["total"].as_u64().unwrap_or(0);
            let left = budget.saturating_sub(total);
            // The first text unit left out would have fitted in what is left: wrong.
            let tu_full = ids(full, "text_units");
            if include.contains(&"text_units") && tu_ids.len() < tu_full.len() {
                let next = &d.batch.chunks[d.chunk[&tu_full[tu_ids.len()]]];
                let need = row_tokens(&next.text);
                f.check(need > left, || {
                    format!("{ctx}: text unit {} ({need} tokens with its row) was left out with {left} tokens of the budget unused", next.id)
                });
            }
            let cr_full = ids(full, "community_reports");
            if include.contains(&"community_reports") && cr_ids.len() < cr_full.len() {
                let (c, need) = d.report(&cr_full[cr_ids.len()]);
                let share_left = (budget / 4).saturating_sub(reports_tokens);
                f.check(need > share_left, || {
                    format!("{ctx}: report {} ({need} tokens with its row) was left out with {share_left} tokens of the reports' 25 % unused", c.id)
                });
            }
        }
    }
    seed_ids
}

// ---------------------------------------------------------------------------------------------
// 1. Dulce.

#[test]
fn dulce_local_global_naive_answers_match_the_data_on_every_node() {
    let started = Instant::now();
    let [three, one] = green_clusters([(3, 0), (1, 0)]);
    import(&three.node(1).url(""));
    import(&one.node(0).url(""));
    three.wait_applied(0, SETTLE).unwrap();
    one.wait_applied(0, SETTLE).unwrap();
    eprintln!(
        "clusters up, Dulce imported: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let d = Dulce::load();
    let mut f = Failures::default();

    // Every request here is asked of every node of both clusters: the answers must agree.
    let mut asked: Vec<(String, Value, Value)> = Vec::new(); // (label, body, node-1's answer)
    let mut ask = |f: &mut Failures, label: &str, body: Value| -> (u16, Value) {
        f.cases += 1;
        let (status, ans) = retrieve(three.node(0), &body);
        asked.push((label.to_string(), body, ans.clone()));
        (status, ans)
    };

    // The characters with most relations, each asked about by name.
    let mut persons: Vec<&torua::graph::model::Entity> = d
        .batch
        .entities
        .iter()
        .filter(|e| e.kind == "PERSON")
        .collect();
    persons.sort_by(|a, b| b.degree.cmp(&a.degree).then(a.title.cmp(&b.title)));
    for p in persons.iter().take(4) {
        let question = format!("Who is {}?", title_case(&p.title));
        let reference = bm25(&d.docs, &question);
        let shown: Vec<String> = reference
            .iter()
            .take(4)
            .map(|(id, s)| format!("{} {s:.2}", d.batch.entities[d.ent[id]].title))
            .collect();
        // First by a clear margin in a BM25 over the whole collection: the answer must agree.
        let clear_first = reference.first().is_some_and(|x| x.0 == p.id)
            && reference
                .get(1)
                .is_none_or(|x| reference[0].1 >= 1.15 * x.1);
        eprintln!("{question} reference BM25: {shown:?}; clearly first there: {clear_first}");

        let body = json!({"query": question, "mode": "local", "max_tokens": ALL});
        let (status, full) = ask(&mut f, "local, everything in budget", body.clone());
        if !check_common(&mut f, "local", &body, status, &full) {
            continue;
        }
        let seeds = check_local(&mut f, &d, "local", &body, &full, None);
        // Named by its title: first, whatever the shards' BM25 statistics (the title search
        // ranks it first and fusion adds its text rank).
        f.check(seeds.first() == Some(&p.id), || {
            let titles: Vec<&str> = seeds
                .iter()
                .map(|id| {
                    d.ent
                        .get(id)
                        .map(|&i| d.batch.entities[i].title.as_str())
                        .unwrap_or(id)
                })
                .collect();
            format!(
                "{body}: {} is named by the question but the seeds are {titles:?} \
                 (reference BM25 over the whole collection: {shown:?})",
                p.title
            )
        });
        // The default budget: prefixes of the full lists, the character's heaviest relations kept.
        let small = json!({"query": question});
        let (status, ans) = ask(&mut f, "local, default budget", small.clone());
        if check_common(&mut f, "local default budget", &small, status, &ans) {
            check_local(
                &mut f,
                &d,
                "local default budget",
                &small,
                &ans,
                Some(&full),
            );
            if seeds.first() == Some(&p.id) {
                let mut own: Vec<&torua::graph::model::Relation> = d
                    .batch
                    .relations
                    .iter()
                    .filter(|r| r.source == p.id || r.target == p.id)
                    .collect();
                own.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.id.cmp(&b.id)));
                let got = ids(&ans, "relations");
                let top: Vec<&String> = own.iter().take(3).map(|r| &r.id).collect();
                f.check(top.iter().all(|id| got.contains(id)), || {
                    format!("{small}: the 3 heaviest relations of {} {top:?} are not all in relations {got:?}", p.title)
                });
                f.check(
                    p.text_unit_ids
                        .iter()
                        .any(|t| ids(&ans, "text_units").contains(t)),
                    || {
                        format!(
                            "{small}: none of {}'s text units {:?} made it into text_units {:?}",
                            p.title,
                            p.text_unit_ids,
                            ids(&ans, "text_units")
                        )
                    },
                );
            }
        }
    }

    // Several characters in one question: each of them a seed; 2 and 0 hops; some sections only;
    // another tokenizer; a budget that cuts every section.
    let two = json!({"query": "Alex Mercer and Jordan Hayes", "top_k": 10, "max_tokens": ALL});
    let (status, ans) = ask(&mut f, "two characters", two.clone());
    if check_common(&mut f, "two characters", &two, status, &ans) {
        let seeds = check_local(&mut f, &d, "two characters", &two, &ans, None);
        for title in ["ALEX MERCER", "JORDAN HAYES"] {
            let id = &d
                .batch
                .entities
                .iter()
                .find(|e| e.title == title)
                .unwrap()
                .id;
            f.check(seeds.contains(id), || {
                format!("{two}: {title} not among the seeds {seeds:?}")
            });
        }
    }
    for (label, body) in [
        (
            "hops 2",
            json!({"query": "Who is Taylor Cruz?", "hops": 2, "max_tokens": ALL}),
        ),
        (
            "hops 0",
            json!({"query": "Who is Taylor Cruz?", "hops": 0, "max_tokens": ALL}),
        ),
        (
            "top_k 3",
            json!({"query": "mainframe room machinery", "top_k": 3, "max_tokens": ALL}),
        ),
        (
            "entities only",
            json!({"query": "Who is Taylor Cruz?", "include": ["entities"], "max_tokens": ALL}),
        ),
        (
            "relations and sources",
            json!({"query": "Who is Taylor Cruz?", "include": ["relations", "text_units"], "max_tokens": ALL}),
        ),
        (
            "o200k_base",
            json!({"query": "Who is Taylor Cruz?", "tokenizer": "o200k_base", "max_tokens": ALL}),
        ),
        (
            "hybrid",
            json!({"query": "Sam Rivera and the surveillance drone", "mode": "hybrid", "max_tokens": ALL}),
        ),
    ] {
        let (status, ans) = ask(&mut f, label, body.clone());
        if check_common(&mut f, label, &body, status, &ans) {
            check_local(&mut f, &d, label, &body, &ans, None);
        }
    }
    for mode in ["local", "hybrid"] {
        let full_body = json!({"query": "Who is Sam Rivera?", "mode": mode, "max_tokens": ALL});
        let (_, full) = retrieve(three.node(0), &full_body);
        for budget in [100u64, 1500, 4000] {
            let body = json!({"query": "Who is Sam Rivera?", "mode": mode, "max_tokens": budget});
            let (status, ans) = ask(&mut f, "small budget", body.clone());
            if check_common(&mut f, "small budget", &body, status, &ans) {
                check_local(&mut f, &d, "small budget", &body, &ans, Some(&full));
            }
        }
    }

    // Global: the reports by rank desc, then id, of one level if asked, fitted to the whole budget.
    let mut all_reports: Vec<&Community> = d.batch.communities.iter().collect();
    all_reports.sort_by(|a, b| b.rank.total_cmp(&a.rank).then(a.id.cmp(&b.id)));
    for (label, body, level) in [
        (
            "global",
            json!({"query": "What are the main themes?", "mode": "global", "max_tokens": ALL}),
            None,
        ),
        (
            "global level 1",
            json!({"query": "What are the main themes?", "mode": "global", "community_level": 1, "max_tokens": ALL}),
            Some(1),
        ),
        (
            "global default budget",
            json!({"query": "What are the main themes?", "mode": "global"}),
            None,
        ),
        (
            "global 2000",
            json!({"query": "What are the main themes?", "mode": "global", "max_tokens": 2000}),
            None,
        ),
    ] {
        let (status, ans) = ask(&mut f, label, body.clone());
        if !check_common(&mut f, label, &body, status, &ans) {
            continue;
        }
        let want: Vec<String> = all_reports
            .iter()
            .filter(|c| level.is_none_or(|l| c.level == l))
            .map(|c| c.id.clone())
            .collect();
        let got = ids(&ans, "community_reports");
        let budget = body["max_tokens"].as_u64().unwrap_or(12_000);
        let complete = budget == ALL;
        f.check(
            if complete {
                got == want
            } else {
                is_prefix(&got, &want) && !got.is_empty()
            },
            || {
                format!(
                    "{label} {body}: reports {got:?}, expected {} {want:?} (rank desc, then id)",
                    if complete {
                        "all of"
                    } else {
                        "a non-empty prefix of"
                    }
                )
            },
        );
        if !complete && got.len() < want.len() {
            let (c, need) = d.report(&want[got.len()]);
            let left = budget - ans["tokens"]["total"].as_u64().unwrap_or(0);
            f.check(need > left, || {
                format!(
                    "{label} {body}: report {} ({need} tokens) left out with {left} tokens unused",
                    c.id
                )
            });
        }
        for key in ["entities", "relations", "text_units"] {
            f.check(ids(&ans, key).is_empty(), || {
                format!("{label}: global mode lists {key}: {:?}", ids(&ans, key))
            });
        }
        for (r, c) in d.reported_communities(&ans) {
            f.check(
                r["content"] == c.full_content.as_str()
                    && r["rank"].as_f64() == Some(c.rank)
                    && r["level"] == c.level,
                || format!("{label}: report {} differs from the data", c.id),
            );
        }
    }

    // Naive: chunks by BM25 over their text; a word found in one chunk only finds that chunk first.
    let lower: Vec<String> = d
        .batch
        .chunks
        .iter()
        .map(|c| c.text.to_lowercase())
        .collect();
    for (label, query) in [
        ("naive rare word", "poker"),
        ("naive question", "Martians playing poker"),
        ("naive words", "elevator descent shaft"),
    ] {
        let body = json!({"query": query, "mode": "naive", "max_tokens": ALL});
        let (status, ans) = ask(&mut f, label, body.clone());
        if !check_common(&mut f, label, &body, status, &ans) {
            continue;
        }
        let words = terms(query);
        let got = ids(&ans, "text_units");
        // A chunk the full-text index may match holds a word sharing the query word's stem (a
        // prefix, leniently: "elevator" and "elevate" share "elev"); a chunk holding the word
        // itself must be matched.
        let loose = |w: &str| -> BTreeSet<usize> {
            let st = stem(w);
            let keep = (st.chars().count().saturating_sub(3)).max(4);
            let prefix: String = st.chars().take(keep).collect();
            (0..lower.len())
                .filter(|&i| lower[i].contains(&prefix))
                .collect()
        };
        let exact = |w: &str| -> BTreeSet<usize> {
            (0..lower.len())
                .filter(|&i| lower[i].split(|c: char| !c.is_alphabetic()).any(|x| x == w))
                .collect()
        };
        let any: BTreeSet<String> = words
            .iter()
            .flat_map(|w| loose(w))
            .map(|i| d.batch.chunks[i].id.clone())
            .collect();
        f.check(!got.is_empty() && got.iter().all(|id| any.contains(id)), || {
            format!("{label} {body}: text units {got:?} must be non-empty and each contain a query word; the chunks that may are {any:?}")
        });
        let must: BTreeSet<String> = words
            .iter()
            .flat_map(|w| exact(w))
            .map(|i| d.batch.chunks[i].id.clone())
            .collect();
        f.check(must.iter().all(|id| got.contains(id)), || {
            format!(
                "{label} {body}: chunks {must:?} contain a query word but the answer lists {got:?}"
            )
        });
        if words.len() == 1 && loose(&words[0]).len() == 1 {
            let only = &d.batch.chunks[*loose(&words[0]).iter().next().unwrap()].id;
            f.check(got.first() == Some(only), || {
                format!("{label} {body}: only chunk {only} contains {:?}: it must come first, got {got:?}", words[0])
            });
        }
        let chunk_seeds = ids(&ans, "chunk_seeds");
        f.check(is_prefix(&got, &chunk_seeds) || got == chunk_seeds, || {
            format!("{label}: text units {got:?} are not the chunk seeds {chunk_seeds:?} in order")
        });
        for key in ["entities", "relations", "community_reports"] {
            f.check(ids(&ans, key).is_empty(), || {
                format!("{label}: naive mode lists {key}: {:?}", ids(&ans, key))
            });
        }
    }

    // The same answers from every node of both clusters.
    for (label, body, first) in &asked {
        let want = projection(first);
        for node in [three.node(1), three.node(2), one.node(0)] {
            let (status, ans) = retrieve(node, body);
            let got = projection(&ans);
            f.check(status == 200 && got == want, || {
                format!(
                    "{label} {body}: {} ({}) answered {status} {} but node-1 of the 3-node cluster {}",
                    node.id,
                    node.ip,
                    short(&got),
                    short(&want)
                )
            });
        }
    }
    // The command line: the same context as the API, JSON with --json, a reason on a bad request.
    f.cases += 1;
    let cli = |args: &[&str]| {
        Command::new(torua_bin())
            .arg("retrieve")
            .args(args)
            .args(["--url", &three.node(2).url("")])
            .output()
            .unwrap()
    };
    let question = "Who is Taylor Cruz?";
    let (_, api) = retrieve(three.node(0), &json!({"query": question}));
    let out = cli(&[question]);
    let printed = String::from_utf8_lossy(&out.stdout);
    f.check(
        out.status.success()
            && printed.trim_end() == api["context_text"].as_str().unwrap_or("?").trim_end(),
        || {
            format!(
                "torua retrieve {question:?} printed something else than context_text: {:?} / {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        },
    );
    let out = cli(&[question, "--json", "--mode", "global"]);
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    f.check(out.status.success() && parsed["mode"] == "global", || {
        format!(
            "torua retrieve --json --mode global: {:?} {}",
            out.status,
            short(&parsed)
        )
    });
    let out = cli(&[question, "--mode", "deep"]);
    let err = String::from_utf8_lossy(&out.stderr);
    f.check(
        out.status.code() == Some(1) && err.contains("400") && err.contains("unknown mode"),
        || format!("torua retrieve --mode deep: {:?} {err}", out.status),
    );
    f.finish("dulce retrieve", started);
}

// ---------------------------------------------------------------------------------------------
// 2. Vector seeds.

const DIM: usize = 16;

/// Exact top-k by cosine over the live entities (ties by id).
fn brute_top(live: &BTreeMap<String, Vec<f32>>, q: &[f32], k: usize) -> Vec<(String, f64)> {
    let mut all: Vec<(String, f64)> = live
        .iter()
        .map(|(id, v)| (id.clone(), cosine(q, v)))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

fn ingest(node: &NodeProc, body: &Value) {
    let (status, ans) = node.post_json("/graph/ingest", body, T).unwrap();
    assert!(
        status == 200 && ans["errors"] == false,
        "ingest: {status} {}",
        short(&ans)
    );
}

#[test]
fn vector_seeds_match_brute_force_cosine_and_follow_updates_and_deletes() {
    let started = Instant::now();
    let [cluster] = green_clusters([(3, DIM)]);
    let mut rng = Rng(0x5eed_0007);
    let colours = ["red", "green", "blue", "amber", "violet"];
    let mut live: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let entity = |i: usize, v: &[f32]| {
        json!({"id": format!("v{i:04}"), "title": format!("V{i}"), "type": "POINT",
               "description": format!("point {i} coloured {}", colours[i % colours.len()]), "embedding": v})
    };
    let n = 2000;
    for start in (0..n).step_by(500) {
        let mut ents = Vec::new();
        for i in start..start + 500 {
            let v = vector(&mut rng, DIM);
            ents.push(entity(i, &v));
            live.insert(format!("v{i:04}"), v);
        }
        ingest(cluster.node(start / 500 % 3), &json!({"entities": ents}));
    }
    cluster.wait_applied(0, SETTLE).unwrap();
    eprintln!("{n} entities in: {:.1} s", started.elapsed().as_secs_f64());
    let mut f = Failures::default();

    // Random query vectors, and a third of them near an existing entity.
    let keys: Vec<String> = live.keys().cloned().collect();
    let queries: Vec<Vec<f32>> = (0..30)
        .map(|i| {
            if i % 3 == 0 {
                let base = &live[&keys[rng.below(keys.len())]];
                base.iter()
                    .map(|x| x + (rng.unit() as f32 - 0.5) * 0.02)
                    .collect()
            } else {
                vector(&mut rng, DIM)
            }
        })
        .collect();

    // One round: every query on every node, recall@10 against brute force, identical answers.
    let round = |f: &mut Failures,
                 live: &BTreeMap<String, Vec<f32>>,
                 queries: &[Vec<f32>],
                 label: &str,
                 gone: &BTreeSet<String>|
     -> f64 {
        let mut recall_sum = 0.0;
        for (qi, q) in queries.iter().enumerate() {
            f.cases += 1;
            let body = json!({"embedding": q, "mode": "local", "top_k": 10, "hops": 0});
            let exact = brute_top(live, q, 10);
            let exact_ids: BTreeSet<&String> = exact.iter().map(|x| &x.0).collect();
            let mut first: Option<Value> = None;
            for i in 0..3 {
                let (status, ans) = retrieve(cluster.node(i), &body);
                if !f.check(status == 200 && shards_clean(&ans), || {
                    format!(
                        "{label} query {qi} via {}: expected a whole 200, got {status} {}",
                        cluster.node(i).id,
                        short(&ans)
                    )
                }) {
                    continue;
                }
                let seeds = ans["seeds"].as_array().cloned().unwrap_or_default();
                let got = ids(&ans, "seeds");
                if i == 0 {
                    let hits = got.iter().filter(|id| exact_ids.contains(id)).count();
                    recall_sum += hits as f64 / exact.len() as f64;
                    if hits < 10 {
                        eprintln!(
                            "  {label} query {qi}: recall {hits}/10: got {got:?}, exact {:?}",
                            exact.iter().map(|x| &x.0).collect::<Vec<_>>()
                        );
                    }
                    f.check(got.len() == 10, || {
                        format!("{label} query {qi}: {} seeds, top_k 10", got.len())
                    });
                    for (r, s) in seeds.iter().enumerate() {
                        let id = s["id"].as_str().unwrap_or("");
                        let want_distance = live.get(id).map(|v| 1.0 - cosine(q, v));
                        let distance = s["distance"].as_f64();
                        f.check(
                            !gone.contains(id)
                                && want_distance.is_some()
                                && distance.is_some_and(|d| (d - want_distance.unwrap()).abs() < 1e-4)
                                && s["vector_rank"] == r + 1
                                && s["bm25_rank"].is_null()
                                && (s["score"].as_f64().unwrap_or(-1.0) - 1.0 / (RRF_K + (r + 1) as f64)).abs() < 1e-9,
                            || format!("{label} query {qi}: seed {r} {s}: expected a live entity (not deleted: {}), vector_rank {}, score 1/(60+rank), cosine distance {want_distance:?}", !gone.contains(id), r + 1),
                        );
                    }
                    // Hops 0: the entities are the seeds.
                    f.check(ids(&ans, "entities") == got || ans["entities"].as_array().is_some_and(|e| e.len() < got.len()), || {
                        format!("{label} query {qi}: with hops 0 the entities must be the seeds (or a budget-cut prefix): {:?} vs {got:?}", ids(&ans, "entities"))
                    });
                    first = Some(ans);
                } else if let Some(first) = &first {
                    f.check(
                        got == ids(first, "seeds")
                            && ids(&ans, "entities") == ids(first, "entities"),
                        || {
                            format!(
                                "{label} query {qi}: {} answers seeds {got:?}, node-1 {:?}",
                                cluster.node(i).id,
                                ids(first, "seeds")
                            )
                        },
                    );
                }
            }
        }
        let recall = recall_sum / queries.len() as f64;
        eprintln!("{label}: mean recall@10 {recall:.3}");
        f.check(recall >= 0.95, || {
            format!("{label}: mean recall@10 {recall:.3} < 0.95")
        });
        recall
    };
    round(&mut f, &live, &queries, "initial", &BTreeSet::new());

    // Text and vector together: reciprocal rank fusion of both lists, best first, ties by id.
    f.cases += 1;
    let body = json!({"query": "violet", "embedding": live["v0004"], "top_k": 10, "hops": 0});
    let (status, ans) = retrieve(cluster.node(0), &body);
    if f.check(status == 200, || {
        format!("fusion {body}: {status} {}", short(&ans))
    }) {
        let seeds = ans["seeds"].as_array().cloned().unwrap_or_default();
        let mut prev: Option<(f64, String)> = None;
        let mut both = 0;
        for s in &seeds {
            let id = s["id"].as_str().unwrap_or("").to_string();
            let rrf: f64 = ["vector_rank", "title_rank", "bm25_rank"]
                .iter()
                .filter_map(|k| s[*k].as_u64())
                .map(|r| 1.0 / (RRF_K + r as f64))
                .sum();
            let score = s["score"].as_f64().unwrap_or(-1.0);
            if s["vector_rank"].is_u64() && s["bm25_rank"].is_u64() {
                both += 1;
            }
            if s["bm25_rank"].is_u64() {
                let i: usize = id[1..].parse().unwrap_or(0);
                f.check(colours[i % colours.len()] == "violet", || {
                    format!("fusion: {id} has a bm25_rank but is not violet")
                });
            }
            f.check(
                (score - rrf).abs() < 1e-9 && prev.as_ref().is_none_or(|p| p.0 > score || (p.0 == score && p.1 < id)),
                || format!("fusion {body}: seed {s}: score must be the sum of 1/(60+rank) over its lists ({rrf}) and seeds ordered by score desc, id (after {prev:?})"),
            );
            prev = Some((score, id));
        }
        f.check(seeds.len() == 10, || {
            format!("fusion: {} seeds", seeds.len())
        });
        eprintln!("fusion: {both} of {} seeds in both lists", seeds.len());
        // v0004 is found at distance 0 (vector rank 1) and is the violet entity with the smallest
        // id: whatever the text list, nothing can score above it, and ties go to the smaller id.
        f.check(
            ids(&ans, "seeds").first().map(String::as_str) == Some("v0004"),
            || {
                format!(
                    "fusion {body}: v0004 must be the first seed: {}",
                    short(&ans["seeds"])
                )
            },
        );
    }

    // Updates: 20 entities get new vectors; each is found first by its new vector.
    let mut updated: Vec<(String, Vec<f32>)> = Vec::new();
    let mut ents = Vec::new();
    for k in 0..20 {
        let i = (k * 97 + 13) % n;
        let v = vector(&mut rng, DIM);
        ents.push(entity(i, &v));
        updated.push((format!("v{i:04}"), v.clone()));
    }
    let old: Vec<Vec<f32>> = updated.iter().map(|(id, _)| live[id].clone()).collect();
    ingest(cluster.node(1), &json!({"entities": ents}));
    for (id, v) in &updated {
        live.insert(id.clone(), v.clone());
    }
    for (k, (id, v)) in updated.iter().enumerate() {
        f.cases += 1;
        let body = json!({"embedding": v, "top_k": 10, "hops": 0});
        let (status, ans) = retrieve(cluster.node(k % 3), &body);
        let got = ids(&ans, "seeds");
        let distance = ans["seeds"][0]["distance"].as_f64();
        f.check(status == 200 && got.first() == Some(id) && distance.is_some_and(|d| d.abs() < 1e-4), || {
            format!("updated {id}: its new vector must find it first at distance 0; got {status} seeds {got:?}, first distance {distance:?}")
        });
        // Its old vector no longer finds it unless the new one is as close.
        let body = json!({"embedding": old[k], "top_k": 10, "hops": 0});
        let (_, ans) = retrieve(cluster.node(k % 3), &body);
        let exact: Vec<String> = brute_top(&live, &old[k], 10)
            .into_iter()
            .map(|x| x.0)
            .collect();
        let got = ids(&ans, "seeds");
        f.check(!got.contains(id) || exact.contains(id), || {
            format!("updated {id}: its old vector still finds it ({got:?}); by the new vectors the top 10 are {exact:?}")
        });
    }
    let mut with_new: Vec<Vec<f32>> = queries.clone();
    with_new.extend(updated.iter().map(|x| x.1.clone()));
    round(&mut f, &live, &with_new, "after updates", &BTreeSet::new());

    // Deletes: the best match of each query, and some updated ones, are deleted: never found again.
    let mut gone: BTreeSet<String> = BTreeSet::new();
    for q in queries.iter().take(15) {
        gone.insert(brute_top(&live, q, 1)[0].0.clone());
    }
    for (id, _) in updated.iter().take(5) {
        gone.insert(id.clone());
    }
    for (k, id) in gone.iter().enumerate() {
        let resp = ureq::delete(&cluster.node(k % 3).url(&format!("/graph/entities/{id}")))
            .timeout(T)
            .call();
        let status = match resp {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("delete {id}: {e}"),
        };
        assert_eq!(status, 200, "delete {id}");
        live.remove(id);
    }
    let mut probes = with_new.clone();
    probes.extend(old.iter().take(5).cloned());
    round(&mut f, &live, &probes, "after deletes", &gone);
    f.finish("vector retrieve", started);
}

// ---------------------------------------------------------------------------------------------
// 3. kill -9.

/// Waits until `observer` reports `dead_id` as dead in /cluster/health.
fn wait_dead(observer: &NodeProc, dead_id: &str, timeout: Duration) -> Duration {
    let t = Instant::now();
    wait::until(
        &format!("{} reporting {dead_id} dead", observer.id),
        timeout,
        || {
            let h = observer.get_json("/cluster/health", Duration::from_secs(5))?;
            let dead = h["nodes"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n["id"] == dead_id && n["state"] == "dead"));
            anyhow::ensure!(dead, "{}", summarize(&h));
            Ok(())
        },
    );
    t.elapsed()
}

#[test]
fn kill_9_keeps_retrieve_whole_then_partial_or_refused() {
    let started = Instant::now();
    let [mut cluster] = green_clusters([(3, 0)]);
    import(&cluster.node(0).url(""));
    let shards = cluster.wait_applied(0, SETTLE).unwrap();
    let holders = answers::holders(&shards);
    assert_eq!(holders.len(), SHARDS as usize, "{shards}");
    // A replica that missed a write under load leaves the in-sync set until it catches up; the
    // kill below must find every shard with a second in-sync copy.
    cluster.wait_green(SETTLE).unwrap();
    let mut f = Failures::default();
    let bodies = [
        json!({"query": "Who is Alex Mercer?", "timeout_ms": 5000}),
        json!({"query": "Alex Mercer and Jordan Hayes", "hops": 2, "max_tokens": ALL, "timeout_ms": 5000}),
        json!({"query": "What happened at Dulce base?", "mode": "global", "timeout_ms": 5000}),
        json!({"query": "Martians playing poker", "mode": "naive", "timeout_ms": 5000}),
        json!({"query": "Who is Taylor Cruz?", "mode": "hybrid", "timeout_ms": 5000}),
    ];
    let mut before: Vec<Value> = Vec::new();
    for body in &bodies {
        f.cases += 1;
        let (status, ans) = retrieve(cluster.node(0), body);
        f.check(status == 200 && shards_clean(&ans), || {
            format!("all up: {body}: {status} {}", short(&ans))
        });
        before.push(projection(&ans));
    }

    // kill -9 node-2: every shard keeps a live copy; once the cluster says node-2 is dead, the
    // answers are whole and unchanged.
    cluster.node_mut(1).kill9();
    let waited = wait_dead(cluster.node(0), "node-2", SETTLE);
    eprintln!("node-2 reported dead after {:.1} s", waited.as_secs_f64());
    for i in [0usize, 2] {
        for (body, want) in bodies.iter().zip(&before) {
            f.cases += 1;
            let (status, ans) = wait::answer(
                Duration::from_secs(20),
                RETRY,
                || retrieve(cluster.node(i), body),
                |(status, ans)| {
                    let whole = *status == 200 && shards_clean(ans);
                    if !whole {
                        eprintln!(
                            "  one dead: {} answered {status} {}",
                            cluster.node(i).id,
                            if *status == 200 {
                                ans["_shards"].to_string()
                            } else {
                                short(ans)
                            }
                        );
                    }
                    whole
                },
            );
            f.check(status == 200 && shards_clean(&ans) && projection(&ans) == *want, || {
                format!("node-2 dead: {body} via {}: expected the same whole answer as before within 20 s, got {status} _shards {} {}", cluster.node(i).id, ans["_shards"], short(&projection(&ans)))
            });
        }
    }

    // kill -9 node-1 too: the shards held by node-1 and node-2 only have no live copy.
    cluster.node_mut(0).kill9();
    let survivor = cluster.node(2);
    let dead = answers::shards_not_on(&holders, &survivor.id);
    eprintln!("shards without a live copy: {dead:?}");
    for body in &bodies {
        f.cases += 1;
        let (status, ans) = wait::answer(
            Duration::from_secs(20),
            RETRY,
            || retrieve(survivor, body),
            |(status, ans)| *status == 200 && ans["_shards"]["failed"] == dead.len(),
        );
        let failed_shards = answers::failed_shards(&ans);
        let reasons = answers::failures_have_reasons(&ans);
        let seeds_live = ids(&ans, "seeds")
            .iter()
            .all(|id| !dead.contains(&shard_of(id, SHARDS)));
        f.check(
            status == 200
                && ans["_shards"]["failed"] == dead.len()
                && ans["_shards"]["successful"].as_u64().zip(ans["_shards"]["total"].as_u64()).is_some_and(|(s, t)| s + dead.len() as u64 == t)
                && failed_shards == dead
                && reasons
                && seeds_live,
            || format!("two dead, allow_partial default: {body}: expected 200 with _shards.failed {} naming shards {dead:?} with reasons and no seed from them; got {status} _shards {} seeds {:?}", dead.len(), ans["_shards"], ids(&ans, "seeds")),
        );
        // Entities of the answer come from live shards, or are known through a live shard's relation.
        for e in ans["entities"].as_array().into_iter().flatten() {
            let id = e["id"].as_str().unwrap_or("");
            if e["hop"] == 0 {
                f.check(!dead.contains(&shard_of(id, SHARDS)), || {
                    format!("two dead: {body}: seed entity {id} lives in a dead shard")
                });
            }
        }
        f.cases += 1;
        let mut strict = body.clone();
        strict["allow_partial"] = json!(false);
        let (status, ans, retry_after) = raw_post(survivor, "/retrieve", &strict.to_string());
        f.check(status == 503 && error_reason(&ans).is_some() && retry_after.is_some(), || {
            format!("two dead, allow_partial false: {strict}: expected 503 with a reason and Retry-After, got {status} (Retry-After {retry_after:?}) {}", short(&ans))
        });
    }
    f.finish("kill -9 retrieve", started);
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input.

#[test]
fn bad_input_gets_a_400_with_a_reason_never_a_5xx() {
    let started = Instant::now();
    let [vec_cluster, plain] = green_clusters([(1, 8), (1, 0)]);
    let e = |i: usize| json!({"id": format!("b{i}"), "title": format!("B{i}"), "description": "a bad input probe", "embedding": [i as f32, 1, 0, 0, 0, 0, 0, 1]});
    ingest(
        vec_cluster.node(0),
        &json!({"entities": [e(1), e(2), e(3)], "relations": [{"id": "r", "source": "b1", "target": "b2"}]}),
    );
    ingest(
        plain.node(0),
        &json!({"entities": [{"id": "p1", "title": "P1", "description": "a bad input probe"}]}),
    );
    vec_cluster.wait_applied(0, SETTLE).unwrap();
    plain.wait_applied(0, SETTLE).unwrap();
    let v8 = json!([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]);
    let mut f = Failures::default();

    // A good request first: the cases below differ from it in one thing.
    for (node, body) in [
        (
            vec_cluster.node(0),
            json!({"query": "probe", "embedding": v8}),
        ),
        (plain.node(0), json!({"query": "probe"})),
    ] {
        f.cases += 1;
        let (status, ans) = retrieve(node, &body);
        f.check(status == 200 && !ids(&ans, "seeds").is_empty(), || {
            format!(
                "good request {body}: expected 200 with seeds, got {status} {}",
                short(&ans)
            )
        });
    }

    let long = "x".repeat(4097);
    // A body that differs from the good `{"query": "probe"}` in `field`.
    let with = |field: &str, value: Value| {
        let mut body = json!({"query": "probe"});
        body[field] = value;
        body.to_string()
    };
    // (cluster: true = the dim-8 one, body, the reason must mention one of)
    let cases: Vec<(bool, String, &[&str])> = vec![
        (
            true,
            with("embedding", json!([0.1, 0.2, 0.3])),
            &["8", "dim", "embedding"],
        ),
        (true, json!({"embedding": []}).to_string(), &["embedding"]),
        (
            false,
            json!({"query": "probe", "embedding": v8}).to_string(),
            &["embedding", "TORUA_EMBEDDING_DIM"],
        ),
        (true, json!({}).to_string(), &["query", "embedding"]),
        (true, json!({"query": ""}).to_string(), &["query"]),
        (true, json!({"query": "   \n\t "}).to_string(), &["query"]),
        (true, json!({"query": null}).to_string(), &["query"]),
        (true, with("mode", json!("semantic")), &["mode", "semantic"]),
        (true, with("mode", json!("LOCAL")), &["mode", "LOCAL"]),
        (
            true,
            with("include", json!(["entities", "claims"])),
            &["include", "claims"],
        ),
        (true, with("include", json!("entities")), &[""]),
        (true, with("topk", json!(5)), &["topk"]),
        (true, with("top_k", json!(0)), &["top_k"]),
        (true, with("top_k", json!(1000)), &["top_k"]),
        (true, with("top_k", json!(-1)), &["top_k"]),
        (true, with("top_k", json!("ten")), &[""]),
        (true, with("hops", json!(4)), &["hops"]),
        (true, with("max_tokens", json!(0)), &["max_tokens"]),
        (true, with("max_tokens", json!(99)), &["max_tokens"]),
        (
            true,
            with("max_tokens", json!(1_000_000_000u64)),
            &["max_tokens"],
        ),
        (true, with("timeout_ms", json!(0)), &["timeout_ms"]),
        (true, with("timeout_ms", json!(60_001)), &["timeout_ms"]),
        (
            true,
            with("tokenizer", json!("gpt2")),
            &["tokenizer", "gpt2"],
        ),
        (
            true,
            with("community_level", json!(101)),
            &["community_level"],
        ),
        (
            true,
            with("community_level", json!(-1)),
            &["community_level"],
        ),
        (true, with("allow_partial", json!("yes")), &[""]),
        (true, json!({"query": long}).to_string(), &["query", "4096"]),
        (
            true,
            json!({"embedding": [0, 0, 0, 0, 0, 0, 0, 0]}).to_string(),
            &["embedding", "zero"],
        ),
        (true, "not json at all".to_string(), &[""]),
        (true, "{\"query\": \"probe\"".to_string(), &[""]),
        (true, "[\"probe\"]".to_string(), &[""]),
        (
            true,
            r#"{"query": "probe", "embedding": [1e999, 0, 0, 0, 0, 0, 0, 0]}"#.to_string(),
            &[""],
        ),
        (
            true,
            r#"{"query": "probe", "embedding": [0.1, "a", 0, 0, 0, 0, 0, 0]}"#.to_string(),
            &[""],
        ),
    ];
    for (on_vec, body, why) in &cases {
        f.cases += 1;
        let node = if *on_vec {
            vec_cluster.node(0)
        } else {
            plain.node(0)
        };
        let (status, ans, _) = raw_post(node, "/retrieve", body);
        let reason = error_reason(&ans).unwrap_or("");
        let shown: String = body.chars().take(200).collect();
        let mentions = why
            .iter()
            .any(|w| reason.to_lowercase().contains(&w.to_lowercase()));
        f.check(status == 400 && !reason.is_empty() && mentions, || {
            format!(
                "{} {shown}: expected 400 with a reason mentioning one of {why:?}, got {status} {}",
                if *on_vec { "dim 8" } else { "dim 0" },
                short(&ans)
            )
        });
        f.check(status < 500, || {
            format!("{shown}: a 5xx ({status}) for bad input")
        });
    }
    // The extremes of every range are accepted.
    for body in [
        json!({"query": "probe", "top_k": 1, "hops": 0, "max_tokens": 100, "timeout_ms": 1}),
        json!({"query": "probe", "top_k": 100, "hops": 3, "max_tokens": 200_000, "timeout_ms": 60_000, "community_level": 0}),
        json!({"query": "x".repeat(4096)}),
        json!({"embedding": v8, "community_level": 100, "include": ["community_reports"], "tokenizer": "o200k_base", "mode": "hybrid"}),
    ] {
        f.cases += 1;
        let (status, ans) = retrieve(vec_cluster.node(0), &body);
        let shown: String = body.to_string().chars().take(200).collect();
        // timeout_ms 1 may legitimately run out of time: then a 503/504 saying so.
        let timed_out = (status == 503 || status == 504)
            && error_reason(&ans).is_some_and(|r| r.contains("timeout_ms") || r.contains("time"));
        f.check(
            status == 200 || (body["timeout_ms"] == 1 && timed_out),
            || {
                format!(
                    "{shown}: values at the ends of their ranges: expected 200, got {status} {}",
                    short(&ans)
                )
            },
        );
    }
    // Still answering.
    let (status, _) = retrieve(vec_cluster.node(0), &json!({"query": "probe"}));
    f.check(status == 200, || format!("after the bad input: {status}"));
    f.finish("bad input retrieve", started);
}
