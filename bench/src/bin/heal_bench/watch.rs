//! Watching the cluster while it heals (a [`Watch`] of successive views until a condition
//! holds), waiting for applied writes, and verifying every item and count afterwards.

use super::*;

/// What happened to the shard copies during one watched period.
#[derive(Default)]
pub(crate) struct Watch {
    /// Copies present when the period began.
    initial: BTreeSet<Pair>,
    last_label: BTreeMap<Pair, String>,
    first_seen: BTreeMap<Pair, f64>,
    in_sync_at: BTreeMap<Pair, f64>,
    gone_at: BTreeMap<Pair, f64>,
    size: BTreeMap<Pair, u64>,
    events: Vec<Value>,
    health_events: Vec<Value>,
    last_health: String,
    pub(crate) first_not_green: Option<f64>,
    samples: usize,
    stale_samples: usize,
    sample_ms: Vec<f64>,
}

impl Watch {
    pub(crate) fn new(initial: &[CopyInfo]) -> Watch {
        let mut w = Watch {
            initial: initial.iter().map(CopyInfo::pair).collect(),
            ..Watch::default()
        };
        for c in initial {
            w.last_label.insert(c.pair(), c.label());
            if let Some(s) = c.size {
                w.size.insert(c.pair(), s);
            }
        }
        w
    }

    pub(crate) fn record(&mut self, v: &View) {
        self.samples += 1;
        let hs = &v.health["shards"];
        let health = format!(
            "{} (active {}, initializing {}, relocating {}, unassigned {}, unavailable {})",
            if v.all_green {
                "green everywhere"
            } else {
                "not green"
            },
            hs["active_shards"],
            hs["initializing_shards"],
            hs["relocating_shards"],
            hs["unassigned_shards"],
            hs["unavailable_shards"]
        );
        // Why it is not green, as the first non-green node says.
        let reasons = if v.all_green {
            Value::Null
        } else {
            v.not_green_reasons.clone()
        };
        let health = if reasons.is_null() {
            health
        } else {
            format!("{health}: {}", short(&reasons.to_string(), 400))
        };
        if !v.all_green && self.first_not_green.is_none() {
            self.first_not_green = Some(v.t);
        }
        if health != self.last_health {
            self.health_events.push(json!({"t": r2(v.t), "health": health, "statuses": v.statuses.iter().map(|(a, b)| format!("{a}={b}")).collect::<Vec<_>>()}));
            self.last_health = health;
        }
        let Some(copies) = &v.copies else { return };
        let present: BTreeSet<Pair> = copies.iter().map(CopyInfo::pair).collect();
        for c in copies {
            let p = c.pair();
            if let Some(s) = c.size {
                self.size.insert(p.clone(), s);
            }
            let label = c.label();
            if self.last_label.get(&p) != Some(&label) {
                let new = !self.initial.contains(&p);
                if new && !self.first_seen.contains_key(&p) {
                    self.first_seen.insert(p.clone(), v.t);
                }
                self.events.push(json!({"t": r2(v.t), "shard": c.shard, "node": c.node, "state": label, "primary": c.primary, "size_bytes": c.size}));
                log(format!(
                    "  +{:.1} s shard {} @ {}: {}{}",
                    v.t,
                    c.shard,
                    c.node,
                    label,
                    if c.primary { " (primary)" } else { "" }
                ));
                self.last_label.insert(p.clone(), label);
            }
            if c.in_sync && !self.in_sync_at.contains_key(&p) {
                if !self.initial.contains(&p) {
                    self.in_sync_at.insert(p.clone(), v.t);
                }
            } else if !c.in_sync {
                self.in_sync_at.remove(&p);
            }
        }
        let vanished: Vec<Pair> = self
            .last_label
            .keys()
            .filter(|p| !present.contains(*p) && !self.gone_at.contains_key(*p))
            .cloned()
            .collect();
        for p in vanished {
            log(format!("  +{:.1} s shard {} @ {}: dropped", v.t, p.0, p.1));
            self.events
                .push(json!({"t": r2(v.t), "shard": p.0, "node": p.1, "state": "dropped"}));
            self.gone_at.insert(p.clone(), v.t);
            self.last_label.remove(&p);
        }
        // A copy that comes back after being dropped counts as new again.
        self.gone_at.retain(|p, _| !present.contains(p));
    }

