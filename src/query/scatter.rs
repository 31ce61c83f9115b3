//! Fan-out to shards: which copy of a shard answers (live, in sync, taking turns), retrying a
//! failed copy on the next one, and the Elasticsearch-style `_shards` report of what a
//! distributed answer covers. The fan-out serves any per-shard read ([`ShardRead`]): a user's
//! Cypher ([`ShardQuery`]), retrieval's typed reads ([`Retrieval`]) and the document cascade's
//! ([`Cascade`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::shard_map::ShardMap;
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::query::read::{ask, ReadRequest, ReadResponse};
use crate::storage::{
    CascadeRead, CascadeRows, KuzuShard, Lag, QueryFailure, ReadScope, RetrievalRead,
    RetrievalRows, Rows, ShardQuery,
};

/// Largest answer one shard sends for a query (below the transport's 16 MiB message limit).
pub const MAX_SHARD_ANSWER_BYTES: usize = 12 << 20;
/// Added to a query's own time limit for the network and the wait for applied writes.
pub const NETWORK_MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ShardsReport {
    pub total: usize,
    pub successful: usize,
    pub failed: usize,
    pub failures: Vec<Failure>,
    /// Copies that answered before every write acknowledged ahead of the read was applied
    /// (the read's `freshness` was `bounded` and its wait ran out): the answer may miss those
    /// writes. Empty when the answer is fresh.
    pub behind: Vec<Lag>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Failure {
    pub shard: u32,
    /// The copy that failed last, if any was tried.
    #[schema(required = true)]
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
        format!(
            "{} of {} shards did not answer ({}); a partial answer was refused (allow_partial=false) or nothing answered",
            self.failed,
            self.total,
            self.failures_text(5)
        )
    }

    /// The first `most` failures, `shard n: reason` each, `; `-separated.
    pub fn failures_text(&self, most: usize) -> String {
        let mut parts: Vec<String> = self
            .failures
            .iter()
            .take(most)
            .map(|f| format!("shard {}: {}", f.shard, f.reason))
            .collect();
        if self.failures.len() > most {
            parts.push("...".into());
        }
        parts.join("; ")
    }
}

/// Which copy of a shard answers first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    /// Copies take turns (spreads the load).
    Turns,
    /// This node's own copy (no network hop).
    Local,
    /// The primary: every node asks the same copy, so approximate answers (HNSW searches, whose
    /// graphs differ between copies built by separate inserts) are the same from every node.
    Primary,
}

/// The live in-sync copies of `shard` (their nodes), in the order to try them (see
/// [`Prefer`]); copies on nodes that failed a read recently come last.
pub fn copies(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    shard: u32,
    prefer: Prefer,
) -> Result<Vec<String>, Error> {
    let a = map
        .assignment(shard)
        .ok_or_else(|| Error::NotFound(format!("no shard {shard} in the shard map")))?;
    let view = ctx.cluster.view();
    let mut live = Vec::new();
    let mut down = Vec::new();
    for node in &a.in_sync {
        match view
            .member_by_str(node)
            .filter(|m| m.is_live() && m.peer_addr.is_some())
        {
            Some(_) => live.push(node.clone()),
            None => down.push(node.as_str()),
        }
    }
    if live.is_empty() {
        let out_of_sync: Vec<&str> = a
            .copies()
            .filter(|c| !a.in_sync.contains(c))
            .map(String::as_str)
            .collect();
        return Err(Error::Unavailable(format!(
            "no live in-sync copy (in-sync copies down: [{}]; out of sync: [{}])",
            down.join(", "),
            out_of_sync.join(", ")
        )));
    }
    let me = ctx.node_id().as_str();
    match prefer {
        Prefer::Local => live.sort_by_key(|n| n != me),
        Prefer::Primary => live.sort_by_key(|n| *n != a.primary),
        Prefer::Turns => {
            let turn = ctx.reads.turn.fetch_add(1, Ordering::Relaxed) + shard as usize;
            let n = live.len();
            live.rotate_left(turn % n);
        }
    }
    // Suspects last (stable: the order above holds among the rest).
    let suspects = ctx.reads.suspects.lock().expect("suspects lock");
    live.sort_by_key(|n| suspects.get(n).is_some_and(|at| at.elapsed() < SUSPECT_FOR));
    Ok(live)
}

/// How long a node that failed to answer a read is tried last.
const SUSPECT_FOR: Duration = Duration::from_secs(15);

