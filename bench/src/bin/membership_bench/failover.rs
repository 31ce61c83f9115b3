//! Failover: how long the cluster takes to agree on a new coordinator after the
//! coordinator is killed or stopped, and to take it back when it returns.

use super::*;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Stop {
    Kill9,
    Term,
}

impl Stop {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stop::Kill9 => "kill9",
            Stop::Term => "sigterm",
        }
    }
}

pub(crate) struct FailoverTrial {
    /// Signal to every survivor naming the same new coordinator and term.
    failover_ms: f64,
    /// Signal to every survivor listing the stopped node as not ready (dead, or gone after a leave).
    detected_ms: Option<f64>,
    /// Restart of the stopped node to a converged cluster again.
    rejoin_ms: f64,
    old: (String, u64),
    new: (String, u64),
}

pub(crate) fn failover_trial(
    args: &Args,
    cluster: &mut TestCluster,
    stop: Stop,
) -> Result<FailoverTrial> {
    let n = cluster.nodes.len();
    let poll = args.poll_interval(n);
    let (old_c, old_t, _) = wait_converged(cluster, poll, Duration::from_secs(60))?;
    thread::sleep(Duration::from_millis(args.settle_ms));
    let victim = cluster
        .index_of(&old_c)
        .context("coordinator is not one of ours")?;
    let survivors: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
    let poller = Poller::start(cluster, &survivors, poll, Duration::from_secs(2));
    // Let every poll thread have its connection open before the clock starts.
    thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    match stop {
        Stop::Kill9 => cluster.node_mut(victim).kill9(),
        Stop::Term => cluster
            .node_mut(victim)
            .terminate(Duration::from_secs(15))?,
    }
    let mut detected: Option<Instant> = None;
    let mut new = None;
    let (at, _) = poller
        .wait_for(&survivors, t0, Duration::from_secs(60), |at, answers| {
            if detected.is_none() && answers.values().all(|v| !ready_ids(v).contains(&old_c)) {
                detected = Some(at);
            }
            new = same_coordinator(answers).filter(|(c, t)| *c != old_c && *t > old_t);
            new.is_some()
        })
        .with_context(|| format!("no failover after {} of {old_c}", stop.name()))?;
    drop(poller);
    let failover_ms = ms(at - t0);
    let new = new.expect("set by the check");

    let t1 = Instant::now();
    cluster.node_mut(victim).start()?;
    let (_, _, back) = wait_converged(cluster, poll, Duration::from_secs(60))
        .context("no convergence after the restart")?;
    Ok(FailoverTrial {
        failover_ms,
        detected_ms: detected.map(|d| ms(d - t0)),
        rejoin_ms: ms(back - t1),
        old: (old_c, old_t),
        new,
    })
}

/// Per stop kind: failover, detection and rejoin times (ms) and the number of failed trials.
#[derive(Default)]
pub(crate) struct KindResults {
    times: Vec<f64>,
    detected: Vec<f64>,
    rejoin: Vec<f64>,
    failures: usize,
}

