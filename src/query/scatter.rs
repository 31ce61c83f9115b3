//! Fan-out to shards: which copy of a shard answers (live, in sync, taking turns), retrying a
//! failed copy on the next one, and the Elasticsearch-style `_shards` report of what a
//! distributed answer covers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::context::NodeContext;
use crate::peer::wire::{PeerRequest, PeerResponse};
use crate::shard_map::ShardMap;
use crate::storage::{QueryFailure, Rows, ShardQuery};

/// Largest answer one shard sends for a query (below the transport's 16 MiB message limit).
pub const MAX_SHARD_ANSWER_BYTES: usize = 12 << 20;
/// Added to a query's own time limit for the network and the wait for applied writes.
pub const NETWORK_MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ShardsReport {
    pub total: usize,
    pub successful: usize,
    pub failed: usize,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub shard: u32,
    /// The copy that failed last, if any was tried.
    pub node: Option<String>,
    pub reason: String,
}

impl ShardsReport {
    pub fn new(total: usize) -> Self {
        ShardsReport {
            total,
            ..Default::default()
        }
    }

    pub fn fail(&mut self, shard: u32, node: Option<String>, reason: impl Into<String>) {
        self.failed += 1;
        self.failures.push(Failure {
            shard,
            node,
            reason: reason.into(),
        });
    }

    /// One line naming the shards that did not answer and why (for a 503).
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .failures
            .iter()
            .take(5)
            .map(|f| format!("shard {}: {}", f.shard, f.reason))
            .collect();
        format!(
            "{} of {} shards did not answer ({}{}); a partial answer was refused (allow_partial=false) or nothing answered",
            self.failed,
            self.total,
            parts.join("; "),
            if self.failures.len() > 5 { "; ..." } else { "" }
        )
    }
}

/// The live in-sync copies of `shard` as (node, peer address), in the order to try them:
/// this node first when `prefer_local`, otherwise starting at a rotating position.
pub fn copies(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    shard: u32,
    prefer_local: bool,
) -> Result<Vec<(String, String)>, String> {
    let a = map
        .assignment(shard)
        .ok_or_else(|| format!("no shard {shard} in the shard map"))?;
    let view = ctx.cluster.view();
    let mut live = Vec::new();
    let mut down = Vec::new();
    for node in &a.in_sync {
        match view
            .member_by_str(node)
            .filter(|m| m.is_live())
            .and_then(|m| m.peer_addr.clone())
        {
            Some(addr) => live.push((node.clone(), addr)),
            None => down.push(node.as_str()),
        }
    }
    if live.is_empty() {
        let out_of_sync: Vec<&str> = a
            .copies()
            .filter(|c| !a.in_sync.contains(c))
            .map(String::as_str)
            .collect();
        return Err(format!(
            "no live in-sync copy (in-sync copies down: [{}]; out of sync: [{}])",
            down.join(", "),
            out_of_sync.join(", ")
        ));
    }
    let me = ctx.node_id().as_str();
    if prefer_local {
        live.sort_by_key(|(n, _)| n != me);
    } else {
        let turn = ctx.read_turn.fetch_add(1, Ordering::Relaxed) + shard as usize;
        let n = live.len();
        live.rotate_left(turn % n);
    }
    // Suspects last (stable: the order above holds among the rest).
    let suspects = ctx.read_suspects.lock().expect("suspects lock");
    live.sort_by_key(|(n, _)| {
        suspects
            .get(n)
            .is_some_and(|at| at.elapsed() < SUSPECT_FOR)
    });
    Ok(live)
}

/// How long a node that failed to answer a read is tried last.
const SUSPECT_FOR: Duration = Duration::from_secs(15);

/// Records that `node` did not answer a read in time (or at all).
pub fn suspect(ctx: &NodeContext, node: &str) {
    let mut s = ctx.read_suspects.lock().expect("suspects lock");
    s.retain(|_, at| at.elapsed() < SUSPECT_FOR);
    s.insert(node.to_string(), Instant::now());
}

/// The time one attempt may take when `more` copies remain to try: half of what is left (at
/// least a second), so a copy on a node that just died leaves time for another.
pub fn attempt_timeout(left: Duration, more: bool) -> Duration {
    if more {
        (left / 2).max(Duration::from_secs(1)).min(left)
    } else {
        left
    }
}