/// Records that `node` did not answer a read in time (or at all).
pub fn suspect(ctx: &NodeContext, node: &str) {
    let mut s = ctx.reads.suspects.lock().expect("suspects lock");
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

/// A read the fan-out sends to shards: the request asking one node for some of its copies, and
/// the per-shard results in that node's response.
pub trait ShardRead: Clone + Send + Sync + 'static {
    /// What one shard answers.
    type Answer: Send + std::fmt::Debug + 'static;
    /// The read's time limit on a shard.
    fn timeout_ms(&self) -> u64;
    /// The request for `shards` (copies on one node); `first` for the first node asked.
    fn request(&self, shards: Vec<u32>, first: bool) -> ReadRequest;
    /// The per-shard results a response to [`ShardRead::request`] carries (the response back
    /// when it is not one).
    #[allow(clippy::type_complexity)]
    fn results(
        response: ReadResponse,
    ) -> Result<Vec<(u32, Result<Self::Answer, QueryFailure>)>, Box<ReadResponse>>;
}

impl ShardRead for ShardQuery {
    type Answer = Rows;

    fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// `names_cypher` goes with the first request only.
    fn request(&self, shards: Vec<u32>, first: bool) -> ReadRequest {
        let mut query = self.clone();
        if !first {
            query.names_cypher = None;
        }
        ReadRequest::QueryShards { shards, query }
    }

    fn results(
        response: ReadResponse,
    ) -> Result<Vec<(u32, Result<Rows, QueryFailure>)>, Box<ReadResponse>> {
        match response {
            ReadResponse::QueryRows(results) => Ok(results),
            other => Err(Box::new(other)),
        }
    }
}

/// A typed per-shard read with its time limit: the struct and its [`ShardRead`], whose request is
/// the `ReadRequest` variant `$request` (shards, read, time limit) and whose results come in the
/// `ReadResponse` variant `$response`; on the node holding the copies, [`KuzuShard`]'s `$run`
/// answers it.
macro_rules! timed_read {
    (
        $(#[$doc:meta])* $name:ident, $read:ty, $answer:ty, $request:ident, $response:ident
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            pub read: $read,
            pub timeout_ms: u64,
        }

        impl $name {
            /// On the node holding the copies: `read` on each of `shards` at once, answers in
            /// the order asked.
            pub async fn on_shards(
                ctx: &Arc<NodeContext>,
                shards: Vec<u32>,
                read: $read,
                timeout_ms: u64,
                scope: &ReadScope,
            ) -> Vec<(u32, Result<$answer, QueryFailure>)> {
                let scope = scope.clone();
                on_local_copies(ctx, shards, move |store| {
                    let (read, scope) = (read.clone(), scope.clone());
                    async move {
                        store
                            .bounded_read(read, timeout_ms, MAX_SHARD_ANSWER_BYTES, &scope)
                            .await
                    }
                })
                .await
            }
        }

        impl ShardRead for $name {
            type Answer = $answer;

            fn timeout_ms(&self) -> u64 {
                self.timeout_ms
            }

            fn request(&self, shards: Vec<u32>, _first: bool) -> ReadRequest {
                ReadRequest::$request {
                    shards,
                    read: self.read.clone(),
                    timeout_ms: self.timeout_ms,
                }
            }

            fn results(
                response: ReadResponse,
            ) -> Result<Vec<(u32, Result<$answer, QueryFailure>)>, Box<ReadResponse>> {
                match response {
                    ReadResponse::$response(results) => Ok(results),
                    other => Err(Box::new(other)),
                }
            }
        }
    };
}

timed_read!(
    /// A retrieval read with its time limit.
    Retrieval,
    RetrievalRead,
    RetrievalRows,
    Retrieval,
    Retrieved
);

timed_read!(
    /// One of the document cascade's reads with its time limit.
    Cascade,
    CascadeRead,
    CascadeRows,
    Cascade,
    Cascaded
);

/// On the node holding the copy: the copy of `shard`, if this node holds it in sync.
async fn copy_here(ctx: &Arc<NodeContext>, shard: u32) -> Result<Arc<KuzuShard>, QueryFailure> {
    let map = ctx.shard_map.get();
    crate::cluster::shard_map::in_sync_here(
        map.as_ref(),
        shard,
        ctx.node_id().as_str(),
        ctx.cluster.generation(),
    )
    .map_err(|e| QueryFailure::Other(e.to_string()))?;
    ctx.storage
        .open(shard)
        .await
        .map_err(|e| QueryFailure::Other(e.to_string()))
}

