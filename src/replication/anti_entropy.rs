//! Anti-entropy: the copies of a shard are compared in the background, so that a copy whose
//! database silently lost or garbled writes (it holds them in its log, but reads do not see them)
//! is found and rebuilt instead of answering wrongly forever.
//!
//! Every `TORUA_ANTI_ENTROPY_INTERVAL` a node checks one shard it is primary of (round-robin). It
//! holds the shard's write lock, so no write is sequenced meanwhile and the in-sync copies hold
//! the same writes; takes its own copy's checksum and asks every other in-sync copy for theirs
//! (each after applying what it logged). Copies answering at the same sequence number are
//! compared: when a strict majority of the shard's in-sync copies agree, every other copy has
//! diverged. It is told so (or, when it is the primary itself, marks itself), leaves the in-sync
//! set and is rebuilt from a snapshot (`cluster::coordinator`). With no majority (two copies that
//! differ) nobody can tell which is right: the check changes nothing, and says so in the log and
//! in health (yellow) until a check finds the copies agreeing.
//!
//! An operator can also ask for a copy to be rebuilt ([`ask_rebuild`], `POST
//! /nodes/{id}/shards/{shard}/rebuild`), for instance the one of two disputed copies they distrust.
//!
//! The check holds writes to one shard for as long as the slowest copy takes to checksum it (a
//! full read of the copy); writes to other shards go on.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::node::context::NodeContext;
use crate::replication::messages::{ReplicationRequest, ReplicationResponse};

/// How long the primary waits for the shard's write lock before skipping its turn.
const LOCK_WAIT: Duration = Duration::from_secs(1);
/// How long a copy may take to apply what it logged and read itself whole.
const CHECKSUM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long telling a copy that it diverged may take.
const TELL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `stop` fires.
pub async fn run(ctx: Arc<NodeContext>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = ctx.settings.anti_entropy_interval;
    if every.is_zero() {
        return;
    }
    let mut next = 0u32;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(map) = ctx.shard_map.get() else {
            continue;
        };
        let me = ctx.node_id().as_str();
        let mine: Vec<u32> = map
            .assignments
            .iter()
            .filter(|a| a.primary == me && a.in_sync.len() > 1)
            .map(|a| a.shard)
            .collect();
        let Some(&shard) = mine.iter().find(|s| **s >= next).or(mine.first()) else {
            continue;
        };
        next = shard + 1;
        if let Err(e) = check(&ctx, shard).await {
            tracing::debug!(shard, error = %e, "anti-entropy check skipped");
        }
    }
}

