//! Every shard copy in the cluster as the shard map and the copies' own nodes describe it (state,
//! counts, size, sequence numbers and, on request, checksums): what `GET /cluster/shards` shows.
//! Asks every live node for its copies' statistics in parallel, each within a time limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use membership::ClusterView;
use serde::Serialize;

use super::messages::{CopyChecksum, HealthRequest, HealthResponse};
use super::shard_map::{Drain, Move, ShardMap};
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::storage::ShardStats;

/// Per node: how long its copy statistics may take, and its checksums (they read every copy whole).
const STATS_TIMEOUT: Duration = Duration::from_secs(10);
const CHECKSUM_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster's copies under one shard map.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Copies {
    pub cluster_id: String,
    pub version: u64,
    pub term: u64,
    pub shards: u32,
    pub replicas: u32,
    /// Writes logged but not yet applied, over every copy; `None` when a live copy did not say.
    #[schema(required = true)]
    pub pending_writes: Option<u64>,
    pub moves: Vec<Move>,
    pub draining: Vec<Drain>,
    pub copies: Vec<Copy>,
}

/// One copy of one shard on one node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Copy {
    pub shard: u32,
    pub node: String,
    pub primary: bool,
    /// `started`, `initializing`, `relocating` or `unavailable`.
    #[schema(pattern = "^(started|initializing|relocating|unavailable)$")]
    pub state: &'static str,
    #[schema(required = true)]
    pub checksum: Option<Checksum>,
    #[schema(required = true)]
    pub checksum_seq: Option<u64>,
    pub in_sync: bool,
    #[schema(required = true)]
    pub entities: Option<u64>,
    #[schema(required = true)]
    pub relations: Option<u64>,
    #[schema(required = true)]
    pub chunks: Option<u64>,
    #[schema(required = true)]
    pub communities: Option<u64>,
    #[schema(required = true)]
    pub documents: Option<u64>,
    #[schema(required = true)]
    pub size_bytes: Option<u64>,
    #[schema(required = true)]
    pub seq: Option<u64>,
    #[schema(required = true)]
    pub applied_seq: Option<u64>,
    #[schema(required = true)]
    pub pending_writes: Option<u64>,
    #[schema(required = true)]
    pub failed_writes: Option<u64>,
}

/// A copy's checksum, or why its node did not give it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Checksum {
    Sum(String),
    Failed { error: String },
}

/// Every copy `map` assigns, with what its node reports (and its checksum when `checksums`).
pub async fn copies(ctx: &Arc<NodeContext>, map: &ShardMap, checksums: bool) -> Copies {
    let view = ctx.cluster.view();
    // Checksums first: they wait until each copy applied what it logged, so the counts gathered
    // next describe the same content.
    let sums = if checksums {
        gather_checksums(ctx, &view).await
    } else {
        BTreeMap::new()
    };
    let mut stats: BTreeMap<String, BTreeMap<u32, ShardStats>> = BTreeMap::new();
    for (id, answer) in ask_live_nodes(ctx, &view, HealthRequest::ShardStats, STATS_TIMEOUT).await {
        if let Ok(HealthResponse::Stats(list)) = answer {
            stats.insert(id, list.into_iter().collect());
        }
    }
    let mut copies = Vec::new();
    let mut pending: Option<u64> = Some(0);
    for a in &map.assignments {
        for node in a.copies() {
            let live = view.member_by_str(node).is_some_and(|m| m.is_live());
            let s = stats.get(node).and_then(|m| m.get(&a.shard));
            let moving_from = map
                .moves
                .iter()
                .any(|m| m.shard == a.shard && m.from == *node);
            let state = if !live {
                "unavailable"
            } else if !a.is_in_sync(node) || s.is_none() {
                "initializing"
            } else if moving_from || map.is_draining(node) {
                "relocating"
            } else {
                "started"
            };
            // A node that did not answer: its error stands for each of its copies' checksums.
            let sum = sums.get(node).and_then(|m| match m {
                Ok(m) => m.get(&a.shard).cloned(),
                Err(e) => Some(Err(e.clone())),
            });
            copies.push(Copy {
                shard: a.shard,
                node: node.clone(),
                primary: *node == a.primary,
                state,
                checksum: sum.as_ref().map(|r| match r {
                    Ok((_, c)) => Checksum::Sum(c.clone()),
                    Err(e) => Checksum::Failed {
                        error: e.to_string(),
                    },
                }),
                checksum_seq: sum.and_then(|r| r.ok().map(|(seq, _)| seq)),
                in_sync: a.is_in_sync(node),
                entities: s.map(|s| s.counts.entities),
                relations: s.map(|s| s.counts.relations),
                chunks: s.map(|s| s.counts.chunks),
                communities: s.map(|s| s.counts.communities),
                documents: s.map(|s| s.counts.documents),
                size_bytes: s.map(|s| s.size_bytes),
                seq: s.map(|s| s.logged_seq),
                applied_seq: s.map(|s| s.applied_seq),
                pending_writes: s.map(|s| s.pending_writes),
                failed_writes: s.map(|s| s.failed_writes),
            });
            // Unknown when a live copy did not report.
            // (A node that answered without this copy has not opened it: nothing is pending.)
            pending = match (pending, s) {
                (Some(p), Some(s)) => Some(p + s.pending_writes),
                (p, None) if !live || stats.contains_key(node.as_str()) => p,
                _ => None,
            };
        }
    }
    Copies {
        cluster_id: map.cluster_id.clone(),
        version: map.version,
        term: map.term,
        shards: map.shards,
        replicas: map.replicas,
        pending_writes: pending,
        moves: map.moves.clone(),
        draining: map.draining.clone(),
        copies,
    }
}

/// Every live node's copy checksums by shard, or why the node did not give them.
async fn gather_checksums(
    ctx: &Arc<NodeContext>,
    view: &ClusterView,
) -> BTreeMap<String, Result<BTreeMap<u32, CopyChecksum>, Error>> {
    let mut out = BTreeMap::new();
    let asked = ask_live_nodes(ctx, view, HealthRequest::ShardChecksums, CHECKSUM_TIMEOUT).await;
    for (id, answer) in asked {
        let sums = match answer {
            Ok(HealthResponse::Checksums(list)) => Ok(list.into_iter().collect()),
            Ok(other) => Err(Error::Internal(format!("unexpected answer {other:?}"))),
            Err(e) if e.is_no_answer() => Err(e.context("no answer; ask again")),
            Err(e) => Err(e),
        };
        out.insert(id, sums);
    }
    out
}

/// Sends `request` to every live member in parallel (each within `timeout`); each one's answer
/// or error, by node id.
async fn ask_live_nodes(
    ctx: &Arc<NodeContext>,
    view: &ClusterView,
    request: HealthRequest,
    timeout: Duration,
) -> Vec<(String, Result<HealthResponse, Error>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for m in view.live_members().filter(|m| m.peer_addr.is_some()) {
        let (id, ctx, request) = (m.node_id.as_str().to_string(), ctx.clone(), request.clone());
        tasks.spawn(async move {
            let r = crate::peer::call(&ctx, &id, request, timeout).await;
            (id, r)
        });
    }
    let mut out = Vec::new();
    while let Some(Ok((id, r))) = tasks.join_next().await {
        out.push((id, r));
    }
    out
}