/// On the node holding the copy: runs a checked query on it.
pub async fn run_on_shard(
    ctx: &Arc<NodeContext>,
    shard: u32,
    query: ShardQuery,
    scope: &ReadScope,
) -> Result<Rows, QueryFailure> {
    let store = copy_here(ctx, shard).await?;
    store.user_query(query, MAX_SHARD_ANSWER_BYTES, scope).await
}

/// Answers and failures as they come in.
struct Gathered<T> {
    answers: Vec<ShardAnswer<T>>,
    report: ShardsReport,
    invalid: Option<String>,
}

impl<T> Gathered<T> {
    fn settle(&mut self, shard: u32, node: Option<String>, result: Result<T, QueryFailure>) {
        match result {
            Ok(rows) => {
                self.report.successful += 1;
                let node = node.unwrap_or_default();
                self.answers.push(ShardAnswer { shard, node, rows });
            }
            Err(QueryFailure::Invalid(reason)) => {
                self.invalid.get_or_insert(reason.clone());
                self.report.fail(shard, node, reason);
            }
            Err(failure) => self.report.fail(shard, node, failure.reason()),
        }
    }
}

/// What one shard answered to a read (a query's [`Rows`] unless said otherwise).
pub struct ShardAnswer<T = Rows> {
    pub shard: u32,
    pub node: String,
    pub rows: T,
}

/// On the node holding the copies: [`run_on_shard`] for each of `shards` at once, answers in
/// the order asked.
pub async fn run_on_shards(
    ctx: &Arc<NodeContext>,
    shards: Vec<u32>,
    query: ShardQuery,
    scope: &ReadScope,
) -> Vec<(u32, Result<Rows, QueryFailure>)> {
    join_in_order(shards.into_iter().enumerate().map(|(n, shard)| {
        let (ctx, scope) = (ctx.clone(), scope.clone());
        let mut query = query.clone();
        if n > 0 {
            query.names_cypher = None;
        }
        async move { (shard, run_on_shard(&ctx, shard, query, &scope).await) }
    }))
    .await
}

/// `read` on this node's in-sync copy of each of `shards`, all at once, answers in the order
/// asked; a shard without such a copy here answers its [`copy_here`] failure.
async fn on_local_copies<R, F, Fut>(
    ctx: &Arc<NodeContext>,
    shards: Vec<u32>,
    read: F,
) -> Vec<(u32, Result<R, QueryFailure>)>
where
    R: Send + 'static,
    F: Fn(Arc<KuzuShard>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<R, QueryFailure>> + Send,
{
    join_in_order(shards.into_iter().map(|shard| {
        let (ctx, read) = (ctx.clone(), read.clone());
        async move {
            let answer = match copy_here(&ctx, shard).await {
                Ok(store) => read(store).await,
                Err(f) => Err(f),
            };
            (shard, answer)
        }
    }))
    .await
}

/// Runs `work` concurrently, each on its own task, and returns the outputs in the order given
/// (askers match answers to what they asked by position). A task that panicked is left out, so
/// the answer is shorter than the question.
pub async fn join_in_order<T, F>(work: impl IntoIterator<Item = F>) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (n, f) in work.into_iter().enumerate() {
        tasks.spawn(async move { (n, f.await) });
    }
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        if let Ok(answer) = joined {
            out.push(answer);
        }
    }
    out.sort_by_key(|(n, _)| *n);
    out.into_iter().map(|(_, t)| t).collect()
}

