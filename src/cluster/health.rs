//! Cluster health: green / yellow / red and why, in one answer shape whoever computes it.
//!
//! Every node can compute a *local* verdict from its gossip view. The coordinator computes the
//! *aggregated* one: its view plus what nodes registered and reported (stale reports, nodes not
//! registered yet, full disks). `/cluster/health` prefers the coordinator's. Later issues add
//! shard states to the same verdict.

use std::time::Duration;

use membership::{ClusterView, Member, MemberState};
use serde::{Deserialize, Serialize};

use crate::cluster::messages::{HealthReport, RegistryEntry};
use crate::cluster::shard_map::ShardMap;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Green,
    Yellow,
    Red,
}

/// The `/cluster/health` answer (also sent over the peer transport, hence no skipped fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "The cluster's health, like Elasticsearch's: a status, why, and each node.")]
pub struct ClusterHealth {
    pub cluster_id: String,
    pub status: Status,
    pub reasons: Vec<String>,
    #[schema(required = true)]
    pub coordinator: Option<String>,
    #[schema(required = true)]
    pub term: Option<u64>,
    /// Live members (not dead) in the answering node's view.
    pub number_of_nodes: usize,
    pub number_of_ready_nodes: usize,
    /// Members registered with the coordinator (`None` in a local answer).
    #[schema(required = true)]
    pub number_of_registered_nodes: Option<usize>,
    /// The node whose view this is.
    pub answered_by: String,
    /// `coordinator` (aggregated by the coordinator) or `local` (this node's gossip view only).
    pub source: String,
    /// Shard copies (like Elasticsearch's counts); `None` before the shard map exists.
    #[schema(required = true)]
    pub shards: Option<ShardCounts>,
    /// Why a `local` answer was given: what went wrong asking the coordinator.
    #[schema(required = true)]
    pub coordinator_error: Option<String>,
    pub nodes: Vec<NodeHealth>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShardCounts {
    pub total_shards: u32,
    /// Shards whose primary is on a live node.
    pub active_primary_shards: u32,
    /// Copies on live nodes that are in sync.
    pub active_shards: u32,
    /// Copies that are assigned but not in sync, or on a dead node.
    pub unavailable_shards: u32,
    /// Copies the replica count asks for that have no node.
    pub unassigned_shards: u32,
    /// Live copies being filled (new copies, rebuilt or catching-up copies, move targets).
    pub initializing_shards: u32,
    /// Copies being moved to another node (drains, rebalancing).
    pub relocating_shards: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeHealth {
    pub id: String,
    pub state: String,
    pub is_coordinator: bool,
    pub generation: u64,
    pub gossip_addr: String,
    #[schema(required = true)]
    pub http_addr: Option<String>,
    #[schema(required = true)]
    pub peer_addr: Option<String>,
    #[schema(required = true)]
    pub version: Option<String>,
    #[schema(required = true)]
    pub started_at_ms: Option<u64>,
    pub last_heartbeat_ms_ago: u64,
    /// Whether the coordinator has this node in its registry (`None` in a local answer).
    #[schema(required = true)]
    pub registered: Option<bool>,
    /// The node's last health report (coordinator answers only).
    #[schema(required = true)]
    pub report: Option<HealthReport>,
}

/// Free disk below this share of the total makes the cluster yellow.
const DISK_LOW_FRACTION: f64 = 0.05;

/// The verdict from this node's gossip view alone:
/// - red: no coordinator (no ready member in view);
/// - yellow: the coordinator's term has not reached this node yet, or a member is dead,
///   joining or leaving;
/// - green: otherwise.
pub fn local(view: &ClusterView) -> ClusterHealth {
    let (status, reasons) = view_verdict(view);
    let nodes = view.members.iter().map(|m| node(m, view, None)).collect();
    shape(view, status, reasons, nodes, None, "local")
}

/// The coordinator's verdict: the local one plus registration and reports. `stale_after` is how
/// old a report may be before the node counts as not reporting.
pub fn aggregated(
    view: &ClusterView,
    registry: &[RegistryEntry],
    stale_after: Duration,
) -> ClusterHealth {
    let (mut status, mut reasons) = view_verdict(view);
    let mut nodes = Vec::with_capacity(view.members.len());
    let mut registered = 0;
    for m in &view.members {
        let entry = registry.iter().find(|e| {
            e.registration.node_id == m.node_id.as_str()
                && e.registration.generation == m.generation
        });
        if m.is_live() {
            match entry {
                Some(e) => {
                    registered += 1;
                    reasons.extend(report_problems(m, e, stale_after));
                }
                None if m.state == MemberState::Ready => {
                    reasons.push(format!(
                        "{} is not registered with the coordinator yet",
                        m.node_id
                    ));
                }
                None => {}
            }
        }
        nodes.push(node(m, view, Some(entry)));
    }
    if status == Status::Green && !reasons.is_empty() {
        status = Status::Yellow;
    }
    shape(
        view,
        status,
        reasons,
        nodes,
        Some(registered),
        "coordinator",
    )
}

/// What a node's registration and last report say is wrong: a missing or stale report, a disk
/// nearly full, shard copies in trouble.
fn report_problems(m: &Member, e: &RegistryEntry, stale_after: Duration) -> Vec<String> {
    let age = e.last_report_ms_ago.map(Duration::from_millis);
    match (&e.last_report, age) {
        (Some(r), Some(age)) if age <= stale_after => {
            let low = r.disk_total_mb > 0
                && (r.disk_free_mb as f64) < DISK_LOW_FRACTION * r.disk_total_mb as f64;
            let disk = low.then(|| {
                format!(
                    "{}: disk nearly full ({} MB free of {} MB)",
                    m.node_id, r.disk_free_mb, r.disk_total_mb
                )
            });
            let copies = r.shards.iter().map(|p| format!("{}: {p}", m.node_id));
            disk.into_iter().chain(copies).collect()
        }
        (_, Some(age)) => vec![format!(
            "{}: no health report for {} ms",
            m.node_id,
            age.as_millis()
        )],
        _ => {
            let since = now_ms().saturating_sub(e.registered_at_ms);
            (since > stale_after.as_millis() as u64)
                .then(|| format!("{}: registered but no health report yet", m.node_id))
                .into_iter()
                .collect()
        }
    }
}

fn view_verdict(view: &ClusterView) -> (Status, Vec<String>) {
    let mut reasons = Vec::new();
    if view.coordinator.is_none() {
        reasons.push("no ready member: no coordinator can be elected".to_string());
        return (Status::Red, reasons);
    }
    if view.term.is_none() {
        reasons.push("the coordinator's term has not reached this node yet".to_string());
    }
    for state in [
        MemberState::Dead,
        MemberState::Joining,
        MemberState::Leaving,
    ] {
        let ids: Vec<&str> = view
            .members
            .iter()
            .filter(|m| m.state == state)
            .map(|m| m.node_id.as_str())
            .collect();
        if !ids.is_empty() {
            reasons.push(format!(
                "{} {}: {}",
                ids.len(),
                state.as_str(),
                ids.join(", ")
            ));
        }
    }
    let status = if reasons.is_empty() {
        Status::Green
    } else {
        Status::Yellow
    };
    (status, reasons)
}

fn shape(
    view: &ClusterView,
    status: Status,
    reasons: Vec<String>,
    nodes: Vec<NodeHealth>,
    registered: Option<usize>,
    source: &str,
) -> ClusterHealth {
    ClusterHealth {
        cluster_id: view.cluster_id.clone(),
        status,
        reasons,
        coordinator: view.coordinator.as_ref().map(|c| c.as_str().to_string()),
        term: view.term,
        number_of_nodes: view.live_members().count(),
        number_of_ready_nodes: view.ready_members().count(),
        number_of_registered_nodes: registered,
        answered_by: view.self_id.as_str().to_string(),
        source: source.to_string(),
        coordinator_error: None,
        shards: None,
        nodes,
    }
}

fn node(m: &Member, view: &ClusterView, entry: Option<Option<&RegistryEntry>>) -> NodeHealth {
    NodeHealth {
        id: m.node_id.as_str().to_string(),
        state: m.state.as_str().to_string(),
        is_coordinator: view.coordinator.as_ref() == Some(&m.node_id),
        generation: m.generation,
        gossip_addr: m.gossip_addr.to_string(),
        http_addr: m.http_addr.clone(),
        peer_addr: m.peer_addr.clone(),
        version: m.version.clone(),
        started_at_ms: m.started_at_ms,
        last_heartbeat_ms_ago: m.heartbeat_age.as_millis() as u64,
        registered: entry.map(|e| e.is_some()),
        report: entry.flatten().and_then(|e| e.last_report.clone()),
    }
}

/// Adds the shard verdict, as Elasticsearch does: red when a shard has no live in-sync copy,
/// yellow when some copy is missing or behind, green when every copy is assigned and in sync.
pub fn with_shards(
    mut h: ClusterHealth,
    view: &ClusterView,
    map: Option<&ShardMap>,
) -> ClusterHealth {
    let Some(map) = map else {
        if h.status == Status::Green {
            h.status = Status::Yellow;
        }
        h.reasons
            .push("no shard map yet (waiting for TORUA_BOOTSTRAP_EXPECT ready nodes)".into());
        return h;
    };
    let live = |id: &str| {
        view.members
            .iter()
            .any(|m| m.node_id.as_str() == id && m.is_live())
    };
    // A dead node whose copies were all re-created elsewhere no longer matters to the data: it
    // stays listed in `nodes` (as dead) but does not keep the cluster yellow.
    let voting = map.voting();
    let dead_prefix = format!("{}: ", MemberState::Dead.as_str());
    let before = h.reasons.len();
    h.reasons.retain(|r| match r.split_once(' ') {
        Some((_, rest)) if rest.starts_with(&dead_prefix) => rest[dead_prefix.len()..]
            .split(", ")
            .any(|id| voting.contains(id)),
        _ => true,
    });
    if h.reasons.len() < before && h.reasons.is_empty() && h.status == Status::Yellow {
        h.status = Status::Green;
    }
    let mut c = ShardCounts {
        total_shards: map.shards,
        ..ShardCounts::default()
    };
    let mut red = Vec::new();
    for a in &map.assignments {
        if live(&a.primary) && a.is_in_sync(&a.primary) {
            c.active_primary_shards += 1;
        }
        let mut any = false;
        for copy in a.copies() {
            if live(copy) && a.is_in_sync(copy) {
                c.active_shards += 1;
                any = true;
            } else {
                c.unavailable_shards += 1;
                if live(copy) {
                    c.initializing_shards += 1;
                }
            }
        }
        let want = map.replicas as usize;
        c.unassigned_shards += want.saturating_sub(a.copies().count()) as u32;
        if !any {
            red.push(a.shard.to_string());
        }
    }
    c.relocating_shards = map.moves.len() as u32;
    if !red.is_empty() {
        h.status = Status::Red;
        h.reasons.push(format!(
            "{} shard(s) with no live in-sync copy: {}",
            red.len(),
            red.join(", ")
        ));
    } else if c.unavailable_shards > 0 || c.unassigned_shards > 0 {
        if h.status == Status::Green {
            h.status = Status::Yellow;
        }
        h.reasons.push(format!(
            "{} shard copies unavailable or not in sync, {} unassigned",
            c.unavailable_shards, c.unassigned_shards
        ));
    } else if c.relocating_shards > 0 {
        if h.status == Status::Green {
            h.status = Status::Yellow;
        }
        h.reasons
            .push(format!("{} shard copies being moved", c.relocating_shards));
    }
    h.shards = Some(c);
    h
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A coordinator that did not answer: who (id, generation), when, and why.
pub(super) struct CoordinatorFailure {
    pub(super) at: std::time::Instant,
    pub(super) who: (String, Option<u64>),
    pub(super) error: String,
}

/// The health answer a node shares between requests (see `health_cache`).
#[derive(Default)]
pub struct HealthCache {
    /// The coordinator's last answer and when it came; one request in flight at a time.
    pub(super) answer: tokio::sync::Mutex<Option<(std::time::Instant, ClusterHealth)>>,
    pub(super) failure: std::sync::Mutex<Option<CoordinatorFailure>>,
}
