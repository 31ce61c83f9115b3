//! A write's path: from any node to the shard's primary ([`route_write`]), on the primary
//! (sequence, log, replicate to every in-sync copy, acknowledge: [`primary_write`]) and on a
//! replica ([`replica_write`]: in order, only from the primary its map names).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::messages::{ReplicationRequest, ReplicationResponse};
use crate::cluster::messages::{MapRequest, MapResponse};
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::storage::WriteOp;

/// How long a routed write keeps retrying (new primary after a failover, busy shard).
pub const WRITE_DEADLINE: Duration = Duration::from_secs(15);
/// Per attempt.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the oldest unapplied write of a copy may wait before its primary refuses new writes:
/// `TORUA_MAX_APPLY_LAG`, or four times `round_lag` if that is longer (0: never refuse).
/// `round_lag` is the longest lag (logged to visible) of the last rounds of the node's copies:
/// they share the node's apply slots, so a copy's next round waits about as long as theirs did.
///
/// A round's cost grows with what the copy holds (Kuzu rewrites a relation table's node groups at
/// every bulk-load commit), not only with the writes it applies, and a copy waits for one of its
/// node's apply slots between rounds. With a fixed limit below that cycle, only the writes of the
/// limit's first seconds are admitted per cycle; the next round is small and pays the same fixed
/// cost for less, and a bulk load slows quadratically. A write that arrives as a round starts is
/// applied by the end of the next round: within twice the last round's lag while cycles keep
/// their length, and within about four times while each cycle may be up to twice the one before
/// (rounds grow with the copy during a load). So that much is admitted: each round applies what
/// arrived during the one before, and only a node whose copies slow down sharply refuses. The
/// copy's pending-bytes limit still bounds the memory the waiting writes take. Once rounds are
/// quick again, the limit is back to `TORUA_MAX_APPLY_LAG`.
pub fn admitted_lag(max_apply_lag: Duration, round_lag: Duration) -> Duration {
    if max_apply_lag.is_zero() {
        return Duration::ZERO;
    }
    max_apply_lag.max(round_lag * 4)
}

