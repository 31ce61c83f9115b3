//! Prometheus metrics: HTTP requests (counted by middleware), membership figures (read from the
//! cluster handle at scrape time) and this node's shard copies' write backlog (given at scrape
//! time by the handler, which reads the copies).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use membership::{Cluster, MemberState};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_latency: HistogramVec,
    members: IntGaugeVec,
    coordinator_changes: IntCounter,
    gossip_rounds: IntCounter,
    gossip_packets_sent: IntCounter,
    gossip_packets_received: IntCounter,
    is_coordinator: IntGauge,
    term: IntGauge,
    gossip_rejected: IntCounter,
    auth_failures: IntCounterVec,
    reads_behind: IntCounter,
    relations_followed: IntCounterVec,
    traversal_rounds: IntCounter,
    copy_pending_writes: IntGaugeVec,
    copy_failed_writes: IntGaugeVec,
    copy_apply_lag: GaugeVec,
    copy_round_lag: GaugeVec,
    algorithm_tasks_running: IntGauge,
    algorithm_tasks_held: IntGauge,
    write_backs_staged: IntGauge,
    write_backs_finished: IntCounterVec,
    placement_lookups: prometheus::Histogram,
    entities_moved: IntCounter,
    gossip_rejected_source: std::sync::Mutex<Option<Arc<std::sync::atomic::AtomicU64>>>,
}

/// Registers the named metrics of `m` with its registry, each once.
macro_rules! register {
    ($m:ident: $($field:ident),+) => {
        $($m.registry.register(Box::new($m.$field.clone())).expect("metric registered once");)+
    };
}

