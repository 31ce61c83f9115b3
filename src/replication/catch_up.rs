//! Bringing a copy outside the in-sync set level with its primary from the primary's log, then
//! back into the in-sync set; or telling it that it needs a whole copy ([`super::snapshot`]).

use std::sync::Arc;

use super::messages::{ReplicationRequest, ReplicationResponse};
use super::write::ATTEMPT_TIMEOUT;
use crate::cluster::messages::{MapRequest, MapResponse};
use crate::cluster::shard_map::ShardMap;
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::storage::KuzuShard;

/// Most bytes of logged writes sent to a catching-up copy per read of the log.
const CATCH_UP_CHUNK: usize = 8 << 20;
/// Rounds of catching up without holding the shard's write lock before the last one, with it.
const CATCH_UP_ROUNDS: usize = 3;

/// On the primary: a copy outside the in-sync set says how far it is. A copy that is behind gets
/// the writes it misses from the primary's log (by sequence number) — first while writes go on,
/// then, holding the shard's write lock so no write slips in between, the rest — and the
/// primary asks the coordinator to put it back in sync. A copy whose last write differs from the
/// primary's write with the same number, or that is ahead, has diverged (it took a write that
/// was never acknowledged): [`Error::NeedsRebuild`]; so does one too far behind for the retained
/// log, or an empty one.
pub async fn rejoin_in_sync(
    ctx: &Arc<NodeContext>,
    shard: u32,
    node: &str,
    their_seq: u64,
    their_crc: Option<u32>,
) -> Result<ShardMap, Error> {
    super::map_if_primary(ctx, shard)?;
    let store = ctx.storage.open(shard).await?;
    let mine = store.seq();
    if their_seq > mine {
        return Err(Error::NeedsRebuild(format!(
            "shard {shard}: {node} has writes up to {their_seq}, beyond the primary's {mine}: it diverged \
             and needs a rebuild"
        )));
    }
    if their_seq == 0 && mine > 0 {
        // A new (or emptied) copy: copying the database file is faster than replaying every
        // write, and the log may not reach back that far anyway.
        return Err(Error::NeedsRebuild(format!(
            "shard {shard}: {node}'s copy is empty; it is filled from a snapshot"
        )));
    }
    if let (Some(theirs), Ok(Some(ours))) = (their_crc, store.crc_at(their_seq).await) {
        if theirs != ours {
            return Err(Error::NeedsRebuild(format!(
                "shard {shard}: {node}'s write {their_seq} differs from the primary's: it diverged and needs a rebuild"
            )));
        }
    }
    let mut sent = their_seq;
    for _ in 0..CATCH_UP_ROUNDS {
        send_missing(ctx, &store, shard, node, &mut sent).await?;
    }
    let lock = ctx.shard_locks.get(shard);
    let _ordered = lock.lock().await;
    send_missing(ctx, &store, shard, node, &mut sent).await?;
    if sent > their_seq {
        tracing::info!(
            shard,
            node,
            from = their_seq,
            to = sent,
            "caught up a copy from the log"
        );
    }
    let req = MapRequest::AddInSync {
        shard,
        node: node.to_string(),
    };
    match crate::peer::call_coordinator(ctx, req, ATTEMPT_TIMEOUT).await? {
        MapResponse::Map(Some(map)) => {
            // Install it before the shard's write lock is released: the next write must reach
            // the copy that just rejoined, or it would be in sync on paper only.
            ctx.shard_map.offer(map.clone());
            let listed = ctx
                .shard_map
                .get()
                .and_then(|m| m.assignment(shard).map(|a| a.is_in_sync(node)))
                .unwrap_or(false);
            if !listed {
                return Err(Error::Unavailable(format!(
                    "shard {shard}: the map after the rejoin does not list {node} in sync"
                )));
            }
            Ok(map)
        }
        other => Err(Error::Internal(format!("unexpected answer {other:?}"))),
    }
}

/// Sends `node` the logged writes after `*sent` up to the primary's current sequence number.
/// [`Error::NeedsRebuild`] when the log no longer reaches back to `*sent` or the copy turns out
/// to have diverged.
async fn send_missing(
    ctx: &Arc<NodeContext>,
    store: &KuzuShard,
    shard: u32,
    node: &str,
    sent: &mut u64,
) -> Result<(), Error> {
    while *sent < store.seq() {
        let records = store
            .records_after(*sent, CATCH_UP_CHUNK)
            .await
            .map_err(|e| Error::from(e).context(format!("shard {shard}")))?;
        // The log must continue right after what the copy has; a gap means trimmed records.
        if records.first().is_none_or(|(seq, _)| *seq != *sent + 1) {
            return Err(Error::NeedsRebuild(format!(
                "shard {shard}: the primary's log no longer holds the writes after {sent}; {node} needs a copy"
            )));
        }
        for (seq, op) in records {
            let req = ReplicationRequest::Replicate { shard, seq, op };
            match crate::peer::call(ctx, node, req, ATTEMPT_TIMEOUT).await {
                Ok(ReplicationResponse::Replicated) => *sent = seq,
                Err(Error::Diverged(e)) => return Err(Error::NeedsRebuild(e)),
                Ok(other) => {
                    return Err(Error::Internal(format!(
                        "catching up {node}: unexpected answer {other:?}"
                    )))
                }
                Err(e) => return Err(e.context(format!("catching up {node}"))),
            }
        }
    }
    Ok(())
}
