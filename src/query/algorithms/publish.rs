//! Writing a graph algorithm's results back all or nothing across shards.
//!
//! A write-back is named `<task>/<nonce>`. First every worker stages its shards' results
//! ([`WriteOp::Stage`], through the replicated write path: every copy of the shard holds them,
//! invisible to reads). Once every shard staged its part, the driver asks the coordinator to
//! record the decision to publish in the shard map ([`MapRequest::Decide`]); then it asks every
//! shard's primary to publish ([`WriteOp::Publish`]). A task that fails or is cancelled before
//! that records the decision to discard.
//!
//! The decision is the commit point: the first one recorded stands, and every node holds it with
//! the map. So whoever finishes the job reaches the same outcome. Every [`SWEEP_EVERY`], each
//! node looks for staged writes in the copies it is primary of whose driver is gone (it left the
//! cluster, restarted, or the task ended), and publishes or discards them as the map says. One
//! nobody decided is decided discarded first, by the same request, so that a driver still alive
//! behind a slow link cannot publish it afterwards: its own decision finds the discard recorded.
//!
//! What a reader sees: nothing of a write-back until it is decided. Then each shard switches in
//! one applied write, all shards within one round of requests, or within a sweep when the driver
//! died after the decision. A copy never shows part of a shard's results.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::coordinator::ask_map_change;
use crate::cluster::messages::MapRequest;
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::query::scatter::join_in_order;
use crate::replication::write::route_write;
use crate::storage::WriteOp;

use super::task::{driver_of, view_anywhere, TaskState};

/// How often a node looks for staged write-backs to finish.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for the coordinator to record a decision.
const DECIDE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one shard's publish or discard to be acknowledged.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Staged writes one copy looks at per sweep.
const PER_SWEEP: usize = 16;

/// A new write-back name for `task`: task ids repeat after the driver restarts, these do not.
pub fn write_id(task: &str) -> String {
    format!("{task}/{:016x}", rand::random::<u64>())
}

/// The task a write-back belongs to.
fn task_of(write: &str) -> &str {
    write.rsplit_once('/').map_or(write, |(task, _)| task)
}

/// Asks the coordinator to decide `write` (`publish` or discard); returns the decision recorded,
/// which is an earlier one when there was one.
pub async fn decide(ctx: &Arc<NodeContext>, write: &str, publish: bool) -> Result<bool, Error> {
    let request = MapRequest::Decide {
        write: write.to_string(),
        publish,
    };
    let map = ask_map_change(ctx, "write-back decision", request, DECIDE_TIMEOUT, |e| {
        matches!(e, Error::Invalid(_))
    })
    .await?;
    map.decision(write).ok_or_else(|| {
        Error::Internal(format!(
            "the coordinator's map does not hold the decision on {write}"
        ))
    })
}

/// Publishes (or discards) what `write` staged in each of `shards`: the first shard, then the
/// others at once. The first failure is returned after every shard was tried.
pub async fn finish(
    ctx: &Arc<NodeContext>,
    write: &str,
    publish: bool,
    shards: impl IntoIterator<Item = u32>,
) -> Result<(), Error> {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    let one = |shard: u32| {
        let (ctx, write) = (ctx.clone(), write.to_string());
        async move {
            let op = if publish {
                WriteOp::Publish { write }
            } else {
                WriteOp::Discard { write }
            };
            route_write(&ctx, shard, &op, deadline)
                .await
                .map(|_| ())
                .map_err(|e| e.context(format!("finishing the write-back in shard {shard}")))
        }
    };
    let mut shards = shards.into_iter();
    let Some(first) = shards.next() else {
        return Ok(());
    };
    let first = one(first).await;
    if publish {
        crate::node::failpoints::pause(crate::node::failpoints::ALGORITHM_PUBLISH).await;
    }
    let rest: Result<(), Error> = join_in_order(shards.map(one)).await.into_iter().collect();
    first.and(rest)
}

/// Every [`SWEEP_EVERY`]: finishes the staged write-backs of the copies this node is primary of.
pub async fn run(ctx: Arc<NodeContext>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        if let Err(e) = sweep(&ctx).await {
            tracing::debug!(error = %e, "write-back sweep stopped early");
        }
    }
}

/// One sweep over the copies this node is primary of.
pub async fn sweep(ctx: &Arc<NodeContext>) -> Result<(), Error> {
    let Some(map) = ctx.shard_map.get() else {
        return Ok(());
    };
    let me = ctx.node_id().as_str().to_string();
    let mut staged = Vec::new();
    for a in map.assignments.iter().filter(|a| a.primary == me) {
        if let Some(copy) = ctx.storage.get(a.shard) {
            for write in copy.staged_writes(PER_SWEEP).await? {
                staged.push((a.shard, write));
            }
        }
    }
    ctx.metrics.set_write_backs_staged(staged.len());
    for (shard, write) in staged {
        // A driver still at work finishes its own write-back.
        if !driver_gone(ctx, task_of(&write)).await {
            continue;
        }
        let decided = match ctx.shard_map.read(|m| m.and_then(|m| m.decision(&write))) {
            Some(publish) => publish,
            None => decide(ctx, &write, false).await?,
        };
        tracing::info!(
            shard,
            write,
            publish = decided,
            "finishing a graph algorithm write-back its driver left"
        );
        finish(ctx, &write, decided, [shard]).await?;
        ctx.metrics.write_back_finished(decided);
    }
    Ok(())
}

/// Whether `task`'s driver will never decide it: the driver is not a live member, does not know
/// the task (it restarted), or the task ended. Not when the driver cannot tell in time.
async fn driver_gone(ctx: &Arc<NodeContext>, task: &str) -> bool {
    let Ok(node) = driver_of(task) else {
        return true;
    };
    if node != ctx.node_id().as_str() && !crate::peer::is_live(ctx, node) {
        return true;
    }
    let asked = tokio::time::timeout(DECIDE_TIMEOUT, view_anywhere(ctx, task, Duration::ZERO));
    match asked.await {
        Ok(Ok(view)) => view.state != TaskState::Running,
        Ok(Err(Error::NotFound(_) | Error::Invalid(_))) => true,
        _ => false,
    }
}
