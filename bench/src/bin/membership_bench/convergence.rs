//! Convergence: how long a freshly started cluster of each size takes until every node
//! lists every other as ready and they agree on one coordinator.

use super::*;

pub(crate) struct ConvergenceTrial {
    all_up_ms: Option<f64>,
    converged_ms: f64,
    coordinator: String,
}

pub(crate) fn convergence_trial(args: &Args, n: usize) -> Result<ConvergenceTrial> {
    let mut cluster = TestCluster::new(n, args.common.options())?;
    let all: Vec<usize> = (0..n).collect();
    let expected = ids(&cluster, &all);
    let poller = Poller::start(
        &cluster,
        &all,
        args.poll_interval(n),
        Duration::from_secs(2),
    );
    let t0 = Instant::now();
    for node in &mut cluster.nodes {
        node.start()?;
    }
    let mut answered: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut found = None;
    let (at, _) = poller
        .wait_for(&all, t0, Duration::from_secs(60), |at, answers| {
            for &i in answers.keys() {
                answered.entry(i).or_insert(at);
            }
            found = agreed(answers, &expected);
            found.is_some()
        })
        .with_context(|| format!("{n} nodes did not converge"))?;
    drop(poller);
    let all_up_ms = (answered.len() == n).then(|| ms(*answered.values().max().unwrap() - t0));
    let (coordinator, _) = found.expect("set by the check");
    Ok(ConvergenceTrial {
        all_up_ms,
        converged_ms: ms(at - t0),
        coordinator,
    })
}

pub(crate) fn convergence(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let sizes = args.sizes.clone().unwrap_or_else(|| vec![3, 10, 32]);
    let trials = args.trials.unwrap_or(3);
    println!(
        "\n## convergence ({}; {trials} trials per size; baseline: 1 node)",
        args.label()
    );
    let mut all_sizes = vec![1];
    all_sizes.extend(sizes.iter().copied().filter(|&n| n != 1));
    let mut summaries = Vec::new();
    let mut baseline: Option<f64> = None;
    println!(
        "{:>5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8}  poll",
        "nodes", "trials", "min ms", "median ms", "max ms", "up ms", "ratio"
    );
    for n in all_sizes {
        let mut times = Vec::new();
        let mut ups = Vec::new();
        let mut failures = 0;
        for trial in 0..trials {
            match convergence_trial(args, n) {
                Ok(t) => {
                    out.emit(
                        json!({"bench": "convergence", "kind": "trial", "nodes": n, "trial": trial,
                        "converged_ms": r1(t.converged_ms), "all_answering_ms": t.all_up_ms.map(r1),
                        "coordinator": t.coordinator,
                        "poll_interval_ms": ms(args.poll_interval(n))}),
                    )?;
                    eprintln!(
                        "  convergence n={n} trial {trial}: {:.0} ms",
                        t.converged_ms
                    );
                    times.push(t.converged_ms);
                    ups.extend(t.all_up_ms);
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("  convergence n={n} trial {trial} FAILED: {e:#}");
                    out.emit(
                        json!({"bench": "convergence", "kind": "failure", "nodes": n, "trial": trial,
                        "error": format!("{e:#}")}),
                    )?;
                }
            }
        }
        let s = pct(&times);
        let up = pct(&ups);
        if n == 1 {
            baseline = s.map(|s| s.median);
        }
        let ratio = match (s, baseline) {
            (Some(s), Some(b)) if b > 0.0 => Some(s.median / b),
            _ => None,
        };
        println!(
            "{:>5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8}  {} ms{}",
            n,
            times.len(),
            fmt_ms(s.map(|s| s.min)),
            fmt_ms(s.map(|s| s.median)),
            fmt_ms(s.map(|s| s.max)),
            fmt_ms(up.map(|s| s.median)),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
            ms(args.poll_interval(n)),
            if failures > 0 {
                format!("  ({failures} FAILED)")
            } else {
                String::new()
            },
        );
        let summary = json!({"bench": "convergence", "kind": "summary", "nodes": n, "trials": trials,
            "failures": failures, "converged": stats_json(s), "all_answering": stats_json(up),
            "baseline_single_node_median_ms": baseline.map(r1),
            "ratio_to_single_node": ratio.map(|r| (r * 100.0).round() / 100.0),
            "poll_interval_ms": ms(args.poll_interval(n))});
        out.emit(summary.clone())?;
        summaries.push(summary);
    }
    println!("(up ms: median time until every node answered /cluster/health; ratio: median / 1-node median)");
    Ok(summaries)
}
