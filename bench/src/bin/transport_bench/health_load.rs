//! health-load: closed-loop `GET /cluster/health` load from many keep-alive connections, on
//! the coordinator and on a non-coordinator, each after its `GET /health` baseline.

use super::*;

pub(crate) struct LoadResult {
    hist: Histogram<u64>,
    requests: u64,
    errors: u64,
    non_200: u64,
    local_answers: u64,
    seconds: f64,
}

/// `concurrency` closed-loop connections GETting `path` on `host`: `warmup` unmeasured, then
/// `seconds` measured. Only requests that complete inside the measured window count.
pub(crate) async fn load(
    host: &str,
    path: &str,
    concurrency: usize,
    warmup: Duration,
    seconds: Duration,
) -> Result<LoadResult> {
    let request: Arc<[u8]> = get_request(host, path).into();
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let measure_to = measure_from + seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let request = request.clone();
        let host = host.to_string();
        tasks.spawn(async move {
            let mut hist = histogram();
            let (mut requests, mut errors, mut non_200, mut local) = (0u64, 0u64, 0u64, 0u64);
            let mut conn: Option<HttpConn> = None;
            loop {
                let t = Instant::now();
                if t >= measure_to {
                    break;
                }
                if conn.is_none() {
                    match HttpConn::connect(&host).await {
                        Ok(c) => conn = Some(c),
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected");
                let t = Instant::now();
                let result = c
                    .call(&request)
                    .await
                    .map(|(status, body)| (status, find(body, br#""source":"local""#).is_some()));
                let done = Instant::now();
                let counted = t >= measure_from && done <= measure_to;
                match result {
                    Ok((status, is_local)) => {
                        if counted {
                            requests += 1;
                            record(&mut hist, done - t);
                            if status != 200 {
                                non_200 += 1;
                            }
                            if is_local {
                                local += 1;
                            }
                        }
                    }
                    Err(_) => {
                        if counted {
                            errors += 1;
                        }
                        conn = None;
                    }
                }
            }
            (hist, requests, errors, non_200, local)
        });
    }
    let mut total = LoadResult {
        hist: histogram(),
        requests: 0,
        errors: 0,
        non_200: 0,
        local_answers: 0,
        seconds: seconds.as_secs_f64(),
    };
    while let Some(done) = tasks.join_next().await {
        let (hist, requests, errors, non_200, local) = done?;
        total.hist.add(&hist)?;
        total.requests += requests;
        total.errors += errors;
        total.non_200 += non_200;
        total.local_answers += local;
    }
    Ok(total)
}

pub(crate) fn health_load(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let n = args.nodes.unwrap_or(5);
    ensure!(
        n >= 2,
        "health-load needs at least 2 nodes (a coordinator and another)"
    );
    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let seconds = Duration::from_secs_f64(args.seconds);
    println!(
        "\n## health-load: {n}-node cluster, closed-loop keep-alive HTTP/1.1 load from this process \
         (tokio, {} workers) for {:.0} s after {:.0} s warm-up per case; the load generator shares the \
         machine's {} cores with the nodes",
        args.threads,
        seconds.as_secs_f64(),
        warmup.as_secs_f64(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let (cluster, coordinator, _) = start_cluster(args, n)?;
    let coord_i = cluster
        .index_of(&coordinator)
        .context("coordinator is not one of the started nodes")?;
    let other_i = (0..n).find(|&i| i != coord_i).expect("n >= 2");
    let pid_of = |i: usize| {
        cluster
            .node(i)
            .pid()
            .map(|p| p.to_string())
            .unwrap_or_default()
    };
    let rt = args.runtime()?;
    let mut records = Vec::new();
    println!(
        "{:<5} {:<14} {:<16} | {:>9} {:>8} {:>8} {:>8} {:>8} | {:>6} {:>6} | cpu (cores)",
        "conns", "node", "path", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "local"
    );
    for &concurrency in &args.concurrency {
        for (role, i) in [("coordinator", coord_i), ("other", other_i)] {
            let node = cluster.node(i);
            let host = node.http_addr();
            let mut pair: Vec<(String, LoadResult, Value)> = Vec::new();
            for path in ["/health", "/cluster/health"] {
                let mut pids = vec![
                    ("load_generator".to_string(), "self".to_string()),
                    (node.id.clone(), pid_of(i)),
                ];
                if i != coord_i {
                    pids.push((format!("{coordinator} (coordinator)"), pid_of(coord_i)));
                }
                // Meter only the measured window: start it after the warm-up.
                let result = rt.block_on(async {
                    let meter = tokio::spawn(async move {
                        tokio::time::sleep(warmup).await;
                        let m = CpuMeter::start(pids);
                        tokio::time::sleep(seconds).await;
                        m.stop()
                    });
                    let r = load(&host, path, concurrency, warmup, seconds).await?;
                    let cpu = meter.await?;
                    anyhow::Ok((r, cpu))
                })?;
                let (r, cpu) = result;
                let rps = r.requests as f64 / r.seconds;
                println!(
                    "{:<5} {:<14} {:<16} | {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} | {:>6} {:>6} | {}",
                    concurrency,
                    format!("{} ({})", node.id, if role == "other" { "other" } else { "coord" }),
                    path,
                    rps,
                    ms_of(p50(&r.hist)),
                    ms_of(r.hist.value_at_quantile(0.9)),
                    ms_of(p99(&r.hist)),
                    ms_of(r.hist.max()),
                    r.errors + r.non_200,
                    r.local_answers,
                    fmt_cpu(&cpu)
                );
                pair.push((path.to_string(), r, cpu));
            }
            let (base, health) = (&pair[0].1, &pair[1].1);
            let rps_base = base.requests as f64 / base.seconds;
            let rps = health.requests as f64 / health.seconds;
            let rps_ratio = rps / rps_base;
            let (x50, x99) = (
                ratio(p50(&health.hist), p50(&base.hist)),
                ratio(p99(&health.hist), p99(&base.hist)),
            );
            // One closed-loop connection measures latency, not capacity: the throughput target
            // applies to concurrent load only.
            let target_met = (concurrency > 1).then(|| {
                rps >= 10_000.0
                    && ms_of(p99(&health.hist)) <= 10.0
                    && health.errors == 0
                    && health.non_200 == 0
            });
            println!(
                "      /cluster/health vs /health on {}: req/s {:.2}x, p50 {:.2}x, p99 {:.2}x; \
                 target >= 10000 req/s with p99 <= 10 ms: {}",
                node.id,
                rps_ratio,
                x50,
                x99,
                match target_met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "n/a (one connection)",
                }
            );
            let rec = json!({
                "bench": "health_load", "nodes": n, "concurrency": concurrency, "node": node.id,
                "role": role, "coordinator": coordinator,
                "warmup_s": warmup.as_secs_f64(), "seconds": seconds.as_secs_f64(),
                "loadgen_threads": args.threads,
                "cluster_health": {
                    "requests_per_s": r3(rps), "requests": health.requests, "errors": health.errors,
                    "non_200": health.non_200, "local_answers": health.local_answers,
                    "latency": hist_json_ms(&health.hist), "cpu_cores": pair[1].2,
                },
                "health_baseline": {
                    "requests_per_s": r3(rps_base), "requests": base.requests, "errors": base.errors,
                    "non_200": base.non_200,
                    "latency": hist_json_ms(&base.hist), "cpu_cores": pair[0].2,
                },
                "ratio_requests_per_s": r3(rps_ratio), "ratio_p50": r3(x50), "ratio_p99": r3(x99),
                "target_requests_per_s": 10_000, "target_p99_ms": 10.0, "target_met": target_met,
            });
            out.emit(rec.clone())?;
            records.push(rec);
        }
    }
    println!(
        "local = answers with \"source\":\"local\" (the coordinator did not answer in time); \
         cpu = cores used during the measured window (the machine has 2)"
    );
    Ok(records)
}