/// One open copy's write backlog, for the `shard_copy_*` gauges.
pub struct CopyBacklog {
    pub shard: u32,
    /// Logged writes not applied yet.
    pub pending: u64,
    /// Logged writes its database refused.
    pub failed: u64,
    /// How long the oldest of them has waited.
    pub apply_lag: std::time::Duration,
    /// How long the oldest write of its last round waited (see `ApplierTiming`).
    pub last_round_lag: std::time::Duration,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new_custom(Some("torua".into()), None).expect("valid prefix");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route and status",
            ),
            &["method", "path", "status"],
        )
        .expect("valid metric");
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
                ],
            ),
            &["path"],
        )
        .expect("valid metric");
        let members = IntGaugeVec::new(
            Opts::new("members", "Cluster members in this node's view, by state"),
            &["state"],
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let m = Metrics {
            coordinator_changes: counter(
                "coordinator_changes_total",
                "Times this node's view named a different coordinator",
            ),
            gossip_rounds: counter("gossip_rounds_total", "Gossip rounds this node started"),
            gossip_packets_sent: counter("gossip_packets_sent_total", "Gossip UDP packets sent"),
            gossip_packets_received: counter(
                "gossip_packets_received_total",
                "Gossip UDP packets received",
            ),
            gossip_rejected: counter(
                "gossip_packets_rejected_total",
                "Gossip datagrams dropped: bad MAC (another cluster secret), stale, or not gossip",
            ),
            gossip_rejected_source: std::sync::Mutex::new(None),
            reads_behind: counter(
                "reads_behind_total",
                "Read requests answered while a shard copy had acknowledged writes not applied yet \
                 (freshness=bounded past TORUA_READ_WAIT; the answer's x-torua-behind header names them)",
            ),
            relations_followed: IntCounterVec::new(
                Opts::new(
                    "traversal_relations_followed_total",
                    "Relations traversals and retrieval expansions started here followed, by whether \
                     the node that expanded one also held its far end's shard (local) or not (remote)",
                ),
                &["where"],
            )
            .expect("valid metric"),
            traversal_rounds: counter(
                "traversal_rounds_total",
                "Network rounds of traversal steps started here (one request per node each)",
            ),
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "http_auth_failures_total",
                    "HTTP requests refused for their API key: missing, invalid (401) or forbidden (403)",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            copy_pending_writes: IntGaugeVec::new(
                Opts::new(
                    "shard_copy_pending_writes",
                    "Acknowledged writes this node's copy of a shard has logged but not applied yet",
                ),
                &["shard"],
            )
            .expect("valid metric"),
            copy_apply_lag: GaugeVec::new(
                Opts::new(
                    "shard_copy_apply_lag_seconds",
                    "How long the oldest write this node's copy of a shard has logged but not \
                     applied has waited (0 when none waits)",
                ),
                &["shard"],
            )
            .expect("valid metric"),
            copy_round_lag: GaugeVec::new(
                Opts::new(
                    "shard_copy_last_round_lag_seconds",
                    "How long the oldest write of the last round this node's copy of a shard \
                     applied had waited, logged to visible; a shard's primary admits writes while \
                     its oldest unapplied one has waited less than TORUA_MAX_APPLY_LAG or 4x the \
                     longest of these on the node",
                ),
                &["shard"],
            )
            .expect("valid metric"),
            copy_failed_writes: IntGaugeVec::new(
                Opts::new(
                    "shard_copy_failed_writes",
                    "Acknowledged writes this node's copy of a shard could not apply to its database \
                     (should stay 0: the items are not readable there; see the node's log)",
                ),
                &["shard"],
            )
            .expect("valid metric"),
            algorithm_tasks_running: IntGauge::new(
                "algorithm_tasks_running",
                "Graph algorithm tasks this node drives that are still running",
            )
            .expect("valid metric"),
            algorithm_tasks_held: IntGauge::new(
                "algorithm_tasks_held",
                "Graph algorithm tasks this node holds parts of the graph for (as a worker)",
            )
            .expect("valid metric"),
            write_backs_staged: IntGauge::new(
                "algorithm_write_backs_staged",
                "Graph algorithm write-backs staged in the copies this node is primary of, not yet \
                 published or discarded (as of the last sweep, every 5 s)",
            )
            .expect("valid metric"),
            write_backs_finished: IntCounterVec::new(
                Opts::new(
                    "algorithm_write_backs_finished_total",
                    "Graph algorithm write-backs in a shard that this node's sweep finished for a \
                     driver that left, by outcome (published, discarded)",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            placement_lookups: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "ingest_placement_lookup_seconds",
                    "Time an ingest request spent asking where its entities and relation ends are \
                     stored (routing keys) before it was written",
                )
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            )
            .expect("valid metric"),
            entities_moved: counter(
                "ingest_entities_moved_total",
                "Entities ingested under another home (routing key) than the one they were stored \
                 under: deleted with their relations, then written under the new key",
            ),
            is_coordinator: IntGauge::new("is_coordinator", "1 if this node is the coordinator")
                .expect("valid metric"),
            term: IntGauge::new(
                "coordinator_term",
                "Confirmed term of the current coordinator",
            )
            .expect("valid metric"),
            registry,
            http_requests,
            http_latency,
            members,
        };
        register!(
            m: http_requests, http_latency, members, coordinator_changes, gossip_rounds,
            gossip_packets_sent, gossip_packets_received, is_coordinator, term, gossip_rejected,
            auth_failures, reads_behind, relations_followed, traversal_rounds, copy_pending_writes,
            copy_failed_writes, copy_apply_lag, copy_round_lag, algorithm_tasks_running,
            algorithm_tasks_held, write_backs_staged, write_backs_finished, placement_lookups,
            entities_moved
        );
        Arc::new(m)
    }

    /// Prometheus text exposition of everything, membership figures read now.
    pub fn render(&self, cluster: &Cluster) -> String {
        let view = cluster.view();
        for state in [
            MemberState::Joining,
            MemberState::Ready,
            MemberState::Leaving,
            MemberState::Dead,
        ] {
            self.members
                .with_label_values(&[state.as_str()])
                .set(view.count_in(state) as i64);
        }
        let snap = cluster.metrics();
        catch_up(&self.coordinator_changes, snap.coordinator_changes);
        catch_up(&self.gossip_rounds, snap.gossip_rounds);
        catch_up(&self.gossip_packets_sent, snap.gossip_packets_sent);
        catch_up(&self.gossip_packets_received, snap.gossip_packets_received);
        if let Some(src) = self
            .gossip_rejected_source
            .lock()
            .expect("metrics lock")
            .as_ref()
        {
            catch_up(
                &self.gossip_rejected,
                src.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        self.is_coordinator.set(view.is_coordinator() as i64);
        self.term.set(view.term.unwrap_or(0) as i64);
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Metrics {
    /// Sets the graph algorithm tasks this node drives (running) and works on (held).
    pub fn set_algorithm_tasks(&self, running: usize, held: usize) {
        self.algorithm_tasks_running.set(running as i64);
        self.algorithm_tasks_held.set(held as i64);
    }

    /// Sets the write-backs staged in the copies this node is primary of.
    pub fn set_write_backs_staged(&self, staged: usize) {
        self.write_backs_staged.set(staged as i64);
    }

    /// Counts a shard's write-back finished by the sweep (`published` or not).
    pub fn write_back_finished(&self, published: bool) {
        let outcome = if published { "published" } else { "discarded" };
        self.write_backs_finished
            .with_label_values(&[outcome])
            .inc();
    }

    /// Sets the write backlog of this node's open copies; copies not listed (closed or moved
    /// away) disappear from the exposition.
    pub fn set_copies(&self, copies: &[CopyBacklog]) {
        self.copy_pending_writes.reset();
        self.copy_failed_writes.reset();
        self.copy_apply_lag.reset();
        self.copy_round_lag.reset();
        for c in copies {
            let shard = [c.shard.to_string()];
            self.copy_pending_writes
                .with_label_values(&shard)
                .set(c.pending as i64);
            self.copy_failed_writes
                .with_label_values(&shard)
                .set(c.failed as i64);
            self.copy_apply_lag
                .with_label_values(&shard)
                .set(c.apply_lag.as_secs_f64());
            self.copy_round_lag
                .with_label_values(&shard)
                .set(c.last_round_lag.as_secs_f64());
        }
    }

    /// Counts a request refused for its API key (`reason`: missing, invalid, forbidden).
    pub fn auth_failed(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// Counts a read answered with some copy behind.
    pub fn read_behind(&self) {
        self.reads_behind.inc();
    }

    /// Counts relations a traversal followed (see `query::traverse::Followed`).
    pub fn followed(&self, local: u64, remote: u64) {
        self.relations_followed
            .with_label_values(&["local"])
            .inc_by(local);
        self.relations_followed
            .with_label_values(&["remote"])
            .inc_by(remote);
    }

    /// Records one ingest's placement lookup and the entities it moved.
    pub fn placement_lookup(&self, took: std::time::Duration, moved: usize) {
        self.placement_lookups.observe(took.as_secs_f64());
        self.entities_moved.inc_by(moved as u64);
    }

    /// Counts one network round of a traversal.
    pub fn traversal_round(&self) {
        self.traversal_rounds.inc();
    }

    /// Reports the gossip transport's rejected-datagram counter at scrape time.
    pub fn watch_gossip_rejected(&self, counter: Arc<std::sync::atomic::AtomicU64>) {
        *self.gossip_rejected_source.lock().expect("metrics lock") = Some(counter);
    }
}

/// Counters owned by the membership crate are monotonic; bring ours up to their value.
fn catch_up(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

/// Axum middleware counting requests by matched route (not raw path: unbounded label values
/// would grow memory with every distinct URL).
pub async fn track_http(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let response = next.run(req).await;
    metrics
        .http_requests
        .with_label_values(&[&method, &path, response.status().as_str()])
        .inc();
    metrics
        .http_latency
        .with_label_values(&[&path])
        .observe(started.elapsed().as_secs_f64());
    response
}
