//! The write path and its guarantee, and routed reads.
//!
//! A write for shard *s* goes to *s*'s primary. The primary, holding the shard's lock so writes
//! keep their order, gives it the next sequence number, logs it (durably; see `storage::shard_log`), then sends it to every
//! other in-sync copy in parallel. It acknowledges only when every in-sync copy logged it; a copy
//! that fails is first removed from the in-sync set by the coordinator (the map change is the
//! record that the copy is no longer trusted), and if that cannot be done the write fails. So an
//! acknowledged write is on every copy the map calls in-sync, and survives while one of them does.
//!
//! Replicas take writes in sequence order and only from the node their map calls the primary; one
//! that sees a gap refuses the write (it then leaves the in-sync set and catches up from the
//! primary's log, see [`rejoin_in_sync`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::context::NodeContext;
use crate::peer::wire::{PeerRequest, PeerResponse};
use crate::storage::{EntityRecord, WriteOp};

/// How long a routed write keeps retrying (new primary after a failover, busy shard).
pub const WRITE_DEADLINE: Duration = Duration::from_secs(15);
/// Per attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per copy; above the storage's wait for pending writes to be applied (`kuzu_shard::READ_WAIT`).
const READ_TIMEOUT: Duration = Duration::from_secs(12);

/// How a replica's fencing refusal starts (the primary fails the write instead of dropping the
/// replica from the in-sync set).
const REFUSED: &str = "this copy refuses the write";

/// One lock per shard this node is primary of: orders its writes.
#[derive(Default)]
pub struct ShardLocks {
    locks: std::sync::Mutex<BTreeMap<u32, Arc<Mutex<()>>>>,
}

impl ShardLocks {
    fn get(&self, shard: u32) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .expect("locks")
            .entry(shard)
            .or_default()
            .clone()
    }
}

