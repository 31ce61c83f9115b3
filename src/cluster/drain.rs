//! What a node's copies do when it stops. On SIGTERM a node hands its places over
//! ([`hand_over`]): each copy that is not its shard's only in-sync copy leaves the in-sync set (a
//! primary's role passes to another in-sync copy), so that writes go on at once without it; the
//! data stays, and a node back within `TORUA_REPLACE_AFTER` catches up from the primary's log.
//! Draining moves every copy and primary role off a node for good (a decommission): asked for by
//! an operator (`POST /nodes/{id}/drain`, undone by `DELETE`), or on SIGTERM when
//! `TORUA_DRAIN_TIMEOUT` is set ([`drain_self`]). The coordinator does the moving (see
//! `shard_plan`); this module asks and watches.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::coordinator::{ask_set_draining, ask_until_accepted};
use crate::cluster::shard_map::ShardMap;
use crate::error::Error;
use crate::node::context::NodeContext;

/// How often progress is checked.
const POLL: Duration = Duration::from_millis(250);
/// A drain that moves nothing for this long (no node can take the copies) gives up.
const STUCK_AFTER: Duration = Duration::from_secs(3);

/// An operator's drain (`draining`) or undrain of `node`: asks the coordinator, again for a few
/// seconds while it is changing hands or busy, and answers with the map that records it. An
/// unknown node is `NotFound` at once; a coordinator that never accepts is `Unavailable`.
pub async fn set_draining(
    ctx: &Arc<NodeContext>,
    node: &str,
    draining: bool,
) -> Result<ShardMap, Error> {
    if membership::NodeId::new(node).is_err() {
        return Err(Error::Invalid(format!(
            "{node:?} is not a node id (letters, digits, '.', '_', '-')"
        )));
    }
    ask_until_accepted(
        "drain",
        |e| matches!(e, Error::NotFound(_)),
        || ask_set_draining(ctx, node, draining, false),
    )
    .await
}

/// How long one copy's hand-over may wait for the shard's writes in flight.
const HAND_OVER_LOCK_WAIT: Duration = Duration::from_millis(500);

/// On SIGTERM: takes this node's copies out of their shards' in-sync sets where another in-sync
/// copy stays (a primary's role passes to one of them), all shards at once, within `budget`.
/// Each shard's writes in flight finish first (its write lock is held while the map changes).
/// Copies that are their shard's only in-sync copy stay: writes to that shard wait for this
/// node's return. Returns a line for the log.
pub async fn hand_over(ctx: &Arc<NodeContext>, budget: Duration) -> String {
    ctx.leaving.store(true, Ordering::SeqCst);
    let Some(map) = ctx.shard_map.get() else {
        return "no shard map: nothing to hand over".into();
    };
    let started = Instant::now();
    let me = ctx.node_id().as_str().to_string();
    let mine: Vec<_> = map
        .assignments
        .iter()
        .filter(|a| a.is_in_sync(&me))
        .collect();
    let (kept, to_hand): (Vec<_>, Vec<_>) = mine.into_iter().partition(|a| a.in_sync.len() < 2);
    // Shards are handed over together; the coordinator applies the changes one by one.
    let steps = to_hand.iter().map(|a| async {
        let step = crate::replication::write::step_out(ctx, a.shard, HAND_OVER_LOCK_WAIT);
        match tokio::time::timeout(budget, step).await {
            Ok(Ok(())) => Ok(a.primary == me),
            Ok(Err(e)) => Err(format!("shard {}: {e}", a.shard)),
            Err(_) => Err(format!("shard {}: out of time", a.shard)),
        }
    });
    let (mut handed, mut primaries, mut failed) = (0, 0, Vec::new());
    for outcome in futures_util::future::join_all(steps).await {
        match outcome {
            Ok(was_primary) => {
                handed += 1;
                primaries += usize::from(was_primary);
            }
            Err(why) => failed.push(why),
        }
    }
    let mut line = format!(
        "handed over {handed} copies ({primaries} primary roles) in {} ms; {} kept (their shard's only in-sync copy)",
        started.elapsed().as_millis(),
        kept.len()
    );
    if !failed.is_empty() {
        line.push_str(&format!(
            "; not handed over (their primaries drop them on the next write): {}",
            failed.join("; ")
        ));
    }
    line
}

/// On SIGTERM with `TORUA_DRAIN_TIMEOUT` set: asks the coordinator to move this node's copies
/// away and waits until the map assigns it none (or nothing can move, or `timeout`). Returns a
/// line for the log.
pub async fn drain_self(ctx: &Arc<NodeContext>, timeout: Duration) -> String {
    ctx.leaving.store(true, Ordering::SeqCst);
    if timeout.is_zero() {
        return "TORUA_DRAIN_TIMEOUT is 0: leaving without moving copies".into();
    }
    let me = ctx.node_id().as_str().to_string();
    let holds = |ctx: &NodeContext| {
        ctx.shard_map
            .get()
            .map(|m| m.held_by(&me).len())
            .unwrap_or(0)
    };
    if holds(ctx) == 0 {
        return "this node holds no shard copies".into();
    }
    let started = Instant::now();
    let deadline = started + timeout;
    // Ask until the coordinator has it (it may be changing hands).
    loop {
        match ask_set_draining(ctx, &me, true, true).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e, "drain request not accepted yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return format!("the coordinator did not accept the drain: {e}"),
        }
    }
    let initial = holds(ctx);
    tracing::info!(
        copies = initial,
        "draining: moving this node's copies to other nodes"
    );
    let mut idle_since: Option<Instant> = None;
    loop {
        let Some(map) = ctx.shard_map.get() else {
            return "no shard map".into();
        };
        let left = map.held_by(&me).len();
        if left == 0 {
            return format!(
                "drained {initial} copies in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        if Instant::now() >= deadline {
            return format!("TORUA_DRAIN_TIMEOUT passed with {left} copies still here");
        }
        if map.moves.is_empty() {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= STUCK_AFTER {
                return format!(
                    "{left} copies cannot move (no other node can take them); leaving anyway"
                );
            }
        } else {
            idle_since = None;
        }
        tokio::time::sleep(POLL).await;
    }
}
