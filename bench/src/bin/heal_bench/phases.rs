//! The benchmark's phases on one cluster: load to the target size, then kill, return, join
//! and rolling restart, each watched until the cluster is whole again.

use super::*;

pub(crate) struct Bench {
    pub(crate) a: Args,
    pub(crate) cluster: TestCluster,
    pub(crate) doc: Value,
    pub(crate) problems: Vec<String>,
    pub(crate) expected: Totals,
    pub(crate) uncertain: Totals,
    /// Indices of the nodes that take part (started at least once).
    pub(crate) active: Vec<usize>,
    pub(crate) gen: Gen,
    pub(crate) fs_copy_mb_per_s: Option<f64>,
}

impl Bench {
    pub(crate) fn opts(&self, avoid: Option<usize>) -> WatchOptions {
        WatchOptions {
            must_run: self
                .active
                .iter()
                .copied()
                .filter(|&i| Some(i) != avoid)
                .collect(),
            poll: Duration::from_millis(self.a.poll_ms),
            settle: self.a.settle_s,
            timeout: self.a.phase_timeout_s,
            avoid,
            shards: self.a.shards,
            replicas: self.a.replicas,
        }
    }

    pub(crate) fn write_json(&self) -> Result<()> {
        let mut doc = self.doc.clone();
        doc["problems"] = json!(self.problems);
        write_doc(self.a.common.json.as_deref(), &doc)
    }

    pub(crate) fn check(&mut self, phase: &str) -> Result<()> {
        if !self.a.verify {
            return Ok(());
        }
        let v = verify(&self.a, &mut self.cluster, &self.expected, &self.uncertain)?;
        if v["ok"] != true {
            self.problems.push(format!(
                "after {phase}: verification failed: {}",
                v["problems"]
            ));
        }
        self.doc["verify"][phase] = v;
        Ok(())
    }

    pub(crate) fn urls(&self, path: &str) -> Vec<String> {
        self.active
            .iter()
            .map(|&i| self.cluster.nodes[i].url(path))
            .collect()
    }

    pub(crate) fn start_node(&mut self, i: usize) -> Result<()> {
        self.cluster.nodes[i].start()?;
        self.cluster.wait_node_up(i, Duration::from_secs(120))?;
        if !self.active.contains(&i) {
            self.active.push(i);
        }
        Ok(())
    }

    // --- load -----------------------------------------------------------------------------------

