//! Reading `/cluster/health` answers (who is ready, who coordinates) and waiting until every running
//! node of a [`TestCluster`] agrees on a condition, by polling with a deadline.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::cluster::TestCluster;

impl TestCluster {
    /// The shard copies node `i`'s `/cluster/shards` lists.
    pub fn shard_copies(&self, i: usize, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        self.copies_at(i, "/cluster/shards", timeout)
    }

    /// [`TestCluster::shard_copies`] with each copy's checksum (`?checksum=true`).
    pub fn shard_copies_with_checksums(
        &self,
        i: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        self.copies_at(i, "/cluster/shards?checksum=true", timeout)
    }

    /// Why the copies (as node `i` lists them) do not agree yet, or `Ok` once every copy is in
    /// sync and the copies of each shard have one checksum.
    pub fn copies_agree(&self, i: usize) -> anyhow::Result<()> {
        let copies = self.shard_copies_with_checksums(i, Duration::from_secs(30))?;
        anyhow::ensure!(!copies.is_empty(), "no copies listed");
        let mut sums = std::collections::BTreeMap::<u64, std::collections::BTreeSet<String>>::new();
        for c in &copies {
            anyhow::ensure!(c["in_sync"] == true, "a copy is not in sync yet: {c}");
            sums.entry(c["shard"].as_u64().unwrap_or(u64::MAX))
                .or_default()
                .insert(c["checksum"].to_string());
        }
        match sums.iter().find(|(_, s)| s.len() != 1) {
            Some((shard, s)) => bail!("shard {shard}'s copies differ: {s:?}"),
            None => Ok(()),
        }
    }

    /// The `copies` of node `i`'s answer to `path`.
    fn copies_at(&self, i: usize, path: &str, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        let mut answer = self.nodes[i].get_json(path, timeout)?;
        match answer["copies"].take() {
            Value::Array(copies) => Ok(copies),
            _ => bail!("no copies in {path}: {}", summarize(&answer)),
        }
    }

    /// Waits until node `i`'s `/cluster/shards` reports no logged write waiting to be applied
    /// (acknowledged writes are durable at once, visible once applied).
    pub fn wait_applied(&self, i: usize, timeout: Duration) -> anyhow::Result<Value> {
        crate::wait::poll(timeout, Duration::from_millis(100), || {
            match self.nodes[i].get_json("/cluster/shards", Duration::from_secs(30)) {
                Ok(a) if a["pending_writes"] == 0 => Ok(a),
                answer => Err(answer),
            }
        })
        .or_else(|answer| bail!("writes still pending after {timeout:?}: {answer:?}"))
    }

