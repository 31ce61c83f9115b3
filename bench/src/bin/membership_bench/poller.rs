//! Watching every node's `/cluster/health` at once: one polling thread per node, and the
//! agreement (one coordinator and term over the expected members) read from their answers.

use super::*;

pub(crate) struct Sample {
    pub(crate) node: usize,
    /// When the request was sent and when the answer arrived.
    sent: Instant,
    pub(crate) at: Instant,
    pub(crate) body: Option<Value>,
}

pub(crate) struct Poller {
    stop: Arc<AtomicBool>,
    rx: Option<mpsc::Receiver<Sample>>,
    threads: Vec<JoinHandle<()>>,
}

impl Poller {
    pub(crate) fn start(
        cluster: &TestCluster,
        nodes: &[usize],
        interval: Duration,
        timeout: Duration,
    ) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let threads = nodes
            .iter()
            .map(|&node| {
                let url = cluster.node(node).url("/cluster/health");
                let stop = stop.clone();
                let tx = tx.clone();
                thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout_connect(timeout)
                        .timeout(timeout)
                        .build();
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let body = agent
                            .get(&url)
                            .call()
                            .ok()
                            .and_then(|r| r.into_json::<Value>().ok());
                        let sample = Sample {
                            node,
                            sent,
                            at: Instant::now(),
                            body,
                        };
                        if tx.send(sample).is_err() {
                            return;
                        }
                        next += interval;
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                })
            })
            .collect();
        Poller {
            stop,
            rx: Some(rx),
            threads,
        }
    }

    pub(crate) fn recv(&self, deadline: Instant) -> Option<Sample> {
        let wait = deadline.saturating_duration_since(Instant::now());
        self.rx.as_ref()?.recv_timeout(wait).ok()
    }

    /// Feeds answers to requests sent at or after `since` into `check` (called with the latest answer of
    /// every node in `nodes`, once all have one) until it returns true; returns when that answer arrived.
    pub(crate) fn wait_for<F>(
        &self,
        nodes: &[usize],
        since: Instant,
        timeout: Duration,
        mut check: F,
    ) -> Result<(Instant, BTreeMap<usize, Value>)>
    where
        F: FnMut(Instant, &BTreeMap<usize, Value>) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut latest: BTreeMap<usize, Value> = BTreeMap::new();
        loop {
            let Some(s) = self.recv(deadline) else {
                let shown: Vec<String> = latest
                    .iter()
                    .map(|(i, v)| format!("  node index {i}: {v}"))
                    .collect();
                bail!(
                    "condition not met within {timeout:?}; last answers:\n{}",
                    shown.join("\n")
                );
            };
            if s.sent < since || !nodes.contains(&s.node) {
                continue;
            }
            match s.body {
                Some(v) => latest.insert(s.node, v),
                None => latest.remove(&s.node),
            };
            if latest.len() == nodes.len() && check(s.at, &latest) {
                return Ok((s.at, latest));
            }
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// (coordinator, term) if every answer lists exactly `expected` as ready and all name the same pair.
pub(crate) fn agreed(
    answers: &BTreeMap<usize, Value>,
    expected: &BTreeSet<String>,
) -> Option<(String, u64)> {
    let all_ready = answers
        .values()
        .all(|v| ready_ids(v).into_iter().collect::<BTreeSet<String>>() == *expected);
    if !all_ready {
        return None;
    }
    same_coordinator(answers)
}

/// (coordinator, term) if every answer names the same pair, whatever the member states.
pub(crate) fn same_coordinator(answers: &BTreeMap<usize, Value>) -> Option<(String, u64)> {
    let mut agreed: Option<(String, u64)> = None;
    for v in answers.values() {
        let pair = (v["coordinator"].as_str()?.to_string(), v["term"].as_u64()?);
        match &agreed {
            None => agreed = Some(pair),
            Some(a) if *a == pair => {}
            Some(_) => return None,
        }
    }
    agreed
}

pub(crate) fn ids(cluster: &TestCluster, nodes: &[usize]) -> BTreeSet<String> {
    nodes.iter().map(|&i| cluster.node(i).id.clone()).collect()
}

/// Waits until every running node agrees on a converged view; returns (coordinator, term, when).
pub(crate) fn wait_converged(
    cluster: &mut TestCluster,
    poll: Duration,
    timeout: Duration,
) -> Result<(String, u64, Instant)> {
    let running = cluster.running();
    let expected = ids(cluster, &running);
    let poller = Poller::start(cluster, &running, poll, Duration::from_secs(2));
    let mut found = None;
    let (at, _) = poller.wait_for(&running, Instant::now(), timeout, |_, answers| {
        found = agreed(answers, &expected);
        found.is_some()
    })?;
    let (c, t) = found.expect("set by the check");
    Ok((c, t, at))
}
