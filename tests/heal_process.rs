//! Self-healing with real processes: a dead node's copies are re-created elsewhere (snapshot over
//! QUIC, then the writes since, under continuous writes) and the cluster turns green on its own;
//! the node coming back drops its replaced copies and gets copies again by rebalancing; a drain
//! moves everything off a node; a rolling restart (SIGTERM drains first) fails no request; a node
//! without quorum refuses writes with 503 and marks reads as possibly stale.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torua_testkit::{ClusterOptions, Failures, TestCluster};

const T: Duration = Duration::from_secs(10);
/// Client timeout of the load's requests and of the cluster-wide status calls: a read waits for
/// the writes acknowledged before it (up to 8 s per copy) while the writer keeps the appliers busy.
const SLOW: Duration = Duration::from_secs(30);
const HEAL: Duration = Duration::from_secs(120);

/// The tests below each run a cluster under a writer and time healing against deadlines: one at a
/// time, so that on a 2-core machine they do not starve each other's failure detectors.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one may still run.
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn options(nodes: usize) -> ClusterOptions {
    let mut o = ClusterOptions::graph(nodes);
    o.env.insert("TORUA_REPLACE_AFTER".into(), "5s".into());
    o.env.insert("TORUA_MEMORY_MB".into(), "256".into());
    o
}

/// A batch of `n` entities chained by relations, ids `<prefix>-<k>`.
fn batch(prefix: &str, n: usize) -> (Vec<String>, Value) {
    let ids: Vec<String> = (0..n).map(|k| format!("{prefix}-{k}")).collect();
    let entities: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "title": id, "type": "T", "description": format!("about {id}")}))
        .collect();
    let relations: Vec<Value> = ids
        .windows(2)
        .map(|w| json!({"id": format!("{}>{}", w[0], w[1]), "source": w[0], "target": w[1]}))
        .collect();
    (ids, json!({"entities": entities, "relations": relations}))
}

/// Writers and readers running against a set of node URLs (changeable while they run).
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    reads: Arc<AtomicUsize>,
    /// Base URLs requests may go to (the test removes a node before stopping it).
    targets: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(targets: Vec<String>, count_errors: bool) -> Load {
        let mut load = Load {
            stop: Arc::default(),
            acked: Arc::default(),
            errors: Arc::default(),
            reads: Arc::default(),
            targets: Arc::new(Mutex::new(targets)),
            threads: Vec::new(),
        };
        let pick = |targets: &Mutex<Vec<String>>, n: usize| {
            let t = targets.lock().unwrap();
            t[n % t.len()].clone()
        };
        {
            let (stop, acked, errors, targets) = (
                load.stop.clone(),
                load.acked.clone(),
                load.errors.clone(),
                load.targets.clone(),
            );
            load.threads.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let base = pick(&targets, n);
                    let (ids, body) = batch(&format!("w{n}"), 10);
                    n += 1;
                    match torua_testkit::post_json(
                        &format!("{base}/graph/ingest"),
                        &body,
                        Duration::from_secs(30),
                    ) {
                        Ok((200, a)) if a["errors"] == false => acked.lock().unwrap().extend(ids),
                        other if count_errors => errors
                            .lock()
                            .unwrap()
                            .push(format!("write to {base}: {other:?}")),
                        _ => {}
                    }
                    // A steady load, below what the appliers of a 2-core machine running two
                    // clusters absorb (saturation is the benchmark's business).
                    std::thread::sleep(Duration::from_millis(200));
                }
            }));
        }
        {
            let (stop, acked, errors, reads, targets) = (
                load.stop.clone(),
                load.acked.clone(),
                load.errors.clone(),
                load.reads.clone(),
                load.targets.clone(),
            );
            load.threads.push(std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let id = {
                        let a = acked.lock().unwrap();
                        if a.is_empty() {
                            None
                        } else {
                            Some(a[(n * 7919) % a.len()].clone())
                        }
                    };
                    n += 1;
                    let Some(id) = id else {
                        // A steady load, below what the appliers of a 2-core machine running two
                        // clusters absorb (saturation is the benchmark's business).
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    };
                    let base = pick(&targets, n);
                    match torua_testkit::get_json(&format!("{base}/graph/entities/{id}"), SLOW) {
                        Ok(v) if v["entity"]["id"] == id.as_str() => {
                            reads.fetch_add(1, Ordering::SeqCst);
                        }
                        other => {
                            // A wrong answer (a 404 for an acknowledged id) always counts.
                            let wrong = matches!(&other, Ok(v) if v["error"]["status"] == 404);
                            if wrong || count_errors {
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("read {id} from {base}: {other:?}"));
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }));
        }
        load
    }

    fn set_targets(&self, targets: Vec<String>) {
        *self.targets.lock().unwrap() = targets;
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(mut self) -> (Vec<String>, Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let errors = self.errors.lock().unwrap().clone();
        (acked, errors, self.reads.load(Ordering::SeqCst))
    }
}

