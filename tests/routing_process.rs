//! Placement by routing key on a real cluster: three nodes, 8 shards × 2 copies, entities placed
//! by id mixed with entities placed by a `routing` key. Every entity is found by id alone from
//! every node, in its key's shard; entities of one key share a shard; counts see each entity
//! and relation once; traversals from routed and hash-placed seeds find the same neighbourhood
//! as a breadth-first search over the ingested graph, and stay on one node inside a key; a
//! relation sent before its routed end (naming the end's key) is found from that end; deletes
//! remove the entity, its relations and its pointer; moving an entity to another key leaves it
//! in one place; weakly connected components over the mixed placement are the graph's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua_testkit::{ClusterOptions, Failures, NodeProc, TestCluster};

const T: Duration = Duration::from_secs(30);
const SHARDS: u32 = 8;

/// torua's placement hash: FNV-1a 64 of the key's bytes, modulo the shard count.
fn shard_of(key: &str) -> u64 {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h % u64::from(SHARDS)
}

fn delete(node: &NodeProc, path: &str) -> (u16, Value) {
    node.delete_json(path, T).expect("an HTTP answer")
}

fn ingest(cluster: &TestCluster, node: usize, batch: &Value) -> Value {
    let (status, answer) = cluster
        .node(node)
        .post_json("/graph/ingest", batch, T)
        .unwrap();
    assert_eq!(
        (status, &answer["errors"]),
        (200, &json!(false)),
        "{answer}"
    );
    answer
}

/// The graph: ids → routing key (None: placed by id), and relations (id, source, target).
struct Graph {
    keys: BTreeMap<String, Option<String>>,
    relations: Vec<(String, String, String)>,
}

impl Graph {
    fn new() -> Graph {
        let mut keys = BTreeMap::new();
        for i in 0..24 {
            keys.insert(format!("h{i}"), None);
        }
        for team in 0..4 {
            for i in 0..8 {
                keys.insert(format!("t{team}-{i}"), Some(format!("team-{team}")));
            }
        }
        let mut relations = Vec::new();
        let mut add = |a: String, b: String| {
            let id = format!("r{}", relations.len());
            relations.push((id, a, b));
        };
        // Inside each team: a ring and a chord.
        for team in 0..4 {
            for i in 0..8 {
                add(format!("t{team}-{i}"), format!("t{team}-{}", (i + 1) % 8));
            }
            add(format!("t{team}-0"), format!("t{team}-4"));
        }
        // Teams 0 and 1 touch each other and hash-placed entities; teams 2 and 3 stay apart.
        add("t0-3".into(), "t1-5".into());
        add("t1-2".into(), "h3".into());
        add("h7".into(), "t0-6".into());
        // Hash-placed entities: a chain with a branch.
        for i in 0..20 {
            add(format!("h{i}"), format!("h{}", i + 1));
        }
        add("h5".into(), "h22".into());
        Graph { keys, relations }
    }

    fn home(&self, id: &str) -> u64 {
        shard_of(self.keys[id].as_deref().unwrap_or(id))
    }

    fn entity(&self, id: &str) -> Value {
        match &self.keys[id] {
            Some(key) => json!({"id": id, "title": id.to_uppercase(), "routing": key}),
            None => json!({"id": id, "title": id.to_uppercase()}),
        }
    }

    /// Entities within `hops` of `seeds` (relations followed both ways).
    fn around(&self, seeds: &[&str], hops: usize) -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = seeds.iter().map(|s| s.to_string()).collect();
        let mut frontier = seen.clone();
        for _ in 0..hops {
            let mut next = BTreeSet::new();
            for (_, a, b) in &self.relations {
                for (near, far) in [(a, b), (b, a)] {
                    if frontier.contains(near) && !seen.contains(far) {
                        next.insert(far.clone());
                    }
                }
            }
            seen.extend(next.iter().cloned());
            frontier = next;
        }
        seen
    }

    /// The weakly connected components.
    fn components(&self) -> BTreeSet<BTreeSet<String>> {
        let mut parent: HashMap<String, String> =
            self.keys.keys().map(|k| (k.clone(), k.clone())).collect();
        fn root(parent: &mut HashMap<String, String>, x: &str) -> String {
            let p = parent[x].clone();
            if p == x {
                return p;
            }
            let r = root(parent, &p);
            parent.insert(x.to_string(), r.clone());
            r
        }
        for (_, a, b) in &self.relations {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent.insert(ra, rb);
        }
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for id in self.keys.keys() {
            let r = root(&mut parent, id);
            groups.entry(r).or_default().insert(id.clone());
        }
        groups.into_values().collect()
    }
}

fn neighborhood(cluster: &TestCluster, node: usize, seeds: &[&str], hops: u32) -> Value {
    let body = json!({"seeds": seeds, "hops": hops, "max_nodes": 10000});
    (cluster.node(node))
        .post_ok("/graph/neighborhood", &body, T)
        .unwrap()
}

