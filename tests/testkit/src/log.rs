//! Progress lines on stderr, named after the running program and stamped with the UTC time of day.

use std::time::{SystemTime, UNIX_EPOCH};

/// Writes `<program> [hh:mm:ss]: msg` to stderr.
pub fn log(msg: impl AsRef<str>) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let exe = std::env::current_exe().ok();
    let name = exe
        .as_deref()
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("torua-testkit");
    eprintln!(
        "{name} [{:02}:{:02}:{:02}]: {}",
        (t / 3600) % 24,
        (t / 60) % 60,
        t % 60,
        msg.as_ref()
    );
}