/// On the primary: sequence, commit locally, replicate, acknowledge. Returns the write's
/// sequence number once every in-sync copy logged it. Refused as busy while this copy's oldest
/// unapplied write has waited longer than [`admitted_lag`] allows (replicas never refuse for that:
/// a refusal there would drop them from the in-sync set).
pub async fn primary_write(ctx: &Arc<NodeContext>, shard: u32, op: WriteOp) -> Result<u64, Error> {
    let me = ctx.node_id().as_str().to_string();
    let map = ctx.shard_map.get().ok_or_else(|| {
        Error::Unavailable("no shard map yet; the cluster is still forming".into())
    })?;
    let a = map
        .assignment(shard)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("no shard {shard}")))?;
    if a.primary != me {
        return Err(Error::NotPrimary {
            shard,
            map_version: map.version,
        });
    }
    ctx.trusted(&map)?;
    ctx.quorum()?;
    let store = ctx.storage.open(shard).await?;
    let lag = store.apply_lag();
    // The node's round lags (a lock per copy) matter only past TORUA_MAX_APPLY_LAG.
    if lag > ctx.settings.max_apply_lag {
        let limit = admitted_lag(ctx.settings.max_apply_lag, ctx.storage.slowest_round_lag());
        if !limit.is_zero() && lag > limit {
            return Err(Error::Busy(format!(
                "shard {shard}: its oldest unapplied write has waited {:.1} s, past {:.1} s (the \
                 larger of TORUA_MAX_APPLY_LAG, {:?}, and 4x the longest lag of the last rounds \
                 of this node's copies); retry later",
                lag.as_secs_f64(),
                limit.as_secs_f64(),
                ctx.settings.max_apply_lag,
            )));
        }
    }
    let lock = ctx.shard_locks.get(shard);
    let _ordered = lock.lock().await;
    // The map may have changed while we waited (the primary role handed over, a restart noted).
    match ctx.shard_map.get() {
        Some(m) if m.assignment(shard).is_some_and(|a| a.primary == me) => {}
        Some(m) => {
            return Err(Error::NotPrimary {
                shard,
                map_version: m.version,
            })
        }
        None => return Err(Error::Unavailable("no shard map".into())),
    }
    let seq = store.seq() + 1;
    store
        .write(seq, op.clone())
        .await
        .map_err(|e| Error::from(e).context(format!("shard {shard} on {me}")))?;
    // Re-read the map: it may have changed while we waited for the lock.
    let a = ctx
        .shard_map
        .get()
        .and_then(|m| m.assignment(shard).cloned())
        .unwrap_or(a);
    let targets: Vec<String> = a.in_sync.iter().filter(|n| **n != me).cloned().collect();
    let mut tasks = tokio::task::JoinSet::new();
    for node in targets {
        let ctx = ctx.clone();
        let req = ReplicationRequest::Replicate {
            shard,
            seq,
            op: op.clone(),
        };
        tasks.spawn(async move {
            let call = crate::peer::call(&ctx, &node, req, ATTEMPT_TIMEOUT);
            let result = tokio::select! {
                answer = call => match answer {
                    Ok(ReplicationResponse::Replicated) => Ok(()),
                    Ok(other) => Err(Error::Internal(format!("unexpected answer {other:?}"))),
                    Err(e) => Err(e),
                },
                // A replica that dies mid-call is given up as soon as gossip says so (about a
                // second), not after the whole attempt timeout: writes stall for that long.
                _ = declared_dead(&ctx, &node) => {
                    Err(Error::Unreachable(format!("{node} died during the write")))
                }
            };
            (node, result)
        });
    }
    let mut failed = Vec::new();
    let mut fenced = None;
    while let Some(Ok((node, result))) = tasks.join_next().await {
        match result {
            Ok(()) => {}
            // The replica knows a newer map in which this node is not the primary: this write
            // must fail, and the replica must not be dropped from the in-sync set.
            Err(Error::Fenced(e)) => fenced = Some(format!("{node}: {e}")),
            Err(e) => {
                tracing::warn!(shard, seq, replica = %node, error = %e, "replication failed; removing the copy from the in-sync set");
                failed.push(node);
            }
        }
    }
    if let Some(e) = fenced {
        return Err(Error::Fenced(format!(
            "shard {shard}: write {seq} refused by a replica with a newer shard map ({e}); not acknowledged, retry"
        )));
    }
    for node in failed {
        if let Err(e) = mark_stale(ctx, shard, &node).await {
            return Err(Error::Unavailable(format!(
                "shard {shard}: write {seq} is committed on the primary but replica {node} failed and could not be \
                 removed from the in-sync set ({e}); not acknowledged, retry"
            )));
        }
    }
    Ok(seq)
}