    /// Copies that appeared during the period and are still there: (pair, first seen, in sync
    /// at, size).
    pub(crate) fn created(&self) -> Vec<(Pair, f64, Option<f64>, Option<u64>)> {
        self.first_seen
            .iter()
            .filter(|(p, _)| self.last_label.contains_key(*p))
            .map(|(p, &t)| {
                (
                    p.clone(),
                    t,
                    self.in_sync_at.get(p).copied(),
                    self.size.get(p).copied(),
                )
            })
            .collect()
    }

    /// Figures of the copies created during the period.
    pub(crate) fn transfer(&self) -> Value {
        self.transfer_where(|_| true)
    }

    /// Figures of the copies created during the period that `keep` accepts.
    pub(crate) fn transfer_where(&self, keep: impl Fn(&Pair) -> bool) -> Value {
        let created: Vec<_> = self.created().into_iter().filter(|c| keep(&c.0)).collect();
        let bytes: u64 = created.iter().filter_map(|c| c.3).sum();
        let first = created.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
        let last = created
            .iter()
            .filter_map(|c| c.2)
            .fold(f64::NEG_INFINITY, f64::max);
        let window = (last - first).max(0.0);
        let all_in_sync = created.iter().all(|c| c.2.is_some());
        let per_copy: Vec<Value> = created
            .iter()
            .map(|(p, t0, t1, size)| {
                json!({"shard": p.0, "node": p.1, "first_seen_s": r2(*t0), "in_sync_s": t1.map(r2),
                       "size_bytes": size, "mb_per_s": match (t1, size) {
                           (Some(t1), Some(s)) if *t1 > *t0 => Some(r2(mb(*s) / (t1 - t0))), _ => None }})
            })
            .collect();
        json!({
            "copies_created": created.len(), "bytes": bytes, "mb": r2(mb(bytes)),
            "first_seen_s": first.is_finite().then(|| r2(first)),
            "last_in_sync_s": last.is_finite().then(|| r2(last)),
            "window_s": (first.is_finite() && last.is_finite()).then(|| r2(window)),
            "mb_per_s": (window > 0.0 && all_in_sync).then(|| r2(mb(bytes) / window)),
            "all_in_sync": all_in_sync,
            "copies_dropped": self.gone_at.len(),
            "per_copy": per_copy,
        })
    }

    pub(crate) fn to_json(&self) -> Value {
        let mean_ms = if self.sample_ms.is_empty() {
            0.0
        } else {
            self.sample_ms.iter().sum::<f64>() / self.sample_ms.len() as f64
        };
        let max_ms = self.sample_ms.iter().copied().fold(0.0, f64::max);
        json!({"samples": self.samples, "stale_samples_dropped": self.stale_samples,
               "mean_sample_ms": r2(mean_ms), "max_sample_ms": r2(max_ms),
               "first_not_green_s": self.first_not_green.map(r2),
               "health_events": self.health_events, "copy_events": self.events})
    }
}

pub(crate) struct WatchOptions {
    /// Nodes whose process must stay up: one that exits fails the watch (a crash).
    pub(crate) must_run: Vec<usize>,
    pub(crate) poll: Duration,
    pub(crate) settle: f64,
    pub(crate) timeout: f64,
    pub(crate) avoid: Option<usize>,
    pub(crate) shards: u32,
    pub(crate) replicas: usize,
}

