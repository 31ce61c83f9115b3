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
use torua_testkit::{wait, ClusterOptions, Failures, TestCluster};

const T: Duration = Duration::from_secs(10);
/// Client timeout of the load's requests and of the cluster-wide status calls: a read waits for
/// the writes acknowledged before it (up to 8 s per copy) while the writer keeps the appliers busy.
const SLOW: Duration = Duration::from_secs(30);
const HEAL: Duration = Duration::from_secs(120);
/// Pause of the load's writer between two batches, and of its reader while there is nothing to
/// read: a steady load, below what the appliers of a 2-core machine running two clusters absorb
/// (saturation is the benchmark's business).
const LOAD_PAUSE: Duration = Duration::from_millis(200);
/// Pause of the load's reader between two reads.
const READ_PAUSE: Duration = Duration::from_millis(10);

/// The tests below each run a cluster under a writer and time healing against deadlines: one at a
/// time, so that on a 2-core machine they do not starve each other's failure detectors.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs one scenario (one cluster at a time) with a tally of its failures, then reports them as
/// `what`.
fn scenario(what: &str, run: impl FnOnce(&mut Failures)) {
    // A failed test poisons the lock; the next one may still run.
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let mut f = Failures::default();
    run(&mut f);
    f.finish(what, started);
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
    shared: Arc<LoadState>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What the load's threads share with the test.
#[derive(Default)]
struct LoadState {
    stop: AtomicBool,
    acked: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
    reads: AtomicUsize,
    /// Reads answered 503 once and retried.
    retried: AtomicUsize,
    /// Base URLs requests may go to (the test removes a node before stopping it).
    targets: Mutex<Vec<String>>,
    /// Bumped by every change of `targets`.
    generation: AtomicUsize,
    /// Per thread (writer, reader): the `generation` at the start of its latest round, so a thread
    /// that has seen a change has no request in flight to the targets before it.
    seen: [AtomicUsize; 2],
}

impl LoadState {
    /// The target of a thread's `n`th request.
    fn pick(&self, n: usize) -> String {
        let t = self.targets.lock().unwrap();
        t[n % t.len()].clone()
    }
}

impl Load {
    fn start(targets: Vec<String>, count_errors: bool) -> Load {
        let mut load = Load {
            shared: Arc::new(LoadState {
                targets: Mutex::new(targets),
                ..LoadState::default()
            }),
            threads: Vec::new(),
        };
        {
            let s = load.shared.clone();
            load.threads.push(std::thread::spawn(move || {
                let mut n = 0;
                while !s.stop.load(Ordering::SeqCst) {
                    s.seen[0].store(s.generation.load(Ordering::SeqCst), Ordering::SeqCst);
                    let base = s.pick(n);
                    let (ids, body) = batch(&format!("w{n}"), 10);
                    n += 1;
                    match torua_testkit::post_json(
                        &format!("{base}/graph/ingest"),
                        &body,
                        Duration::from_secs(30),
                    ) {
                        Ok((200, a)) if a["errors"] == false => s.acked.lock().unwrap().extend(ids),
                        other if count_errors => s
                            .errors
                            .lock()
                            .unwrap()
                            .push(format!("write to {base}: {other:?}")),
                        _ => {}
                    }
                    std::thread::sleep(LOAD_PAUSE);
                }
            }));
        }
        {
            let s = load.shared.clone();
            load.threads.push(std::thread::spawn(move || {
                let mut n = 0usize;
                while !s.stop.load(Ordering::SeqCst) {
                    s.seen[1].store(s.generation.load(Ordering::SeqCst), Ordering::SeqCst);
                    let id = {
                        let a = s.acked.lock().unwrap();
                        if a.is_empty() {
                            None
                        } else {
                            Some(a[(n * 7919) % a.len()].clone())
                        }
                    };
                    n += 1;
                    let Some(id) = id else {
                        std::thread::sleep(LOAD_PAUSE);
                        continue;
                    };
                    let base = s.pick(n);
                    let url = format!("{base}/graph/entities/{id}");
                    // A well-behaved client retries a 503 (it carries `Retry-After: 1`): the one
                    // in-sync copy may be applying a backlog on a starved CPU while the other copy
                    // is being rebuilt. A second 503 in a row still counts as a failure.
                    let mut answer = torua_testkit::get_json(&url, SLOW);
                    if matches!(&answer, Ok(v) if v["error"]["status"] == 503) {
                        s.retried.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_secs(1));
                        answer = torua_testkit::get_json(&url, SLOW);
                    }
                    match answer {
                        Ok(v) if v["entity"]["id"] == id.as_str() => {
                            s.reads.fetch_add(1, Ordering::SeqCst);
                        }
                        other => {
                            // A wrong answer (a 404 for an acknowledged id) always counts.
                            let wrong = matches!(&other, Ok(v) if v["error"]["status"] == 404);
                            if wrong || count_errors {
                                s.errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("read {id} from {base}: {other:?}"));
                            }
                        }
                    }
                    std::thread::sleep(READ_PAUSE);
                }
            }));
        }
        load
    }

    /// Sends the load's requests to `targets` from now on; returns once no request to the targets
    /// before is in flight any more.
    fn set_targets(&self, targets: Vec<String>) {
        *self.shared.targets.lock().unwrap() = targets;
        let now = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        wait::until(
            "every load thread sending to the new targets",
            SLOW + T,
            || {
                let seen: Vec<usize> = self
                    .shared
                    .seen
                    .iter()
                    .map(|s| s.load(Ordering::SeqCst))
                    .collect();
                if seen.iter().all(|&g| g >= now) {
                    Ok(())
                } else {
                    Err(format!("generation {now}, threads at {seen:?}"))
                }
            },
        );
    }

    /// Waits until at least `n` writes are acknowledged.
    fn wait_acked(&self, n: usize) {
        wait::until(&format!("{n} writes acknowledged"), HEAL, || {
            let acked = self.shared.acked.lock().unwrap().len();
            if acked >= n {
                Ok(())
            } else {
                Err(format!("{acked} acked"))
            }
        });
    }

    fn finish(mut self) -> (Vec<String>, Vec<String>, usize) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        let acked = self.shared.acked.lock().unwrap().clone();
        let errors = self.shared.errors.lock().unwrap().clone();
        let retried = self.shared.retried.load(Ordering::SeqCst);
        if retried > 0 {
            eprintln!("{retried} reads were answered 503 once and retried");
        }
        (acked, errors, self.shared.reads.load(Ordering::SeqCst))
    }
}

