//! Failures collected over the many cases of one process test, reported together at the end.

use std::time::Instant;

/// Failures collected over many cases of one process test, reported together at the end (a
/// cluster is expensive to start: one run should show every wrong answer, not the first).
#[derive(Default)]
pub struct Failures {
    pub list: Vec<String>,
    pub cases: usize,
}

impl Failures {
    pub fn fail(&mut self, msg: String) {
        eprintln!("FAIL #{}: {msg}\n", self.list.len() + 1);
        self.list.push(msg);
    }

    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            self.fail(msg());
        }
        ok
    }

    /// Prints the tally; panics listing the first 40 failures if there were any.
    pub fn finish(self, what: &str, started: Instant) {
        eprintln!(
            "{what}: {} cases, {} failures, {:.1} s",
            self.cases,
            self.list.len(),
            started.elapsed().as_secs_f64()
        );
        if !self.list.is_empty() {
            let shown: Vec<String> = self
                .list
                .iter()
                .take(40)
                .enumerate()
                .map(|(i, m)| format!("#{}: {m}", i + 1))
                .collect();
            panic!(
                "{what}: {} failures in {} cases:\n{}",
                self.list.len(),
                self.cases,
                shown.join("\n\n")
            );
        }
    }
}
