//! Process-level tests of the document lifecycle: `DELETE /graph/documents/{id}` on a 3-node
//! cluster (8 shards, 2 copies) removes the document, its text units and what only they
//! supported — in every shard, both copies of each relation, no stub left behind — and prunes
//! the rest; retrieval stops returning the deleted text and marks changed communities' reports
//! stale; deleting again is a no-op; a delete whose node is killed with kill -9 between two of
//! its write steps (held there by a fault-injection point, `TORUA_FAILPOINTS`), retried once the
//! node is back, ends in the same state as a clean delete; and
//! re-ingesting a document with other text units removes the old ones the same way; and
//! `torua import graphrag --update --delete-missing` deletes the documents its folder lacks.
//!
//! The expected state is computed by an oracle over the ingested items ([`Graph::cascade`]) and
//! compared with what every shard holds (per-shard Cypher), and every shard's copies must hold
//! the same (checksums).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua::graph::model::{Batch, Chunk, Community, Document, Entity, Relation};
use torua::graph::partition::shard_of;
use torua_testkit::http::{agent, with_key};
use torua_testkit::{
    dulce_dir, import_graphrag_with, log, wait, ClusterOptions, NodeProc, TestCluster,
};

const SETTLE: Duration = Duration::from_secs(60);
const T: Duration = Duration::from_secs(30);
const SHARDS: u32 = 8;
/// Entities citing only docA, each with a relation citing only docA: enough that the delete's
/// steps write to every shard.
const ONLY_A: usize = 1500;

fn options() -> ClusterOptions {
    let mut o = ClusterOptions::graph(3);
    o.env.insert("TORUA_SHARDS".into(), SHARDS.to_string());
    o.env.insert("TORUA_DRAIN_TIMEOUT".into(), "0s".into());
    o
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn entity(id: &str, units: Vec<String>) -> Entity {
    Entity {
        id: id.into(),
        title: id.to_uppercase(),
        kind: "THING".into(),
        description: format!("{id} described"),
        text_unit_ids: units,
        frequency: 1,
        degree: 1,
        embedding: None,
        routing: None,
    }
}

fn relation(id: String, source: String, target: String, units: Vec<String>) -> Relation {
    Relation {
        description: format!("{source} to {target}"),
        id,
        source,
        target,
        weight: 1.0,
        text_unit_ids: units,
        source_routing: None,
        target_routing: None,
    }
}

fn chunk(id: &str, document: &str, text: String) -> Chunk {
    Chunk {
        id: id.into(),
        text,
        n_tokens: 5,
        document_id: document.into(),
        entity_ids: vec![],
        embedding: None,
    }
}

fn community(id: &str, members: &[&str]) -> Community {
    Community {
        id: id.into(),
        level: 0,
        parent: String::new(),
        title: format!("community {id}"),
        entity_ids: ids(members),
        summary: format!("summary {id}"),
        full_content: format!("report of community {id}"),
        rank: 1.0,
    }
}

/// Two documents: docA (chunks a0-a2, "zanzibar") and docB (b0, b1, "quokka"). Entities `ea*`
/// cite only docA's chunks, `eb*` both documents', `ec*` only docB's, `en*` none; relations of
/// every combination (see the comments), spread over the shards by their ids.
fn batch() -> Batch {
    let a = |i: usize| format!("a{}", i % 3);
    let b = |i: usize| format!("b{}", i % 2);
    let mut g = Batch::default();
    for i in 0..ONLY_A {
        let units = if i % 2 == 0 {
            vec![a(i)]
        } else {
            vec![a(i), a(i + 1)]
        };
        g.entities.push(entity(&format!("ea{i}"), units));
    }
    for i in 0..8 {
        g.entities.push(entity(&format!("eb{i}"), vec![a(i), b(i)]));
    }
    for i in 0..6 {
        g.entities.push(entity(&format!("ec{i}"), vec![b(i)]));
    }
    for i in 0..3 {
        g.entities.push(entity(&format!("en{i}"), vec![]));
    }
    let r = |id: String, s: String, t: String, u: Vec<String>| relation(id, s, t, u);
    for i in 0..ONLY_A {
        // Only docA: removed.
        g.relations.push(r(
            format!("ra{i}"),
            format!("ea{i}"),
            format!("eb{}", i % 8),
            vec![a(i)],
        ));
    }
    for i in 0..8 {
        // Both documents: pruned.
        g.relations.push(r(
            format!("rb{i}"),
            format!("eb{i}"),
            format!("ec{}", i % 6),
            vec![a(i), b(i)],
        ));
        // Only docB: untouched.
        g.relations.push(r(
            format!("rc{i}"),
            format!("eb{i}"),
            format!("eb{}", (i + 1) % 8),
            vec![b(i)],
        ));
        // Only docA between entities that stay: removed, the endpoints stay.
        g.relations.push(r(
            format!("rd{i}"),
            format!("eb{i}"),
            format!("ec{}", (i + 2) % 6),
            vec!["a0".into()],
        ));
    }
    for i in 0..3 {
        // No text units, to an entity that goes: removed with it.
        g.relations.push(r(
            format!("re{i}"),
            format!("ea{i}"),
            format!("en{i}"),
            vec![],
        ));
        // No text units between entities that stay: untouched.
        g.relations.push(r(
            format!("rf{i}"),
            format!("eb{i}"),
            format!("en{i}"),
            vec![],
        ));
    }
    for i in 0..4 {
        // Cites docB, but its target goes: removed.
        g.relations.push(r(
            format!("rg{i}"),
            format!("ec{i}"),
            format!("ea{}", i + 4),
            vec![b(i)],
        ));
    }
    for i in 0..3 {
        g.chunks.push(chunk(
            &format!("a{i}"),
            "docA",
            format!("alpha zanzibar part {i}"),
        ));
    }
    for i in 0..2 {
        g.chunks.push(chunk(
            &format!("b{i}"),
            "docB",
            format!("beta quokka part {i}"),
        ));
    }
    g.communities = vec![
        community("c0", &["ea0", "ea1", "eb0", "ec0"]),
        community("c1", &["ec1", "ec2"]),
        community("c2", &["ea5", "eb3"]),
    ];
    g.documents = vec![
        Document {
            id: "docA".into(),
            title: "A".into(),
            text: "alpha".into(),
            text_unit_ids: ids(&["a0", "a1", "a2"]),
        },
        Document {
            id: "docB".into(),
            title: "B".into(),
            text: "beta".into(),
            text_unit_ids: ids(&["b0", "b1"]),
        },
    ];
    g
}

/// The state the cluster should hold, and the oracle of the cascade.
#[derive(Debug, Clone, PartialEq)]
struct Graph {
    /// id -> text units.
    entities: BTreeMap<String, Vec<String>>,
    /// (id, source, target) -> text units.
    relations: BTreeMap<(String, String, String), Vec<String>>,
    chunks: BTreeSet<String>,
    documents: BTreeSet<String>,
    /// id -> (entity ids, stale).
    communities: BTreeMap<String, (Vec<String>, bool)>,
}

/// What the delete answer counts.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    removed: [usize; 4],
    updated: [usize; 3],
}

