//! False deaths: how often a live node is declared dead while the machine is busy
//! (CPU-burning spinner processes), over timed phases.

use super::*;

/// Busy-loop child processes (`membership_bench spin`), killed on drop.
pub(crate) struct Spinners(pub(crate) Vec<Child>);

impl Spinners {
    pub(crate) fn start(count: usize) -> Result<Spinners> {
        // /proc/self/exe still runs this program if its file was replaced (rebuilt) since it started.
        let proc_exe = PathBuf::from("/proc/self/exe");
        let exe = if proc_exe.exists() {
            proc_exe
        } else {
            std::env::current_exe()?
        };
        let mut children = Vec::new();
        for _ in 0..count {
            children.push(
                Command::new(&exe)
                    .arg("spin")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("cannot start a busy-loop process")?,
            );
        }
        Ok(Spinners(children))
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn spin() -> ! {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
}

/// CPU time (busy, total; seconds at 100 jiffies a second) the machine spent so far, to report
/// load.
pub(crate) fn machine_busy_seconds() -> Option<(f64, f64)> {
    machine_jiffies().map(|(busy, total)| (busy / 100.0, total / 100.0))
}

pub(crate) struct Phase {
    name: String,
    samples: usize,
    unanswered: usize,
    bad_pairs: BTreeMap<(String, String), (String, f64)>,
    dead_pairs: BTreeSet<(String, String)>,
    bad_samples: usize,
    coordinator_changes: usize,
    coordinators: BTreeSet<(String, u64)>,
    heartbeat_ages: Vec<f64>,
    exited: Vec<String>,
    cpu_busy: Option<f64>,
}

pub(crate) fn false_deaths_phase(
    args: &Args,
    cluster: &mut TestCluster,
    name: &str,
) -> Result<Phase> {
    let n = cluster.nodes.len();
    let all: Vec<usize> = (0..n).collect();
    let expected: Vec<String> = all.iter().map(|&i| cluster.node(i).id.clone()).collect();
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let spinners = if name == "busy" {
        Some(Spinners::start(args.busy_threads)?)
    } else {
        None
    };
    let cpu0 = machine_busy_seconds();
    let poller = Poller::start(
        cluster,
        &all,
        Duration::from_millis(args.sample_ms),
        Duration::from_secs(2),
    );
    let start = Instant::now();
    let end = start + duration;
    let mut phase = Phase {
        name: name.to_string(),
        samples: 0,
        unanswered: 0,
        bad_pairs: BTreeMap::new(),
        dead_pairs: BTreeSet::new(),
        bad_samples: 0,
        coordinator_changes: 0,
        coordinators: BTreeSet::new(),
        heartbeat_ages: Vec::new(),
        exited: Vec::new(),
        cpu_busy: None,
    };
    let mut last_coordinator: BTreeMap<usize, (Option<String>, Option<u64>)> = BTreeMap::new();
    let mut next_report = start + Duration::from_secs(60);
    while let Some(s) = poller.recv(end) {
        if s.at > end {
            break;
        }
        phase.samples += 1;
        let observer = expected[s.node].clone();
        let Some(v) = s.body else {
            phase.unanswered += 1;
            continue;
        };
        let members = v["nodes"].as_array().cloned().unwrap_or_default();
        let mut bad = false;
        for id in &expected {
            let member = members.iter().find(|m| m["id"] == id.as_str());
            let state = member
                .and_then(|m| m["state"].as_str())
                .unwrap_or("missing")
                .to_string();
            if let Some(age) = member.and_then(|m| m["last_heartbeat_ms_ago"].as_f64()) {
                if *id != observer {
                    phase.heartbeat_ages.push(age);
                }
            }
            if state != "ready" {
                bad = true;
                if state == "dead" {
                    phase.dead_pairs.insert((observer.clone(), id.clone()));
                }
                let t = ms(s.at - start) / 1000.0;
                phase
                    .bad_pairs
                    .entry((observer.clone(), id.clone()))
                    .or_insert_with(|| {
                        eprintln!(
                            "  false-deaths {name}: at {t:.1} s {observer} sees {id} as {state}"
                        );
                        (state.clone(), t)
                    });
            }
        }
        if bad {
            phase.bad_samples += 1;
        }
        let pair = (
            v["coordinator"].as_str().map(String::from),
            v["term"].as_u64(),
        );
        if let (Some(c), Some(t)) = (&pair.0, pair.1) {
            phase.coordinators.insert((c.clone(), t));
        }
        if let Some(prev) = last_coordinator.insert(s.node, pair.clone()) {
            if prev != pair {
                phase.coordinator_changes += 1;
                eprintln!(
                    "  false-deaths {name}: at {:.1} s {observer}: coordinator {prev:?} -> {pair:?}",
                    ms(s.at - start) / 1000.0
                );
            }
        }
        if Instant::now() > next_report {
            next_report += Duration::from_secs(60);
            eprintln!(
                "  false-deaths {name}: {:.0} s, {} samples, {} bad pairs, {} coordinator changes",
                start.elapsed().as_secs_f64(),
                phase.samples,
                phase.bad_pairs.len(),
                phase.coordinator_changes
            );
        }
    }
    drop(poller);
    let cpu1 = machine_busy_seconds();
    drop(spinners);
    if let (Some((b0, t0)), Some((b1, t1))) = (cpu0, cpu1) {
        if t1 > t0 {
            phase.cpu_busy = Some((b1 - b0) / (t1 - t0));
        }
    }
    phase.exited = cluster
        .nodes
        .iter_mut()
        .filter_map(|node| (!node.is_running()).then(|| node.id.clone()))
        .collect();
    Ok(phase)
}

pub(crate) fn false_deaths(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let n = args.nodes;
    println!(
        "\n## false deaths ({}; {n} nodes; {} min per phase; phases {}; {} busy-loop process(es) in busy; \
         sampling every {} ms)",
        args.label(),
        args.minutes,
        args.phases.join(","),
        args.busy_threads,
        args.sample_ms
    );
    let mut cluster = TestCluster::start(n, args.common.options())?;
    let (c, t, _) = wait_converged(&mut cluster, args.poll_interval(n), Duration::from_secs(60))?;
    eprintln!("  false-deaths: {n} nodes converged, coordinator {c} term {t}");
    thread::sleep(Duration::from_secs(2));
    let mut phases = Vec::new();
    let mut failure = None;
    for name in &args.phases {
        match false_deaths_phase(args, &mut cluster, name) {
            Ok(p) => phases.push(p),
            Err(e) => {
                // Report the phases that did run before failing.
                failure = Some(e.context(format!("false-deaths phase {name}")));
                break;
            }
        }
    }
    drop(cluster);
    println!(
        "{:>6} {:>8} {:>9} {:>10} {:>10} {:>11} {:>11} {:>10} {:>10} {:>9}",
        "phase",
        "samples",
        "no answer",
        "bad pairs",
        "dead pairs",
        "bad samples",
        "coord chg",
        "hb p99 ms",
        "hb max ms",
        "cpu busy"
    );
    let mut summaries = Vec::new();
    for p in &phases {
        let hb = {
            let mut v = p.heartbeat_ages.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            let p99 = v
                .get(((v.len() as f64 * 0.99) as usize).min(v.len().saturating_sub(1)))
                .copied();
            (p99, v.last().copied())
        };
        println!(
            "{:>6} {:>8} {:>9} {:>10} {:>10} {:>11} {:>11} {:>10} {:>10} {:>9}{}",
            p.name,
            p.samples,
            p.unanswered,
            p.bad_pairs.len(),
            p.dead_pairs.len(),
            p.bad_samples,
            p.coordinator_changes,
            fmt_ms(hb.0),
            fmt_ms(hb.1),
            p.cpu_busy
                .map_or("-".into(), |c| format!("{:.0}%", c * 100.0)),
            if p.exited.is_empty() {
                String::new()
            } else {
                format!("  EXITED: {:?}", p.exited)
            },
        );
        let pairs: Vec<Value> = p
            .bad_pairs
            .iter()
            .map(|((o, m), (state, t))| json!({"observer": o, "member": m, "state": state, "first_seen_s": r1(*t)}))
            .collect();
        let summary = json!({"bench": "false_deaths", "kind": "summary", "phase": p.name, "nodes": n,
            "minutes": args.minutes, "busy_threads": if p.name == "busy" { args.busy_threads } else { 0 },
            "sample_interval_ms": args.sample_ms, "samples": p.samples, "unanswered": p.unanswered,
            "false_death_pairs": p.bad_pairs.len(), "dead_pairs": p.dead_pairs.len(),
            "bad_samples": p.bad_samples, "coordinator_changes": p.coordinator_changes,
            "coordinators_seen": p.coordinators.iter().map(|(c, t)| json!([c, t])).collect::<Vec<_>>(),
            "heartbeat_age_p99_ms": hb.0, "heartbeat_age_max_ms": hb.1,
            "machine_cpu_busy": p.cpu_busy.map(|c| (c * 1000.0).round() / 1000.0),
            "exited": p.exited, "pairs": pairs});
        out.emit(summary.clone())?;
        summaries.push(summary);
    }
    println!(
        "(bad pairs: distinct (observer, member) pairs ever seen not ready or missing; dead pairs: of those, seen \
         as dead; coord chg: changes of (coordinator, term) seen by any observer; hb: last_heartbeat_ms_ago of \
         peers; cpu busy: whole machine, both cores)"
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(summaries),
    }
}
