//! The cluster health a node answers with: the coordinator's aggregated verdict, shared by
//! concurrent requests for a moment, or this node's own view when the coordinator does not
//! answer. Holds the state that makes `/cluster/health` cheap to poll hard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use membership::ClusterView;

use super::health::{self, ClusterHealth, CoordinatorFailure, HealthCache, Status};
use super::messages::{HealthRequest, HealthResponse};
use crate::node::context::NodeContext;

/// How long a non-coordinator reuses the coordinator's answer. Concurrent requests share one peer
/// request instead of each asking the coordinator.
const COORDINATOR_ANSWER_TTL: Duration = Duration::from_millis(50);

/// After the coordinator failed to answer, answer locally at once for this long instead of
/// waiting `TORUA_COORDINATOR_TIMEOUT` on every request (a dead coordinator stays in the view until
/// failure detection, ~1 s).
const COORDINATOR_RETRY_AFTER: Duration = Duration::from_millis(500);

/// Poll interval of [`HealthCache::wait_for`].
const POLL: Duration = Duration::from_millis(100);

impl HealthCache {
    /// The coordinator's aggregated health (`source: "coordinator"`), or this node's own view
    /// (`source: "local"`) when the coordinator does not answer within `TORUA_COORDINATOR_TIMEOUT`.
    pub async fn best(&self, ctx: &Arc<NodeContext>) -> ClusterHealth {
        let view = ctx.cluster.view();
        if view.is_coordinator() {
            return self.fetch(ctx, &view).await;
        }
        // The others wait for the request in flight and reuse its answer.
        let mut cached = self.answer.lock().await;
        if let Some((at, h)) = cached.as_ref() {
            if at.elapsed() < COORDINATOR_ANSWER_TTL
                && h.coordinator.as_deref() == view.coordinator.as_ref().map(|c| c.as_str())
            {
                return h.clone();
            }
        }
        let h = self.fetch(ctx, &view).await;
        if h.source == "coordinator" {
            *cached = Some((Instant::now(), h.clone()));
        }
        h
    }

    /// Like Elasticsearch's `wait_for_status`: the health once its status is at least as good as
    /// `wanted`, or when `timeout` passes; the flag says whether it passed.
    pub async fn wait_for(
        &self,
        ctx: &Arc<NodeContext>,
        wanted: Status,
        timeout: Duration,
    ) -> (ClusterHealth, bool) {
        let started = tokio::time::Instant::now();
        loop {
            let health = self.best(ctx).await;
            if health.status <= wanted {
                return (health, false);
            }
            if started.elapsed() >= timeout {
                return (health, true);
            }
            // Wake on a membership change or poll (reports change the coordinator's verdict too).
            let mut views = ctx.cluster.view_watcher();
            let _ = tokio::time::timeout(POLL, views.changed()).await;
        }
    }

    async fn fetch(&self, ctx: &Arc<NodeContext>, view: &ClusterView) -> ClusterHealth {
        let coordinator = view
            .coordinator
            .as_ref()
            .map(|c| (c.as_str().to_string(), view.member(c).map(|m| m.generation)));
        if let Some(f) = self.failure.lock().expect("failure lock").as_ref() {
            if f.at.elapsed() < COORDINATOR_RETRY_AFTER && Some(&f.who) == coordinator.as_ref() {
                let note = format!(
                    "{} (less than {} ms ago; not asked again yet)",
                    f.error,
                    COORDINATOR_RETRY_AFTER.as_millis()
                );
                return local_with_note(ctx, view, note);
            }
        }
        let asked = crate::peer::call_coordinator(
            ctx,
            HealthRequest::ClusterHealth,
            ctx.settings.coordinator_timeout,
        )
        .await;
        let error = match asked {
            Ok(HealthResponse::ClusterHealth(h)) => {
                if let (Some(term), Some(by)) = (h.term, &h.coordinator) {
                    ctx.cluster.observe_term(term, by);
                }
                return *h;
            }
            Ok(other) => format!("coordinator answered {other:?}"),
            Err(e) => e.to_string(),
        };
        if let Some(who) = coordinator {
            *self.failure.lock().expect("failure lock") = Some(CoordinatorFailure {
                at: Instant::now(),
                who,
                error: error.clone(),
            });
        }
        local_with_note(ctx, view, error)
    }
}

fn local_with_note(ctx: &NodeContext, view: &ClusterView, note: String) -> ClusterHealth {
    let mut h = health::with_shards(health::local(view), view, ctx.shard_map.get().as_ref());
    h.coordinator_error = Some(note);
    h
}
