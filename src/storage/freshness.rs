//! How fresh a read of a shard copy must be. A copy acknowledges a write once it is in its log
//! and applies it to the database a little later, so a read can arrive while writes logged
//! before it are still waiting. [`Freshness`] says what the read does then: wait for them
//! (`Strict`, failing as busy past the storage's wait), or wait a bounded time and answer from
//! what is applied (`Bounded`), noting the copy's [`Lag`] in the read's [`ReadScope`] so that the
//! answer can say it is stale.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a read does about writes logged before it and not yet applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Freshness {
    /// Waits for every write logged before the read (read-your-writes); fails as busy when
    /// they are not applied within the storage's wait (`kuzu_shard::READ_WAIT`).
    Strict,
    /// Waits at most `wait_ms` for them, then answers from the applied writes and reports how
    /// far behind the copy was.
    Bounded { wait_ms: u32 },
}

impl Freshness {
    /// `Bounded` with a wait of `wait` (capped at `u32::MAX` ms).
    pub fn bounded(wait: Duration) -> Freshness {
        Freshness::Bounded {
            wait_ms: wait.as_millis().min(u32::MAX as u128) as u32,
        }
    }
}

/// A copy that answered a read before every write logged before the read was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lag {
    pub shard: u32,
    /// The copy's node, when the read crossed the network (filled in by the asker).
    #[schema(required = true)]
    pub node: Option<String>,
    /// Highest sequence number the answer includes.
    pub applied_seq: u64,
    /// Highest sequence number acknowledged on the copy when it answered.
    pub logged_seq: u64,
}

/// One read's [`Freshness`] and the lags of the copies that answered it behind. Clones share
/// the lags, so the parts of a read running on separate tasks report into one place.
#[derive(Debug, Clone)]
pub struct ReadScope {
    pub freshness: Freshness,
    lags: Arc<Mutex<Vec<Lag>>>,
}

impl ReadScope {
    pub fn new(freshness: Freshness) -> ReadScope {
        ReadScope {
            freshness,
            lags: Arc::default(),
        }
    }

    /// A read that waits for every acknowledged write (the document cascade, checks, tests).
    pub fn strict() -> ReadScope {
        ReadScope::new(Freshness::Strict)
    }

    /// Notes that a copy answered behind; one entry per shard and node (the furthest behind).
    pub fn note(&self, lag: Lag) {
        let mut lags = self.lags.lock().expect("lags lock");
        match lags
            .iter_mut()
            .find(|l| l.shard == lag.shard && l.node == lag.node)
        {
            Some(l) if l.applied_seq > lag.applied_seq => *l = lag,
            Some(_) => {}
            None => lags.push(lag),
        }
    }

    /// Notes the lags a copy on `node` reported.
    pub fn note_from(&self, node: &str, lags: Vec<Lag>) {
        for mut lag in lags {
            lag.node.get_or_insert_with(|| node.to_string());
            self.note(lag);
        }
    }

    /// The lags noted so far, by shard.
    pub fn lags(&self) -> Vec<Lag> {
        let mut lags = self.lags.lock().expect("lags lock").clone();
        lags.sort_by(|a, b| (a.shard, &a.node).cmp(&(b.shard, &b.node)));
        lags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(shard: u32, node: &str, applied: u64) -> Lag {
        Lag {
            shard,
            node: Some(node.into()),
            applied_seq: applied,
            logged_seq: 100,
        }
    }

    #[test]
    fn keeps_the_furthest_behind_answer_per_copy_across_clones() {
        let scope = ReadScope::strict();
        let part = scope.clone();
        part.note(lag(3, "b", 50));
        scope.note(lag(3, "b", 40));
        scope.note(lag(3, "b", 70));
        part.note(lag(1, "a", 10));
        scope.note_from(
            "c",
            vec![Lag {
                node: None,
                ..lag(3, "x", 60)
            }],
        );
        assert_eq!(
            scope.lags(),
            vec![lag(1, "a", 10), lag(3, "b", 40), lag(3, "c", 60)]
        );
    }

    #[test]
    fn a_bounded_wait_is_capped() {
        assert_eq!(
            Freshness::bounded(Duration::from_secs(u64::MAX / 2_000)),
            Freshness::Bounded { wait_ms: u32::MAX }
        );
        assert_eq!(
            Freshness::bounded(Duration::from_millis(1500)),
            Freshness::Bounded { wait_ms: 1500 }
        );
    }
}