/// On the node holding the copy: runs a checked query on it.
pub async fn run_on_shard(
    ctx: &Arc<NodeContext>,
    shard: u32,
    query: ShardQuery,
) -> Result<Rows, QueryFailure> {
    let map = ctx.shard_map.get();
    super::traverse::in_sync_here(map.as_ref(), shard, ctx.node_id().as_str())
        .map_err(QueryFailure::Other)?;
    let store = ctx.storage.open(shard).await.map_err(QueryFailure::Other)?;
    store.user_query(query, MAX_SHARD_ANSWER_BYTES).await
}

/// What one shard answered to a query.
pub struct ShardAnswer {
    pub shard: u32,
    pub node: String,
    pub rows: Rows,
}

/// Sends `query` to one copy of each of `shards` (its `names_cypher` only to the first),
/// retrying other copies when a copy cannot be reached or fails for a reason of its own (not
/// when the query itself is wrong or too slow). Returns the answers, the report, and the first
/// "invalid query" failure if any.
pub async fn query_shards(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    shards: &[u32],
    query: ShardQuery,
) -> (Vec<ShardAnswer>, ShardsReport, Option<String>) {
    let deadline = Instant::now() + Duration::from_millis(query.timeout_ms) + NETWORK_MARGIN;
    let mut tasks = tokio::task::JoinSet::new();
    for (n, &shard) in shards.iter().enumerate() {
        let (ctx, map) = (ctx.clone(), map.clone());
        let mut query = query.clone();
        if n > 0 {
            query.names_cypher = None;
        }
        tasks.spawn(async move {
            let result = query_one(&ctx, &map, shard, query, deadline).await;
            (shard, result)
        });
    }
    let mut answers = Vec::new();
    let mut report = ShardsReport::new(shards.len());
    let mut invalid = None;
    while let Some(joined) = tasks.join_next().await {
        let Ok((shard, result)) = joined else {
            continue; // a panicked task: counted below as missing
        };
        match result {
            Ok(answer) => {
                report.successful += 1;
                answers.push(answer);
            }
            Err((node, QueryFailure::Invalid(reason))) => {
                invalid.get_or_insert(reason.clone());
                report.fail(shard, node, reason);
            }
            Err((node, failure)) => report.fail(shard, node, failure.reason()),
        }
    }
    if report.successful + report.failed < report.total {
        let missing = report.total - report.successful - report.failed;
        report.failed += missing;
    }
    answers.sort_by_key(|a| a.shard);
    report.failures.sort_by_key(|f| f.shard);
    (answers, report, invalid)
}

async fn query_one(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    shard: u32,
    query: ShardQuery,
    deadline: Instant,
) -> Result<ShardAnswer, (Option<String>, QueryFailure)> {
    let copies = copies(ctx, map, shard, false).map_err(|e| (None, QueryFailure::Other(e)))?;
    let request = PeerRequest::Query { shard, query };
    let mut last = (None, QueryFailure::Other("no copy was tried".into()));
    let n = copies.len();
    for (i, (node, addr)) in copies.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let limit = attempt_timeout(left, i + 1 < n);
        match crate::peer::call(ctx, &node, &addr, &request, limit).await {
            Ok(PeerResponse::QueryRows(Ok(rows))) => return Ok(ShardAnswer { shard, node, rows }),
            // The query's own fault: the same on every copy.
            Ok(PeerResponse::QueryRows(Err(
                f @ (QueryFailure::Invalid(_) | QueryFailure::Timeout(_) | QueryFailure::TooLarge(_)),
            ))) => return Err((Some(node), f)),
            Ok(PeerResponse::QueryRows(Err(f))) => last = (Some(node), f),
            Ok(PeerResponse::Failed(e)) => last = (Some(node), QueryFailure::Other(e)),
            Ok(other) => last = (Some(node), QueryFailure::Other(format!("unexpected answer {other:?}"))),
            Err(e) => {
                suspect(ctx, &node);
                last = (Some(node), QueryFailure::Other(e));
            }
        }
    }
    Err(last)
}
