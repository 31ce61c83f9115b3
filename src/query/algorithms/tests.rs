//! The algorithms' supersteps, run in one process over random graphs cut into shards the way
//! placement cuts them, against embedded Kuzu's own `algo` functions on the whole graph:
//! PageRank within 1e-9, the same weakly connected partition, the same degrees, and Louvain
//! communities of a modularity within 2% of Kuzu's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kuzu::Value;
use torua_testkit::algo::{id_values, modularity, oracle_db, projected_graph};

use super::part::{Part, StepReport};
use super::{Algorithm, Next};
use crate::graph::partition::{fnv1a64, home_shard};
use crate::storage::{GraphEntity, GraphPart};

/// A random directed multigraph: `n` vertices, `m` relations, self-loops and repeats allowed,
/// and a few isolated vertices (the ids past `n - n / 10` get no relation).
fn random_graph(seed: u64, n: usize, m: usize) -> (Vec<String>, Vec<(String, String)>) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |bound: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % bound as u64) as usize
    };
    let ids: Vec<String> = (0..n).map(|i| format!("e{seed}-{i}")).collect();
    let linked = (n - n / 10).max(1);
    let relations = (0..m)
        .map(|_| (ids[next(linked)].clone(), ids[next(linked)].clone()))
        .collect();
    (ids, relations)
}

/// A shard copy's graph as storage reads it: `vertices` stored, the other ends of `relations`
/// as stubs, each row with its routing key from `routing`.
fn graph_part(
    vertices: Vec<String>,
    relations: &[(String, String)],
    routing: &HashMap<String, String>,
) -> GraphPart {
    let mut part = GraphPart::default();
    let mut row: HashMap<String, u32> = HashMap::new();
    let mut add = |part: &mut GraphPart, id: &String, stub: bool| {
        *row.entry(id.clone()).or_insert_with(|| {
            part.entities.push(GraphEntity {
                id: id.clone(),
                stub,
                routing: routing.get(id).cloned(),
            });
            part.entities.len() as u32 - 1
        })
    };
    for id in &vertices {
        add(&mut part, id, false);
    }
    for (a, b) in relations {
        let pair = (add(&mut part, a, true), add(&mut part, b, true));
        part.relations.push(pair);
    }
    part
}

/// The graph cut into `shards` parts the way placement cuts it, each part's channels connected
/// to the parts they reach (as the workers do over QUIC when a task loads). A third of the
/// entities are placed by one of four routing keys, the rest by id.
fn connected_parts(
    algorithm: &Algorithm,
    shards: u32,
    ids: &[String],
    relations: &[(String, String)],
) -> BTreeMap<u32, Part> {
    let routing: HashMap<String, String> = (ids.iter())
        .map(|id| (id, fnv1a64(id.as_bytes())))
        .filter(|(_, h)| h % 3 == 0)
        .map(|(id, h)| (id.clone(), format!("group-{}", h % 4)))
        .collect();
    let home = |id: &str| home_shard(id, routing.get(id).map(String::as_str), shards);
    let mut parts: BTreeMap<u32, Part> = (0..shards)
        .map(|s| {
            let relations: Vec<(String, String)> = (relations.iter())
                .filter(|(a, b)| home(a) == s || home(b) == s)
                .cloned()
                .collect();
            let vertices = ids.iter().filter(|id| home(id) == s).cloned().collect();
            let graph = graph_part(vertices, &relations, &routing);
            let part = Part::build(s, shards, algorithm, graph, usize::MAX).unwrap();
            (s, part)
        })
        .collect();
    let channels: Vec<(u32, u32, Vec<String>)> = parts
        .values_mut()
        .flat_map(|p| {
            let from = p.shard;
            p.take_channels()
                .into_iter()
                .map(move |(to, ids)| (from, to, ids))
        })
        .collect();
    // In pieces of 7 ids, last piece first: the workers' messages may arrive in any order.
    for (from, to, ids) in channels {
        let part = parts.get_mut(&to).unwrap();
        for (i, piece) in ids.chunks(7).enumerate().rev() {
            part.connect_piece(from, i * 7, piece);
        }
    }
    parts
}

/// Runs `algorithm` over the graph cut into `shards` parts, delivering values between parts in
/// process as the workers do over QUIC. Returns each vertex's value and the superstep count.
fn run(
    algorithm: &Algorithm,
    shards: u32,
    ids: &[String],
    relations: &[(String, String)],
) -> (HashMap<String, f64>, u32) {
    let mut parts = connected_parts(algorithm, shards, ids, relations);
    let total = ids.len() as u64;
    let mut step = 0;
    let mut steps = 0;
    while algorithm.has_supersteps() {
        let mut sum = StepReport::default();
        let mut mail = Vec::new();
        for part in parts.values_mut() {
            let (r, messages) = part.step(step, total);
            sum.delta += r.delta;
            sum.changed += r.changed;
            mail.extend(messages.into_iter().map(|(to, v)| (part.shard, to, v)));
        }
        for (from, to, values) in mail {
            parts
                .get_mut(&to)
                .unwrap()
                .receive(from, step, &values)
                .unwrap();
        }
        steps += 1;
        if let Next::Done { .. } = algorithm.after(step, &sum) {
            break;
        }
        step += 1;
    }
    let values = parts
        .values()
        .flat_map(|p| p.values().map(|(id, v)| (id.to_string(), v)))
        .collect();
    (values, steps)
}

