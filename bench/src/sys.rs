//! Readings of the machine a benchmark runs on (load, memory, the processes' memory) and the
//! guard that stops a run before the shared machine runs out of memory.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use anyhow::{bail, Result};
use serde_json::{json, Value};
use torua_testkit::TestCluster;

/// The 1-minute load average.
pub fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Busy and total jiffies of the whole machine.
pub fn machine_jiffies() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0.0);
    Some((total - idle, total))
}

/// A `/proc/meminfo` value (e.g. `MemAvailable:`) in MB.
pub fn meminfo_mb(key: &str) -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).round())
}

pub fn mem_available_mb() -> Option<f64> {
    meminfo_mb("MemAvailable:")
}

/// Resident memory of a process in MB.
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).round())
}

/// Resident memory in MB of each running node, by id.
pub fn cluster_rss(cluster: &TestCluster) -> BTreeMap<String, Option<f64>> {
    cluster
        .nodes
        .iter()
        .filter_map(|n| n.pid().map(|p| (n.id.clone(), rss_mb(p))))
        .collect()
}

/// Fails when less than `min_available_mb` is available (the machine is shared: better to stop
/// the cluster than to let the OOM killer pick).
pub fn memory_guard(min_available_mb: f64, cluster: &TestCluster) -> Result<()> {
    if let Some(avail) = mem_available_mb() {
        if avail < min_available_mb {
            bail!(
                "only {avail} MB available (--min-available-mb {min_available_mb}); node RSS MB {:?}",
                cluster_rss(cluster)
            );
        }
    }
    Ok(())
}

/// The machine and build a run measured: cores, memory, load, git HEAD, the torua binary.
pub fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let bin = torua_testkit::torua_bin();
    let bin_time = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    json!({"cpus": cpus, "mem_total_mb": meminfo_mb("MemTotal:"), "mem_available_mb": meminfo_mb("MemAvailable:"),
           "load_1m": load_1m(), "git_head": git, "torua_bin": bin.display().to_string(), "torua_bin_mtime": bin_time,
           "temp_dir": std::env::temp_dir().display().to_string()})
}
