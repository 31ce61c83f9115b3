//! Loading prepared ingest bodies into a cluster: one body retried until acknowledged, and many
//! bodies sent by parallel clients spread over the nodes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::http::short;
use crate::log::log;

/// How long one batch is retried before the ingest is declared failed.
pub const GIVE_UP: Duration = Duration::from_secs(300);

/// POSTs one body until it is acknowledged without errors (the items are upserts: a retry is
/// harmless); returns the number of retries. Fails after [`GIVE_UP`].
pub fn post_batch(agent: &ureq::Agent, url: &str, body: &[u8]) -> anyhow::Result<usize> {
    let mut retries = 0;
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let (status, text) = match crate::http::with_key(agent.post(url))
            .set("content-type", "application/json")
            .send_bytes(body)
        {
            Ok(r) => (r.status(), r.into_string()?),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        let ok = status == 200
            && serde_json::from_str::<Value>(&text).is_ok_and(|v| v["errors"] == false);
        if ok {
            return Ok(retries);
        }
        if Instant::now() > deadline {
            bail!(
                "POST {url}: still failing after {retries} retries: {status} {}",
                short(&text, 500)
            );
        }
        if retries < 3 || retries % 20 == 0 {
            log(format!(
                "POST {url}: {status} {} (retrying)",
                short(&text, 300)
            ));
        }
        retries += 1;
        std::thread::sleep(Duration::from_millis(if status == 429 || status == 503 {
            200
        } else {
            1000
        }));
    }
}

/// What [`post_all`] did.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Retries over all batches.
    pub retries: usize,
    /// Items in acknowledged batches.
    pub acknowledged: usize,
    /// The batch that failed for good, if one did (no batch is started after it).
    pub failure: Option<anyhow::Error>,
    /// The deadline passed before every batch was sent (no batch is started after it).
    pub deadline_passed: bool,
}

impl Loaded {
    /// The retries, or an error naming `what` when a batch failed or the deadline passed.
    pub fn into_result(self, what: &str) -> anyhow::Result<usize> {
        if let Some(e) = self.failure {
            return Err(e.context(format!("loading {what}")));
        }
        if self.deadline_passed {
            bail!("loading {what}: --max-minutes passed during the load");
        }
        Ok(self.retries)
    }
}

/// Sends `bodies` (item count, JSON) with `clients` threads, thread k posting to `urls[k mod n]`
/// with an agent of `timeout` per request, each batch through [`post_batch`]. Logs progress at
/// every tenth of the items.
pub fn post_all(
    what: &str,
    urls: &[String],
    bodies: &[(usize, Vec<u8>)],
    clients: usize,
    deadline: Instant,
    timeout: Duration,
) -> Loaded {
    let next = AtomicUsize::new(0);
    let retries = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let late = Mutex::new(false);
    let clients = clients.min(bodies.len()).max(1);
    let barrier = Barrier::new(clients);
    let total: usize = bodies.iter().map(|b| b.0).sum();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for k in 0..clients {
            let url = &urls[k % urls.len()];
            let (next, retries, done, failure, late, barrier) =
                (&next, &retries, &done, &failure, &late, &barrier);
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(timeout).build();
                barrier.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= bodies.len() || failure.lock().expect("lock").is_some() {
                        return;
                    }
                    if Instant::now() > deadline {
                        *late.lock().expect("lock") = true;
                        return;
                    }
                    match post_batch(&agent, url, &bodies[i].1) {
                        Ok(n) => {
                            retries.fetch_add(n, Ordering::SeqCst);
                            let before = done.fetch_add(bodies[i].0, Ordering::SeqCst);
                            let after = before + bodies[i].0;
                            if after * 10 / total.max(1) > before * 10 / total.max(1) {
                                let secs = started.elapsed().as_secs_f64();
                                log(format!(
                                    "  {what}: {after}/{total} acknowledged in {secs:.0} s ({:.0}/s)",
                                    after as f64 / secs.max(1e-9)
                                ));
                            }
                        }
                        Err(e) => {
                            *failure.lock().expect("lock") = Some(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    Loaded {
        retries: retries.into_inner(),
        acknowledged: done.into_inner(),
        failure: failure.into_inner().expect("lock"),
        deadline_passed: late.into_inner().expect("lock"),
    }
}

/// What a [`Writer`] saw: the ids of its acknowledged entities, and every write that failed.
#[derive(Debug, Default)]
pub struct Written {
    pub acknowledged: Vec<String>,
    pub failed: Vec<String>,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} entities acknowledged, {} batches not",
            self.acknowledged.len(),
            self.failed.len()
        )
    }
}

/// A client writing batches of 20 entities (`<prefix>-<batch>-<j>`) without pause, one at a time,
/// through one node, until stopped: each batch is sent once and counted as acknowledged or failed.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    written: std::sync::Arc<Mutex<Written>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts writing through `base` (a node's URL, e.g. `http://127.0.0.1:7100`).
    pub fn start(base: &str, prefix: &str, timeout: Duration) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let written = std::sync::Arc::new(Mutex::new(Written::default()));
        let (url, prefix) = (
            format!("{}/graph/ingest", base.trim_end_matches('/')),
            prefix.to_string(),
        );
        let (stop_, written_) = (stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            let mut k = 0;
            while !stop_.load(Ordering::SeqCst) {
                let ids: Vec<String> = (0..20).map(|j| format!("{prefix}-{k}-{j}")).collect();
                let body = serde_json::json!({"entities": ids.iter().map(|id| serde_json::json!({
                    "id": id, "title": id.to_uppercase(), "type": "THING",
                    "description": "written by the test's client",
                })).collect::<Vec<_>>()});
                let answer = crate::http::post_json(&url, &body, timeout);
                let mut w = written_.lock().expect("writer lock");
                match answer {
                    Ok((200, a)) if a["errors"] == false => w.acknowledged.extend(ids),
                    other => w.failed.push(format!("batch {k}: {other:?}")),
                }
                k += 1;
            }
        });
        Writer {
            stop,
            written,
            thread: Some(thread),
        }
    }

    /// Batches sent so far (acknowledged or not).
    pub fn batches(&self) -> usize {
        let w = self.written.lock().expect("writer lock");
        w.acknowledged.len() / 20 + w.failed.len()
    }

    /// Waits until `n` more batches were sent, at most `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let from = self.batches();
        crate::wait::poll(timeout, Duration::from_millis(50), || {
            (self.batches() >= from + n).then_some(()).ok_or(())
        })
        .map_err(|_| anyhow::anyhow!("the writer sent fewer than {n} batches in {timeout:?}"))
    }

    /// Stops writing and returns what was written.
    pub fn stop(mut self) -> Written {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.written.lock().expect("writer lock"))
    }
}

impl crate::TestCluster {
    /// How many of the entities `ids` node `i` reads (by `POST /query`); `None` when it does not
    /// answer 200.
    pub fn entities_read(&self, i: usize, ids: &[String], timeout: Duration) -> Option<u64> {
        let query = serde_json::json!({
            "cypher": "MATCH (e:Entity) WHERE e.id IN $ids AND e.title <> '' RETURN count(*) AS n",
            "params": {"ids": ids},
        });
        let (status, answer) = self.node(i).post_json("/query", &query, timeout).ok()?;
        (status == 200).then(|| answer["rows"][0][0].as_u64())?
    }
}