fn bases(cluster: &TestCluster, except: Option<usize>, n: usize) -> Vec<String> {
    (0..n)
        .filter(|i| Some(*i) != except)
        .map(|i| cluster.node(i).url(""))
        .collect()
}

/// Ok (copies per node) once node `i` reports green health and copies on `nodes` nodes.
fn green_with_copies_on(
    cluster: &TestCluster,
    i: usize,
    nodes: usize,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let h = cluster.node(i).get_json("/cluster/health", T)?;
    let per = copies_per_node(&cluster.node(i).get_json("/cluster/shards", SLOW)?);
    anyhow::ensure!(
        h["status"] == "green" && per.len() == nodes,
        "{} {per:?}",
        h["status"]
    );
    Ok(per)
}

/// `/cluster/shards?checksum=true` from node `i`, asked again for up to 60 s while a copy busy
/// applying a backlog gives no checksum; the last answer if one never does.
fn shards_with_checksums(cluster: &TestCluster, i: usize) -> Value {
    wait::answer(
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            cluster
                .node(i)
                .get_json("/cluster/shards?checksum=true", Duration::from_secs(60))
                .unwrap()
        },
        |shards| {
            shards["copies"]
                .as_array()
                .is_some_and(|c| c.iter().all(|c| c["checksum"].is_string()))
        },
    )
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
    let shards = shards_with_checksums(cluster, i);
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
    let shards = shards_with_checksums(cluster, 0);
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

/// Where a scenario must end: every acknowledged id readable ([`check_readable`]), each shard's
/// two copies agreeing as node 0 lists them ([`check_copies_agree`]) and at one sequence number
/// ([`check_same_seq`]).
fn check_healed(f: &mut Failures, cluster: &mut TestCluster, acked: &[String]) {
    check_readable(f, cluster, acked);
    check_copies_agree(f, cluster, 0, 2);
    check_same_seq(f, cluster);
}

