//! Graph algorithms across a real cluster (`POST /graph/algorithms/{name}`, `/tasks`): three
//! nodes, 6 shards × 2 copies, a random graph ingested over HTTP. PageRank must equal embedded
//! Kuzu's `page_rank` on the same graph within 1e-6, components must be Kuzu's partition, and
//! degrees the relations counted at each end; degree written back shows in entity reads. A task
//! is visible from every node, can be cancelled, and fails cleanly (nothing left on the workers)
//! when a worker is killed with SIGKILL mid-run. A write-back whose driver is killed (held at a
//! fault-injection point) is finished by the shards' primaries once decided, and discarded
//! otherwise.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kuzu::Value as K;
use serde_json::{json, Value};
use torua_testkit::algo::{id_values, modularity, oracle_db, projected_graph};
use torua_testkit::http::{agent, get_full};
use torua_testkit::wait::until;
use torua_testkit::{ClusterOptions, Failures, Rng, TestCluster};

const T: Duration = Duration::from_secs(30);

/// A green cluster of three nodes, 6 shards × 2 copies.
fn green_cluster() -> TestCluster {
    let options = ClusterOptions::graph(3).set("TORUA_SHARDS", "6");
    TestCluster::start_green(3, options, Duration::from_secs(60)).unwrap()
}

/// `n` entities `al-i` (the last tenth without relations) and `m` random relations.
fn graph(rng: &mut Rng, n: usize, m: usize) -> (Vec<String>, Vec<(String, String)>) {
    let ids: Vec<String> = (0..n).map(|i| format!("al-{i}")).collect();
    let linked = n - n / 10;
    let rels = (0..m)
        .map(|_| {
            (
                ids[rng.below(linked)].clone(),
                ids[rng.below(linked)].clone(),
            )
        })
        .collect();
    (ids, rels)
}

/// Ingests entities `ids` (degree 0) and relations `rels` through node 0.
fn ingest(cluster: &TestCluster, ids: &[String], rels: &[(String, String)]) {
    let batch = json!({
        "entities": ids.iter().map(|i| json!({"id": i, "title": i, "degree": 0})).collect::<Vec<_>>(),
        "relations": rels.iter().enumerate().map(|(n, (a, b))| json!({"id": format!("r{n}"), "source": a, "target": b})).collect::<Vec<_>>(),
    });
    let (status, answer) = cluster
        .node(0)
        .post_json("/graph/ingest", &batch, T)
        .unwrap();
    assert_eq!(
        (status, &answer["errors"]),
        (200, &json!(false)),
        "{answer}"
    );
}

/// Each entity's degree: the relations counted at each end.
fn degrees(ids: &[String], rels: &[(String, String)]) -> HashMap<String, i64> {
    let mut degree: HashMap<String, i64> = ids.iter().map(|i| (i.clone(), 0)).collect();
    for (a, b) in rels {
        *degree.get_mut(a).unwrap() += 1;
        *degree.get_mut(b).unwrap() += 1;
    }
    degree
}

/// Starts an algorithm on `node` without waiting; returns the task's id.
fn start_task(cluster: &TestCluster, node: usize, name: &str, body: Value) -> String {
    let (status, t) = cluster
        .node(node)
        .post_json(&format!("/graph/algorithms/{name}"), &body, T)
        .unwrap();
    assert_eq!(status, 202, "{t}");
    t["id"].as_str().unwrap().to_string()
}

/// What embedded Kuzu answers on the same graph, in this process.
struct Embedded {
    /// PageRank after the same number of updates.
    ranks: HashMap<String, f64>,
    /// Weakly connected components.
    groups: BTreeSet<BTreeSet<String>>,
    /// The modularity of its Louvain communities.
    louvain: f64,
}