    pub(crate) fn load(&mut self) -> Result<()> {
        let a = self.a.clone();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(a.max_minutes * 60.0);
        let target = a.target_bytes();
        let urls = self.urls("/graph/ingest");
        let body_max = (a.body_mb * 1e6) as usize;
        wait_applied(&a, &mut self.cluster, Duration::from_secs(60))?;
        let (_, copies) = shards_now(&mut self.cluster, false)?;
        let empty = size_of(&copies, |c| c.primary);
        let mut size = empty;
        let mut json_bytes = 0u64;
        let mut retries = 0;
        let mut rounds = Vec::new();
        // size_bytes per JSON byte (of the last round), and JSON bytes per document.
        let mut amplification = 3.0;
        let mut doc_bytes = 50_000.0 + (a.dim * 8 * (ENTITIES_PER_DOC + CHUNKS_PER_DOC)) as f64;
        let round_cap = ((target as f64 / amplification) / 8.0).clamp(4e6, 64e6);
        log(format!(
            "load: until the primaries hold {:.0} MB (empty shards: {:.1} MB)",
            mb(target),
            mb(empty)
        ));
        while size < target {
            let want = ((target - size) as f64 / amplification * 1.05).clamp(1e6, round_cap);
            let docs = ((want / doc_bytes).ceil() as usize).max(1);
            let tg = Instant::now();
            let mut round = Items::default();
            for _ in 0..docs {
                self.gen.document(&mut round);
            }
            let totals = Totals::of_round(&round, a.shards);
            let first = [
                pack("entities", &round.entities, body_max)?,
                pack("chunks", &round.chunks, body_max)?,
                pack("documents", &round.documents, body_max)?,
                pack("communities", &round.communities, body_max)?,
            ]
            .concat();
            let rels = pack("relations", &round.relations, body_max)?;
            drop(round);
            let bytes: u64 = first.iter().chain(&rels).map(|b| b.1.len() as u64).sum();
            let gen_s = tg.elapsed().as_secs_f64();
            let tp = Instant::now();
            retries += post_all(
                "entities, chunks, documents, communities",
                &urls,
                &first,
                a.clients,
                deadline,
                Duration::from_secs(300),
            )
            .into_result("entities, chunks, documents, communities")?;
            drop(first);
            retries += post_all(
                "relations",
                &urls,
                &rels,
                a.clients,
                deadline,
                Duration::from_secs(300),
            )
            .into_result("relations")?;
            drop(rels);
            let ack_s = tp.elapsed().as_secs_f64();
            self.expected.add(&totals);
            wait_applied(
                &a,
                &mut self.cluster,
                deadline.saturating_duration_since(Instant::now()),
            )?;
            let applied_s = tp.elapsed().as_secs_f64();
            let (_, copies) = shards_now(&mut self.cluster, false)?;
            let new_size = size_of(&copies, |c| c.primary);
            json_bytes += bytes;
            // Marginal: the first data in a shard costs a fixed ~30 MB (Kuzu's pages of every
            // table and index), later data far less per byte.
            amplification = (new_size.saturating_sub(size) as f64 / bytes as f64).max(0.5);
            doc_bytes = bytes as f64 / docs as f64;
            memory_guard(a.min_available_mb, &self.cluster)?;
            log(format!(
                "  round {}: {docs} documents, {:.1} MB of JSON acknowledged in {ack_s:.1} s, applied in {applied_s:.1} s; primaries {:.0} of {:.0} MB ({:.0}%), all copies {:.0} MB; {:.0} s so far; node RSS MB {:?}",
                rounds.len() + 1,
                mb(bytes),
                mb(new_size),
                mb(target),
                100.0 * new_size as f64 / target as f64,
                mb(size_of(&copies, |_| true)),
                t0.elapsed().as_secs_f64(),
                cluster_rss(&self.cluster)
            ));
            rounds.push(
                json!({"documents": docs, "json_bytes": bytes, "generate_s": r2(gen_s),
                               "acknowledged_s": r2(ack_s), "applied_s": r2(applied_s),
                               "size_bytes_primaries": new_size}),
            );
            size = new_size;
        }
        // unsafe: malloc_trim only gives free heap memory back (the bodies are gone).
        unsafe { libc::malloc_trim(0) };
        let applied = t0.elapsed().as_secs_f64();
        log("load: waiting for green (every copy in sync)");
        let (_, copies) = shards_now(&mut self.cluster, false)?;
        let mut w = Watch::new(&copies);
        let opts = self.opts(None);
        let (green_t, view) = watch(&mut self.cluster, &mut w, t0, &opts, &a, |_, v| v.settled())?;
        let (_, copies) = shards_now(&mut self.cluster, false)?;
        let mut per_node: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for c in &copies {
            let e = per_node.entry(c.node.clone()).or_default();
            e.0 += 1;
            e.1 += c.size.unwrap_or(0);
        }
        log(format!(
            "load: {:.0} MB of JSON in {} rounds; primaries {:.0} MB, all copies {:.0} MB; applied after {applied:.0} s, green after {green_t:.0} s; per node (copies, MB): {:?}",
            mb(json_bytes),
            rounds.len(),
            mb(size_of(&copies, |c| c.primary)),
            mb(size_of(&copies, |_| true)),
            per_node.iter().map(|(k, v)| format!("{k}: {}, {:.0}", v.0, mb(v.1))).collect::<Vec<_>>()
        ));
        self.doc["load"] = json!({
            "target_bytes": target, "json_bytes": json_bytes, "rounds": rounds, "retries": retries,
            "applied_s": r2(applied), "green_s": r2(green_t),
            "size_bytes_primaries": size_of(&copies, |c| c.primary),
            "size_bytes_all_copies": size_of(&copies, |_| true),
            "size_bytes_empty_shards": empty,
            "amplification_last_round": r2(amplification),
            "size_per_json_byte": r2(size_of(&copies, |c| c.primary).saturating_sub(empty) as f64 / json_bytes.max(1) as f64),
            "items": self.expected,
            "per_node": per_node.iter().map(|(k, v)| (k.clone(), json!({"copies": v.0, "size_bytes": v.1}))).collect::<BTreeMap<_, _>>(),
            "rss_mb": cluster_rss(&self.cluster),
            "view": view.line(),
        });
        self.write_json()?;
        self.check("load")?;
        self.write_json()
    }

    // --- kill -9 --------------------------------------------------------------------------------