/// On the primary: sequence, commit locally, replicate, acknowledge.
pub async fn primary_write(ctx: &Arc<NodeContext>, shard: u32, op: WriteOp) -> PeerResponse {
    let me = ctx.node_id().as_str().to_string();
    let Some(map) = ctx.shard_map.get() else {
        return PeerResponse::Failed("no shard map yet; the cluster is still forming".into());
    };
    let Some(a) = map.assignment(shard).cloned() else {
        return PeerResponse::Failed(format!("no shard {shard}"));
    };
    if a.primary != me {
        return PeerResponse::NotPrimary {
            map_version: map.version,
        };
    }
    if let Err(e) = ctx.trusted(&map).and_then(|_| ctx.quorum()) {
        return PeerResponse::Failed(e);
    }
    let store = match ctx.storage.open(shard).await {
        Ok(s) => s,
        Err(e) => return PeerResponse::Failed(e),
    };
    let lock = ctx.shard_locks.get(shard);
    let _ordered = lock.lock().await;
    // The map may have changed while we waited (the primary role handed over, a restart noted).
    match ctx.shard_map.get() {
        Some(m) if m.assignment(shard).is_some_and(|a| a.primary == me) => {}
        Some(m) => {
            return PeerResponse::NotPrimary {
                map_version: m.version,
            }
        }
        None => return PeerResponse::Failed("no shard map".into()),
    }
    let seq = store.seq() + 1;
    if let Err(e) = store.write(seq, op.clone()).await {
        return PeerResponse::Failed(format!("shard {shard} on {me}: {e}"));
    }
    // Re-read the map: it may have changed while we waited for the lock.
    let a = ctx
        .shard_map
        .get()
        .and_then(|m| m.assignment(shard).cloned())
        .unwrap_or(a);
    let targets: Vec<String> = a.in_sync.iter().filter(|n| **n != me).cloned().collect();
    let view = ctx.cluster.view();
    let mut tasks = tokio::task::JoinSet::new();
    for node in targets {
        let peer = view.member_by_str(&node).and_then(|m| m.peer_addr.clone());
        let ctx = ctx.clone();
        let req = PeerRequest::Replicate {
            shard,
            seq,
            op: op.clone(),
        };
        tasks.spawn(async move {
            let result = match peer {
                None => Err(format!("{node} is not in the membership view")),
                Some(addr) => {
                    let call = crate::peer::call(&ctx, &node, &addr, &req, ATTEMPT_TIMEOUT);
                    tokio::select! {
                        answer = call => match answer {
                            Ok(PeerResponse::Replicated) => Ok(()),
                            Ok(PeerResponse::Failed(e)) => Err(e),
                            Ok(other) => Err(format!("unexpected answer {other:?}")),
                            Err(e) => Err(e),
                        },
                        // A replica that dies mid-call is given up as soon as gossip says so
                        // (about a second), not after the whole attempt timeout: writes stall
                        // for that long.
                        _ = declared_dead(&ctx, &node) => Err(format!("{node} died during the write")),
                    }
                }
            };
            (node, result)
        });
    }
    let mut failed = Vec::new();
    let mut fenced = None;
    while let Some(Ok((node, result))) = tasks.join_next().await {
        if let Err(e) = result.as_ref() {
            if e.contains(REFUSED) {
                // The replica knows a newer map in which this node is not the primary: this
                // write must fail, and the replica must not be dropped from the in-sync set.
                fenced = Some(format!("{node}: {e}"));
                continue;
            }
        }
        if let Err(e) = result {
            tracing::warn!(shard, seq, replica = %node, error = %e, "replication failed; removing the copy from the in-sync set");
            failed.push(node);
        }
    }
    if let Some(e) = fenced {
        return PeerResponse::Failed(format!(
            "shard {shard}: write {seq} refused by a replica with a newer shard map ({e}); not acknowledged, retry"
        ));
    }
    for node in failed {
        if let Err(e) = mark_stale(ctx, shard, &node).await {
            return PeerResponse::Failed(format!(
                "shard {shard}: write {seq} is committed on the primary but replica {node} failed and could not be \
                 removed from the in-sync set ({e}); not acknowledged, retry"
            ));
        }
    }
    PeerResponse::Written { seq }
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
async fn mark_stale(ctx: &Arc<NodeContext>, shard: u32, node: &str) -> Result<(), String> {
    let view = ctx.cluster.view();
    let coordinator = view.coordinator.clone().ok_or("no coordinator")?;
    let peer = view
        .member(&coordinator)
        .and_then(|m| m.peer_addr.clone())
        .ok_or("coordinator has no peer address")?;
    let req = PeerRequest::MarkStale {
        shard,
        node: node.to_string(),
    };
    match crate::peer::call(ctx, coordinator.as_str(), &peer, &req, ATTEMPT_TIMEOUT).await? {
        PeerResponse::Map(Some(map)) => {
            // Installed here before the write is acknowledged (the coordinator's push may have
            // timed out).
            ctx.shard_map.offer(map);
            Ok(())
        }
        PeerResponse::Failed(e) => Err(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// On a replica: apply in sequence order.
pub async fn replica_write(
    ctx: &Arc<NodeContext>,
    shard: u32,
    from: &str,
    seq: u64,
    op: WriteOp,
) -> PeerResponse {
    // Fencing: only the primary in this copy's map gets an acknowledgement from us, and only
    // while this process's copies are trusted (not right after a restart).
    if let Some(map) = ctx.shard_map.get() {
        if let Err(e) = map.require_primary(shard, from) {
            return PeerResponse::Failed(format!("{REFUSED}: {e}"));
        }
        if let Err(e) = ctx.trusted(&map) {
            return PeerResponse::Failed(format!("this copy cannot take writes yet: {e}"));
        }
    }
    let store = match ctx.storage.open(shard).await {
        Ok(s) => s,
        Err(e) => return PeerResponse::Failed(e),
    };
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
            (Ok(Some(ours)), Some(theirs)) if ours != theirs => PeerResponse::Failed(format!(
                "shard {shard}: this copy holds another write under number {seq}; it diverged and must be rebuilt"
            )),
            _ => PeerResponse::Replicated,
        };
    }
    if seq != applied + 1 {
        return PeerResponse::Failed(format!(
            "shard {shard}: this copy has writes up to {applied} and cannot apply {seq} (gap)"
        ));
    }
    match store.write(seq, op).await {
        Ok(()) => PeerResponse::Replicated,
        Err(e) => PeerResponse::Failed(e),
    }
}

/// From any node: sends `op` to `shard`'s primary, following map changes until `deadline`.
pub async fn route_write(
    ctx: &Arc<NodeContext>,
    shard: u32,
    op: &WriteOp,
    deadline: Instant,
) -> Result<u64, String> {
    // On the minority side of a partition no write can be acknowledged: say so at once.
    ctx.quorum()?;
    let mut last_error = String::from("no attempt");
    let mut delay = Duration::from_millis(50);
    while Instant::now() < deadline {
        let Some(map) = ctx.shard_map.get() else {
            last_error =
                "no shard map yet; the cluster is still forming (TORUA_BOOTSTRAP_EXPECT)".into();
            tokio::time::sleep(delay).await;
            continue;
        };
        let primary = map
            .assignment(shard)
            .map(|a| a.primary.clone())
            .unwrap_or_default();
        let view = ctx.cluster.view();
        let attempt: Result<(), String> = match view
            .member_by_str(&primary)
            .filter(|m| m.is_live())
            .and_then(|m| m.peer_addr.clone())
        {
            None => Err(format!(
                "primary {primary} of shard {shard} is not live; waiting for a promotion"
            )),
            Some(addr) => {
                let req = PeerRequest::ShardWrite {
                    shard,
                    op: op.clone(),
                };
                match crate::peer::call(ctx, &primary, &addr, &req, ATTEMPT_TIMEOUT).await {
                    Ok(PeerResponse::Written { seq }) => return Ok(seq),
                    Ok(PeerResponse::NotPrimary { .. }) => {
                        Err(format!("{primary} is no longer primary of shard {shard}"))
                    }
                    Ok(PeerResponse::Failed(e)) => Err(e),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(e),
                }
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

/// From any node: reads an entity from an in-sync copy of its shard (this node's first), failing
/// over to the next copy.
pub async fn route_get_entity(
    ctx: &Arc<NodeContext>,
    shard: u32,
    id: &str,
) -> Result<Option<EntityRecord>, String> {
    let req = PeerRequest::GetEntity {
        shard,
        id: id.to_string(),
    };
    match route_read(ctx, shard, &req).await? {
        PeerResponse::Entity(e) => Ok(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Like [`route_get_entity`] for a chunk.
pub async fn route_get_chunk(
    ctx: &Arc<NodeContext>,
    shard: u32,
    id: &str,
) -> Result<Option<crate::graph::model::Chunk>, String> {
    let req = PeerRequest::GetChunk {
        shard,
        id: id.to_string(),
    };
    match route_read(ctx, shard, &req).await? {
        PeerResponse::Chunk(c) => Ok(c),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Sends a read to an in-sync copy of `shard`: this node's first, then the primary, then others.
async fn route_read(
    ctx: &Arc<NodeContext>,
    shard: u32,
    req: &PeerRequest,
) -> Result<PeerResponse, String> {
    let map = ctx
        .shard_map
        .get()
        .ok_or("no shard map yet; the cluster is still forming")?;
    let a = map
        .assignment(shard)
        .ok_or_else(|| format!("no shard {shard}"))?;
    let me = ctx.node_id().as_str();
    let mut copies: Vec<&String> = a.in_sync.iter().collect();
    copies.sort_by_key(|n| (n.as_str() != me, n.as_str() != a.primary));
    let view = ctx.cluster.view();
    let mut errors = Vec::new();
    for node in copies {
        let Some(addr) = view
            .member_by_str(node)
            .filter(|m| m.is_live())
            .and_then(|m| m.peer_addr.clone())
        else {
            errors.push(format!("{node}: not live"));
            continue;
        };
        match crate::peer::call(ctx, node, &addr, req, READ_TIMEOUT).await {
            Ok(PeerResponse::Failed(e)) => errors.push(format!("{node}: {e}")),
            Ok(answer) => return Ok(answer),
            Err(e) => errors.push(e),
        }
    }
    Err(format!(
        "no copy of shard {shard} answered: {}",
        errors.join("; ")
    ))
}

/// Most bytes of logged writes sent to a catching-up copy per read of the log.
const CATCH_UP_CHUNK: usize = 8 << 20;
/// Rounds of catching up without holding the shard's write lock before the last one, with it.
const CATCH_UP_ROUNDS: usize = 3;

/// On the primary: a copy outside the in-sync set says how far it is. A copy that is behind gets
/// the writes it misses from the primary's log (by sequence number) — first while writes go on,
/// then, holding the shard's write lock so no write slips in between, the rest — and the
/// primary asks the coordinator to put it back in sync. A copy whose last write differs from the
/// primary's write with the same number, or that is ahead, has diverged (it took a write that
/// was never acknowledged) and stays out; so does one too far behind for the retained log.
/// Rebuilding those by copying is the self-healing issue's work.
pub async fn rejoin_in_sync(
    ctx: &Arc<NodeContext>,
    shard: u32,
    node: &str,
    their_seq: u64,
    their_crc: Option<u32>,
) -> PeerResponse {
    let Some(map) = ctx.shard_map.get() else {
        return PeerResponse::Failed("no shard map".into());
    };
    if map.assignment(shard).map(|a| a.primary.as_str()) != Some(ctx.node_id().as_str()) {
        return PeerResponse::NotPrimary {
            map_version: map.version,
        };
    }
    let store = match ctx.storage.open(shard).await {
        Ok(s) => s,
        Err(e) => return PeerResponse::Failed(e),
    };
    let mine = store.seq();
    if their_seq > mine {
        return PeerResponse::NeedsRebuild(format!(
            "shard {shard}: {node} has writes up to {their_seq}, beyond the primary's {mine}: it diverged \
             and needs a rebuild"
        ));
    }
    if their_seq == 0 && mine > 0 {
        // A new (or emptied) copy: copying the database file is faster than replaying every
        // write, and the log may not reach back that far anyway.
        return PeerResponse::NeedsRebuild(format!(
            "shard {shard}: {node}'s copy is empty; it is filled from a snapshot"
        ));
    }
    if let (Some(theirs), Ok(Some(ours))) = (their_crc, store.crc_at(their_seq).await) {
        if theirs != ours {
            return PeerResponse::NeedsRebuild(format!(
                "shard {shard}: {node}'s write {their_seq} differs from the primary's: it diverged and needs a rebuild"
            ));
        }
    }
    let view = ctx.cluster.view();
    let Some(addr) = view.member_by_str(node).and_then(|m| m.peer_addr.clone()) else {
        return PeerResponse::Failed(format!("{node} is not in the membership view"));
    };
    let mut sent = their_seq;
    for _ in 0..CATCH_UP_ROUNDS {
        if let Err(e) = send_missing(ctx, &store, shard, node, &addr, &mut sent).await {
            return e.into();
        }
    }
    let lock = ctx.shard_locks.get(shard);
    let _ordered = lock.lock().await;
    if let Err(e) = send_missing(ctx, &store, shard, node, &addr, &mut sent).await {
        return e.into();
    }
    if sent > their_seq {
        tracing::info!(
            shard,
            node,
            from = their_seq,
            to = sent,
            "caught up a copy from the log"
        );
    }
    let view = ctx.cluster.view();
    let Some(coordinator) = view.coordinator.clone() else {
        return PeerResponse::Failed("no coordinator".into());
    };
    let Some(coordinator_addr) = view.member(&coordinator).and_then(|m| m.peer_addr.clone()) else {
        return PeerResponse::Failed("the coordinator has no peer address".into());
    };
    let req = PeerRequest::AddInSync {
        shard,
        node: node.to_string(),
    };
    match crate::peer::call(
        ctx,
        coordinator.as_str(),
        &coordinator_addr,
        &req,
        ATTEMPT_TIMEOUT,
    )
    .await
    {
        Ok(PeerResponse::Map(Some(map))) => {
            // Install it before the shard's write lock is released: the next write must reach
            // the copy that just rejoined, or it would be in sync on paper only.
            ctx.shard_map.offer(map.clone());
            let listed = ctx
                .shard_map
                .get()
                .and_then(|m| m.assignment(shard).map(|a| a.is_in_sync(node)))
                .unwrap_or(false);
            if !listed {
                return PeerResponse::Failed(format!(
                    "shard {shard}: the map after the rejoin does not list {node} in sync"
                ));
            }
            PeerResponse::Map(Some(map))
        }
        Ok(PeerResponse::Failed(e)) => PeerResponse::Failed(e),
        Ok(other) => PeerResponse::Failed(format!("unexpected answer {other:?}")),
        Err(e) => PeerResponse::Failed(e),
    }
}

/// Why a catch-up stopped.
enum CatchUp {
    Failed(String),
    NeedsRebuild(String),
}

impl From<CatchUp> for PeerResponse {
    fn from(c: CatchUp) -> PeerResponse {
        match c {
            CatchUp::Failed(e) => PeerResponse::Failed(e),
            CatchUp::NeedsRebuild(e) => PeerResponse::NeedsRebuild(e),
        }
    }
}

/// Sends `node` the logged writes after `*sent` up to the primary's current sequence number.
async fn send_missing(
    ctx: &Arc<NodeContext>,
    store: &crate::storage::KuzuShard,
    shard: u32,
    node: &str,
    addr: &str,
    sent: &mut u64,
) -> Result<(), CatchUp> {
    while *sent < store.seq() {
        let records = store
            .records_after(*sent, CATCH_UP_CHUNK)
            .await
            .map_err(|e| {
                if e.contains("rebuild") {
                    CatchUp::NeedsRebuild(format!("shard {shard}: {e}"))
                } else {
                    CatchUp::Failed(e)
                }
            })?;
        // The log must continue right after what the copy has; a gap means trimmed records.
        if records.first().is_none_or(|(seq, _)| *seq != *sent + 1) {
            return Err(CatchUp::NeedsRebuild(format!(
                "shard {shard}: the primary's log no longer holds the writes after {sent}; {node} needs a copy"
            )));
        }
        for (seq, op) in records {
            let req = PeerRequest::Replicate { shard, seq, op };
            let failed = |e: String| Err(CatchUp::Failed(format!("catching up {node}: {e}")));
            match crate::peer::call(ctx, node, addr, &req, ATTEMPT_TIMEOUT).await {
                Ok(PeerResponse::Replicated) => *sent = seq,
                Ok(PeerResponse::Failed(e)) if e.contains("diverged") => {
                    return Err(CatchUp::NeedsRebuild(e))
                }
                Ok(PeerResponse::Failed(e)) => return failed(e),
                Ok(other) => return failed(format!("unexpected answer {other:?}")),
                Err(e) => return failed(e),
            }
        }
    }
    Ok(())
}