pub(crate) fn failover(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let sizes = args.sizes.clone().unwrap_or_else(|| vec![5, 10]);
    let trials = args.trials.unwrap_or(10);
    let kinds: Vec<Stop> = if args.graceful {
        vec![Stop::Kill9, Stop::Term]
    } else {
        vec![Stop::Kill9]
    };
    let gossip = args.gossip_ms();
    println!(
        "\n## failover ({}; {trials} trials per size and stop kind, interleaved; settle {} ms)",
        args.label(),
        args.settle_ms
    );
    println!(
        "{:>5} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>11} {:>10} {:>9}",
        "nodes",
        "stop",
        "trials",
        "median ms",
        "p90 ms",
        "max ms",
        "min ms",
        "detect med",
        "rejoin med",
        "x gossip"
    );
    let mut summaries = Vec::new();
    for n in sizes {
        let mut cluster = TestCluster::start(n, args.common.options())?;
        let mut results: BTreeMap<&str, KindResults> = BTreeMap::new();
        'trials: for trial in 0..trials {
            for &kind in &kinds {
                let entry = results.entry(kind.name()).or_default();
                match failover_trial(args, &mut cluster, kind) {
                    Ok(t) => {
                        eprintln!(
                            "  failover n={n} {} trial {trial}: {:.0} ms ({} t{} -> {} t{}), rejoin {:.0} ms",
                            kind.name(),
                            t.failover_ms,
                            t.old.0,
                            t.old.1,
                            t.new.0,
                            t.new.1,
                            t.rejoin_ms
                        );
                        out.emit(
                            json!({"bench": "failover", "kind": "trial", "stop": kind.name(), "nodes": n,
                            "trial": trial, "failover_ms": r1(t.failover_ms), "detected_ms": t.detected_ms.map(r1),
                            "rejoin_ms": r1(t.rejoin_ms), "old_coordinator": t.old.0, "old_term": t.old.1,
                            "new_coordinator": t.new.0, "new_term": t.new.1,
                            "poll_interval_ms": ms(args.poll_interval(n))}),
                        )?;
                        entry.times.push(t.failover_ms);
                        entry.detected.extend(t.detected_ms);
                        entry.rejoin.push(t.rejoin_ms);
                    }
                    Err(e) => {
                        entry.failures += 1;
                        eprintln!(
                            "  failover n={n} {} trial {trial} FAILED: {e:#}",
                            kind.name()
                        );
                        out.emit(
                            json!({"bench": "failover", "kind": "failure", "stop": kind.name(), "nodes": n,
                            "trial": trial, "error": format!("{e:#}")}),
                        )?;
                        // Start over with a fresh cluster rather than measuring a broken one.
                        cluster.nodes.clear();
                        cluster = match TestCluster::start(n, args.common.options()) {
                            Ok(c) => c,
                            Err(e) => {
                                eprintln!("  cannot restart the {n}-node cluster: {e:#}");
                                break 'trials;
                            }
                        };
                    }
                }
            }
        }
        drop(cluster);
        let graceful_median = results
            .get("sigterm")
            .and_then(|r| pct(&r.times))
            .map(|s| s.median);
        for kind in &kinds {
            let Some(KindResults {
                times,
                detected,
                rejoin,
                failures,
            }) = results.get(kind.name())
            else {
                continue;
            };
            let s = pct(times);
            let d = pct(detected);
            let rj = pct(rejoin);
            let x_gossip = s.map(|s| s.median / gossip);
            let vs_graceful = match (s, graceful_median, kind) {
                (Some(s), Some(g), Stop::Kill9) if g > 0.0 => Some(s.median / g),
                _ => None,
            };
            println!(
                "{:>5} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>11} {:>10} {:>9}{}",
                n,
                kind.name(),
                times.len(),
                fmt_ms(s.map(|s| s.median)),
                fmt_ms(s.map(|s| s.p90)),
                fmt_ms(s.map(|s| s.max)),
                fmt_ms(s.map(|s| s.min)),
                fmt_ms(d.map(|s| s.median)),
                fmt_ms(rj.map(|s| s.median)),
                x_gossip.map_or("-".into(), |r| format!("{r:.1}")),
                if *failures > 0 {
                    format!("  ({failures} FAILED)")
                } else {
                    String::new()
                },
            );
            let summary = json!({"bench": "failover", "kind": "summary", "stop": kind.name(), "nodes": n,
                "trials": trials, "failures": failures, "failover": stats_json(s), "detected": stats_json(d),
                "rejoin": stats_json(rj),
                "median_over_gossip_interval": x_gossip.map(|r| (r * 100.0).round() / 100.0),
                "kill9_median_over_sigterm_median": vs_graceful.map(|r| (r * 100.0).round() / 100.0),
                "poll_interval_ms": ms(args.poll_interval(n))});
            out.emit(summary.clone())?;
            summaries.push(summary);
        }
        if let (Some(k), Some(g)) = (
            results.get("kill9").and_then(|r| pct(&r.times)),
            graceful_median,
        ) {
            println!(
                "{:>5} kill9 median / sigterm median = {:.2}",
                n,
                k.median / g
            );
        }
    }
    println!(
        "(failover: signal until every survivor names the same new coordinator and term; detect: until every \
         survivor lists the old one as not ready; rejoin: restart until converged again; x gossip: median / {gossip} ms)"
    );
    Ok(summaries)
}