/// Sends `read` to one copy of each of `shards` (which copy: `prefer`), one request per node
/// holding a chosen copy. A shard whose copy cannot be reached or fails for a reason of its own
/// (not when the read itself is wrong or too slow) is retried on its other copies, one request
/// each. Returns the answers (by shard), the report, and the first "invalid" failure if any;
/// copies that answered behind are noted in `scope`.
#[allow(clippy::type_complexity)]
pub async fn scatter<R: ShardRead>(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    shards: &[u32],
    read: R,
    prefer: Prefer,
    scope: &ReadScope,
) -> (Vec<ShardAnswer<R::Answer>>, ShardsReport, Option<String>) {
    let deadline = Instant::now() + Duration::from_millis(read.timeout_ms()) + NETWORK_MARGIN;
    let mut report = ShardsReport::new(shards.len());
    let mut per_node: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for &shard in shards {
        match copies(ctx, map, shard, prefer) {
            Ok(c) => per_node.entry(c[0].clone()).or_default().push(shard),
            Err(e) => report.fail(shard, None, e.to_string()),
        }
    }
    let mut calls = tokio::task::JoinSet::new();
    for (n, (node, shards)) in per_node.into_iter().enumerate() {
        let (ctx, scope) = (ctx.clone(), scope.clone());
        let request = read.request(shards.clone(), n == 0);
        calls.spawn(async move {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = ask(&ctx, &node, request, &scope, attempt_timeout(left, true)).await;
            if answer.as_ref().is_err_and(Error::is_no_answer) {
                suspect(&ctx, &node);
            }
            (node, shards, answer)
        });
    }
    let mut g = Gathered {
        answers: Vec::new(),
        report,
        invalid: None,
    };
    let mut retry = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let Ok((node, shards, answer)) = joined else {
            continue;
        };
        match answer.ok().and_then(|a| R::results(a).ok()) {
            Some(results) if results.len() == shards.len() => {
                for (shard, result) in results {
                    match result {
                        Err(QueryFailure::Other(_)) => retry.push(shard),
                        result => g.settle(shard, Some(node.clone()), result),
                    }
                }
            }
            _ => retry.extend(shards),
        }
    }
    // The shards left: one request each, through their copies in turn (failed nodes last).
    let mut tasks = tokio::task::JoinSet::new();
    for shard in retry {
        let (ctx, map, read, scope) = (ctx.clone(), map.clone(), read.clone(), scope.clone());
        tasks.spawn(async move {
            let answer = read_one(&ctx, &map, shard, read, deadline, prefer, &scope).await;
            (shard, answer)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((shard, result)) = joined else {
            continue;
        };
        match result {
            Ok(answer) => g.settle(shard, Some(answer.node), Ok(answer.rows)),
            Err((node, failure)) => g.settle(shard, node, Err(failure)),
        }
    }
    let Gathered {
        mut answers,
        mut report,
        invalid,
    } = g;
    let answered = report.successful + report.failed;
    if answered < report.total {
        report.failed += report.total - answered;
    }
    answers.sort_by_key(|a| a.shard);
    report.failures.sort_by_key(|f| f.shard);
    report.behind = scope.lags();
    (answers, report, invalid)
}

async fn read_one<R: ShardRead>(
    ctx: &Arc<NodeContext>,
    map: &ShardMap,
    shard: u32,
    read: R,
    deadline: Instant,
    prefer: Prefer,
    scope: &ReadScope,
) -> Result<ShardAnswer<R::Answer>, (Option<String>, QueryFailure)> {
    let copies =
        copies(ctx, map, shard, prefer).map_err(|e| (None, QueryFailure::Other(e.to_string())))?;
    let request = read.request(vec![shard], false);
    let mut last = (None, QueryFailure::Other("no copy was tried".into()));
    let n = copies.len();
    for (i, node) in copies.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let limit = attempt_timeout(left, i + 1 < n);
        let answer = match ask(ctx, &node, request.clone(), scope, limit)
            .await
            .map(R::results)
        {
            Ok(Ok(mut results)) if results.len() == 1 => Ok(results.remove(0).1),
            Ok(other) => Err(Ok(other)),
            Err(e) => Err(Err(e)),
        };
        match answer {
            Ok(Ok(rows)) => return Ok(ShardAnswer { shard, node, rows }),
            // The read's own fault: the same on every copy.
            Ok(Err(
                f @ (QueryFailure::Invalid(_)
                | QueryFailure::Timeout(_)
                | QueryFailure::TooLarge(_)),
            )) => return Err((Some(node), f)),
            Ok(Err(f)) => last = (Some(node), f),
            Err(Ok(other)) => {
                last = (
                    Some(node),
                    QueryFailure::Other(format!("unexpected answer {other:?}")),
                )
            }
            Err(Err(e)) => {
                // An error answer is the copy's (it may be catching up); no answer is the node's.
                if e.is_no_answer() {
                    suspect(ctx, &node);
                }
                last = (Some(node), QueryFailure::Other(e.to_string()));
            }
        }
    }
    Err(last)
}