/// Kuzu's PageRank (`iterations` updates), components and Louvain on the same graph.
fn embedded(ids: &[String], rels: &[(String, String)], iterations: u32) -> Embedded {
    let db = oracle_db();
    let conn = projected_graph(&db, ids, rels);
    let rows = |q: &str| id_values(&conn, q);
    // Kuzu's `maxIterations` k runs k − 1 updates.
    let ranks = rows(&format!(
        "CALL page_rank('G', maxIterations := {}, tolerance := 0.0) RETURN node.id, rank",
        iterations + 1
    ))
    .into_iter()
    .map(|(id, r)| match r {
        K::Double(r) => (id, r),
        other => panic!("a rank, not {other:?}"),
    })
    .collect();
    let mut groups: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (id, g) in rows(
        "CALL weakly_connected_components('G', maxIterations := 10000) RETURN node.id, group_id",
    ) {
        groups.entry(format!("{g:?}")).or_default().insert(id);
    }
    let louvain: HashMap<String, String> = rows("CALL louvain('G') RETURN node.id, louvain_id")
        .into_iter()
        .map(|(id, c)| (id, format!("{c:?}")))
        .collect();
    Embedded {
        ranks,
        groups: groups.into_values().collect(),
        louvain: modularity(rels, &louvain),
    }
}

/// Every entity's `property`, read with Cypher across the shards from `node` (asked again while
/// a shard has no copy that answers, as after a node was killed).
fn properties(cluster: &TestCluster, node: usize, property: &str) -> HashMap<String, Value> {
    let body = json!({"cypher": format!("MATCH (e:Entity) RETURN e.id, e.{property}")});
    let answer = until(
        "every shard answers a query",
        Duration::from_secs(60),
        || {
            let (status, answer) = cluster.node(node).post_json("/query", &body, T)?;
            if status == 200 {
                Ok(answer)
            } else {
                Err(anyhow::anyhow!("{status} {answer}"))
            }
        },
    );
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].clone()))
        .collect()
}

/// The largest difference between the ranks read and Kuzu's (NaN when one is missing).
fn farthest(read: &HashMap<String, Value>, ranks: &HashMap<String, f64>) -> f64 {
    ranks
        .iter()
        .map(|(id, r)| (read.get(id).and_then(Value::as_f64).unwrap_or(f64::NAN) - r).abs())
        .fold(
            0.0,
            |worst, d| if d.is_nan() || d > worst { d } else { worst },
        )
}

/// Runs an algorithm on `node`, waiting for it to end; returns the task.
fn run(cluster: &TestCluster, node: usize, name: &str, body: Value) -> Value {
    let (status, task) = cluster
        .node(node)
        .post_json(
            &format!("/graph/algorithms/{name}?wait_for_completion=true&timeout=60s"),
            &body,
            Duration::from_secs(90),
        )
        .unwrap();
    assert_eq!(status, 200, "{name}: {task}");
    assert_eq!(task["state"], "completed", "{name}: {task}");
    task
}

fn status_of(
    cluster: &TestCluster,
    node: usize,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let url = cluster.node(node).url(path);
    if method == "GET" {
        let (s, v, _) = get_full(&agent(), &url).unwrap();
        return (s, v);
    }
    cluster.node(node).post_json(path, &body, T).unwrap()
}

/// The task `id` as `node` sees it.
fn task(cluster: &TestCluster, node: usize, id: &str) -> Value {
    cluster
        .node(node)
        .get_json(&format!("/tasks/{id}"), T)
        .unwrap()
}