impl Graph {
    fn of(b: &Batch) -> Graph {
        Graph {
            entities: b
                .entities
                .iter()
                .map(|e| (e.id.clone(), e.text_unit_ids.clone()))
                .collect(),
            relations: b
                .relations
                .iter()
                .map(|r| {
                    (
                        (r.id.clone(), r.source.clone(), r.target.clone()),
                        r.text_unit_ids.clone(),
                    )
                })
                .collect(),
            chunks: b.chunks.iter().map(|c| c.id.clone()).collect(),
            documents: b.documents.iter().map(|d| d.id.clone()).collect(),
            communities: b
                .communities
                .iter()
                .map(|c| (c.id.clone(), (c.entity_ids.clone(), false)))
                .collect(),
        }
    }

    /// Removes `units` (and `document`, if given) as the cascade should; returns its counts.
    fn cascade(&mut self, units: &[&str], document: Option<&str>) -> Counts {
        let units: BTreeSet<&str> = units.iter().copied().collect();
        let cites = |l: &Vec<String>| l.iter().any(|t| units.contains(t.as_str()));
        let only = |l: &Vec<String>| !l.is_empty() && l.iter().all(|t| units.contains(t.as_str()));
        let emptied: BTreeSet<String> = self
            .entities
            .iter()
            .filter(|(_, l)| only(l))
            .map(|(id, _)| id.clone())
            .collect();
        let mut c = Counts::default();
        c.removed[2] = emptied.len();
        c.updated[0] = self
            .entities
            .values()
            .filter(|l| cites(l) && !only(l))
            .count();
        let gone = |k: &(String, String, String), l: &Vec<String>| {
            only(l) || emptied.contains(&k.1) || emptied.contains(&k.2)
        };
        c.removed[3] = self.relations.iter().filter(|(k, l)| gone(k, l)).count();
        c.updated[1] = self
            .relations
            .iter()
            .filter(|(k, l)| cites(l) && !gone(k, l))
            .count();
        self.relations = std::mem::take(&mut self.relations)
            .into_iter()
            .filter(|(k, l)| !gone(k, l))
            .map(|(k, l)| {
                (
                    k,
                    l.into_iter()
                        .filter(|t| !units.contains(t.as_str()))
                        .collect(),
                )
            })
            .collect();
        self.entities = std::mem::take(&mut self.entities)
            .into_iter()
            .filter(|(id, _)| !emptied.contains(id))
            .map(|(id, l)| {
                (
                    id,
                    l.into_iter()
                        .filter(|t| !units.contains(t.as_str()))
                        .collect(),
                )
            })
            .collect();
        for (members, stale) in self.communities.values_mut() {
            if members.iter().any(|m| emptied.contains(m)) {
                members.retain(|m| !emptied.contains(m));
                *stale = true;
                c.updated[2] += 1;
            }
        }
        c.removed[1] = units.iter().filter(|u| self.chunks.remove(**u)).count();
        if let Some(d) = document {
            c.removed[0] = usize::from(self.documents.remove(d));
        }
        c
    }
}

