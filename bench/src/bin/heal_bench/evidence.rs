//! What a phase is checked against besides the cluster's answers: the transfers the nodes
//! logged, a plain file-copy baseline of the same shards, and read-back of loaded items.

use super::*;

/// Removes terminal colour codes (the nodes log with ANSI escapes).
pub(crate) fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Unix seconds of an RFC 3339 UTC time like `2026-11-27T16:15:18.035418Z`.
pub(crate) fn parse_utc(s: &str) -> Option<f64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min, sec) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// Value of `key=` in a tracing line (quotes removed).
pub(crate) fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// The snapshot copies the nodes' logs report between two moments: how many, their MB (as
/// logged, whole MB), the window from the first "rebuilding"/"receiving" line to the last
/// "installed" line, and the per-copy rates the nodes computed.
pub(crate) fn logged_transfers(cluster: &TestCluster, from: SystemTime, to: SystemTime) -> Value {
    let unix = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let (from, to) = (unix(from), unix(to));
    let mut installed = Vec::new();
    let mut first_start = f64::INFINITY;
    let mut last_end = f64::NEG_INFINITY;
    let mut failures = Vec::new();
    for n in &cluster.nodes {
        let Ok(text) = std::fs::read_to_string(&n.log_path) else {
            continue;
        };
        for raw in text.lines() {
            if !raw.contains("snapshot") {
                continue;
            }
            let line = strip_ansi(raw);
            let Some(t) = line.split_whitespace().nth(1).and_then(parse_utc) else {
                continue;
            };
            if t < from || t > to {
                continue;
            }
            if line.contains("rebuilding this copy from a snapshot")
                || line.contains("receiving a snapshot")
            {
                first_start = first_start.min(t);
            } else if line.contains("installed a copy from a snapshot") {
                last_end = last_end.max(t);
                let num = |k: &str| field(&line, k).and_then(|v| v.parse::<f64>().ok());
                installed.push(json!({"node": n.id, "shard": field(&line, "shard"), "from": field(&line, "from"),
                                      "mb": num("mb"), "secs": num("secs"), "mb_per_s": num("mb_per_s"),
                                      "at_s": r2(t - from)}));
            } else if line.contains("WARN") || line.contains("ERROR") {
                failures.push(short(line.split_once(' ').map_or(&line[..], |x| x.1), 300));
            }
        }
    }
    let mb: f64 = installed.iter().filter_map(|c| c["mb"].as_f64()).sum();
    let window = last_end - first_start;
    json!({
        "copies_installed": installed.len(), "mb": mb,
        "first_start_s": first_start.is_finite().then(|| r2(first_start - from)),
        "last_installed_s": last_end.is_finite().then(|| r2(last_end - from)),
        "window_s": window.is_finite().then(|| r2(window)),
        "mb_per_s": (window.is_finite() && window > 0.0).then(|| r2(mb / window)),
        "installed": installed, "warnings": failures.iter().take(20).collect::<Vec<_>>(),
    })
}

/// Seconds of a duration like `5s`, `500ms`, `2m`.
pub(crate) fn parse_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.trim().parse().ok()?;
    Some(match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    })
}

/// `std::fs::copy` + fsync of a node's files of `shards` into a scratch folder on the same file
/// system, timed (then deleted); the median of `FS_COPY_TRIALS` runs.
pub(crate) fn fs_copy_baseline(data_dir: &Path, shards: &[u64]) -> Result<Value> {
    let dir = data_dir.join("shards");
    let mut files = Vec::new();
    collect_files(&dir, &mut files)?;
    let wanted = |name: &str| {
        shards.iter().any(|s| {
            let db = format!("shard-{s}.kz");
            name == db
                || name.strip_prefix(&db).is_some_and(|r| r.starts_with('.'))
                || name.starts_with(&format!("shard-{s}.log."))
        })
    };
    let mut picked: Vec<PathBuf> = files
        .iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(wanted))
        .cloned()
        .collect();
    let matched = !picked.is_empty();
    if !matched {
        picked = files;
    }
    let scratch = data_dir
        .parent()
        .unwrap_or(data_dir)
        .join(format!("fs-copy-baseline-{}", std::process::id()));
    // Three times (the file system's write-back state varies run to run): the median counts.
    let mut trials = Vec::new();
    let mut bytes = 0;
    let mut db_bytes = 0;
    for _ in 0..FS_COPY_TRIALS {
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        let t = Instant::now();
        let mut copy_s = 0.0;
        (bytes, db_bytes) = (0, 0);
        for (k, src) in picked.iter().enumerate() {
            let dst = scratch.join(format!("{k}"));
            let tc = Instant::now();
            let n = std::fs::copy(src, &dst).with_context(|| format!("copy {}", src.display()))?;
            copy_s += tc.elapsed().as_secs_f64();
            std::fs::File::open(&dst)?.sync_all()?;
            bytes += n;
            if src
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".kz"))
            {
                db_bytes += n;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        trials.push((secs, copy_s));
        let _ = std::fs::remove_dir_all(&scratch);
    }
    trials.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (secs, copy_s) = trials[trials.len() / 2];
    Ok(json!({
        "files": picked.len(), "matched_shard_files": matched, "bytes": bytes, "db_file_bytes": db_bytes,
        "trials": trials.len(), "seconds": r2(secs), "copy_only_s": r2(copy_s),
        "mb_per_s": (secs > 0.0).then(|| r2(mb(bytes) / secs)),
        "copy_only_mb_per_s": (copy_s > 0.0).then(|| r2(mb(bytes) / copy_s)),
        "all_trials_mb_per_s": trials.iter().map(|t| r2(mb(bytes) / t.0)).collect::<Vec<_>>(),
    }))
}

pub(crate) const FS_COPY_TRIALS: usize = 3;

pub(crate) fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = e?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads up to `n` acknowledged ids (spread over the list) from every running node.
pub(crate) fn readback(cluster: &mut TestCluster, ids: &[String], n: usize) -> Value {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let step = (ids.len() / n.max(1)).max(1);
    let sample: Vec<&String> = ids.iter().step_by(step).take(n).collect();
    let mut missing = Vec::new();
    let mut reads = 0;
    for i in cluster.running() {
        for id in &sample {
            reads += 1;
            let url = cluster.nodes[i].url(&format!("/graph/entities/{id}"));
            match get_full(&agent, &url) {
                Ok((200, v, _)) if v["entity"]["id"] == json!(id) => {}
                Ok((code, v, _)) => missing.push(format!(
                    "{} {id}: {code} {}",
                    cluster.nodes[i].id,
                    short(&v.to_string(), 120)
                )),
                Err(e) => missing.push(format!("{} {id}: {e}", cluster.nodes[i].id)),
            }
        }
    }
    json!({"ids": sample.len(), "reads": reads, "missing": missing.len(), "first_missing": missing.iter().take(10).collect::<Vec<_>>()})
}