/// Samples the cluster until `done` has held for `settle` seconds in a row; returns when it
/// first held (of that stretch), the last view, and fails at `timeout` with the last view.
///
/// A sample is launched every `poll` on its own thread (at most `MAX_IN_FLIGHT` at once), so a
/// slow answer (e.g. `/cluster/shards` waiting for a node that was just killed) does not stop the
/// clock; samples are stamped with their launch time and one older than the newest processed is
/// dropped.
pub(crate) fn watch<F>(
    cluster: &mut TestCluster,
    w: &mut Watch,
    start: Instant,
    o: &WatchOptions,
    a: &Args,
    mut done: F,
) -> Result<(f64, View)>
where
    F: FnMut(&mut TestCluster, &View) -> bool,
{
    const MAX_IN_FLIGHT: usize = 8;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let (tx, rx) = std::sync::mpsc::channel::<(View, f64)>();
    let in_flight = std::sync::Arc::new(AtomicUsize::new(0));
    let mut since: Option<f64> = None;
    let mut last_log = Instant::now();
    let mut newest = f64::NEG_INFINITY;
    let mut last: Option<View> = None;
    loop {
        let tick = Instant::now();
        if in_flight.load(Ordering::SeqCst) < MAX_IN_FLIGHT {
            let p = Probe::new(cluster, o.avoid);
            let t = start.elapsed().as_secs_f64();
            let (agent, tx, in_flight) = (agent.clone(), tx.clone(), in_flight.clone());
            let (shards, replicas) = (o.shards, o.replicas);
            in_flight.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let began = Instant::now();
                let v = probe(&agent, &p, shards, replicas, t);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send((v, began.elapsed().as_secs_f64() * 1000.0));
            });
        }
        let mut got = Vec::new();
        loop {
            let left = o.poll.saturating_sub(tick.elapsed());
            match rx.recv_timeout(left) {
                Ok(x) => got.push(x),
                Err(_) => break,
            }
        }
        got.sort_by(|x, y| x.0.t.total_cmp(&y.0.t));
        for (v, ms) in got {
            w.sample_ms.push(ms);
            if v.t < newest {
                w.stale_samples += 1;
                continue;
            }
            newest = v.t;
            w.record(&v);
            if done(cluster, &v) {
                let s = *since.get_or_insert(v.t);
                if v.t - s >= o.settle {
                    return Ok((s, v));
                }
            } else {
                since = None;
            }
            last = Some(v);
        }
        for &j in &o.must_run {
            if !cluster.nodes[j].is_running() {
                let node = &cluster.nodes[j];
                bail!(
                    "{} exited on its own (crash?) at +{:.1} s; the end of its log:\n{}",
                    node.id,
                    start.elapsed().as_secs_f64(),
                    node.log_tail(8)
                );
            }
        }
        let t = start.elapsed().as_secs_f64();
        if last_log.elapsed() > Duration::from_secs(10) {
            log(format!(
                "  +{t:.0} s: {}",
                last.as_ref().map_or("no sample yet".into(), View::line)
            ));
            last_log = Instant::now();
            memory_guard(a.min_available_mb, cluster)?;
        }
        if t > o.timeout {
            bail!(
                "condition not reached within {:.0} s; last sample: {}",
                o.timeout,
                last.as_ref().map_or("none".into(), View::line)
            );
        }
    }
}

pub(crate) fn shards_now(
    cluster: &mut TestCluster,
    checksum: bool,
) -> Result<(Value, Vec<CopyInfo>)> {
    let i = *cluster.running().first().context("no node is running")?;
    let path = if checksum {
        "/cluster/shards?checksum=true"
    } else {
        "/cluster/shards"
    };
    let v = cluster.nodes[i].get_json(path, Duration::from_secs(600))?;
    let copies = parse_copies(&v).with_context(|| format!("no copies in {path}: {v}"))?;
    Ok((v, copies))
}

pub(crate) fn size_of(copies: &[CopyInfo], pred: impl Fn(&CopyInfo) -> bool) -> u64 {
    copies
        .iter()
        .filter(|c| pred(c))
        .filter_map(|c| c.size)
        .sum()
}

/// Waits until no logged write is waiting to be applied anywhere.
pub(crate) fn wait_applied(a: &Args, cluster: &mut TestCluster, timeout: Duration) -> Result<()> {
    let node = *cluster.running().first().context("no node is running")?;
    torua_bench::cluster::wait_applied(
        cluster,
        node,
        Duration::from_secs(600),
        a.min_available_mb,
        Instant::now() + timeout,
        &format!("after {timeout:?}"),
    )
}