#[test]
fn pagerank_matches_embedded_kuzu() {
    for (seed, n, m, shards, iterations, tolerance) in [
        (1, 60, 200, 4, 20, 1e-7),
        (2, 300, 1500, 7, 30, 0.0),
        (3, 25, 20, 3, 5, 1e-3),
        (4, 500, 4000, 16, 20, 1e-9),
    ] {
        let (ids, relations) = random_graph(seed, n, m);
        let algorithm = Algorithm::PageRank {
            damping: 0.85,
            iterations,
            tolerance,
        };
        let (ours, _) = run(&algorithm, shards, &ids, &relations);
        let db = oracle_db();
        let conn = projected_graph(&db, &ids, &relations);
        // Kuzu counts its first iteration from 1: `maxIterations` k runs k − 1 updates.
        let theirs = id_values(
            &conn,
            &format!(
                "CALL page_rank('G', dampingFactor := 0.85, maxIterations := {}, tolerance := {tolerance}) \
                 RETURN node.id, rank",
                iterations + 1
            ),
        );
        assert_eq!(theirs.len(), ids.len());
        for (id, rank) in theirs {
            let Value::Double(rank) = rank else {
                panic!("a rank")
            };
            let diff = (ours[&id] - rank).abs();
            assert!(
                diff < 1e-9,
                "seed {seed}: {id}: ours {} vs Kuzu {rank}",
                ours[&id]
            );
        }
    }
}

#[test]
fn components_match_embedded_kuzu() {
    for (seed, n, m, shards) in [
        (5, 200, 120, 5),
        (6, 1000, 700, 16),
        (7, 50, 400, 3),
        (8, 30, 0, 4),
    ] {
        let (ids, relations) = random_graph(seed, n, m);
        let (ours, steps) = run(&Algorithm::Components, shards, &ids, &relations);
        let db = oracle_db();
        let conn = projected_graph(&db, &ids, &relations);
        let theirs = id_values(
            &conn,
            // Kuzu stops after 20 label-propagation rounds unless told otherwise (a long chain
            // is then cut in pieces); ours runs until no label changes.
            "CALL weakly_connected_components('G', maxIterations := 10000) RETURN node.id, group_id",
        );
        // The same partition: group ids by each side's label, then compare the sets of groups.
        let mut a: HashMap<u64, BTreeSet<String>> = HashMap::new();
        for (id, label) in &ours {
            a.entry(*label as u64).or_default().insert(id.clone());
        }
        let mut b: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (id, group) in theirs {
            b.entry(format!("{group:?}")).or_default().insert(id);
        }
        let a: BTreeSet<_> = a.into_values().collect();
        let b: BTreeSet<_> = b.into_values().collect();
        assert_eq!(a.len(), b.len(), "seed {seed}: number of components");
        assert_eq!(a, b, "seed {seed}: partitions differ");
        assert!(steps >= 2 || m == 0, "seed {seed}: {steps} supersteps");
    }
}

#[test]
fn degree_counts_relations_at_each_end() {
    let (ids, relations) = random_graph(9, 300, 2000);
    let (ours, steps) = run(&Algorithm::Degree, 6, &ids, &relations);
    assert_eq!(steps, 0);
    let mut expected: HashMap<&str, f64> = ids.iter().map(|i| (i.as_str(), 0.0)).collect();
    for (a, b) in &relations {
        *expected.get_mut(a.as_str()).unwrap() += 1.0;
        *expected.get_mut(b.as_str()).unwrap() += 1.0;
    }
    for (id, d) in expected {
        assert_eq!(ours[id], d, "{id}");
    }
}

#[test]
fn parts_refuse_more_edges_than_allowed() {
    let (ids, relations) = random_graph(10, 50, 500);
    let graph = graph_part(ids, &relations, &HashMap::new());
    let algorithm = Algorithm::Components;
    let err = Part::build(0, 1, &algorithm, graph, 100).unwrap_err();
    assert!(matches!(err, crate::error::Error::Busy(_)), "{err:?}");
}