/// Completes once the membership view no longer lists `node` as live.
async fn declared_dead(ctx: &NodeContext, node: &str) {
    let mut views = ctx.cluster.view_watcher();
    loop {
        let live = ctx
            .cluster
            .view()
            .member_by_str(node)
            .is_some_and(|m| m.is_live());
        if !live {
            return;
        }
        if views.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Asks the coordinator to drop `node` from `shard`'s in-sync set, and waits for the new map.
pub(crate) async fn mark_stale(
    ctx: &Arc<NodeContext>,
    shard: u32,
    node: &str,
) -> Result<(), Error> {
    let req = MapRequest::MarkStale {
        shard,
        node: node.to_string(),
    };
    match crate::peer::call_coordinator(ctx, req, ATTEMPT_TIMEOUT).await? {
        MapResponse::Map(Some(map)) => {
            // Installed here before the write is acknowledged (the coordinator's push may have
            // timed out).
            ctx.shard_map.offer(map);
            Ok(())
        }
        other => Err(Error::Internal(format!("unexpected answer {other:?}"))),
    }
}

/// Takes this node's copy of `shard` out of the in-sync set once the shard's writes in flight
/// have finished (waiting for them at most `lock_wait`); see `cluster::drain::hand_over`.
pub(crate) async fn step_out(
    ctx: &Arc<NodeContext>,
    shard: u32,
    lock_wait: std::time::Duration,
) -> Result<(), Error> {
    let lock = ctx.shard_locks.get(shard);
    let _held = tokio::time::timeout(lock_wait, lock.lock()).await;
    mark_stale(ctx, shard, ctx.node_id().as_str()).await
}

/// On a replica: apply in sequence order.
pub async fn replica_write(
    ctx: &Arc<NodeContext>,
    shard: u32,
    from: &str,
    seq: u64,
    op: WriteOp,
) -> Result<(), Error> {
    // Fencing: only the primary in this copy's map gets an acknowledgement from us, and only
    // while this process's copies are trusted (not right after a restart).
    if let Some(map) = ctx.shard_map.get() {
        map.require_primary(shard, from)
            .map_err(|e| Error::Fenced(format!("this copy refuses the write: {e}")))?;
        ctx.trusted(&map)
            .map_err(|e| e.context("this copy cannot take writes yet"))?;
    }
    let store = ctx.storage.open(shard).await?;
    let lock = ctx.shard_locks.get(shard);
    let _ordered = lock.lock().await;
    let applied = store.seq();
    if seq <= applied {
        // A retry of something we have — unless what we have under that number is another write
        // (a primary that lost its role sent it, and the new primary reused the number): then
        // this copy has diverged and must leave the in-sync set.
        let theirs = crate::storage::shard_log::encode(seq, &op)
            .ok()
            .map(|r| u32::from_le_bytes([r[4], r[5], r[6], r[7]]));
        return match (store.crc_at(seq).await, theirs) {
            (Ok(Some(ours)), Some(theirs)) if ours != theirs => Err(Error::Diverged(format!(
                "shard {shard}: this copy holds another write under number {seq}; it diverged and must be rebuilt"
            ))),
            _ => Ok(()),
        };
    }
    if seq != applied + 1 {
        return Err(Error::Unavailable(format!(
            "shard {shard}: this copy has writes up to {applied} and cannot apply {seq} (gap)"
        )));
    }
    Ok(store.write(seq, op).await?)
}

/// From any node: sends `op` to `shard`'s primary, following map changes until `deadline`.
/// The error is the last attempt's.
pub async fn route_write(
    ctx: &Arc<NodeContext>,
    shard: u32,
    op: &WriteOp,
    deadline: Instant,
) -> Result<u64, Error> {
    // On the minority side of a partition no write can be acknowledged: say so at once.
    ctx.quorum()?;
    let mut last_error = Error::Unavailable("no attempt".into());
    let mut delay = Duration::from_millis(50);
    while Instant::now() < deadline {
        let Some(map) = ctx.shard_map.get() else {
            last_error = Error::Unavailable(
                "no shard map yet; the cluster is still forming (TORUA_BOOTSTRAP_EXPECT)".into(),
            );
            tokio::time::sleep(delay).await;
            continue;
        };
        let primary = map
            .assignment(shard)
            .map(|a| a.primary.clone())
            .unwrap_or_default();
        let attempt: Result<(), Error> = if !crate::peer::is_live(ctx, &primary) {
            Err(Error::Unavailable(format!(
                "primary {primary} of shard {shard} is not live; waiting for a promotion"
            )))
        } else {
            let req = ReplicationRequest::Write {
                shard,
                op: op.clone(),
            };
            match crate::peer::call(ctx, &primary, req, ATTEMPT_TIMEOUT).await {
                Ok(ReplicationResponse::Written { seq }) => return Ok(seq),
                Ok(other) => Err(Error::Internal(format!("unexpected answer {other:?}"))),
                Err(e) => Err(e),
            }
        };
        if let Err(e) = attempt {
            last_error = e;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_admits_writes_for_four_times_its_last_rounds_lag() {
        let secs = Duration::from_secs;
        assert_eq!(admitted_lag(secs(5), secs(1)), secs(5));
        assert_eq!(admitted_lag(secs(5), secs(30)), secs(120));
        // 0 turns the limit off, however long the rounds.
        assert_eq!(admitted_lag(Duration::ZERO, secs(30)), Duration::ZERO);
    }
}