/// Compares the in-sync copies of `shard`, of which this node is the primary.
async fn check(ctx: &Arc<NodeContext>, shard: u32) -> Result<(), Error> {
    let map = super::map_if_primary(ctx, shard)?;
    ctx.trusted(&map)?;
    let me = ctx.node_id().as_str().to_string();
    let assignment = map
        .assignment(shard)
        .ok_or_else(|| Error::NotFound(format!("no shard {shard}")))?;
    let copies = assignment.in_sync.len();
    let others: Vec<String> = assignment
        .in_sync
        .iter()
        .filter(|n| **n != me)
        .cloned()
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let store = ctx.storage.open(shard).await?;
    let lock = ctx.shard_locks.get(shard);
    let held = tokio::time::timeout(LOCK_WAIT, lock.lock())
        .await
        .map_err(|_| Error::Busy(format!("shard {shard}: writes hold its lock")))?;
    let ours = tokio::time::timeout(CHECKSUM_TIMEOUT, store.checksum())
        .await
        .map_err(|_| Error::Timeout(format!("shard {shard}: checksum of this copy")))??;
    let theirs = futures_util::future::join_all(others.iter().map(|node| async move {
        let req = ReplicationRequest::Checksum { shard };
        (
            node.clone(),
            crate::peer::call(ctx, node, req, CHECKSUM_TIMEOUT).await,
        )
    }))
    .await;
    drop(held);
    let mut sums = vec![(me.clone(), ours.1.clone())];
    for (node, answer) in theirs {
        match answer {
            Ok(ReplicationResponse::Checksum { seq, sum }) if seq == ours.0 => {
                sums.push((node, sum))
            }
            Ok(ReplicationResponse::Checksum { seq, .. }) => {
                tracing::debug!(
                    shard,
                    node,
                    seq,
                    ours = ours.0,
                    "a copy answered at another write; not compared"
                );
            }
            Ok(other) => tracing::warn!(
                shard,
                node,
                ?other,
                "unexpected answer to a checksum request"
            ),
            Err(e) => tracing::debug!(shard, node, error = %e, "a copy did not give its checksum"),
        }
    }
    let seq = ours.0;
    let verdict = verdict(&sums, copies);
    store.set_dispute(matches!(verdict, Verdict::Undecided).then(|| {
        let sums: Vec<String> = sums.iter().map(|(n, s)| format!("{n} {s}")).collect();
        format!(
            "the copies differ at write {seq} ({}) and no majority tells which is right; nothing \
             was changed: rebuild the copy you distrust with POST /nodes/{{node}}/shards/{shard}/rebuild",
            sums.join(", ")
        )
    }));
    match verdict {
        Verdict::Agree => {
            tracing::debug!(
                shard,
                seq,
                copies = sums.len(),
                "anti-entropy: the copies agree"
            )
        }
        Verdict::Undecided => tracing::error!(
            shard,
            seq,
            ?sums,
            "anti-entropy: the copies differ and no majority tells which is right; nothing changed"
        ),
        Verdict::Diverged(odd) => {
            for node in odd {
                tracing::warn!(shard, seq, node, "anti-entropy: this copy differs from the majority of the shard's copies; it is rebuilt");
                if node == me {
                    store.mark_diverged();
                    continue;
                }
                let req = ReplicationRequest::Diverged { shard, seq };
                if let Err(e) = crate::peer::call(ctx, &node, req, TELL_TIMEOUT).await {
                    tracing::warn!(shard, node, error = %e, "cannot tell a copy that it diverged; the next check will");
                }
            }
        }
    }
    Ok(())
}

/// What comparing the checksums of a shard's copies found.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Every copy compared has the same checksum.
    Agree,
    /// A strict majority of the `copies` in-sync copies agree; these others differ.
    Diverged(Vec<String>),
    /// The copies differ, and no checksum has a majority.
    Undecided,
}

/// Judges `sums` (node, checksum) of copies compared at one sequence number, out of `copies`
/// in-sync copies.
fn verdict(sums: &[(String, String)], copies: usize) -> Verdict {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, sum) in sums {
        *counts.entry(sum.as_str()).or_default() += 1;
    }
    if counts.len() <= 1 {
        return Verdict::Agree;
    }
    match counts.iter().find(|(_, n)| **n * 2 > copies) {
        Some((majority, _)) => Verdict::Diverged(
            sums.iter()
                .filter(|(_, sum)| sum != majority)
                .map(|(node, _)| node.clone())
                .collect(),
        ),
        None => Verdict::Undecided,
    }
}

/// On a replica: the checksum of this copy for its primary `from`'s check.
pub async fn checksum(
    ctx: &Arc<NodeContext>,
    shard: u32,
    from: &str,
) -> Result<(u64, String), Error> {
    require_primary(ctx, shard, from)?;
    ctx.holds_copy(shard)?;
    Ok(open_copy(ctx, shard)?.checksum().await?)
}

/// On a replica: its primary `from` found this copy differing from the majority at write `seq`.
/// The copy is marked; the node's map duties take it out of the in-sync set and rebuild it.
pub async fn diverged(
    ctx: &Arc<NodeContext>,
    shard: u32,
    from: &str,
    seq: u64,
) -> Result<(), Error> {
    require_primary(ctx, shard, from)?;
    let store = open_copy(ctx, shard)?;
    tracing::warn!(
        shard,
        seq,
        primary = from,
        "anti-entropy: this copy differs from the majority of the shard's copies; it is rebuilt"
    );
    store.mark_diverged();
    Ok(())
}