/// Every acknowledged id readable from every running node: one listing of every entity per node
/// (a `/query`, retried while copies settle), and point reads of a sample, where a 404 is a wrong
/// answer at once.
fn check_readable(f: &mut Failures, cluster: &mut TestCluster, acked: &[String]) {
    let body = json!({"cypher": "MATCH (e:Entity) WHERE e.stub = false RETURN e.id",
                      "timeout_ms": 60000, "allow_partial": false});
    for i in cluster.running() {
        let node = cluster.node(i);
        let listing = wait::poll(
            Duration::from_secs(60),
            Duration::from_millis(500),
            || match node.post_json("/query", &body, Duration::from_secs(90)) {
                Ok((200, v)) if v["_shards"]["failed"] == 0 => Ok(v["rows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r[0].as_str().map(String::from))
                    .collect()),
                other => Err(other),
            },
        );
        let listed: std::collections::HashSet<String> = listing.unwrap_or_else(|other| {
            f.fail(format!("{}: cannot list entities: {other:?}", node.id));
            Default::default()
        });
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
            // Ok(None) when right, Ok(Some(why)) for a wrong answer (at once), Err while refused.
            let read = wait::poll(
                Duration::from_secs(30),
                Duration::from_millis(200),
                || match node.get_json(&format!("/graph/entities/{id}"), T) {
                    Ok(v) if v["entity"]["id"] == id.as_str() => Ok(None),
                    Ok(v) if v["error"]["status"] == 404 => Ok(Some(format!("{id}: {v}"))),
                    other => Err(format!("{id}: {other:?}")),
                },
            );
            if let Some(why) = read.unwrap_or_else(Some) {
                wrong.push(why);
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
    scenario("dead node replaced, then rebalanced", |f| {
        let mut cluster = TestCluster::start_green(4, options(4), HEAL).unwrap();
        let load = Load::start(bases(&cluster, Some(3), 4), false);
        load.wait_acked(500);
        let held = copies_per_node(&cluster.node(0).get_json("/cluster/shards", SLOW).unwrap());
        eprintln!("copies per node before the kill: {held:?}");
        cluster.node_mut(3).kill9();
        let killed = Instant::now();
        // Replacement after TORUA_REPLACE_AFTER (5 s), filled by snapshot + catch-up while the
        // writer goes on; green on its own.
        let mut saw_initializing = false;
        wait::until("green again after the kill", HEAL, || {
            let h = cluster.node(0).get_json("/cluster/health", T)?;
            if h["shards"]["initializing_shards"].as_u64() > Some(0) {
                saw_initializing = true;
            }
            let gone = h["nodes"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|m| m["id"] == "node-4" && m["state"] == "dead")
            });
            anyhow::ensure!(h["status"] == "green" && gone, "{h}");
            Ok(())
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
        check_copies_agree(f, &cluster, 0, 2);

        // node-4 returns with its old files: the replaced copies are dropped, and rebalancing gives it
        // copies again (copies per node differ by at most one).
        cluster.node_mut(3).start().unwrap();
        load.set_targets(bases(&cluster, None, 4));
        wait::until("balanced and green with node-4 back", HEAL, || {
            let per = green_with_copies_on(&cluster, 0, 4)?;
            let (most, least) = (per.values().max(), per.values().min());
            anyhow::ensure!(most.zip(least).is_some_and(|(m, l)| m - l <= 1), "{per:?}");
            Ok(())
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
        check_healed(f, &mut cluster, &acked);
    });
}

#[test]
fn drain_and_rolling_restart_fail_no_request() {
    scenario("drain and rolling restart", |f| {
        let mut o = options(3);
        o.env.insert("TORUA_DRAIN_TIMEOUT".into(), "60s".into());
        let mut cluster = TestCluster::start_green(3, o, HEAL).unwrap();
        let load = Load::start(bases(&cluster, None, 3), true);
        load.wait_acked(300);

        // Operator drain: node-2 ends with no copies and no primary role; undrain brings copies back.
        let (status, answer) = cluster
            .node(0)
            .post_json("/nodes/node-2/drain", &json!({}), T)
            .unwrap();
        f.check(status == 200 && answer["draining"] == true, || {
            format!("drain answered {status} {answer}")
        });
        let mut saw_relocating = false;
        wait::until("node-2 drained", HEAL, || {
            let s = cluster.node(2).get_json("/cluster/shards", SLOW)?;
            let copies = s["copies"].as_array().into_iter().flatten();
            if copies.clone().any(|c| c["state"] == "relocating") {
                saw_relocating = true;
            }
            let left = copies.filter(|c| c["node"] == "node-2").count();
            let moving = s["moves"].as_array().is_none_or(|m| !m.is_empty());
            anyhow::ensure!(
                left == 0 && !moving,
                "{left} copies left, moves {}",
                s["moves"]
            );
            Ok(())
        });
        f.check(saw_relocating, || "no copy was reported relocating".into());
        let s = cluster.node(0).get_json("/cluster/shards", SLOW).unwrap();
        f.check(s["draining"].to_string().contains("node-2"), || {
            format!("the drain is not listed: {}", s["draining"])
        });
        let (status, _) =
            torua_testkit::post_json(&cluster.node(0).url("/nodes/nope/drain"), &json!({}), T)
                .unwrap();
        f.check(status == 404, || {
            format!("drain of an unknown node answered {status}")
        });
        let undrain = ureq::delete(&cluster.node(0).url("/nodes/node-2/drain"))
            .timeout(T)
            .call();
        f.check(undrain.is_ok(), || format!("undrain: {undrain:?}"));
        wait::until("balanced after the undrain", HEAL, || {
            green_with_copies_on(&cluster, 0, 3)
        });

        // Rolling restart: each node in turn drains (SIGTERM), stops, starts again; the client sends
        // to the other nodes meanwhile and must see no failure.
        for i in 0..3 {
            load.set_targets(bases(&cluster, Some(i), 3));
            cluster.node_mut(i).terminate_timed(Duration::from_secs(90));
            let log = cluster.node(i).log_tail(50);
            f.check(log.contains("drained"), || {
                format!("node-{} did not drain before leaving: {log}", i + 1)
            });
            cluster.node_mut(i).start().unwrap();
            cluster.wait_node_up(i, HEAL).unwrap();
            wait::until("green after the restart", HEAL, || {
                green_with_copies_on(&cluster, i, 3)
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
        check_healed(f, &mut cluster, &acked);
    });
}

#[test]
fn without_quorum_writes_are_refused_and_reads_marked_stale() {
    scenario("no quorum", |f| {
        let mut cluster = TestCluster::start_green(3, options(3), HEAL).unwrap();
        let (ids, body) = batch("q", 20);
        let (status, _) = cluster
            .node(0)
            .post_json("/graph/ingest", &body, T)
            .unwrap();
        assert_eq!(status, 200);
        cluster.node_mut(1).kill9();
        cluster.node_mut(2).kill9();
        // Once node-1 sees both dead: 1 of 3 voting nodes is not a majority.
        wait::until(
            "writes refused for lack of quorum",
            Duration::from_secs(30),
            || {
                let (status, answer) =
                    cluster
                        .node(0)
                        .post_json("/graph/ingest", &batch("late", 2).1, T)?;
                let reason = answer["error"]["reason"].as_str().unwrap_or_default();
                anyhow::ensure!(
                    status == 503 && reason.contains("no quorum"),
                    "{status} {answer}"
                );
                Ok(())
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
        // Watching is the point: for 3 s (many gossip rounds) the map must stay as it is.
        let unchanged =
            wait::throughout(Duration::from_secs(3), Duration::from_millis(500), || {
                let again = cluster.node(0).get_json("/cluster/shards", SLOW).unwrap();
                if again["version"] == version {
                    Ok(())
                } else {
                    Err(again["version"].clone())
                }
            });
        f.check(unchanged.is_ok(), || {
            format!("the shard map changed without a quorum: version {version}, then {unchanged:?}")
        });
        // Quorum back: writes succeed again.
        cluster.node_mut(1).start().unwrap();
        cluster.node_mut(2).start().unwrap();
        wait::until("writes accepted again", HEAL, || {
            let (status, answer) =
                cluster
                    .node(0)
                    .post_json("/graph/ingest", &batch("back", 2).1, T)?;
            anyhow::ensure!(
                status == 200 && answer["errors"] == false,
                "{status} {answer}"
            );
            Ok(())
        });
    });
}