#[test]
fn algorithms_match_embedded_kuzu_and_tasks_fail_cleanly() {
    let started = Instant::now();
    let mut f = Failures::default();
    let mut rng = Rng::new(0xa160);
    let mut cluster = green_cluster();
    let (ids, rels) = graph(&mut rng, 500, 900);
    ingest(&cluster, &ids, &rels);
    let kuzu = embedded(&ids, &rels, 20);
    let (ranks, groups) = (&kuzu.ranks, &kuzu.groups);

    // PageRank, from every node, against Kuzu's; node 1's run writes the ranks to the entities.
    for node in 0..3 {
        let t = run(
            &cluster,
            node,
            "pagerank",
            json!({"iterations": 20, "tolerance": 0.0, "top_k": 100000, "write": node == 1}),
        );
        let top = t["result"]["top"].as_array().unwrap();
        f.check(top.len() == ids.len(), || {
            format!(
                "pagerank on node {node}: {} ranks for {} entities",
                top.len(),
                ids.len()
            )
        });
        let worst = top
            .iter()
            .map(|s| (s["value"].as_f64().unwrap() - ranks[s["id"].as_str().unwrap()]).abs())
            .fold(0.0, f64::max);
        f.check(worst < 1e-6, || {
            format!("pagerank on node {node}: off Kuzu's by {worst}")
        });
        f.check(t["progress"]["supersteps"] == 21, || {
            format!("pagerank on node {node}: {}", t["progress"])
        });
        // Any node shows any task.
        let other = task(&cluster, (node + 1) % 3, t["id"].as_str().unwrap());
        f.check(other["result"] == t["result"], || {
            format!("task {} differs on another node: {other}", t["id"])
        });
    }

    let worst = farthest(&properties(&cluster, 2, "pagerank"), ranks);
    f.check(worst < 1e-6, || {
        format!("pagerank written to the entities: off Kuzu's by {worst}")
    });

    // Components: Kuzu's partition.
    let t = run(
        &cluster,
        1,
        "wcc",
        json!({"top_k": 100000, "members": true, "write": true}),
    );
    let ours: BTreeSet<BTreeSet<String>> = t["result"]["largest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    f.check(t["result"]["components"] == groups.len(), || {
        format!(
            "wcc: {} components, Kuzu {}",
            t["result"]["components"],
            groups.len()
        )
    });
    f.check(ours == *groups, || "wcc: not Kuzu's partition".to_string());
    let written = properties(&cluster, 2, "component");
    let mut by_name: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (id, c) in &written {
        by_name
            .entry(c.as_str().unwrap_or("null").to_string())
            .or_default()
            .insert(id.clone());
    }
    let written: BTreeSet<BTreeSet<String>> = by_name.into_values().collect();
    f.check(written == *groups, || {
        "wcc: the components written to the entities are not Kuzu's partition".to_string()
    });

    // Louvain: modularity within 2% of Kuzu's, and what the answer says it is.
    let t = run(
        &cluster,
        0,
        "louvain",
        json!({"top_k": 100000, "members": true}),
    );
    let mut community: HashMap<String, String> = HashMap::new();
    for c in t["result"]["largest"].as_array().unwrap() {
        for m in c["members"].as_array().unwrap() {
            community.insert(
                m.as_str().unwrap().into(),
                c["component"].as_str().unwrap().into(),
            );
        }
    }
    let q = modularity(&rels, &community);
    let said = t["result"]["modularity"].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "louvain: modularity {q:.4} (Kuzu's {:.4}), {} communities",
        kuzu.louvain, t["result"]["components"]
    );
    f.check(community.len() == ids.len(), || {
        format!(
            "louvain: {} of {} entities in communities",
            community.len(),
            ids.len()
        )
    });
    f.check((q - said).abs() < 1e-9 && q >= kuzu.louvain * 0.98, || {
        format!(
            "louvain: modularity {q} (answer says {said}), Kuzu's {}",
            kuzu.louvain
        )
    });

    // Degree, written back: entity reads show it.
    let t = run(&cluster, 2, "degree", json!({"top_k": 5, "write": true}));
    f.check(t["result"]["written"] == ids.len(), || {
        format!("degree: wrote {} of {}", t["result"]["written"], ids.len())
    });
    let degree = degrees(&ids, &rels);
    let top = &t["result"]["top"][0];
    f.check(
        top["value"].as_f64() == Some(*degree.values().max().unwrap() as f64),
        || format!("degree: top {top}"),
    );
    for id in ids.iter().step_by(37) {
        let e = cluster
            .node(0)
            .get_json(&format!("/graph/entities/{id}"), T)
            .unwrap();
        f.check(e["entity"]["degree"] == degree[id], || {
            format!(
                "degree of {id}: read {}, expected {}",
                e["entity"]["degree"], degree[id]
            )
        });
    }

    // Bad requests say why.
    for (method, path, body, want) in [
        ("POST", "/graph/algorithms/nope", json!({}), 404),
        ("POST", "/graph/algorithms/leiden", json!({}), 404),
        (
            "POST",
            "/graph/algorithms/wcc",
            json!({"iterations": 3}),
            400,
        ),
        ("GET", "/tasks/nonode:1", json!({}), 404),
        (
            "POST",
            "/graph/algorithms/pagerank",
            json!({"damping": 2}),
            400,
        ),
        (
            "POST",
            "/graph/algorithms/pagerank",
            json!({"members": true}),
            400,
        ),
        ("POST", "/graph/algorithms/wcc", json!({"top_k": 0}), 400),
        ("POST", "/graph/algorithms/degree", json!({"bogus": 1}), 400),
        ("GET", "/tasks/not-a-task", json!({}), 400),
        ("GET", "/tasks/node-1:999999", json!({}), 404),
    ] {
        let (status, answer) = status_of(&cluster, 0, method, path, body.clone());
        f.check(
            status == want
                && answer["error"]["reason"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty()),
            || format!("{method} {path} {body}: {status} {answer}, expected {want} with a reason"),
        );
    }

    // Cancel: a long run stops before its next superstep.
    let long = json!({"iterations": 1000, "tolerance": 0.0});
    let id = start_task(&cluster, 0, "pagerank", long);
    let (status, answer) = cluster
        .node(1)
        .post_json(&format!("/tasks/{id}/_cancel"), &json!({}), T)
        .unwrap();
    f.check(status == 200, || format!("cancel: {status} {answer}"));
    let t = until("the cancelled task ends", T, || {
        let t = task(&cluster, 0, &id);
        if t["state"] == "running" {
            Err(t.to_string())
        } else {
            Ok(t)
        }
    });
    f.check(t["state"] == "cancelled", || format!("after cancel: {t}"));

    // SIGKILL of a worker mid-run, of a run that would write its ranks: the task fails with a
    // reason, the survivors drop their parts, and no rank changes (1000 iterations would).
    let body = json!({"iterations": 1000, "tolerance": 0.0, "write": true});
    let id = start_task(&cluster, 0, "pagerank", body);
    until("the run is past a few supersteps", T, || {
        let t = task(&cluster, 0, &id);
        match t["progress"]["supersteps"].as_u64() {
            Some(n) if n >= 3 => Ok(()),
            _ => Err(t.to_string()),
        }
    });
    cluster.node_mut(2).kill9();
    let t = until(
        "the task fails after its worker died",
        Duration::from_secs(180),
        || {
            let t = task(&cluster, 0, &id);
            if t["state"] == "running" {
                Err(t.to_string())
            } else {
                Ok(t)
            }
        },
    );
    f.check(
        t["state"] == "failed" && t["error"].as_str().is_some_and(|e| !e.is_empty()),
        || format!("after SIGKILL: {t}"),
    );
    eprintln!("task after its worker was killed: {}", t["error"]);
    let worst = farthest(&properties(&cluster, 1, "pagerank"), ranks);
    f.check(worst < 1e-6, || {
        format!("the killed run changed the written ranks: off the 20-iteration ranks by {worst}")
    });
    for node in [0, 1] {
        let held = cluster.node(node).metric("torua_algorithm_tasks_held ");
        f.check(held == Some(0.0), || {
            format!("node {node} still holds algorithm state: {held:?}")
        });
    }
    f.finish("algorithms", started);
}