    pub(crate) fn coordinator(&mut self) -> Option<String> {
        let i = *self.cluster.running().first()?;
        let h = self.cluster.nodes[i]
            .get_json("/cluster/health", Duration::from_secs(10))
            .ok()?;
        h["coordinator"].as_str().map(String::from)
    }

    pub(crate) fn kill(&mut self) -> Result<usize> {
        let a = self.a.clone();
        let coordinator = self.coordinator();
        let victim = match &a.victim {
            Some(id) => self
                .cluster
                .index_of(id)
                .with_context(|| format!("--victim {id}: no such node"))?,
            None => *self
                .active
                .iter()
                .rev()
                .find(|&&i| Some(&self.cluster.nodes[i].id) != coordinator.as_ref())
                .context("no node to kill")?,
        };
        let victim_id = self.cluster.nodes[victim].id.clone();
        let (_, before) = shards_now(&mut self.cluster, false)?;
        let held: Vec<&CopyInfo> = before.iter().filter(|c| c.node == victim_id).collect();
        let held_bytes: u64 = held.iter().filter_map(|c| c.size).sum();
        let held_shards: Vec<u64> = held.iter().map(|c| c.shard).collect();
        let primaries_held = held.iter().filter(|c| c.primary).count();
        log(format!(
            "kill: kill -9 {victim_id} (coordinator: {}), holding {} copies ({} primaries), {:.0} MB: shards {:?}",
            coordinator.as_deref().unwrap_or("?"),
            held.len(),
            primaries_held,
            mb(held_bytes),
            held_shards
        ));
        let replace_after = parse_secs(&a.replace_after).unwrap_or(f64::NAN);
        let mut w = Watch::new(&before);
        let wall_start = SystemTime::now();
        let t0 = Instant::now();
        self.cluster.nodes[victim].kill9();
        let opts = self.opts(Some(victim));
        let result = watch(&mut self.cluster, &mut w, t0, &opts, &a, |_, v| {
            v.all_green && v.full && v.moves == 0
        });
        let (green_t, view) = match result {
            Ok(x) => x,
            Err(e) => {
                self.doc["kill"] =
                    json!({"victim": victim_id, "error": format!("{e:#}"), "watch": w.to_json()});
                return Err(e);
            }
        };
        let wall_end = SystemTime::now();
        // Re-replication: the new copies of the shards the killed node held; other moves (the
        // coordinator rebalancing 32 copies over 4 nodes) are reported apart.
        let transfer = w.transfer_where(|p| held_shards.contains(&p.0));
        let transfer_all = w.transfer();
        let logged = logged_transfers(&self.cluster, wall_start, wall_end);
        let first_seen = transfer["first_seen_s"].as_f64();
        let throughput = transfer["mb_per_s"].as_f64();
        log(format!(
            "kill: green {green_t:.1} s after the kill ({:.1} s after the nominal replace moment, {} after the first re-created copy appeared); {} copies re-created, {:.0} MB, {} MB/s",
            green_t - replace_after,
            first_seen.map_or("?".into(), |f| format!("{:.1} s", green_t - f)),
            transfer["copies_created"],
            mb(transfer["bytes"].as_u64().unwrap_or(0)),
            throughput.map_or("?".into(), |x| format!("{x:.1}"))
        ));
        // Baseline: the same shards' files copied on the same disk.
        let baseline = fs_copy_baseline(&self.cluster.nodes[victim].data_dir, &held_shards)
            .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        let copy_rate = baseline["mb_per_s"].as_f64();
        self.fs_copy_mb_per_s = copy_rate;
        log(format!(
            "kill: the nodes' logs: {}",
            short(&logged.to_string(), 600)
        ));
        log(format!("kill: baseline fs::copy + fsync of the killed node's files of those shards: {baseline}"));
        let ratio = match (throughput, copy_rate) {
            (Some(t), Some(c)) if c > 0.0 => Some(r2(t / c)),
            _ => None,
        };
        if throughput.is_some_and(|t| t < 50.0) {
            self.problems.push(format!(
                "re-replication {:.1} MB/s, below the 50 MB/s target",
                throughput.unwrap_or(0.0)
            ));
        }
        self.doc["kill"] = json!({
            "victim": victim_id, "coordinator": coordinator, "held_copies": held.len(),
            "held_primaries": primaries_held, "held_shards": held_shards, "held_bytes": held_bytes,
            "replace_after_s": replace_after,
            "green_after_kill_s": r2(green_t),
            "green_after_replace_moment_s": r2(green_t - replace_after),
            "green_after_first_copy_s": first_seen.map(|f| r2(green_t - f)),
            "first_not_green_s": w.first_not_green.map(r2),
            "transfer": transfer, "transfer_all_moves": transfer_all, "node_logs": logged,
            "re_replication_mb_per_s": throughput,
            "target_mb_per_s": 50.0, "target_met": throughput.map(|t| t >= 50.0),
            "fs_copy_baseline": baseline, "ratio_vs_fs_copy": ratio, "load_1m": load_1m(),
            "view": view.line(), "watch": w.to_json(),
        });
        self.write_json()?;
        self.check("kill")?;
        self.write_json()?;
        Ok(victim)
    }

