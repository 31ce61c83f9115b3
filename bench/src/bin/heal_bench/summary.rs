//! The human summary of a run, printed from its JSON document.

use super::*;

pub(crate) fn print_summary(doc: &Value, problems: &[String]) {
    let f = |v: &Value| v.as_f64().map_or("?".to_string(), |x| format!("{x:.1}"));
    let f2 = |v: &Value| v.as_f64().map_or("?".to_string(), |x| format!("{x:.2}"));
    // A transfer's copies and megabytes.
    let copies = |v: &Value| format!("{} copies, {} MB", v["copies_created"], f(&v["mb"]));
    let logs = |v: &Value| {
        format!(
            "node logs: {} snapshot copies installed, {} MB, first started +{} s, last installed +{} s -> {} MB/s",
            v["copies_installed"],
            f(&v["mb"]),
            f(&v["first_start_s"]),
            f(&v["last_installed_s"]),
            f(&v["mb_per_s"])
        )
    };
    println!(
        "\n== Self-healing benchmark: {}",
        doc["label"].as_str().unwrap_or("")
    );
    let l = &doc["load"];
    if !l.is_null() {
        println!(
            "load: {} MB of JSON ({} entities, {} relations, {} chunks, {} documents, {} communities) -> primaries {} MB, all copies {} MB; applied after {} s, green after {} s",
            f(&json!(mb(l["json_bytes"].as_u64().unwrap_or(0)))),
            l["items"]["entities"], l["items"]["relations"], l["items"]["chunks"],
            l["items"]["documents"], l["items"]["communities"],
            f(&json!(mb(l["size_bytes_primaries"].as_u64().unwrap_or(0)))),
            f(&json!(mb(l["size_bytes_all_copies"].as_u64().unwrap_or(0)))),
            f(&l["applied_s"]), f(&l["green_s"])
        );
    }
    let k = &doc["kill"];
    if !k.is_null() {
        println!(
            "kill -9 {} ({} copies, {} MB): green after {} s from the kill, {} s from the nominal replace moment ({} s after kill), {} s from the first re-created copy",
            k["victim"].as_str().unwrap_or("?"),
            k["held_copies"],
            f(&json!(mb(k["held_bytes"].as_u64().unwrap_or(0)))),
            f(&k["green_after_kill_s"]),
            f(&k["green_after_replace_moment_s"]),
            f(&k["replace_after_s"]),
            f(&k["green_after_first_copy_s"])
        );
        println!(
            "  re-replication: {} in {} s = {} MB/s (target >= 50: {}); fs::copy+fsync of the same shards' files: {} MB/s; ratio {}",
            copies(&k["transfer"]),
            f(&k["transfer"]["window_s"]),
            f(&k["re_replication_mb_per_s"]),
            match k["target_met"].as_bool() {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "?",
            },
            f(&k["fs_copy_baseline"]["mb_per_s"]),
            f2(&k["ratio_vs_fs_copy"])
        );
        println!(
            "  all moves until green: {}; {}",
            copies(&k["transfer_all_moves"]),
            logs(&k["node_logs"])
        );
    }
    for phase in ["return", "join"] {
        let j = &doc[phase];
        if !j.is_null() {
            println!(
                "{phase} of {}: green and balanced after {} s; {} copies moved, {} MB, {} MB/s (ratio to fs::copy {})",
                j["node"].as_str().unwrap_or("?"),
                f(&j["balanced_green_s"]),
                j["transfer"]["copies_created"],
                f(&j["transfer"]["mb"]),
                f(&j["transfer"]["mb_per_s"]),
                f2(&j["ratio_vs_fs_copy"])
            );
            println!("  {}", logs(&j["node_logs"]));
        }
    }
    let r = &doc["rolling"];
    if !r.is_null() {
        println!("rolling restart ({} s in all):", f(&r["rolling_s"]));
        for s in r["steps"].as_array().into_iter().flatten() {
            println!(
                "  {}: exit {} s after SIGTERM (drained {} at {} MB/s), green+balanced {} s after restart ({} copies back, {} MB at {} MB/s)",
                s["node"].as_str().unwrap_or("?"),
                f(&s["exit_after_sigterm_s"]),
                copies(&s["drain"]),
                f(&s["drain"]["mb_per_s"]),
                f(&s["green_balanced_after_start_s"]),
                s["refill"]["copies_created"],
                f(&s["refill"]["mb"]),
                f(&s["refill"]["mb_per_s"])
            );
        }
        let c = &r["client"];
        println!(
            "  client: {} errors ({} during the restarts; target 0), {} stale-marked reads",
            c["errors"], c["errors_during"], c["stale_reads"]
        );
        let latency = |v: &Value| {
            format!(
                "p50 {} p99 {} ms (n {})",
                f(&v["p50_ms"]),
                f(&v["p99_ms"]),
                v["n"]
            )
        };
        for op in ["write", "read"] {
            let l = &c["latency"][op];
            println!(
                "  {op:<5}: baseline {}; during {}; ratio p50 {} p99 {}",
                latency(&l["baseline"]),
                latency(&l["during"]),
                f2(&l["ratio_p50"]),
                f2(&l["ratio_p99"])
            );
        }
    }
    for phase in ["load", "kill", "return", "join", "rolling"] {
        let v = &doc["verify"][phase];
        if v.is_null() {
            continue;
        }
        println!(
            "verify after {phase}: {}",
            if v["ok"] == true {
                "ok".to_string()
            } else {
                format!("FAILED {}", v["problems"])
            }
        );
    }
    if problems.is_empty() {
        println!("problems: none");
    } else {
        println!("problems:");
        for p in problems {
            println!("  - {p}");
        }
    }
}