/// A write-back is all or nothing when its driver dies. Killed after it published the first
/// shard, the other shards' primaries publish the rest; killed with every shard staged but before
/// deciding, the staged results are discarded and no property changes.
#[test]
fn a_write_back_its_driver_left_is_finished_or_discarded() {
    let started = Instant::now();
    let mut f = Failures::default();
    let mut rng = Rng::new(0xa161);
    let mut cluster = green_cluster();
    // Node 1 stops before deciding, node 2 after publishing the first shard.
    for (node, point) in [(1, "algorithm-decide"), (2, "algorithm-publish")] {
        let n = cluster.node_mut(node);
        n.terminate(T).unwrap();
        let spec = format!("{point}=sleep(300000)");
        n.env.insert("TORUA_FAILPOINTS".into(), spec);
        n.start().unwrap();
        cluster.wait_node_up(node, Duration::from_secs(60)).unwrap();
    }
    cluster.wait_green(Duration::from_secs(60)).unwrap();
    let (ids, rels) = graph(&mut rng, 300, 600);
    ingest(&cluster, &ids, &rels);
    let degree = degrees(&ids, &rels);
    let right = |read: &HashMap<String, Value>| {
        (ids.iter())
            .filter(|id| degree[*id] > 0 && read.get(*id) == Some(&json!(degree[*id])))
            .count()
    };
    let linked = ids.iter().filter(|id| degree[*id] > 0).count();

    // Node 2 publishes one shard and is killed: the rest is published without it.
    start_task(&cluster, 2, "degree", json!({"write": true}));
    let first = until("one shard shows the degrees", T, || {
        let n = right(&properties(&cluster, 0, "degree"));
        if n > 0 {
            Ok(n)
        } else {
            Err("no degree written yet")
        }
    });
    cluster.node_mut(2).kill9();
    f.check(first < linked, || {
        format!("{first} of {linked} degrees showed before the driver was killed: not one shard")
    });
    until(
        "the other shards' primaries publish the degrees",
        Duration::from_secs(120),
        || {
            let n = right(&properties(&cluster, 0, "degree"));
            if n == linked {
                Ok(())
            } else {
                Err(format!("{n} of {linked} degrees written"))
            }
        },
    );
    let published: f64 = [0, 1]
        .iter()
        .filter_map(|n| {
            cluster
                .node(*n)
                .metric("torua_algorithm_write_backs_finished_total{outcome=\"published\"}")
        })
        .sum();
    f.check(published >= 5.0, || {
        format!("sweeps published {published} shards' write-backs, expected the 5 left")
    });
    let n2 = cluster.node_mut(2);
    n2.env.remove("TORUA_FAILPOINTS");
    n2.start().unwrap();
    cluster.wait_node_up(2, Duration::from_secs(60)).unwrap();
    cluster.wait_green(Duration::from_secs(120)).unwrap();

    // Node 1 stages PageRank in every shard and is killed before deciding: nothing shows.
    let id = start_task(&cluster, 1, "pagerank", json!({"write": true}));
    until("every shard staged the ranks", T, || {
        let t = task(&cluster, 0, &id);
        if t["progress"]["phase"] == "publishing" {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
    cluster.node_mut(1).kill9();
    until(
        "the survivors discard the staged ranks",
        Duration::from_secs(120),
        || {
            let staged: Vec<Option<f64>> = [0, 2]
                .iter()
                .map(|n| {
                    cluster
                        .node(*n)
                        .metric("torua_algorithm_write_backs_staged ")
                })
                .collect();
            let discarded: f64 = [0, 2]
                .iter()
                .filter_map(|n| {
                    cluster
                        .node(*n)
                        .metric("torua_algorithm_write_backs_finished_total{outcome=\"discarded\"}")
                })
                .sum();
            if discarded >= 6.0 && staged.iter().all(|s| *s == Some(0.0)) {
                Ok(())
            } else {
                Err(format!("staged {staged:?}, discarded {discarded}"))
            }
        },
    );
    let ranks = properties(&cluster, 0, "pagerank");
    let shown = ranks.values().filter(|r| !r.is_null()).count();
    f.check(shown == 0, || {
        format!("{shown} entities show ranks of a write-back that was never decided")
    });
    f.finish("write-back when its driver dies", started);
}
