//! Waiting for a condition with a deadline instead of sleeping a fixed time: a probe is asked
//! again and again until it says the condition holds, or the deadline passes.
//!
//! A probe returns `Ok(value)` when the condition holds and `Err(why)` while it does not yet; `why`
//! (the last one) is what a failure reports, so it should say what was seen.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often [`until`] asks: often enough not to add much to a test, rarely enough not to load a
/// node with status requests.
pub const POLL: Duration = Duration::from_millis(100);

/// Calls `probe` every `every` until it returns `Ok`, and returns that. Once `timeout` has passed
/// it returns the last `Err`. `probe` is always called at least once, and once more after the
/// deadline when the deadline falls between two calls.
pub fn poll<T, E>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        let result = probe();
        let now = Instant::now();
        if result.is_ok() || now >= deadline {
            return result;
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// [`poll`] every [`POLL`]; panics with `what`, the timeout and the last `Err` if the condition
/// does not hold within `timeout` (reported at the caller's line).
#[track_caller]
pub fn until<T, E: Display>(
    what: &str,
    timeout: Duration,
    probe: impl FnMut() -> Result<T, E>,
) -> T {
    match poll(timeout, POLL, probe) {
        Ok(value) => value,
        Err(last) => panic!("{what}: not within {timeout:?}; last seen: {last:#}"),
    }
}

/// Asks `ask` every `every` until `good` accepts its answer, for at most `timeout`; returns the
/// accepted answer, or the last one (for the caller to judge and report).
pub fn answer<T>(
    timeout: Duration,
    every: Duration,
    mut ask: impl FnMut() -> T,
    mut good: impl FnMut(&T) -> bool,
) -> T {
    poll(timeout, every, || {
        let a = ask();
        if good(&a) {
            Ok(a)
        } else {
            Err(a)
        }
    })
    .unwrap_or_else(|last| last)
}

/// Calls `check` every `every` for the whole of `period` (when watching is the point: that
/// something does not happen for a while); returns the first `Err`, at once.
pub fn throughout<E>(
    period: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<(), E>,
) -> Result<(), E> {
    let end = Instant::now() + period;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep(every.min(end - now));
    }
}
