//! What a node measures about itself for health reports and registration: uptime, load, memory,
//! disk, errors. Read from /proc and statvfs (Linux); a figure that cannot be read is 0.

use std::path::Path;
use std::time::Instant;

use crate::cluster::messages::{Capacity, HealthReport};

pub fn capacity(data_dir: &Path) -> Capacity {
    let (_, disk_total_mb) = disk_mb(data_dir);
    Capacity {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_total_mb: meminfo_mb("MemTotal:"),
        disk_total_mb,
    }
}

pub fn report(node_id: &str, generation: u64, started: Instant, data_dir: &Path) -> HealthReport {
    let (disk_free_mb, disk_total_mb) = disk_mb(data_dir);
    HealthReport {
        node_id: node_id.to_string(),
        generation,
        uptime_ms: started.elapsed().as_millis() as u64,
        load_1m: load_1m(),
        memory_rss_mb: status_kb("VmRSS:") / 1024,
        memory_available_mb: meminfo_mb("MemAvailable:"),
        disk_free_mb,
        disk_total_mb,
        errors_total: crate::node::logging::errors_total(),
        shards: Vec::new(),
    }
}

fn load_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn kb_field(text: &str, field: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn meminfo_mb(field: &str) -> u64 {
    kb_field(
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
        field,
    ) / 1024
}

fn status_kb(field: &str) -> u64 {
    kb_field(
        &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
        field,
    )
}

/// (free, total) megabytes of the file system holding `dir`.
fn disk_mb(dir: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return (0, 0);
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return (0, 0);
    }
    let block = st.f_frsize as u64;
    (
        st.f_bavail as u64 * block / (1 << 20),
        st.f_blocks as u64 * block / (1 << 20),
    )
}