    // --- a node (re)joins -----------------------------------------------------------------------

    pub(crate) fn join(&mut self, phase: &str, i: usize) -> Result<()> {
        let a = self.a.clone();
        let id = self.cluster.nodes[i].id.clone();
        let (_, before) = shards_now(&mut self.cluster, false)?;
        let mut w = Watch::new(&before);
        log(format!(
            "{phase}: starting {id} ({})",
            if self.cluster.nodes[i].data_dir.exists() {
                "on its files"
            } else {
                "empty"
            }
        ));
        let wall_start = SystemTime::now();
        let t0 = Instant::now();
        self.start_node(i)?;
        let up = t0.elapsed().as_secs_f64();
        let opts = self.opts(None);
        let node_id = id.clone();
        let result = watch(&mut self.cluster, &mut w, t0, &opts, &a, |_, v| {
            v.settled() && v.per_node.get(&node_id).copied().unwrap_or(0) > 0
        });
        let (t, view) = match result {
            Ok(x) => x,
            Err(e) => {
                self.doc[phase] =
                    json!({"node": id, "error": format!("{e:#}"), "watch": w.to_json()});
                return Err(e);
            }
        };
        let transfer = w.transfer();
        let logged = logged_transfers(&self.cluster, wall_start, SystemTime::now());
        let rate = transfer["mb_per_s"].as_f64();
        log(format!(
            "{phase}: {id} up after {up:.1} s; green and balanced after {t:.1} s; {} copies moved, {:.0} MB, {} MB/s; per node {:?}",
            transfer["copies_created"],
            mb(transfer["bytes"].as_u64().unwrap_or(0)),
            rate.map_or("?".into(), |x| format!("{x:.1}")),
            view.per_node
        ));
        self.doc[phase] = json!({
            "node": id, "up_s": r2(up), "balanced_green_s": r2(t), "transfer": transfer, "node_logs": logged,
            "ratio_vs_fs_copy": match (rate, self.fs_copy_mb_per_s) { (Some(r), Some(c)) if c > 0.0 => Some(r2(r / c)), _ => None },
            "per_node": view.per_node, "view": view.line(), "watch": w.to_json(), "load_1m": load_1m(),
        });
        self.write_json()?;
        self.check(phase)?;
        self.write_json()
    }

    // --- rolling restart under load -------------------------------------------------------------

