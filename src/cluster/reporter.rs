//! Push registration and health reports: each node registers with the current coordinator at
//! start and whenever the coordinator changes, then reports its health every
//! `TORUA_REPORT_INTERVAL`. Failures retry with exponential backoff and full jitter; every attempt
//! is logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::{debug, info, warn};

use crate::cluster::messages::{HealthRequest, HealthResponse};
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::storage::ApplierTiming;

const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Per shard copy with writes waiting: the applied sequence number last seen, and since when it
/// has not moved.
#[derive(Default)]
struct Stalls(HashMap<u32, (u64, Instant)>);

impl Stalls {
    /// How long the copy of `shard` has applied nothing while writes wait.
    fn observe(&mut self, shard: u32, applied: u64, pending: u64) -> Duration {
        if pending == 0 {
            self.0.remove(&shard);
            return Duration::ZERO;
        }
        let now = Instant::now();
        let (seen, since) = self.0.entry(shard).or_insert((applied, now));
        if *seen != applied {
            (*seen, *since) = (applied, now);
        }
        now - *since
    }
}

/// Whether a copy whose writes have waited `stalled` without any being applied has a stuck
/// applier rather than a slow one. Waiting for an apply slot is not stuck (the copies holding the
/// slots are checked themselves). In a spell of work (a round, a snapshot, a full-text rebuild),
/// it is stuck once the spell has lasted `stuck_after` and three times the longest spell it
/// finished before: a bulk-load round costs in proportion to what the copy holds, so rounds grow
/// as a load goes on, but by far less than that from one round to the next. Neither working nor
/// waiting for a slot while writes wait, it is stuck after `stuck_after`.
fn is_stuck(stalled: Duration, timing: ApplierTiming, stuck_after: Duration) -> bool {
    if stalled < stuck_after || timing.waiting_for_slot {
        return false;
    }
    match timing.busy_for {
        Some(busy) => busy >= stuck_after.max(timing.longest * 3),
        None => true,
    }
}

/// What is wrong with this node's shard copies, a sentence each (the health report's `shards`):
/// copies that stopped applying and why (out of buffer pool, damaged by a crash), copies whose
/// database refused acknowledged writes (they miss them until rebuilt), shards whose
/// copies differ with no majority (found by anti-entropy on their primary), and copies that
/// applied nothing for `TORUA_STUCK_AFTER` while writes wait and whose applier is stuck, not
/// slow ([`is_stuck`]). A stuck copy with another in-sync
/// copy of its shard is marked for a rebuild: the map duties take it out of the in-sync set and
/// rebuild it from a snapshot (once its applier lets the database close).
fn copy_problems(ctx: &NodeContext, stalls: &mut Stalls) -> Vec<String> {
    let Some(map) = ctx.shard_map.get() else {
        return Vec::new();
    };
    let me = ctx.node_id().as_str();
    let mut problems = Vec::new();
    for a in map
        .assignments
        .iter()
        .filter(|a| a.copies().any(|c| c == me))
    {
        let Some(store) = ctx.storage.get(a.shard) else {
            continue;
        };
        if let Some(why) = store.damage() {
            problems.push(format!("shard {}: {why}", a.shard));
        }
        let refused = store.refused_writes();
        if refused > 0 {
            let fate = if a.is_in_sync(me) && a.in_sync.len() == 1 {
                "it is the shard's only in-sync copy, so it stays until another copy is in sync; \
                 the writes stay in its log (see the node's log)"
            } else {
                "it is out of the in-sync set and is rebuilt from another copy"
            };
            problems.push(format!(
                "shard {}: this copy's database refused {refused} acknowledged writes; {fate}",
                a.shard
            ));
        }
        if let Some(dispute) = store.dispute() {
            problems.push(format!("shard {}: {dispute}", a.shard));
        }
        let pending = store.pending_writes();
        let stalled = stalls.observe(a.shard, store.visible_seq(), pending);
        if is_stuck(stalled, store.applier_timing(), ctx.settings.stuck_after) {
            let fate = if a.is_in_sync(me) && a.in_sync.len() == 1 {
                "it is the shard's only in-sync copy, so it stays"
            } else {
                if !store.needs_rebuild() {
                    tracing::warn!(
                        shard = a.shard,
                        pending,
                        stalled_s = stalled.as_secs(),
                        "this copy applies nothing while writes wait; it is rebuilt from another copy"
                    );
                    store.mark_diverged();
                }
                "it is taken out of the in-sync set and rebuilt from another copy"
            };
            problems.push(format!(
                "shard {}: this copy applied nothing for {} s while {pending} writes wait (a very \
                 slow round, or a stuck applier: see the node's log); {fate}",
                a.shard,
                stalled.as_secs(),
            ));
        }
    }
    problems
}

/// Where this node is registered: coordinator id and generation of our view of it.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    coordinator: String,
    generation: u64,
    peer_addr: String,
}