fn bases(cluster: &TestCluster, except: Option<usize>, n: usize) -> Vec<String> {
    (0..n)
        .filter(|i| Some(*i) != except)
        .map(|i| cluster.node(i).url(""))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match f() {
            None => return,
            Some(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} within {timeout:?}: {last}");
}

/// Copies per node from `/cluster/shards`.
fn copies_per_node(shards: &Value) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for c in shards["copies"].as_array().unwrap() {
        *n.entry(c["node"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    n
}

/// Every shard's copies hold the same content (counts and checksum), and each shard has
/// `replicas` copies.
fn check_copies_agree(f: &mut Failures, cluster: &TestCluster, i: usize, replicas: usize) {
    // A copy busy applying a backlog answers its checksum later: ask again for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    let shards = loop {
        let shards = cluster
            .node(i)
            .get_json("/cluster/shards?checksum=true", Duration::from_secs(60))
            .unwrap();
        let all = shards["copies"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["checksum"].is_string()));
        if all || Instant::now() > deadline {
            break shards;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let mut by_shard: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for c in shards["copies"].as_array().unwrap() {
        by_shard
            .entry(c["shard"].as_u64().unwrap())
            .or_default()
            .push(c);
    }
    for (shard, copies) in by_shard {
        f.check(copies.len() == replicas, || {
            format!("shard {shard} has {} copies: {copies:?}", copies.len())
        });
        let first = copies[0];
        for c in &copies {
            // Under writes a copy may be too busy to answer its checksum; the check after the
            // writes stop (`check_same_seq`) requires every one.
            if !c["checksum"].is_string() {
                continue;
            }
            // Under writes, copies can only be compared at the same sequence number: checksums
            // at their `checksum_seq`, counts (read a moment later) at their `applied_seq`.
            if c["checksum_seq"].is_u64() && c["checksum_seq"] == first["checksum_seq"] {
                f.check(c["checksum"] == first["checksum"], || {
                    format!("shard {shard}: checksums differ: {first} vs {c}")
                });
            }
            if c["applied_seq"].is_u64() && c["applied_seq"] == first["applied_seq"] {
                f.check(
                    c["entities"] == first["entities"] && c["relations"] == first["relations"],
                    || format!("shard {shard}: counts differ: {first} vs {c}"),
                );
            }
        }
    }
}

/// Once writes have stopped, every copy of a shard is at the same sequence number (so the
/// checksums above were all compared).
fn check_same_seq(f: &mut Failures, cluster: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let shards = loop {
        let shards = cluster
            .node(0)
            .get_json("/cluster/shards?checksum=true", Duration::from_secs(60))
            .unwrap();
        let all = shards["copies"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["checksum"].is_string()));
        if all || Instant::now() > deadline {
            break shards;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let mut seqs: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for c in shards["copies"].as_array().unwrap() {
        seqs.entry(c["shard"].as_u64().unwrap())
            .or_default()
            .push(c["checksum_seq"].clone());
    }
    for (shard, s) in seqs {
        f.check(s.iter().all(|v| v.is_u64()), || {
            format!("shard {shard}: a copy gave no checksum after the writes: {s:?}")
        });
        f.check(s.windows(2).all(|w| w[0] == w[1]), || {
            format!("shard {shard}: copies at different sequence numbers after the writes: {s:?}")
        });
    }
}

/// Every acknowledged id readable from every running node: one listing of every entity per node
/// (a `/query`, retried while copies settle), and point reads of a sample, where a 404 is a wrong
/// answer at once.
fn check_readable(f: &mut Failures, cluster: &mut TestCluster, acked: &[String]) {
    let body = json!({"cypher": "MATCH (e:Entity) WHERE e.stub = false RETURN e.id",
                      "timeout_ms": 60000, "allow_partial": false});
    for i in cluster.running() {
        let node = cluster.node(i);
        let deadline = Instant::now() + Duration::from_secs(60);
        let listed: std::collections::HashSet<String> = loop {
            match node.post_json("/query", &body, Duration::from_secs(90)) {
                Ok((200, v)) if v["_shards"]["failed"] == 0 => {
                    break v["rows"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r[0].as_str().map(String::from))
                        .collect();
                }
                other if Instant::now() > deadline => {
                    f.fail(format!("{}: cannot list entities: {other:?}", node.id));
                    break Default::default();
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        let missing: Vec<&String> = acked.iter().filter(|id| !listed.contains(*id)).collect();
        f.check(missing.is_empty(), || {
            format!(
                "{} acknowledged ids not listed by {}: {:?}",
                missing.len(),
                node.id,
                &missing[..missing.len().min(10)]
            )
        });
        let mut wrong = Vec::new();
        for id in acked.iter().step_by((acked.len() / 200).max(1)) {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match node.get_json(&format!("/graph/entities/{id}"), T) {
                    Ok(v) if v["entity"]["id"] == id.as_str() => break,
                    Ok(v) if v["error"]["status"] == 404 => {
                        wrong.push(format!("{id}: {v}"));
                        break;
                    }
                    other if Instant::now() > deadline => {
                        wrong.push(format!("{id}: {other:?}"));
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
        f.check(wrong.is_empty(), || {
            format!(
                "point reads on {} failed: {:?}",
                node.id,
                &wrong[..wrong.len().min(10)]
            )
        });
    }
}

#[test]
fn dead_node_is_replaced_then_rejoins_by_rebalancing() {
    let _one = one_cluster_at_a_time();
    let started = Instant::now();
    let mut f = Failures::default();
    let mut cluster = TestCluster::start(4, options(4)).unwrap();
    cluster.wait_green(HEAL).unwrap();
    let load = Load::start(bases(&cluster, Some(3), 4), false);
    wait_until("first writes", HEAL, || {
        (load.acked() < 500).then(|| format!("{} acked", load.acked()))
    });
    let held = copies_per_node(&cluster.node(0).get_json("/cluster/shards", SLOW).unwrap());
    eprintln!("copies per node before the kill: {held:?}");
    cluster.node_mut(3).kill9();
    let killed = Instant::now();
    // Replacement after TORUA_REPLACE_AFTER (5 s), filled by snapshot + catch-up while the
    // writer goes on; green on its own.
    let mut saw_initializing = false;
    wait_until("green again after the kill", HEAL, || {
        let h = cluster.node(0).get_json("/cluster/health", T).ok()?;
        if h["shards"]["initializing_shards"].as_u64() > Some(0) {
            saw_initializing = true;
        }
        let gone = h["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|m| m["id"] == "node-4" && m["state"] == "dead")
        });
        (!(h["status"] == "green" && gone)).then(|| h.to_string())
    });
    eprintln!(
        "green {:.1} s after kill -9 (replace after 5 s)",
        killed.elapsed().as_secs_f64()
    );
    f.check(saw_initializing, || {
        "no copy was seen initializing: was anything re-replicated?".into()
    });
    let shards = cluster.node(1).get_json("/cluster/shards", SLOW).unwrap();
    f.check(!copies_per_node(&shards).contains_key("node-4"), || {
        format!("node-4 still holds copies after replacement: {shards}")
    });
    let log = cluster.node(0).log_tail(4000)
        + &cluster.node(1).log_tail(4000)
        + &cluster.node(2).log_tail(4000);
    f.check(log.contains("installed a copy from a snapshot"), || {
        "no copy was installed from a snapshot".into()
    });
    check_copies_agree(&mut f, &cluster, 0, 2);

    // node-4 returns with its old files: the replaced copies are dropped, and rebalancing gives it
    // copies again (copies per node differ by at most one).
    cluster.node_mut(3).start().unwrap();
    load.set_targets(bases(&cluster, None, 4));
    wait_until("balanced and green with node-4 back", HEAL, || {
        let h = cluster.node(0).get_json("/cluster/health", T).ok()?;
        let s = cluster.node(0).get_json("/cluster/shards", SLOW).ok()?;
        let per = copies_per_node(&s);
        let spread = per.values().max()? - per.values().min()?;
        (!(h["status"] == "green" && per.len() == 4 && spread <= 1))
            .then(|| format!("{} {per:?}", h["status"]))
    });
    let (acked, errors, reads) = load.finish();
    eprintln!(
        "{} acked writes, {reads} reads ok, {} errors during the run",
        acked.len(),
        errors.len()
    );
    f.check(errors.iter().all(|e| !e.contains("404")), || {
        format!("wrong answers: {errors:?}")
    });
    let log4 = cluster.node(3).log_tail(2000);
    f.check(
        log4.contains("dropped a copy the shard map no longer assigns here"),
        || "node-4 did not drop its replaced copies".into(),
    );
    check_readable(&mut f, &mut cluster, &acked);
    check_copies_agree(&mut f, &cluster, 0, 2);
    check_same_seq(&mut f, &cluster);
    f.finish("dead node replaced, then rebalanced", started);
}

#[test]
fn drain_and_rolling_restart_fail_no_request() {
    let _one = one_cluster_at_a_time();
    let started = Instant::now();
    let mut f = Failures::default();
    let mut o = options(3);
    o.env.insert("TORUA_DRAIN_TIMEOUT".into(), "60s".into());
    let mut cluster = TestCluster::start(3, o).unwrap();
    cluster.wait_green(HEAL).unwrap();
    let load = Load::start(bases(&cluster, None, 3), true);
    wait_until("first writes", HEAL, || {
        (load.acked() < 300).then(|| format!("{} acked", load.acked()))
    });

    // Operator drain: node-2 ends with no copies and no primary role; undrain brings copies back.
    let (status, answer) = cluster
        .node(0)
        .post_json("/nodes/node-2/drain", &json!({}), T)
        .unwrap();
    f.check(status == 200 && answer["draining"] == true, || {
        format!("drain answered {status} {answer}")
    });
    let mut saw_relocating = false;
    wait_until("node-2 drained", HEAL, || {
        let s = cluster.node(2).get_json("/cluster/shards", SLOW).ok()?;
        if s["copies"]
            .as_array()?
            .iter()
            .any(|c| c["state"] == "relocating")
        {
            saw_relocating = true;
        }
        let left = copies_per_node(&s).get("node-2").copied().unwrap_or(0);
        (left > 0 || !s["moves"].as_array()?.is_empty()).then(|| format!("{left} copies left"))
    });
    f.check(saw_relocating, || "no copy was reported relocating".into());
    let s = cluster.node(0).get_json("/cluster/shards", SLOW).unwrap();
    f.check(s["draining"].to_string().contains("node-2"), || {
        format!("the drain is not listed: {}", s["draining"])
    });
    let (status, _) =
        torua_testkit::post_json(&cluster.node(0).url("/nodes/nope/drain"), &json!({}), T).unwrap();
    f.check(status == 404, || {
        format!("drain of an unknown node answered {status}")
    });
    let undrain = ureq::delete(&cluster.node(0).url("/nodes/node-2/drain"))
        .timeout(T)
        .call();
    f.check(undrain.is_ok(), || format!("undrain: {undrain:?}"));
    wait_until("balanced after the undrain", HEAL, || {
        let h = cluster.node(0).get_json("/cluster/health", T).ok()?;
        let per = copies_per_node(&cluster.node(0).get_json("/cluster/shards", SLOW).ok()?);
        (!(h["status"] == "green" && per.len() == 3)).then(|| format!("{} {per:?}", h["status"]))
    });

    // Rolling restart: each node in turn drains (SIGTERM), stops, starts again; the client sends
    // to the other nodes meanwhile and must see no failure.
    for i in 0..3 {
        load.set_targets(bases(&cluster, Some(i), 3));
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        cluster
            .node_mut(i)
            .terminate(Duration::from_secs(90))
            .unwrap();
        eprintln!(
            "node-{} drained and stopped in {:.1} s",
            i + 1,
            t.elapsed().as_secs_f64()
        );
        let log = cluster.node(i).log_tail(50);
        f.check(log.contains("drained"), || {
            format!("node-{} did not drain before leaving: {log}", i + 1)
        });
        cluster.node_mut(i).start().unwrap();
        cluster.wait_node_up(i, HEAL).unwrap();
        wait_until("green after the restart", HEAL, || {
            let h = cluster.node(i).get_json("/cluster/health", T).ok()?;
            let per = copies_per_node(&cluster.node(i).get_json("/cluster/shards", SLOW).ok()?);
            (!(h["status"] == "green" && per.len() == 3))
                .then(|| format!("{} {per:?}", h["status"]))
        });
        load.set_targets(bases(&cluster, None, 3));
    }
    let (acked, errors, reads) = load.finish();
    eprintln!(
        "{} acked writes, {reads} reads, {} failed requests",
        acked.len(),
        errors.len()
    );
    f.check(errors.is_empty(), || {
        format!(
            "{} failed requests: {:?}",
            errors.len(),
            &errors[..errors.len().min(10)]
        )
    });
    check_readable(&mut f, &mut cluster, &acked);
    check_copies_agree(&mut f, &cluster, 0, 2);
    check_same_seq(&mut f, &cluster);
    f.finish("drain and rolling restart", started);
}

#[test]
fn without_quorum_writes_are_refused_and_reads_marked_stale() {
    let _one = one_cluster_at_a_time();
    let started = Instant::now();
    let mut f = Failures::default();
    let mut cluster = TestCluster::start(3, options(3)).unwrap();
    cluster.wait_green(HEAL).unwrap();
    let (ids, body) = batch("q", 20);
    let (status, _) = cluster
        .node(0)
        .post_json("/graph/ingest", &body, T)
        .unwrap();
    assert_eq!(status, 200);
    cluster.node_mut(1).kill9();
    cluster.node_mut(2).kill9();
    // Once node-1 sees both dead: 1 of 3 voting nodes is not a majority.
    wait_until(
        "writes refused for lack of quorum",
        Duration::from_secs(30),
        || {
            let (status, answer) = cluster
                .node(0)
                .post_json("/graph/ingest", &batch("late", 2).1, T)
                .ok()?;
            let reason = answer["error"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (!(status == 503 && reason.contains("no quorum"))).then(|| format!("{status} {answer}"))
        },
    );
    let resp = ureq::get(&cluster.node(0).url(&format!("/graph/entities/{}", ids[0])))
        .timeout(T)
        .call();
    match resp {
        Ok(r) => {
            f.check(
                r.header("x-torua-stale")
                    .is_some_and(|h| h.contains("no quorum")),
                || "a read without quorum is not marked x-torua-stale".into(),
            );
        }
        Err(e) => f.fail(format!("a read without quorum failed: {e}")),
    }
    let shards = cluster.node(0).get_json("/cluster/shards", SLOW).unwrap();
    let version = shards["version"].clone();
    std::thread::sleep(Duration::from_secs(3));
    let again = cluster.node(0).get_json("/cluster/shards", SLOW).unwrap();
    f.check(again["version"] == version, || {
        "the shard map changed without a quorum".into()
    });
    // Quorum back: writes succeed again.
    cluster.node_mut(1).start().unwrap();
    cluster.node_mut(2).start().unwrap();
    wait_until("writes accepted again", HEAL, || {
        let (status, answer) = cluster
            .node(0)
            .post_json("/graph/ingest", &batch("back", 2).1, T)
            .ok()?;
        (!(status == 200 && answer["errors"] == false)).then(|| format!("{status} {answer}"))
    });
    f.finish("no quorum", started);
}