/// A graph with `groups` planted communities of `size` entities: `inside` random relations per
/// entity within its group and `across` in all between groups.
fn planted(
    seed: u64,
    groups: usize,
    size: usize,
    inside: usize,
    across: usize,
) -> (Vec<String>, Vec<(String, String)>) {
    let (ids, _) = random_graph(seed, groups * size, 0);
    let mut x = seed | 1;
    let mut next = move |bound: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % bound as u64) as usize
    };
    let mut relations = Vec::new();
    for g in 0..groups {
        for i in 0..size {
            for _ in 0..inside {
                let j = next(size);
                relations.push((ids[g * size + i].clone(), ids[g * size + j].clone()));
            }
        }
    }
    for _ in 0..across {
        relations.push((ids[next(ids.len())].clone(), ids[next(ids.len())].clone()));
    }
    (ids, relations)
}

/// Louvain as the driver runs it (see `task::louvain`), over parts in this process. Returns
/// each entity's community label and the modularity the driver computed.
fn run_louvain(
    shards: u32,
    ids: &[String],
    relations: &[(String, String)],
    rounds: u32,
) -> (HashMap<String, u64>, f64) {
    let algorithm = Algorithm::Louvain { rounds };
    let mut parts = connected_parts(&algorithm, shards, ids, relations);
    let publish = |parts: &mut BTreeMap<u32, Part>| {
        let mail: Vec<_> = parts
            .values()
            .flat_map(|p| p.publish().into_iter().map(move |(to, v)| (p.shard, to, v)))
            .collect();
        for (from, to, values) in mail {
            parts
                .get_mut(&to)
                .unwrap()
                .receive(from, 0, &values)
                .unwrap();
        }
    };
    let mut still = 0;
    for round in 0..rounds {
        publish(&mut parts);
        let mut totals: HashMap<u64, f64> = HashMap::new();
        let mut m2 = 0.0;
        for p in parts.values() {
            let (t, m) = p.totals();
            for (c, k) in t {
                *totals.entry(c).or_default() += k;
            }
            m2 += m;
        }
        let moved: u64 = parts
            .values_mut()
            .map(|p| p.moves(round, &totals, m2))
            .sum();
        still = if moved == 0 { still + 1 } else { 0 };
        if still == 2 {
            break;
        }
    }
    publish(&mut parts);
    let entries: Vec<_> = parts.values().flat_map(|p| p.contracted()).collect();
    let (map, q) = super::louvain::finish(entries);
    for p in parts.values_mut() {
        p.relabel(&map);
    }
    let labels = parts
        .values()
        .flat_map(|p| p.values().map(|(id, v)| (id.to_string(), v as u64)))
        .collect();
    (labels, q)
}

#[test]
fn louvain_finds_communities_as_good_as_embedded_kuzu() {
    for (seed, groups, size, inside, across, shards) in [
        (11, 8, 40, 4, 60, 6),
        (12, 20, 25, 3, 200, 16),
        (13, 5, 100, 6, 40, 3),
        // No planted structure: 600 entities, 1500 random relations.
        (14, 0, 600, 1500, 0, 8),
    ] {
        let (ids, relations) = if groups == 0 {
            random_graph(seed, size, inside)
        } else {
            planted(seed, groups, size, inside, across)
        };
        let (ours, q) = run_louvain(shards, &ids, &relations, 20);
        let ours_q = modularity(&relations, &ours);
        assert!(
            (q - ours_q).abs() < 1e-9,
            "seed {seed}: the driver's modularity {q} vs {ours_q}"
        );
        let db = oracle_db();
        let conn = projected_graph(&db, &ids, &relations);
        let theirs: HashMap<String, String> =
            id_values(&conn, "CALL louvain('G') RETURN node.id, louvain_id")
                .into_iter()
                .map(|(id, c)| (id, format!("{c:?}")))
                .collect();
        let kuzu_q = modularity(&relations, &theirs);
        eprintln!("seed {seed}: modularity ours {ours_q:.4}, Kuzu {kuzu_q:.4}");
        assert!(
            ours_q >= kuzu_q - 0.02 * kuzu_q.abs(),
            "seed {seed}: ours {ours_q} vs Kuzu {kuzu_q}"
        );
    }
}

#[test]
fn sequential_louvain_separates_two_cliques() {
    // Two 4-cliques joined by one edge: two communities, modularity 0.423.
    let mut entries = Vec::new();
    let mut edge = |a: u64, b: u64| {
        entries.push((a, b, 1.0));
        entries.push((b, a, 1.0));
    };
    for group in [0u64, 4] {
        for i in 0..4 {
            for j in i + 1..4 {
                edge(group + i, group + j);
            }
        }
    }
    edge(3, 4);
    let (map, q) = super::louvain::finish(entries);
    assert!((q - 0.4230769).abs() < 1e-6, "{q}");
    assert!(
        (0..4).all(|v| map[&v] == 0) && (4..8).all(|v| map[&v] == 4),
        "{map:?}"
    );
}