    pub(crate) fn rolling(&mut self) -> Result<()> {
        let a = self.a.clone();
        let order = self.active.clone();
        let urls = self.urls("");
        let bulk_entities = self.gen.entities;
        let vocab = self.gen.vocab.clone();
        let shared = ClientShared {
            route: Mutex::new(Route {
                excluded: None,
                in_flight: vec![0; urls.len()],
                generation: vec![0; urls.len()],
            }),
            phase: AtomicU8::new(BASELINE),
            stale: AtomicUsize::new(0),
        };
        let drain_wait = a
            .drain_timeout
            .as_deref()
            .and_then(parse_secs)
            .unwrap_or(300.0)
            + 120.0;
        let mut steps = Vec::new();
        let mut failure: Option<anyhow::Error> = None;
        let t0 = Instant::now();
        let mut rolling_s = (0.0, 0.0);
        let results: Vec<ClientResult> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..a.client_threads)
                .map(|k| {
                    let (shared, urls, vocab, a) = (&shared, &urls, &vocab, &a);
                    scope.spawn(move || client(k, a, shared, urls, vocab, bulk_entities, t0))
                })
                .collect();
            log(format!(
                "rolling: client baseline for {:.0} s ({} threads, {} requests/s, writes of {} entities)",
                a.baseline_s, a.client_threads, a.client_rate, a.write_batch
            ));
            std::thread::sleep(Duration::from_secs_f64(a.baseline_s));
            shared.phase.store(ROLLING, Ordering::SeqCst);
            rolling_s.0 = t0.elapsed().as_secs_f64();
            for (pos, &i) in order.iter().enumerate() {
                match self.restart_one(&shared, pos, i, drain_wait, t0) {
                    Ok(step) => steps.push(step),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            rolling_s.1 = t0.elapsed().as_secs_f64();
            shared.route.lock().expect("route").excluded = None;
            shared.phase.store(STOP, Ordering::SeqCst);
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        // Merge the clients.
        let mut hist: [[Histogram<u64>; 2]; 2] =
            [[histogram(), histogram()], [histogram(), histogram()]];
        let mut ok = [[0u64; 2]; 2];
        let mut errors: Vec<Value> = Vec::new();
        let mut error_counts = [[0u64; 2]; 2];
        let mut acked_ids: Vec<String> = Vec::new();
        for r in &results {
            for p in 0..2 {
                for o in 0..2 {
                    hist[p][o].add(&r.hist[p][o]).expect("same bounds");
                    ok[p][o] += r.ok[p][o];
                    error_counts[p][o] += r.errors[p][o];
                }
            }
            errors.extend(r.error_details.iter().cloned());
            self.expected.add(&r.acked);
            self.uncertain.add(&r.unanswered);
            acked_ids.extend(r.acked_ids.iter().cloned());
        }
        errors.sort_by(|x, y| {
            x["t"]
                .as_f64()
                .partial_cmp(&y["t"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let total_errors: u64 = error_counts.iter().flatten().sum();
        let during_errors: u64 = error_counts[1].iter().sum();
        if total_errors > 0 {
            self.problems.push(format!(
                "rolling restart: {total_errors} client-visible errors ({during_errors} during the restarts); first: {}",
                errors.first().map_or(String::new(), |e| e.to_string())
            ));
        }
        let ops = ["write", "read"];
        let mut lat = serde_json::Map::new();
        for (o, name) in ops.iter().enumerate() {
            let base = summary(&hist[0][o]);
            let during = summary(&hist[1][o]);
            let ratio = |k: &str| match (base[k].as_f64(), during[k].as_f64()) {
                (Some(b), Some(d)) if b > 0.0 => Some(r2(d / b)),
                _ => None,
            };
            lat.insert(
                name.to_string(),
                json!({"baseline": base, "during": during, "ratio_p50": ratio("p50_ms"), "ratio_p99": ratio("p99_ms"),
                       "ok_baseline": ok[0][o], "ok_during": ok[1][o],
                       "errors_baseline": error_counts[0][o], "errors_during": error_counts[1][o]}),
            );
        }
        // Acknowledged client writes readable after the restarts, from every node.
        let readback = readback(&mut self.cluster, &acked_ids, 300);
        if readback["missing"].as_u64() != Some(0) {
            self.problems.push(format!(
                "rolling restart: acknowledged entities missing afterwards: {}",
                readback
            ));
        }
        self.doc["rolling"] = json!({
            "order": order.iter().map(|&i| self.cluster.nodes[i].id.clone()).collect::<Vec<_>>(),
            "steps": steps, "rolling_s": r2(rolling_s.1 - rolling_s.0), "load_1m": load_1m(),
            "client": {"threads": a.client_threads, "rate": a.client_rate, "write_batch": a.write_batch,
                       "baseline_s": a.baseline_s, "latency": lat, "errors": total_errors,
                       "errors_during": during_errors, "error_details": errors.iter().take(50).collect::<Vec<_>>(),
                       "stale_reads": shared.stale.load(Ordering::SeqCst),
                       "acknowledged_entities": acked_ids.len(), "readback": readback},
            "error": failure.as_ref().map(|e| format!("{e:#}")),
        });
        self.write_json()?;
        if let Some(e) = failure {
            return Err(e);
        }
        self.check("rolling")?;
        self.write_json()
    }

    pub(crate) fn restart_one(
        &mut self,
        shared: &ClientShared,
        pos: usize,
        i: usize,
        drain_wait: f64,
        t0: Instant,
    ) -> Result<Value> {
        let a = self.a.clone();
        let id = self.cluster.nodes[i].id.clone();
        // Route the clients elsewhere, and wait for their requests to this node to finish.
        let k = self
            .active
            .iter()
            .position(|&x| x == i)
            .context("active node")?;
        shared.route.lock().expect("route").excluded = Some(k);
        let wait_start = Instant::now();
        while shared.route.lock().expect("route").in_flight[k] > 0 {
            if wait_start.elapsed() > Duration::from_secs(60) {
                bail!("client requests to {id} still running after 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (_, before) = shards_now(&mut self.cluster, false)?;
        let held = before.iter().filter(|c| c.node == id).count();
        let held_bytes = size_of(&before, |c| c.node == id);
        log(format!(
            "rolling {}/{}: SIGTERM {id} ({held} copies, {:.0} MB) at +{:.1} s",
            pos + 1,
            self.active.len(),
            mb(held_bytes),
            t0.elapsed().as_secs_f64()
        ));
        let wall_start = SystemTime::now();
        let start = Instant::now();
        let mut w = Watch::new(&before);
        let pid = self.cluster.nodes[i].pid().context("node not running")?;
        // SAFETY: signalling a child process the harness spawned and has not reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let mut opts = self.opts(Some(i));
        opts.timeout = drain_wait;
        opts.settle = 0.0;
        let exited = watch(&mut self.cluster, &mut w, start, &opts, &a, |c, _| {
            !c.nodes[i].is_running()
        });
        let mut step = json!({"node": id, "held_copies": held, "held_bytes": held_bytes,
                              "sigterm_at_s": r2(start.duration_since(t0).as_secs_f64())});
        let exit_s = match exited {
            Ok((t, _)) => t,
            Err(e) => {
                let msg = format!(
                    "{id} did not exit within {drain_wait:.0} s of SIGTERM ({e:#}); killed with -9"
                );
                log(&msg);
                self.problems.push(format!("rolling restart: {msg}"));
                self.cluster.nodes[i].kill9();
                step["killed"] = json!(true);
                start.elapsed().as_secs_f64()
            }
        };
        let drained = w.transfer();
        let (_, after_exit) = shards_now(&mut self.cluster, false)?;
        let left_behind = after_exit.iter().filter(|c| c.node == id).count();
        if left_behind > 0 {
            self.problems.push(format!(
                "rolling restart: {id} exited still holding {left_behind} copies in the map"
            ));
        }
        log(format!(
            "rolling {}/{}: {id} exited {exit_s:.1} s after SIGTERM ({} copies moved off, {:.0} MB, {} MB/s; {left_behind} left in the map)",
            pos + 1,
            self.active.len(),
            drained["copies_created"],
            mb(drained["bytes"].as_u64().unwrap_or(0)),
            drained["mb_per_s"]
        ));
        let drain_watch = w.to_json();
        let mut w = Watch::new(&after_exit);
        let restart = Instant::now();
        self.cluster.nodes[i].start()?;
        self.cluster.wait_node_up(i, Duration::from_secs(120))?;
        let up_s = restart.elapsed().as_secs_f64();
        let opts = self.opts(None);
        let node_id = id.clone();
        let settled = watch(&mut self.cluster, &mut w, restart, &opts, &a, |_, v| {
            v.settled() && v.per_node.get(&node_id).copied().unwrap_or(0) > 0
        });
        let refill = w.transfer();
        step["exit_after_sigterm_s"] = json!(r2(exit_s));
        step["left_in_map"] = json!(left_behind);
        step["drain"] = drained;
        step["drain_watch"] = drain_watch;
        step["up_after_start_s"] = json!(r2(up_s));
        step["refill"] = refill;
        step["refill_watch"] = w.to_json();
        let (t, view) = match settled {
            Ok(x) => x,
            Err(e) => {
                step["error"] = json!(format!("{e:#}"));
                return Err(e.context(format!("{id} after its restart: {step}")));
            }
        };
        step["green_balanced_after_start_s"] = json!(r2(t));
        step["node_logs"] = logged_transfers(&self.cluster, wall_start, SystemTime::now());
        step["total_s"] = json!(r2(start.elapsed().as_secs_f64()));
        log(format!(
            "rolling {}/{}: {id} back: green and balanced {t:.1} s after its start ({} copies moved, {:.0} MB); {}",
            pos + 1,
            self.active.len(),
            step["refill"]["copies_created"],
            mb(step["refill"]["bytes"].as_u64().unwrap_or(0)),
            view.line()
        ));
        // New connections for the restarted node.
        let mut route = shared.route.lock().expect("route");
        route.generation[k] += 1;
        Ok(step)
    }
}
