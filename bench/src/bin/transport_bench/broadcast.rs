//! broadcast: `POST /broadcast` to one node of an N-node cluster, against `GET /health` on
//! the same node and connection.

use super::*;

pub(crate) fn start_cluster(args: &Args, n: usize) -> Result<(TestCluster, String, Duration)> {
    let started = Instant::now();
    let mut cluster = TestCluster::start(n, args.common.options())?;
    let (coordinator, term) = cluster.wait_converged(Duration::from_secs(60))?;
    let took = started.elapsed();
    println!(
        "cluster of {n} converged in {:.1} s: coordinator {coordinator}, term {term}",
        took.as_secs_f64()
    );
    Ok((cluster, coordinator, took))
}

pub(crate) fn broadcast(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let n = args.nodes.unwrap_or(10);
    let count = args.count.unwrap_or(500);
    let warmup = args.warmup.unwrap_or(50);
    ensure!(args.node < n, "--node {} but only {n} nodes", args.node);
    println!(
        "\n## broadcast: {n}-node cluster, {count} sequential POST /broadcast to one node after {warmup} warm-up, \
         alternating with GET /health (baseline) on the same keep-alive connection"
    );
    let (cluster, coordinator, _) = start_cluster(args, n)?;
    let node = cluster.node(args.node);
    let host = node.http_addr();
    let node_id = node.id.clone();
    let rt = args.runtime()?;
    let rec = rt.block_on(async {
        let mut conn = HttpConn::connect(&host).await?;
        let bcast = post_json_request(
            &host,
            "/broadcast",
            &json!({"path": "/control", "payload": {"log_filter": "info"}}),
        );
        let health = get_request(&host, "/health");
        let mut h_client = histogram();
        let mut h_fanout = histogram();
        let mut h_health = histogram();
        let mut failures = 0usize;
        let mut first_failure: Option<String> = None;
        for i in 0..warmup + count {
            let measured = i >= warmup;
            let t = Instant::now();
            let (status, _) = conn.call(&health).await?;
            let took = t.elapsed();
            ensure!(status == 200, "GET /health answered {status}");
            if measured {
                record(&mut h_health, took);
            }

            let t = Instant::now();
            let (status, body_bytes) = conn.call(&bcast).await?;
            let took = t.elapsed();
            let answer: Value = serde_json::from_slice(body_bytes).context("broadcast answer")?;
            ensure!(status == 200, "POST /broadcast answered {status}: {answer}");
            let results = answer["results"].as_array().cloned().unwrap_or_default();
            let all_ok = answer["sent_to"].as_u64() == Some(n as u64)
                && results.len() == n
                && results.iter().all(|r| r["ok"] == true);
            if !all_ok {
                failures += 1;
                if first_failure.is_none() {
                    first_failure = Some(answer.to_string());
                }
            }
            if measured {
                record(&mut h_client, took);
                let fanout_ms = results
                    .iter()
                    .filter_map(|r| r["latency_ms"].as_f64())
                    .fold(0.0f64, f64::max);
                record(&mut h_fanout, Duration::from_secs_f64(fanout_ms / 1000.0));
            }
        }
        anyhow::Ok((h_client, h_fanout, h_health, failures, first_failure))
    })?;
    let (h_client, h_fanout, h_health, failures, first_failure) = rec;
    println!(
        "{:<34} | {:>8} {:>8} {:>8} {:>8} {:>8}",
        "asked node ".to_string() + &node_id,
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "mean ms"
    );
    for (name, h) in [
        ("POST /broadcast (client)", &h_client),
        ("  fan-out (max latency_ms)", &h_fanout),
        ("GET /health (baseline)", &h_health),
    ] {
        println!(
            "{:<34} | {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name,
            ms_of(p50(h)),
            ms_of(h.value_at_quantile(0.9)),
            ms_of(p99(h)),
            ms_of(h.max()),
            h.mean() / 1e6
        );
    }
    let (x50, x99) = (
        ratio(p50(&h_client), p50(&h_health)),
        ratio(p99(&h_client), p99(&h_health)),
    );
    let target_met = ms_of(p50(&h_client)) <= 5.0 && failures == 0;
    println!(
        "broadcast/health ratio: p50 {x50:.2}x, p99 {x99:.2}x; broadcasts with a failed or missing result: \
         {failures}/{}; target p50 <= 5 ms: {}",
        warmup + count,
        if target_met { "met" } else { "MISSED" }
    );
    if let Some(f) = &first_failure {
        println!("first failed broadcast answer: {f}");
    }
    let rec = json!({
        "bench": "broadcast", "nodes": n, "count": count, "warmup": warmup, "asked": node_id,
        "coordinator": coordinator,
        "client": hist_json_ms(&h_client), "fanout": hist_json_ms(&h_fanout),
        "health_baseline": hist_json_ms(&h_health),
        "ratio_p50": r3(x50), "ratio_p99": r3(x99),
        "failed_broadcasts": failures, "first_failure": first_failure,
        "target_p50_ms": 5.0, "target_met": target_met,
    });
    out.emit(rec.clone())?;
    Ok(vec![rec])
}