/// The checks run after each phase: R in-sync copies per shard on running nodes, in-sync copies
/// agreeing (counts and checksum), primaries holding what was acknowledged (between `expected`
/// and `expected + uncertain` when some writes failed without an answer).
pub(crate) fn verify(
    a: &Args,
    cluster: &mut TestCluster,
    expected: &Totals,
    uncertain: &Totals,
) -> Result<Value> {
    let t = Instant::now();
    // A copy without stats (its node did not answer in time) is asked again, a few times.
    let mut attempts = 0;
    let (answer, copies) = loop {
        attempts += 1;
        let (answer, copies) = shards_now(cluster, true)?;
        let missing = copies
            .iter()
            .filter(|c| c.counts[0].is_none() || c.checksum.is_none())
            .count();
        if missing == 0 || attempts >= 5 {
            break (answer, copies);
        }
        log(format!(
            "  verify: {missing} copies without stats or checksum; asking again"
        ));
        std::thread::sleep(Duration::from_secs(10));
    };
    let checksum_s = t.elapsed().as_secs_f64();
    let running: Vec<String> = cluster
        .running()
        .iter()
        .map(|&i| cluster.nodes[i].id.clone())
        .collect();
    let mut problems = Vec::new();
    let mut by_shard: BTreeMap<u64, Vec<&CopyInfo>> = BTreeMap::new();
    for c in &copies {
        by_shard.entry(c.shard).or_default().push(c);
    }
    let mut no_checksum = 0;
    for s in 0..u64::from(a.shards) {
        let list = by_shard.get(&s).cloned().unwrap_or_default();
        let good: Vec<&&CopyInfo> = list
            .iter()
            .filter(|c| c.in_sync && c.state != "unavailable" && running.contains(&c.node))
            .collect();
        if good.len() < a.replicas {
            problems.push(format!(
                "shard {s}: {} in-sync copies on running nodes (want {}): {:?}",
                good.len(),
                a.replicas,
                list.iter()
                    .map(|c| format!("{}: {}", c.node, c.label()))
                    .collect::<Vec<_>>()
            ));
        }
        if list.iter().filter(|c| c.primary).count() != 1 {
            problems.push(format!("shard {s}: not exactly one primary"));
        }
        if let Some(first) = good.first() {
            for c in &good[1..] {
                if c.counts != first.counts {
                    problems.push(format!(
                        "shard {s}: counts (entities, relations, chunks, documents, communities) differ: {}{} {:?} (seq, applied {:?}) vs {}{} {:?} (seq, applied {:?})",
                        first.node,
                        if first.primary { " (primary)" } else { "" },
                        first.counts,
                        first.seq,
                        c.node,
                        if c.primary { " (primary)" } else { "" },
                        c.counts,
                        c.seq
                    ));
                }
                if c.checksum != first.checksum {
                    problems.push(format!(
                        "shard {s}: checksums differ: {} {:?} vs {} {:?}",
                        first.node, first.checksum, c.node, c.checksum
                    ));
                }
            }
        }
        no_checksum += good.iter().filter(|c| c.checksum.is_none()).count();
    }
    if no_checksum > 0 {
        problems.push(format!(
            "{no_checksum} in-sync copies reported no checksum with ?checksum=true"
        ));
    }
    let mut sums = [0u64; 5];
    let mut no_counts = Vec::new();
    for c in copies.iter().filter(|c| c.primary) {
        if c.counts.iter().any(Option::is_none) {
            no_counts.push(format!("shard {} @ {}", c.shard, c.node));
        }
        for (s, x) in sums.iter_mut().zip(&c.counts) {
            *s += x.unwrap_or(0);
        }
    }
    if !no_counts.is_empty() {
        problems.push(format!(
            "{} primaries reported no counts: {}",
            no_counts.len(),
            no_counts.join(", ")
        ));
    }
    let want = [
        expected.entities,
        expected.relation_copies,
        expected.chunks,
        expected.documents,
        expected.communities,
    ];
    let slack = [
        uncertain.entities,
        uncertain.relation_copies,
        uncertain.chunks,
        uncertain.documents,
        uncertain.communities,
    ];
    for k in 0..5 {
        if no_counts.is_empty() && (sums[k] < want[k] || sums[k] > want[k] + slack[k]) {
            problems.push(format!(
                "primaries hold {} {} (acknowledged: {}{})",
                sums[k],
                COUNT_KEYS[k],
                want[k],
                if slack[k] > 0 {
                    format!(", plus up to {} unanswered", slack[k])
                } else {
                    String::new()
                }
            ));
        }
    }
    let ok = problems.is_empty();
    if !ok {
        log(format!("VERIFICATION FAILED: {}", problems.join("; ")));
    } else {
        log(format!(
            "  verified: {} shards x {} in-sync copies agree (checksums), primaries hold every acknowledged item ({checksum_s:.1} s)",
            a.shards, a.replicas
        ));
    }
    Ok(json!({
        "ok": ok, "problems": problems, "checksum_s": r2(checksum_s), "attempts": attempts,
        "primaries": {"entities": sums[0], "relations": sums[1], "chunks": sums[2], "documents": sums[3], "communities": sums[4]},
        "expected": expected, "uncertain": uncertain, "copies": copies.len(),
        "size_bytes_primaries": size_of(&copies, |c| c.primary),
        "size_bytes_all_copies": size_of(&copies, |_| true),
        "version": answer["version"], "term": answer["term"],
    }))
}