    /// Waits until node `i` answers `GET /health`; fails early if its process exits.
    pub fn wait_node_up(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let node = &mut self.nodes[i];
            if !node.is_running() {
                bail!(
                    "{} exited during start; log:\n{}",
                    node.id,
                    node.log_tail(30)
                );
            }
            if node.get_json("/health", Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer /health within {timeout:?}; log:\n{}",
                    node.id,
                    node.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `GET path` on every running node until `check` accepts every answer.
    /// Returns the answers (by node index) on success, the last answers in the error otherwise.
    pub fn wait_all<F>(
        &mut self,
        path: &str,
        timeout: Duration,
        mut check: F,
    ) -> anyhow::Result<Vec<(usize, Value)>>
    where
        F: FnMut(usize, &Value) -> bool,
    {
        let answers = crate::wait::poll(timeout, Duration::from_millis(20), || {
            let running = self.running();
            let mut answers = Vec::new();
            let mut all_ok = !running.is_empty();
            for &i in &running {
                match self.nodes[i].get_json(path, Duration::from_secs(2)) {
                    Ok(v) => {
                        all_ok &= check(i, &v);
                        answers.push((i, v));
                    }
                    Err(e) => {
                        all_ok = false;
                        answers.push((i, Value::String(format!("{e:#}"))));
                    }
                }
            }
            if all_ok {
                Ok(answers)
            } else {
                Err(answers)
            }
        });
        answers.or_else(|answers| {
            let shown: Vec<String> = answers
                .iter()
                .map(|(i, v)| format!("{}: {}", self.nodes[*i].id, summarize(v)))
                .collect();
            bail!(
                "GET {path}: condition not met on every node within {timeout:?}:\n{}",
                shown.join("\n")
            )
        })
    }

    /// Waits until every running node reports green health with active shards.
    pub fn wait_green(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_health_agree(timeout, |v| {
            v["status"] == "green" && v["shards"]["active_shards"].as_u64() > Some(0)
        })
        .map(|_| ())
    }

    /// Starts `nodes` nodes with `options` and waits at most `timeout` until every one reports
    /// green health.
    pub fn start_green(
        nodes: usize,
        options: crate::ClusterOptions,
        timeout: Duration,
    ) -> anyhow::Result<TestCluster> {
        let mut cluster = TestCluster::start(nodes, options)?;
        cluster.wait_green(timeout)?;
        Ok(cluster)
    }

    /// Like [`wait_all`](Self::wait_all) on `/cluster/health`, and also every answer names the same
    /// coordinator and term. Returns (coordinator, term).
    pub fn wait_health_agree<F>(
        &mut self,
        timeout: Duration,
        mut check: F,
    ) -> anyhow::Result<(String, u64)>
    where
        F: FnMut(&Value) -> bool,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answers = self.wait_all("/cluster/health", left, |_, v| check(v))?;
            if let Some(agreed) = agreed_coordinator(&answers) {
                return Ok(agreed);
            }
            if Instant::now() > deadline {
                bail!(
                    "nodes never agreed on one coordinator and term: {:?}",
                    answers
                        .iter()
                        .map(|(_, v)| summarize(v))
                        .collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running node's `/cluster/health` lists exactly the running nodes as ready and
    /// names the same coordinator; returns (coordinator, term).
    pub fn wait_converged(&mut self, timeout: Duration) -> anyhow::Result<(String, u64)> {
        let running = self.running();
        let expected: Vec<String> = running.iter().map(|&i| self.nodes[i].id.clone()).collect();
        self.wait_health_agree(timeout, |v| {
            let ready = ready_ids(v);
            ready.len() == expected.len()
                && expected.iter().all(|id| ready.contains(id))
                && v["coordinator"].is_string()
        })
    }
}

/// A `/cluster/health` answer without its long node list (for failure messages).
pub fn summarize(v: &Value) -> Value {
    if v.get("status").is_some() && v.get("nodes").is_some() {
        let states: Vec<String> = v["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| {
                        format!(
                            "{}={}",
                            n["id"].as_str().unwrap_or("?"),
                            n["state"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        serde_json::json!({
            "status": v["status"], "reasons": v["reasons"], "coordinator": v["coordinator"],
            "term": v["term"], "source": v["source"], "answered_by": v["answered_by"],
            "coordinator_error": v["coordinator_error"], "members": states,
        })
    } else {
        v.clone()
    }
}

/// Ids of the members a `/cluster/health` answer lists as ready.
pub fn ready_ids(health: &Value) -> Vec<String> {
    health["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter(|n| n["state"] == "ready")
                .filter_map(|n| n["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Ids of every member listed in a `/cluster/health` answer, whatever their state.
pub fn member_ids(health: &Value) -> Vec<String> {
    health["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The (coordinator, term) every answer names, if they all name the same one.
pub fn agreed_coordinator(answers: &[(usize, Value)]) -> Option<(String, u64)> {
    let mut agreed: Option<(String, u64)> = None;
    for (_, v) in answers {
        let coordinator = v["coordinator"].as_str()?.to_string();
        let term = v["term"].as_u64()?;
        match &agreed {
            None => agreed = Some((coordinator, term)),
            Some(a) if a.0 == coordinator && a.1 == term => {}
            Some(_) => return None,
        }
    }
    agreed
}