fn ids_of(answer: &Value) -> BTreeSet<String> {
    answer["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn count(cluster: &TestCluster, node: usize, cypher: &str) -> u64 {
    let (status, answer) = cluster
        .node(node)
        .post_json("/query", &json!({ "cypher": cypher }), T)
        .unwrap();
    assert_eq!(status, 200, "{cypher}: {answer}");
    answer["rows"][0][0].as_u64().unwrap()
}

#[test]
fn routed_and_hash_placed_entities_are_found_traversed_and_deleted() {
    let started = Instant::now();
    let mut f = Failures::default();
    let options = ClusterOptions::graph(3).set("TORUA_SHARDS", &SHARDS.to_string());
    let mut cluster = TestCluster::start(3, options).unwrap();
    cluster.wait_green(Duration::from_secs(60)).unwrap();
    let g = Graph::new();

    // Entities first; the relations in a later batch learn their ends' keys from where the
    // entities are stored.
    let entities: Vec<Value> = g.keys.keys().map(|id| g.entity(id)).collect();
    ingest(&cluster, 0, &json!({ "entities": entities }));
    let relations: Vec<Value> = (g.relations.iter())
        .map(|(id, a, b)| json!({"id": id, "source": a, "target": b}))
        .collect();
    ingest(&cluster, 1, &json!({ "relations": relations }));

    // Every entity by id alone, from every node, in its key's shard, with its relations.
    let mut degree: HashMap<&str, usize> = HashMap::new();
    for (_, a, b) in &g.relations {
        *degree.entry(a.as_str()).or_default() += 1;
        *degree.entry(b.as_str()).or_default() += 1;
    }
    let mut team_shards: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for node in 0..3 {
        for (id, key) in &g.keys {
            let got = cluster
                .node(node)
                .get_json(&format!("/graph/entities/{id}"), T)
                .unwrap();
            let shard = got["shard"].as_u64().unwrap_or(u64::MAX);
            f.check(shard == g.home(id), || {
                format!(
                    "{id} read from node {node} in shard {shard}, not {}",
                    g.home(id)
                )
            });
            f.check(got["entity"]["routing"] == json!(key), || {
                format!("{id}: routing {} (sent {key:?})", got["entity"]["routing"])
            });
            let n = got["relations"].as_array().map_or(0, Vec::len);
            let want = degree.get(id.as_str()).copied().unwrap_or(0);
            f.check(n == want, || format!("{id}: {n} relations, {want} sent"));
            if let Some(key) = key {
                team_shards.entry(key.clone()).or_default().insert(shard);
            }
        }
    }
    f.check(team_shards.values().all(|s| s.len() == 1), || {
        format!("a key's entities are in several shards: {team_shards:?}")
    });

    // Each entity and relation counted once (pointers and stubs are not entities).
    let entities_n = count(&cluster, 2, "MATCH (e:Entity) RETURN count(*)");
    f.check(entities_n == g.keys.len() as u64, || {
        format!("count(entities) {entities_n}, {} stored", g.keys.len())
    });
    let relations_n = count(
        &cluster,
        0,
        "MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN count(*)",
    );
    f.check(relations_n == g.relations.len() as u64, || {
        format!(
            "count(relations) {relations_n}, {} stored",
            g.relations.len()
        )
    });

    // Traversals from routed, hash-placed and mixed seeds: the graph's neighbourhoods.
    for (seeds, hops) in [
        (vec!["t0-0"], 1),
        (vec!["t1-2"], 2),
        (vec!["h3", "t2-5"], 2),
        (vec!["h7"], 3),
    ] {
        for node in 0..3 {
            let answer = neighborhood(&cluster, node, &seeds, hops);
            let want = g.around(&seeds, hops as usize);
            let got = ids_of(&answer);
            f.check(got == want, || {
                format!("{seeds:?} {hops} hops from node {node}: {got:?}, expected {want:?}")
            });
            f.check(answer["missing_seeds"] == json!([]), || {
                format!("{seeds:?}: missing {}", answer["missing_seeds"])
            });
        }
    }
    // A routed seed is asked of its id's shard, which holds its pointer; the node answering that
    // expands it at once when it also holds the key's shard, saving the round that asks again.
    let team: Vec<&String> = (g.keys.iter())
        .filter(|(id, key)| key.as_deref().is_some_and(|k| shard_of(k) != shard_of(id)))
        .map(|(id, _)| id)
        .collect();
    let rounds: u64 = (team.iter())
        .map(|id| {
            neighborhood(&cluster, 0, &[id.as_str()], 1)["traversal"]["rounds"]
                .as_u64()
                .unwrap_or(9)
        })
        .sum();
    eprintln!(
        "1 hop from {} seeds outside their id's shard: {rounds} rounds",
        team.len()
    );
    f.check(rounds < 3 * team.len() as u64, || {
        format!("{rounds} rounds for 1 hop from {} routed seeds: no pointer was followed where it was held", team.len())
    });
    // Inside one key every relation followed is local to the node that expanded it.
    let inside = neighborhood(&cluster, 0, &["t2-0"], 2);
    f.check(
        inside["traversal"]["relations_remote"] == 0
            && inside["traversal"]["relations_local"].as_u64().unwrap_or(0) > 0,
        || format!("2 hops inside team-2: {}", inside["traversal"]),
    );
    let (status, path) = cluster
        .node(2)
        .post_json(
            "/graph/path",
            &json!({"from": "t0-2", "to": "h9", "max_hops": 8}),
            T,
        )
        .unwrap();
    f.check(status == 200 && path["found"] == true, || {
        format!("path t0-2 → h9: {status} {path}")
    });

    // Retrieval: a routed seed found by its title, expanded where it lives.
    let body = json!({"query": "quasar", "mode": "local", "top_k": 1, "hops": 1});
    ingest(
        &cluster,
        0,
        &json!({"entities": [{"id": "t0-5", "title": "QUASAR", "routing": "team-0"}]}),
    );
    let (status, answer) = cluster.node(2).post_json("/retrieve", &body, T).unwrap();
    let got: BTreeSet<String> = (answer["entities"].as_array().into_iter().flatten())
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    let want = g.around(&["t0-5"], 1);
    f.check(status == 200 && got == want, || {
        format!(
            "/retrieve from the routed seed t0-5: {status} {got:?}, expected {want:?}: {answer}"
        )
    });

    // A relation sent before its routed end, naming the end's key, is found from that end.
    ingest(
        &cluster,
        2,
        &json!({"relations": [{"id": "early", "source": "h0", "target": "late", "target_routing": "team-3"}]}),
    );
    ingest(
        &cluster,
        0,
        &json!({"entities": [{"id": "late", "routing": "team-3"}]}),
    );
    let late = neighborhood(&cluster, 1, &["late"], 1);
    f.check(ids_of(&late).contains("h0"), || {
        format!("the early relation is not found from its routed end: {late}")
    });
    let got = cluster.node(1).get_json("/graph/entities/late", T).unwrap();
    f.check(got["shard"] == shard_of("team-3"), || {
        format!("late: {got}")
    });

    // Components over the mixed placement are the graph's.
    let mut with_late = Graph::new();
    with_late.keys.insert("late".into(), Some("team-3".into()));
    with_late
        .relations
        .push(("early".into(), "h0".into(), "late".into()));
    let (status, task) = cluster
        .node(1)
        .post_json(
            "/graph/algorithms/wcc?wait_for_completion=true&timeout=60s",
            &json!({"top_k": 1000, "members": true}),
            Duration::from_secs(90),
        )
        .unwrap();
    let ours: BTreeSet<BTreeSet<String>> = task["result"]["largest"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (c["members"].as_array().unwrap().iter())
                        .map(|m| m.as_str().unwrap().to_string())
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    f.check(status == 200 && ours == with_late.components(), || {
        format!("wcc over mixed placement: {status} {task}")
    });

    // Delete a routed entity: gone from every node, with its relations and its pointer.
    let (status, answer) = delete(cluster.node(2), "/graph/entities/t1-2");
    f.check(status == 200 && answer["relations"] == 3, || {
        format!("DELETE t1-2: {status} {answer}")
    });
    for node in 0..3 {
        let (status, _) = delete(cluster.node(node), "/graph/entities/t1-2");
        f.check(status == 404, || {
            format!("t1-2 deleted, but node {node} deletes it again: {status}")
        });
        let h3 = cluster
            .node(node)
            .get_json("/graph/entities/h3", T)
            .unwrap();
        f.check(h3["relations"].as_array().map(Vec::len) == Some(2), || {
            format!("h3 keeps the deleted entity's relation on node {node}: {h3}")
        });
    }
    let after = count(&cluster, 1, "MATCH (e:Entity) RETURN count(*)");
    f.check(after == g.keys.len() as u64, || {
        format!("after the delete (and late's insert): {after} entities")
    });

    // Moving an entity to another key (and to no key): it lives in one place.
    ingest(
        &cluster,
        1,
        &json!({"entities": [{"id": "t3-1", "routing": "team-0"}, {"id": "t2-7"}]}),
    );
    for (id, key) in [("t3-1", "team-0"), ("t2-7", "t2-7")] {
        for node in 0..3 {
            let got = cluster
                .node(node)
                .get_json(&format!("/graph/entities/{id}"), T)
                .unwrap();
            f.check(got["shard"] == shard_of(key), || {
                format!("{id} after its move, from node {node}: {got}")
            });
        }
    }
    let moved = count(&cluster, 0, "MATCH (e:Entity) RETURN count(*)");
    f.check(moved == after, || {
        format!("{moved} entities after two moves, {after} before")
    });

    // Bad keys are refused with a reason.
    for bad in [json!(""), json!("k".repeat(600))] {
        let (status, answer) = cluster
            .node(0)
            .post_json(
                "/graph/ingest",
                &json!({"entities": [{"id": "bad", "routing": bad}]}),
                T,
            )
            .unwrap();
        let reason = answer["items"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string();
        f.check(status == 400 && reason.contains("routing"), || {
            format!("a bad routing key: {status} {answer}")
        });
    }
    f.finish("routing", started);
}