/// Runs until `stop` fires.
pub async fn run(ctx: Arc<NodeContext>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut views = ctx.cluster.view_watcher();
    let mut registered: Option<Target> = None;
    let mut attempt: u32 = 0;
    let mut stalls = Stalls::default();
    loop {
        let wait = match current_target(&ctx) {
            None => {
                registered = None;
                ctx.settings.report_interval
            }
            Some(target) if registered.as_ref() != Some(&target) => {
                attempt += 1;
                info!(coordinator = %target.coordinator, attempt, "registering with the coordinator");
                match register(&ctx, &target).await {
                    Ok(term) => {
                        info!(coordinator = %target.coordinator, term, attempt, "registered with the coordinator");
                        registered = Some(target);
                        attempt = 0;
                        // Report right away so the coordinator's health is complete quickly.
                        Duration::ZERO
                    }
                    Err(e) => {
                        let delay = backoff(attempt);
                        warn!(coordinator = %target.coordinator, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "registration failed");
                        delay
                    }
                }
            }
            Some(target) => {
                match report(&ctx, &target, &mut stalls).await {
                    Ok(()) => {}
                    Err(e) => {
                        // Register again (the coordinator may have restarted or lost its registry).
                        debug!(coordinator = %target.coordinator, error = %e, "health report refused; registering again");
                        registered = None;
                    }
                }
                if registered.is_some() {
                    ctx.settings.report_interval
                } else {
                    Duration::ZERO
                }
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = views.changed() => {
                // A coordinator change re-registers at once; other view changes wait out the timer.
                if current_target(&ctx) == registered {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_INITIAL
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    // Full jitter: spreads a herd of nodes re-registering with a new coordinator.
    let millis = rand::thread_rng().gen_range(exp.as_millis() as u64 / 2..=exp.as_millis() as u64);
    Duration::from_millis(millis)
}

fn current_target(ctx: &NodeContext) -> Option<Target> {
    let view = ctx.cluster.view();
    let id = view.coordinator.as_ref()?;
    let m = view.member(id)?;
    Some(Target {
        coordinator: id.as_str().to_string(),
        generation: m.generation,
        peer_addr: m.peer_addr.clone()?,
    })
}

async fn register(ctx: &Arc<NodeContext>, target: &Target) -> Result<u64, Error> {
    let term = ctx.cluster.view().term.unwrap_or(0);
    let request = HealthRequest::Register(ctx.registration(term));
    let timeout = ctx.settings.coordinator_timeout.max(Duration::from_secs(1));
    // A node that is not the coordinator in its own view answers `NotCoordinator`: this node
    // waits for gossip to agree and registers again.
    match crate::peer::call(ctx, &target.coordinator, request, timeout).await? {
        HealthResponse::Registered { term, coordinator } => {
            ctx.cluster.observe_term(term, &coordinator);
            Ok(term)
        }
        other => Err(Error::Internal(format!("unexpected answer {other:?}"))),
    }
}

async fn report(ctx: &Arc<NodeContext>, target: &Target, stalls: &mut Stalls) -> Result<(), Error> {
    let mut report = crate::node::stats::report(
        ctx.node_id().as_str(),
        ctx.cluster.generation(),
        ctx.settings.started,
        &ctx.settings.data_dir,
    );
    report.shards = copy_problems(ctx, stalls);
    let timeout = ctx.settings.coordinator_timeout.max(Duration::from_secs(1));
    let request = HealthRequest::Report(report);
    match crate::peer::call(ctx, &target.coordinator, request, timeout).await? {
        HealthResponse::ReportAccepted => Ok(()),
        other => Err(Error::Internal(format!("unexpected answer {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_stalls_only_while_writes_wait_and_nothing_is_applied() {
        const AFTER: Duration = Duration::from_secs(60);
        let mut stalls = Stalls::default();
        assert_eq!(stalls.observe(1, 10, 0), Duration::ZERO);
        assert!(stalls.observe(1, 10, 5) < AFTER);
        // Seen long ago at the same position with writes waiting: stalled since then.
        stalls.0.insert(1, (10, Instant::now() - AFTER));
        assert!(stalls.observe(1, 10, 5) >= AFTER);
        // Progress, or nothing left to apply, clears it.
        assert!(stalls.observe(1, 11, 5) < AFTER);
        stalls.0.insert(1, (11, Instant::now() - AFTER));
        assert_eq!(stalls.observe(1, 11, 0), Duration::ZERO);
        assert!(stalls.observe(1, 11, 3) < AFTER);
    }

    #[test]
    fn a_long_round_is_slow_not_stuck() {
        let after = Duration::from_secs(60);
        let secs = Duration::from_secs;
        let timing = |busy: Option<u64>, longest: u64, waiting: bool| ApplierTiming {
            busy_for: busy.map(secs),
            waiting_for_slot: waiting,
            last_round_lag: secs(longest),
            longest: secs(longest),
        };
        // Nothing stalled long enough: never stuck.
        assert!(!is_stuck(secs(59), timing(Some(600), 1, false), after));
        // A round past TORUA_STUCK_AFTER but within 3x the longest one before: slow.
        assert!(!is_stuck(secs(90), timing(Some(90), 40, false), after));
        assert!(is_stuck(secs(120), timing(Some(120), 40, false), after));
        // Rounds of a second before: stuck at TORUA_STUCK_AFTER.
        assert!(is_stuck(secs(60), timing(Some(60), 1, false), after));
        // Waiting for an apply slot held by other copies: not stuck.
        assert!(!is_stuck(secs(300), timing(None, 1, true), after));
        // Neither working nor waiting while writes wait: stuck.
        assert!(is_stuck(secs(60), timing(None, 1, false), after));
    }
}