/// How long asking a node to rebuild its copy may take.
const REBUILD_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// An operator's `POST /nodes/{node}/shards/{shard}/rebuild`: `node`'s copy of `shard` leaves the
/// in-sync set and is rebuilt from another in-sync copy (as a copy anti-entropy found diverged).
/// Refused when that copy is the shard's only in-sync one: there is nothing to rebuild it from.
pub async fn ask_rebuild(ctx: &Arc<NodeContext>, node: &str, shard: u32) -> Result<(), Error> {
    let map = ctx.shard_map.get().ok_or_else(|| {
        Error::Unavailable("no shard map yet: the cluster is forming; retry".into())
    })?;
    let a = map.assignment(shard).ok_or_else(|| {
        Error::NotFound(format!(
            "no shard {shard}: the map has shards 0 to {}",
            map.assignments.len().saturating_sub(1)
        ))
    })?;
    if !a.copies().any(|c| c == node) {
        let copies: Vec<&String> = a.copies().collect();
        return Err(Error::NotFound(format!(
            "{node} holds no copy of shard {shard}; its copies are on {copies:?}"
        )));
    }
    if !a.in_sync.iter().any(|n| n != node) {
        return Err(Error::Invalid(format!(
            "{node}'s copy is the only in-sync copy of shard {shard}: there is no other copy to \
             rebuild it from"
        )));
    }
    match crate::peer::call(
        ctx,
        node,
        ReplicationRequest::Rebuild { shard },
        REBUILD_ASK_TIMEOUT,
    )
    .await?
    {
        ReplicationResponse::WillRebuild => Ok(()),
        other => Err(Error::Internal(format!("unexpected answer {other:?}"))),
    }
}

/// On the node holding the copy: an operator (through node `from`) asked to rebuild it.
pub async fn rebuild_here(ctx: &Arc<NodeContext>, shard: u32, from: &str) -> Result<(), Error> {
    let store = open_copy(ctx, shard)?;
    tracing::warn!(
        shard,
        asked_through = from,
        "an operator asked to rebuild this copy from another copy"
    );
    store.mark_diverged();
    Ok(())
}

/// This node's open copy of `shard`; never creates one (as `Storage::open` would).
fn open_copy(ctx: &NodeContext, shard: u32) -> Result<Arc<crate::storage::KuzuShard>, Error> {
    ctx.storage.get(shard).ok_or_else(|| {
        Error::NotFound(format!(
            "{} holds no open copy of shard {shard}",
            ctx.node_id().as_str()
        ))
    })
}

/// `Err` unless this node's map names `from` the primary of `shard` (a stale primary's verdict
/// counts for nothing).
fn require_primary(ctx: &NodeContext, shard: u32, from: &str) -> Result<(), Error> {
    let map = ctx
        .shard_map
        .get()
        .ok_or_else(|| Error::Unavailable("no shard map yet; retry".into()))?;
    map.require_primary(shard, from)
        .map_err(|e| Error::Fenced(format!("not the primary's check: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect()
    }

    #[test]
    fn the_copies_outside_a_strict_majority_diverged() {
        assert_eq!(verdict(&sums(&[("a", "1"), ("b", "1")]), 2), Verdict::Agree);
        assert_eq!(
            verdict(&sums(&[("a", "1"), ("b", "2"), ("c", "1")]), 3),
            Verdict::Diverged(vec!["b".into()])
        );
        // The primary itself can be the odd one.
        assert_eq!(
            verdict(&sums(&[("a", "9"), ("b", "1"), ("c", "1")]), 3),
            Verdict::Diverged(vec!["a".into()])
        );
        // Two copies that differ: no majority.
        assert_eq!(
            verdict(&sums(&[("a", "1"), ("b", "2")]), 2),
            Verdict::Undecided
        );
        // A majority of the answers but not of the in-sync copies (one did not answer).
        assert_eq!(
            verdict(&sums(&[("a", "1"), ("b", "2"), ("c", "1")]), 5),
            Verdict::Undecided
        );
    }
}