fn counts_of(answer: &Value) -> Counts {
    let n = |v: &Value| v.as_u64().unwrap_or(u64::MAX) as usize;
    let r = &answer["removed"];
    let u = &answer["updated"];
    Counts {
        removed: [
            n(&r["documents"]),
            n(&r["chunks"]),
            n(&r["entities"]),
            n(&r["relations"]),
        ],
        updated: [n(&u["entities"]), n(&u["relations"]), n(&u["communities"])],
    }
}

fn delete(node: &NodeProc, path: &str) -> anyhow::Result<(u16, Value)> {
    node.delete_json(path, T)
}

fn ingest(node: &NodeProc, batch: &Batch) -> Value {
    let (status, answer) = node
        .post_json("/graph/ingest", &serde_json::to_value(batch).unwrap(), T)
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errors"], false, "{answer}");
    answer
}

/// Rows of a per-shard query: (shard, row).
fn per_shard(node: &NodeProc, cypher: &str) -> Vec<(u32, Vec<Value>)> {
    let (status, answer) = node
        .post_json(
            "/query",
            &json!({"cypher": cypher, "merge": "per_shard", "allow_partial": false}),
            T,
        )
        .unwrap();
    assert_eq!(status, 200, "{cypher}: {answer}");
    let mut out = Vec::new();
    for s in answer["shards"].as_array().unwrap() {
        let shard = s["shard"].as_u64().unwrap() as u32;
        for row in s["rows"].as_array().unwrap() {
            out.push((shard, row.as_array().unwrap().clone()));
        }
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("?").to_string()
}

/// What the cluster holds, compared with `want`: entities in their own shards, each relation
/// in exactly its endpoints' shards, stubs exactly for the far ends of the relations a shard
/// holds, chunks, documents, communities; and every shard's copies agree. Err says what differs.
fn check_state(node: &NodeProc, want: &Graph) -> Result<(), String> {
    let mut problems = Vec::new();
    let entities = per_shard(
        node,
        "MATCH (e:Entity) RETURN e.id, e.stub, e.text_unit_ids",
    );
    let mut got_entities = BTreeMap::new();
    let mut stubs: BTreeSet<(u32, String)> = BTreeSet::new();
    for (shard, row) in &entities {
        let id = text(&row[0]);
        if row[1] == true {
            stubs.insert((*shard, id));
        } else {
            if shard_of(&id, SHARDS) != *shard {
                problems.push(format!("entity {id} in shard {shard}"));
            }
            got_entities.insert(id, strings(&row[2]));
        }
    }
    if got_entities != want.entities {
        problems.push(format!(
            "entities: got {got_entities:?}, want {:?}",
            want.entities
        ));
    }
    let relations = per_shard(
        node,
        "MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN r.id, a.id, b.id, r.text_unit_ids",
    );
    let got_copies: BTreeSet<(u32, String, String, String, Vec<String>)> = relations
        .iter()
        .map(|(s, r)| (*s, text(&r[0]), text(&r[1]), text(&r[2]), strings(&r[3])))
        .collect();
    let mut want_copies = BTreeSet::new();
    let mut want_stubs = BTreeSet::new();
    for ((id, source, target), units) in &want.relations {
        for shard in [shard_of(source, SHARDS), shard_of(target, SHARDS)] {
            want_copies.insert((
                shard,
                id.clone(),
                source.clone(),
                target.clone(),
                units.clone(),
            ));
            for end in [source, target] {
                if shard_of(end, SHARDS) != shard {
                    want_stubs.insert((shard, end.clone()));
                }
            }
        }
    }
    if got_copies != want_copies {
        let extra: Vec<_> = got_copies.difference(&want_copies).collect();
        let missing: Vec<_> = want_copies.difference(&got_copies).collect();
        problems.push(format!(
            "relation copies: extra {extra:?}, missing {missing:?}"
        ));
    }
    if stubs != want_stubs {
        let extra: Vec<_> = stubs.difference(&want_stubs).collect();
        let missing: Vec<_> = want_stubs.difference(&stubs).collect();
        problems.push(format!("stubs: extra {extra:?}, missing {missing:?}"));
    }
    let chunks: BTreeSet<String> = per_shard(node, "MATCH (c:Chunk) RETURN c.id")
        .iter()
        .map(|(_, r)| text(&r[0]))
        .collect();
    if chunks != want.chunks {
        problems.push(format!("chunks: got {chunks:?}, want {:?}", want.chunks));
    }
    let documents: BTreeSet<String> = per_shard(node, "MATCH (d:Document) RETURN d.id")
        .iter()
        .map(|(_, r)| text(&r[0]))
        .collect();
    if documents != want.documents {
        problems.push(format!(
            "documents: got {documents:?}, want {:?}",
            want.documents
        ));
    }
    let communities: BTreeMap<String, (Vec<String>, bool)> = per_shard(
        node,
        "MATCH (c:Community) RETURN c.id, c.entity_ids, c.stale",
    )
    .iter()
    .map(|(_, r)| (text(&r[0]), (strings(&r[1]), r[2] == true)))
    .collect();
    if communities != want.communities {
        problems.push(format!(
            "communities: got {communities:?}, want {:?}",
            want.communities
        ));
    }
    // Both copies of every shard hold the same.
    let shards = node
        .get_json("/cluster/shards?checksum=true", T)
        .map_err(|e| e.to_string())?;
    let mut sums: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for c in shards["copies"].as_array().into_iter().flatten() {
        if c["in_sync"] == true {
            sums.entry(c["shard"].as_u64().unwrap_or(u64::MAX))
                .or_default()
                .insert(c["checksum"].to_string());
        }
    }
    for (shard, set) in &sums {
        if set.len() != 1 {
            problems.push(format!("copies of shard {shard} differ: {set:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The text units and reports `/retrieve` answers for `query`.
fn retrieve(node: &NodeProc, query: &str, mode: &str) -> (Vec<String>, Vec<(String, bool)>) {
    let (status, answer) = node
        .post_json(
            "/retrieve",
            &json!({"query": query, "mode": mode, "top_k": 20}),
            T,
        )
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let units = answer["text_units"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| text(&u["id"]))
        .collect();
    let reports = answer["community_reports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (text(&r["id"]), r["stale"] == true))
        .collect();
    (units, reports)
}

/// The counts a `RETURN count(*)` statement gives on each shard, added up.
fn count_everywhere(node: &NodeProc, cypher: &str) -> u64 {
    per_shard(node, cypher)
        .iter()
        .map(|(_, r)| r[0].as_u64().expect("a count"))
        .sum()
}

/// Copies, over every shard, of the relations citing only docA (`ra*`).
fn ra_copies(node: &NodeProc) -> u64 {
    count_everywhere(
        node,
        "MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE r.id STARTS WITH 'ra' RETURN count(*)",
    )
}

/// Entities, over every shard, citing only docA (`ea*`; stubs not counted).
fn ea_entities(node: &NodeProc) -> u64 {
    count_everywhere(
        node,
        "MATCH (e:Entity) WHERE e.stub = false AND e.id STARTS WITH 'ea' RETURN count(*)",
    )
}

/// Waits until every node has applied the writes it logged (a copy answers reads with what it
/// has applied).
fn applied(cluster: &TestCluster) {
    for i in 0..3 {
        cluster.wait_applied(i, T).unwrap();
    }
}

/// Restarts node `i` with `TORUA_FAILPOINTS` set to `failpoints` (or unset), and waits until
/// the cluster is green again.
fn restart_with(cluster: &mut TestCluster, i: usize, failpoints: Option<String>) {
    let node = cluster.node_mut(i);
    if node.is_running() {
        node.terminate(T).unwrap();
    }
    match failpoints {
        Some(f) => node.env.insert("TORUA_FAILPOINTS".into(), f),
        None => node.env.remove("TORUA_FAILPOINTS"),
    };
    node.start().unwrap();
    cluster.wait_node_up(i, SETTLE).unwrap();
    cluster.wait_green(SETTLE).unwrap();
}

/// Sends the delete until the cluster answers 200 (it answers 503 while a shard heals).
fn delete_until_done(node: &NodeProc, id: &str) -> Value {
    wait::until(
        &format!("DELETE /graph/documents/{id}"),
        SETTLE,
        || match delete(node, &format!("/graph/documents/{id}")) {
            Ok((200, answer)) => Ok(answer),
            other => Err(format!("{other:?}")),
        },
    )
}

#[test]
fn deleting_a_document_removes_what_only_it_supported_and_a_killed_delete_converges() {
    let started = Instant::now();
    let mut cluster = TestCluster::start(3, options()).unwrap();
    cluster.wait_green(SETTLE).unwrap();
    let data = batch();
    let original = Graph::of(&data);
    ingest(cluster.node(0), &data);
    applied(&cluster);
    check_state(cluster.node(1), &original).unwrap();
    let (units, _) = retrieve(cluster.node(2), "zanzibar", "naive");
    assert!(units.iter().any(|u| u.starts_with('a')), "{units:?}");

    // A clean delete.
    let mut want = original.clone();
    let counts = want.cascade(&["a0", "a1", "a2"], Some("docA"));
    assert!(counts.removed[2] > 0 && counts.removed[3] > 0 && counts.updated[2] == 2);
    let (status, answer) = delete(cluster.node(1), "/graph/documents/docA").unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["found"], true, "{answer}");
    assert_eq!(counts_of(&answer), counts, "{answer}");
    applied(&cluster);
    check_state(cluster.node(2), &want).unwrap();
    // Retrieval no longer returns docA's text; docB's is still there; reports are stale.
    for i in 0..3 {
        let (units, _) = retrieve(cluster.node(i), "zanzibar", "naive");
        assert!(!units.iter().any(|u| u.starts_with('a')), "{units:?}");
    }
    let (units, _) = retrieve(cluster.node(0), "quokka", "naive");
    assert!(units.iter().any(|u| u.starts_with('b')), "{units:?}");
    let (_, reports) = retrieve(cluster.node(0), "anything", "global");
    let mut reports: Vec<(String, bool)> = reports;
    reports.sort();
    assert_eq!(
        reports,
        vec![
            ("c0".into(), true),
            ("c1".into(), false),
            ("c2".into(), true)
        ]
    );
    // Deleting again is a no-op.
    let (status, again) = delete(cluster.node(0), "/graph/documents/docA").unwrap();
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["found"], false, "{again}");
    assert_eq!(counts_of(&again), Counts::default(), "{again}");
    check_state(cluster.node(0), &want).unwrap();
    let clean = want.clone();
    log(format!(
        "clean delete checked after {:?}",
        started.elapsed()
    ));

    // The same delete, its node held between two of the cascade's write steps by a
    // fault-injection point and killed there with kill -9; retried elsewhere once the node is
    // back, it ends where the clean delete did. Held after the relation step (the entities are
    // still there), then after the entity step (the chunks are still there).
    for held_after in [1, 3] {
        ingest(cluster.node(0), &data);
        applied(&cluster);
        check_state(cluster.node(0), &original).unwrap();
        let ra_before = ra_copies(cluster.node(0));
        assert!(ra_before >= ONLY_A as u64, "{ra_before}");
        restart_with(
            &mut cluster,
            2,
            Some(format!(
                "document-cascade-step={held_after}*off->sleep(600000)"
            )),
        );
        let url = cluster.node(2).url("/graph/documents/docA");
        let request = std::thread::spawn(move || {
            with_key(agent().delete(&url))
                .timeout(SETTLE)
                .call()
                .map(|r| r.status())
                .map_err(|e| e.to_string())
        });
        let node = cluster.node(0);
        let want_entities = if held_after == 1 { ONLY_A as u64 } else { 0 };
        wait::until(
            &format!("the delete held after step {held_after}"),
            SETTLE,
            || match (ra_copies(node), ea_entities(node)) {
                (0, n) if n == want_entities => Ok(()),
                (r, e) => Err(format!(
                    "{r} docA-only relation copies, {e} docA-only entities"
                )),
            },
        );
        assert!(!request.is_finished(), "the delete is held");
        let stored = |kind: &str, id: &str| {
            node.get_json(&format!("/graph/{kind}s/{id}"), T).unwrap()[kind].is_object()
        };
        assert!(stored("document", "docA"), "the document goes last");
        assert!(stored("chunk", "a0"), "the chunks go after the entities");
        cluster.node_mut(2).kill9();
        let outcome = request.join().unwrap();
        assert!(
            outcome.is_err(),
            "the killed delete got no answer: {outcome:?}"
        );
        log(format!(
            "killed the delete held after step {held_after} at {:?}",
            started.elapsed()
        ));
        restart_with(&mut cluster, 2, None);
        let answer = delete_until_done(cluster.node(0), "docA");
        applied(&cluster);
        wait::until("the state of a clean delete", SETTLE, || {
            check_state(cluster.node(1), &clean)
        });
        // The retry finds what the killed delete left.
        assert_eq!(answer["found"], true, "{answer}");
        assert_eq!(answer["removed"]["documents"], 1, "{answer}");
        assert_eq!(answer["removed"]["chunks"], 3, "{answer}");
        let entities = if held_after == 1 {
            counts.removed[2]
        } else {
            0
        };
        assert_eq!(answer["removed"]["entities"], entities, "{answer}");
        log(format!(
            "the delete killed after step {held_after} converged at {:?}",
            started.elapsed()
        ));
    }

    // Re-ingesting docB with other text units (b1 dropped, b2 new) removes b1 the same way.
    let mut want = clean;
    let counts = want.cascade(&["b1"], None);
    want.chunks.insert("b2".into());
    let mut data = Batch {
        chunks: vec![chunk("b2", "docB", "beta quokka part 2".into())],
        documents: vec![Document {
            id: "docB".into(),
            title: "B".into(),
            text: "beta, again".into(),
            text_unit_ids: ids(&["b0", "b2"]),
        }],
        ..Batch::default()
    };
    let answer = ingest(cluster.node(1), &data);
    assert_eq!(answer["replaced"]["documents"], 1, "{answer}");
    let replaced = counts_of(&answer["replaced"]);
    assert_eq!(replaced.removed[1..], counts.removed[1..], "{answer}");
    assert_eq!(replaced.updated, counts.updated, "{answer}");
    applied(&cluster);
    check_state(cluster.node(0), &want).unwrap();
    // The same batch again replaces nothing.
    data.documents[0].title = "B again".into();
    let answer = ingest(cluster.node(2), &data);
    assert_eq!(answer["replaced"]["documents"], 0, "{answer}");
    check_state(cluster.node(2), &want).unwrap();

    // `torua import graphrag --update --delete-missing` of a folder without docB loads the
    // folder and deletes docB with what only it supported.
    let stdout = import_graphrag_with(
        &dulce_dir(),
        &cluster.node(0).url(""),
        &["--update", "--delete-missing"],
    );
    assert!(
        stdout.contains("deleted 1 stored documents not in"),
        "{stdout}"
    );
    let mut docb_only = want.clone();
    let counts = docb_only.cascade(&["b0", "b2"], Some("docB"));
    assert!(
        stdout.contains(&format!("removed 2 chunks, {} entities", counts.removed[2])),
        "{stdout}"
    );
    let node = cluster.node(1);
    assert_eq!(
        node.get_json("/graph/documents/docB", T).unwrap()["error"]["status"],
        404
    );
    let dulce = torua::cmd::import::read_folder(&dulce_dir()).unwrap();
    for d in &dulce.documents {
        let answer = node
            .get_json(&format!("/graph/documents/{}", d.id), T)
            .unwrap();
        assert_eq!(answer["document"]["id"], d.id.as_str(), "{answer}");
    }
    let left = count_everywhere(
        node,
        "MATCH (e:Entity) WHERE e.stub = false AND (e.id STARTS WITH 'eb' OR e.id STARTS WITH 'ec') RETURN count(*)",
    );
    assert_eq!(left, 0, "entities only docB supported");

    // Every copy applied every write it acknowledged: /metrics shows each node's copies.
    let mut copies = 0;
    for i in 0..3 {
        let metrics = with_key(agent().get(&cluster.node(i).url("/metrics")))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        for line in metrics
            .lines()
            .filter(|l| l.starts_with("torua_shard_copy_failed_writes{"))
        {
            copies += 1;
            assert!(line.ends_with(" 0"), "node {i}: {line}");
        }
    }
    assert_eq!(copies, 2 * SHARDS, "copies listed in /metrics");
    log(format!("done after {:?}", started.elapsed()));
}
