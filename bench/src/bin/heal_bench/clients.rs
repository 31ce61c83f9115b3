//! Client load during the phases: threads reading and writing through the nodes, recording
//! latency and errors per phase (baseline before, during the rolling restart).

use super::*;

pub(crate) const BASELINE: u8 = 0;
pub(crate) const ROLLING: u8 = 1;
pub(crate) const STOP: u8 = 2;

pub(crate) struct Route {
    /// Index (into the client's urls) of the node being restarted.
    pub(crate) excluded: Option<usize>,
    pub(crate) in_flight: Vec<usize>,
    /// Bumped when a node was restarted: the clients open new connections to it.
    pub(crate) generation: Vec<u64>,
}

pub(crate) struct ClientShared {
    pub(crate) route: Mutex<Route>,
    pub(crate) phase: AtomicU8,
    pub(crate) stale: AtomicUsize,
}

pub(crate) struct ClientResult {
    /// [baseline, rolling] x [write, read], µs.
    pub(crate) hist: [[Histogram<u64>; 2]; 2],
    pub(crate) ok: [[u64; 2]; 2],
    pub(crate) errors: [[u64; 2]; 2],
    pub(crate) error_details: Vec<Value>,
    pub(crate) acked: Totals,
    pub(crate) unanswered: Totals,
    pub(crate) acked_ids: Vec<String>,
}

pub(crate) fn client(
    k: usize,
    a: &Args,
    shared: &ClientShared,
    urls: &[String],
    vocab: &[String],
    bulk_entities: usize,
    t0: Instant,
) -> ClientResult {
    let mut r = ClientResult {
        hist: [[histogram(), histogram()], [histogram(), histogram()]],
        ok: [[0; 2]; 2],
        errors: [[0; 2]; 2],
        error_details: Vec::new(),
        acked: Totals::default(),
        unanswered: Totals::default(),
        acked_ids: Vec::new(),
    };
    let period = Duration::from_secs_f64(a.client_threads as f64 / a.client_rate);
    let mut rng = Rng(a.seed ^ (0xC11E_0000 + k as u64));
    let new_agent = || {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build()
    };
    let mut agents: Vec<(u64, ureq::Agent)> = urls.iter().map(|_| (0, new_agent())).collect();
    let mut rr = k;
    let mut n = 0u64;
    loop {
        let phase = shared.phase.load(Ordering::SeqCst);
        if phase == STOP {
            break;
        }
        let p = usize::from(phase == ROLLING);
        let tick = Instant::now();
        let (node, generation) = {
            let mut route = shared.route.lock().expect("route");
            let mut node = rr % urls.len();
            while Some(node) == route.excluded {
                rr += 1;
                node = rr % urls.len();
            }
            rr += 1;
            route.in_flight[node] += 1;
            (node, route.generation[node])
        };
        if agents[node].0 != generation {
            agents[node] = (generation, new_agent());
        }
        let agent = &agents[node].1;
        let write = n.is_multiple_of(2);
        n += 1;
        let started = Instant::now();
        let outcome: std::result::Result<(), String> = if write {
            let ids: Vec<String> = (0..a.write_batch)
                .map(|j| format!("cw{k}-{n}-{j}"))
                .collect();
            let entities: Vec<Value> = ids
                .iter()
                .map(|id| {
                    json!({"id": id, "title": id, "type": "CONCEPT",
                           "description": text(&mut rng, vocab, 300), "text_unit_ids": []})
                })
                .collect();
            let mut relations = Vec::new();
            let mut totals = Totals {
                entities: ids.len() as u64,
                ..Totals::default()
            };
            for (j, id) in ids.iter().enumerate() {
                let target = if j + 1 < ids.len() {
                    ids[j + 1].clone()
                } else {
                    format!("e-{}", rng.below(bulk_entities.max(1)))
                };
                totals.add_relation(id, &target, a.shards);
                relations.push(json!({"id": format!("cwr{k}-{n}-{j}"), "source": id, "target": target,
                                      "description": "written during the rolling restart", "weight": 1.0}));
            }
            let body = json!({"entities": entities, "relations": relations});
            let url = format!("{}/graph/ingest", urls[node]);
            match agent.post(&url).send_json(body) {
                Ok(resp) => {
                    let status = resp.status();
                    let v: Value = resp.into_json().unwrap_or(Value::Null);
                    if status == 200 && v["errors"] == false {
                        r.acked.add(&totals);
                        r.acked_ids.extend(ids);
                        Ok(())
                    } else {
                        // Some items may have been written.
                        r.unanswered.add(&totals);
                        Err(format!("{status} {}", short(&v.to_string(), 400)))
                    }
                }
                Err(ureq::Error::Status(code, resp)) => {
                    r.unanswered.add(&totals);
                    Err(format!(
                        "{code} {}",
                        short(&resp.into_string().unwrap_or_default(), 400)
                    ))
                }
                Err(e) => {
                    r.unanswered.add(&totals);
                    Err(format!("transport: {e}"))
                }
            }
        } else {
            let id = if !r.acked_ids.is_empty() && rng.below(2) == 0 {
                r.acked_ids[rng.below(r.acked_ids.len())].clone()
            } else {
                format!("e-{}", rng.below(bulk_entities.max(1)))
            };
            let url = format!("{}/graph/entities/{id}", urls[node]);
            match get_full(agent, &url) {
                Ok((200, v, stale)) if v["entity"]["id"] == json!(id) => {
                    if let Some(reason) = stale {
                        let n = shared.stale.fetch_add(1, Ordering::SeqCst);
                        if n < 10 {
                            log(format!(
                                "stale-marked read at +{:.1} s from {}: {reason}",
                                t0.elapsed().as_secs_f64(),
                                urls[node]
                            ));
                        }
                    }
                    Ok(())
                }
                Ok((code, v, _)) => Err(format!("{code} for {id}: {}", short(&v.to_string(), 400))),
                Err(e) => Err(format!("transport, {id}: {e}")),
            }
        };
        let us = started.elapsed().as_micros().max(1) as u64;
        let excluded = {
            let mut route = shared.route.lock().expect("route");
            route.in_flight[node] -= 1;
            route.excluded
        };
        let o = usize::from(!write);
        match outcome {
            Ok(()) => {
                r.ok[p][o] += 1;
                let _ = r.hist[p][o].record(us);
            }
            Err(e) => {
                r.errors[p][o] += 1;
                let t = t0.elapsed().as_secs_f64();
                let detail = json!({"t": r2(t), "client": k, "op": if write { "write" } else { "read" },
                                    "node": urls[node], "restarting": excluded.map(|x| urls[x].clone()),
                                    "ms": r2(us as f64 / 1000.0), "error": e});
                log(format!("CLIENT ERROR {detail}"));
                r.error_details.push(detail);
            }
        }
        std::thread::sleep(period.saturating_sub(tick.elapsed()));
    }
    r
}
