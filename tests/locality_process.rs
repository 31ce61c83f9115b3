//! Traversals that go on locally. Three nodes each hold a copy of every shard (`TORUA_REPLICAS=3`),
//! so the node answering a traversal's first step holds every far end: it reads the later levels
//! ahead by itself, and a 2-hop neighbourhood or a retrieval's expansion takes one network round,
//! with every relation counted as followed locally. Nodes 1 and 2 run with
//! `TORUA_TRAVERSE_LOCALLY=true`, node 3 with the default (`false`), and must give the same
//! answers in one round per level. A
//! 5-shard, 2-copy layout over the same nodes then has far ends elsewhere: relations counted as
//! remote, still the same answers as without reading ahead.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua_testkit::http::{agent, with_key};
use torua_testkit::{ClusterOptions, Failures, Rng, TestCluster};

const T: Duration = Duration::from_secs(30);

/// A random graph: `n` entities `{prefix}-i`, each with `degree` relations to random others.
fn graph(rng: &mut Rng, prefix: &str, n: usize, degree: usize) -> Value {
    let entities: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": format!("{prefix}-{i}"), "title": format!("T{i}"), "type": "THING",
                   "description": format!("entity {i}")})
        })
        .collect();
    let relations: Vec<Value> = (0..n * degree)
        .map(|r| {
            let (a, b) = (r / degree, rng.below(n));
            json!({"id": format!("{prefix}-r{r}"), "source": format!("{prefix}-{a}"),
                   "target": format!("{prefix}-{b}"), "description": "", "weight": 1.0})
        })
        .collect();
    json!({"entities": entities, "relations": relations})
}

/// The answer without its timings and traversal figures (what must not depend on where it ran).
fn content(answer: &Value) -> Value {
    let mut a = answer.clone();
    for key in ["took_ms", "traversal", "_shards", "timings_ms"] {
        a.as_object_mut().map(|o| o.remove(key));
    }
    a
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs the neighbourhoods of `seeds` on node 1 (reading ahead) and node 3 (not), checks that
/// they agree, and returns node 1's traversal figures summed: (local, remote, rounds).
fn compare(
    f: &mut Failures,
    cluster: &TestCluster,
    label: &str,
    seeds: &[Vec<String>],
    hops: u32,
) -> (u64, u64, u64) {
    let mut sum = (0, 0, 0);
    for s in seeds {
        let body = json!({"seeds": s, "hops": hops, "max_nodes": 100000, "max_relations": 1000000});
        let ask = |i: usize| {
            (cluster.node(i))
                .post_ok("/graph/neighborhood", &body, T)
                .unwrap_or_else(|e| panic!("{label}: {e:#}"))
        };
        let (ahead, plain) = (ask(0), ask(2));
        f.check(content(&ahead) == content(&plain), || {
            format!("{label}: {s:?} {hops} hops: the answers differ with and without reading ahead")
        });
        let stat = |a: &Value, k: &str| a["traversal"][k].as_u64().unwrap_or(0);
        f.check(stat(&plain, "rounds") == u64::from(hops) + 1, || {
            format!(
                "{label}: without reading ahead, {hops} hops take {} rounds: {}",
                hops + 1,
                plain["traversal"]
            )
        });
        sum.0 += stat(&ahead, "relations_local");
        sum.1 += stat(&ahead, "relations_remote");
        sum.2 += stat(&ahead, "rounds");
    }
    sum
}

#[test]
fn traversals_go_on_locally_over_the_copies_a_node_holds() {
    let started = Instant::now();
    let mut f = Failures::default();
    let mut rng = Rng::new(0x10ca1);
    for (shards, replicas) in [("4", "3"), ("5", "2")] {
        let label = format!("{shards} shards x {replicas} copies");
        let options = ClusterOptions::graph(3)
            .set("TORUA_SHARDS", shards)
            .set("TORUA_REPLICAS", replicas)
            .set("TORUA_TRAVERSE_LOCALLY", "true");
        let mut cluster = TestCluster::new(3, options).unwrap();
        cluster
            .node_mut(2)
            .env
            .insert("TORUA_TRAVERSE_LOCALLY".into(), "false".into());
        cluster.start_all().unwrap();
        cluster.wait_green(Duration::from_secs(60)).unwrap();
        let (status, answer) = cluster
            .node(0)
            .post_json("/graph/ingest", &graph(&mut rng, "lc", 400, 3), T)
            .unwrap();
        assert_eq!(
            (status, &answer["errors"]),
            (200, &json!(false)),
            "{answer}"
        );
        let seeds: Vec<Vec<String>> = (0..8)
            .map(|_| {
                let set: BTreeSet<String> = (0..1 + rng.below(4))
                    .map(|_| format!("lc-{}", rng.below(400)))
                    .collect();
                set.into_iter().collect()
            })
            .collect();
        for hops in [1, 2] {
            let (local, remote, rounds) = compare(&mut f, &cluster, &label, &seeds, hops);
            eprintln!("{label}, {hops} hops: {local} relations local, {remote} remote, {rounds} rounds for {} neighbourhoods", seeds.len());
            f.check(local > 0, || {
                format!("{label}: no relation followed locally")
            });
            if replicas == "3" {
                // Every node holds every shard: one round, nothing remote.
                f.check(remote == 0 && rounds == seeds.len() as u64, || {
                    format!("{label}, {hops} hops: {remote} remote, {rounds} rounds for {} neighbourhoods", seeds.len())
                });
            } else {
                f.check(remote > 0, || {
                    format!("{label}: no relation followed remotely")
                });
            }
        }
        // A retrieval's expansion reports the same figures.
        let retrieve = json!({"query": "entity 7", "mode": "local", "hops": 2});
        let answer = cluster.node(0).post_ok("/retrieve", &retrieve, T).unwrap();
        f.check(answer["traversal"]["rounds"].as_u64().is_some(), || {
            format!("{label}: /retrieve without traversal figures: {answer}")
        });
        let text = with_key(agent().get(&cluster.node(0).url("/metrics")))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        f.check(
            counter(
                &text,
                "torua_traversal_relations_followed_total{where=\"local\"}",
            ) > 0.0
                && counter(&text, "torua_traversal_rounds_total") > 0.0,
            || format!("{label}: /metrics does not count traversals"),
        );
    }
    f.finish("locality", started);
}
