//! [`Cluster`]: the handle the rest of torua uses to ask "who is alive, who coordinates".
//!
//! It hides chitchat behind domain verbs (`join`, `mark_ready`, `leave`, `view`, `subscribe`) and
//! runs one background task, the *refresher*, that every half gossip round turns chitchat's state
//! into a [`ClusterView`], claims or resigns the coordinator role for this node, and publishes the
//! differences as [`MembershipChange`] events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use chitchat::transport::Transport;
use chitchat::{spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, Heartbeat};
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use crate::change::{diff, replay, MembershipChange};
use crate::config::MembershipConfig;
use crate::gossip_transport::{GossipCounters, MeteredTransport};
use crate::keys::{self, NodeStateExt};
use crate::member::MemberState;
use crate::view::{build_view, ClusterView, RawNode};
use crate::NodeId;

/// Events kept for slow subscribers before they start missing some (they then get `Lagged`).
const CHANGE_CHANNEL_CAPACITY: usize = 1024;
/// File in `state_dir` holding the highest coordinator term this node has known.
const TERM_FILE: &str = "coordinator_term";

/// Cloneable handle to this node's membership. Dropping every clone does not stop gossip; call
/// [`Cluster::leave`] or [`Cluster::shutdown`].
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: MembershipConfig,
    chitchat_id: ChitchatId,
    /// The chitchat state, shared with chitchat's own server task.
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    /// Taken by `shutdown`; `None` once gossip has stopped.
    handle: tokio::sync::Mutex<Option<ChitchatHandle>>,
    /// Latest view, replaced (never mutated) by the refresher.
    view_tx: watch::Sender<Arc<ClusterView>>,
    changes_tx: broadcast::Sender<MembershipChange>,
    /// Whether the owner asked for `ready`; published once this node has reached the cluster.
    wants_ready: std::sync::atomic::AtomicBool,
    /// Highest term known locally; persisted so terms keep rising across restarts.
    known_term: AtomicU64,
    /// A term learnt outside gossip (see [`Cluster::observe_term`]) and who claimed it.
    observed: StdMutex<Option<(u64, String)>>,
    counters: Arc<GossipCounters>,
    coordinator_changes: AtomicU64,
    /// When each (node, generation) last showed a higher heartbeat, for heartbeat ages.
    heartbeats: StdMutex<HashMap<ChitchatId, (Heartbeat, Instant)>>,
    /// Stops the refresher.
    stop_tx: watch::Sender<bool>,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MembershipMetrics {
    pub gossip_rounds: u64,
    pub gossip_packets_sent: u64,
    pub gossip_packets_received: u64,
    pub gossip_bytes_sent: u64,
    pub gossip_bytes_received: u64,
    pub coordinator_changes: u64,
}

impl Cluster {
    /// Starts gossiping as a `joining` member. `transport` is `UdpTransport` in production and
    /// chitchat's `ChannelTransport` in in-process tests.
    pub async fn join(config: MembershipConfig, transport: impl Transport) -> anyhow::Result<Self> {
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let chitchat_id = ChitchatId::new(
            config.node_id.as_str(),
            generation,
            config.gossip_advertise_addr,
        );
        let known_term = read_term(config.state_dir.as_ref());
        let started_at_ms = generation / 1_000_000;
        let mut initial = vec![
            (keys::STATE.to_string(), "joining".to_string()),
            (keys::VERSION.to_string(), config.version.clone()),
            (keys::STARTED_AT.to_string(), started_at_ms.to_string()),
            (keys::TERM.to_string(), known_term.to_string()),
            (keys::LEADER_TERM.to_string(), String::new()),
        ];
        if let Some(a) = &config.http_addr {
            initial.push((keys::HTTP_ADDR.to_string(), a.clone()));
        }
        if let Some(a) = &config.peer_addr {
            initial.push((keys::PEER_ADDR.to_string(), a.clone()));
        }
        let chitchat_config = ChitchatConfig {
            chitchat_id: chitchat_id.clone(),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.gossip_listen_addr,
            seed_nodes: config.foreign_seeds(),
            failure_detector_config: config.failure_detector(),
            marked_for_deletion_grace_period: config.dead_node_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let counters = Arc::new(GossipCounters::default());
        let metered = MeteredTransport::new(transport, counters.clone());
        let handle = spawn_chitchat(chitchat_config, initial, &metered)
            .await
            .with_context(|| {
                format!(
                    "cannot open the gossip socket on {} (is the port free?)",
                    config.gossip_listen_addr
                )
            })?;
        let chitchat = handle.chitchat();
        let empty = build_view(&config.cluster_id, &config.node_id, Vec::new(), known_term);
        let (view_tx, _) = watch::channel(Arc::new(empty));
        let (changes_tx, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        let (stop_tx, stop_rx) = watch::channel(false);
        let termination = handle.termination_watcher();
        let cluster = Cluster {
            inner: Arc::new(Inner {
                config,
                chitchat_id,
                chitchat,
                handle: tokio::sync::Mutex::new(Some(handle)),
                view_tx,
                changes_tx,
                wants_ready: false.into(),
                known_term: AtomicU64::new(known_term),
                observed: StdMutex::new(None),
                counters,
                coordinator_changes: AtomicU64::new(0),
                heartbeats: StdMutex::new(HashMap::new()),
                stop_tx,
            }),
        };
        cluster.refresh().await;
        tokio::spawn(refresher(Arc::downgrade(&cluster.inner), stop_rx));
        let node = cluster.self_id().clone();
        tokio::spawn(async move {
            // A panic inside chitchat's task would otherwise go unnoticed.
            if let Err(err) = termination.await {
                tracing::error!(%node, error = %err, "gossip task stopped unexpectedly");
            }
        });
        info!(
            node = %cluster.self_id(),
            generation,
            gossip = %cluster.inner.config.gossip_advertise_addr,
            seeds = ?cluster.inner.config.foreign_seeds(),
            "joined gossip"
        );
        Ok(cluster)
    }

    pub fn self_id(&self) -> &NodeId {
        &self.inner.config.node_id
    }

    pub fn generation(&self) -> u64 {
        self.inner.chitchat_id.generation_id
    }

    pub fn config(&self) -> &MembershipConfig {
        &self.inner.config
    }

    /// The latest view (refreshed every half gossip round).
    pub fn view(&self) -> Arc<ClusterView> {
        self.inner.view_tx.borrow().clone()
    }

    /// A watch on the view, for waiting on a condition.
    pub fn view_watcher(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.inner.view_tx.subscribe()
    }

    /// Membership changes: first the current members replayed as `Added` (and the current
    /// coordinator), then every change as it happens.
    pub fn subscribe(&self) -> ChangeStream {
        // Subscribe before reading the view so no change falls between the two.
        let rx = self.inner.changes_tx.subscribe();
        let replayed = replay(&self.view());
        ChangeStream {
            replay: replayed.into_iter().rev().collect(),
            rx,
        }
    }

    /// Asks to be `ready`. The node publishes it as soon as it has reached the cluster: at once when
    /// it has no seeds (it is the first node), otherwise once another member is heard from.
    pub fn mark_ready(&self) {
        self.inner.wants_ready.store(true, Ordering::SeqCst);
    }

    /// Waits until the view satisfies `pred`, or `timeout` passes. Returns the matching view.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&ClusterView) -> bool,
    ) -> Option<Arc<ClusterView>> {
        let mut rx = self.view_watcher();
        let res = tokio::time::timeout(timeout, rx.wait_for(|v| pred(v))).await;
        match res {
            Ok(Ok(v)) => Some(v.clone()),
            _ => None,
        }
    }

    /// Graceful leave: publish `leaving` (peers elect a successor at once), let it spread for
    /// `rounds` gossip rounds, publish `left` (peers drop this node from their views), let that
    /// spread, then stop gossiping.
    pub async fn leave(&self, rounds: u32) {
        let interval = self.inner.config.gossip_interval;
        self.inner.wants_ready.store(false, Ordering::SeqCst);
        self.publish_state("leaving").await;
        info!(node = %self.self_id(), "leaving the cluster");
        tokio::time::sleep(interval * rounds).await;
        self.publish_state("left").await;
        tokio::time::sleep(interval * rounds).await;
        self.shutdown().await;
    }

    /// Records a coordinator term learnt from a peer message rather than gossip (e.g. a reply
    /// from the coordinator over the transport). A claim this node makes later is above it, even
    /// if the claimant died before its term reached this node through gossip.
    pub fn observe_term(&self, term: u64, claimed_by: &str) {
        let before = self.inner.known_term.fetch_max(term, Ordering::SeqCst);
        if term > before {
            *self.inner.observed.lock().expect("observed lock") =
                Some((term, claimed_by.to_string()));
        }
    }

    /// Stops gossip at once (peers will notice through failure detection).
    pub async fn shutdown(&self) {
        let _ = self.inner.stop_tx.send(true);
        if let Some(handle) = self.inner.handle.lock().await.take() {
            if let Err(err) = handle.shutdown().await {
                warn!(error = %err, "gossip did not stop cleanly");
            }
        }
    }

    pub fn metrics(&self) -> MembershipMetrics {
        let c = &self.inner.counters;
        MembershipMetrics {
            gossip_rounds: c.rounds.load(Ordering::Relaxed),
            gossip_packets_sent: c.packets_sent.load(Ordering::Relaxed),
            gossip_packets_received: c.packets_received.load(Ordering::Relaxed),
            gossip_bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            gossip_bytes_received: c.bytes_received.load(Ordering::Relaxed),
            coordinator_changes: self.inner.coordinator_changes.load(Ordering::Relaxed),
        }
    }

    async fn publish_state(&self, state: &str) {
        let mut chitchat = self.inner.chitchat.lock().await;
        chitchat.self_node_state().set(keys::STATE, state);
        drop(chitchat);
        self.refresh().await;
    }

    /// One refresher step: read chitchat, apply this node's election duties, publish the view.
    async fn refresh(&self) {
        let inner = &self.inner;
        let (view, claimed) = {
            let mut chitchat = inner.chitchat.lock().await;
            let view = self.current_view(&chitchat);
            let claimed = self.act(&mut chitchat, &view);
            if claimed.is_some() || self.promote_if_reached(&mut chitchat, &view) {
                (self.current_view(&chitchat), claimed)
            } else {
                (view, claimed)
            }
        };
        if let Some(term) = claimed {
            info!(node = %inner.config.node_id, term, "became coordinator");
            write_term(inner.config.state_dir.as_ref(), term).await;
        }
        let previous = inner.view_tx.borrow().clone();
        let changes = diff(&previous, &view);
        if previous.coordinator != view.coordinator {
            inner.coordinator_changes.fetch_add(1, Ordering::Relaxed);
            info!(
                node = %inner.config.node_id,
                coordinator = ?view.coordinator.as_ref().map(NodeId::as_str),
                "coordinator changed"
            );
        }
        for change in changes {
            debug!(?change, "membership change");
            let _ = inner.changes_tx.send(change);
        }
        inner.view_tx.send_replace(Arc::new(view));
    }

    /// Adopts higher terms, claims the coordinator role when this node is the lowest ready
    /// member, resigns it otherwise. Returns the term it claimed, if it claimed one.
    fn act(&self, chitchat: &mut Chitchat, view: &ClusterView) -> Option<u64> {
        let inner = &self.inner;
        let known = inner
            .known_term
            .fetch_max(view.max_term, Ordering::SeqCst)
            .max(view.max_term);
        let self_id = inner.config.node_id.as_str();
        let me = chitchat.self_node_state();
        if me.get_u64(keys::TERM).unwrap_or(0) < known {
            me.set(keys::TERM, known);
            let observed = inner.observed.lock().expect("observed lock").clone();
            let by = match (&view.max_term_by, observed) {
                (Some(by), _) if view.max_term >= known => Some(by.clone()),
                (_, Some((t, by))) if t == known => Some(by),
                (by, _) => by.clone(),
            };
            if let Some(by) = by {
                me.set(keys::TERM_BY, &by);
            }
        }
        let my_leader_term = me.get_u64(keys::LEADER_TERM);
        let i_am_ready = me.get(keys::STATE) == Some("ready");
        if view.is_coordinator() && i_am_ready {
            // Another node claimed this number too (we claimed it before hearing of theirs):
            // a term must name one coordinator, so claim past it.
            let contested = |t: u64| {
                view.members.iter().any(|m| {
                    !m.is_self
                        && (m.leader_term.is_some_and(|lt| lt >= t)
                            || (m.term >= t && m.term_by.as_deref().is_some_and(|b| b != self_id)))
                })
            };
            if my_leader_term.is_none_or(|t| t < known || contested(t)) {
                let term = known + 1;
                inner.known_term.fetch_max(term, Ordering::SeqCst);
                me.set(keys::LEADER_TERM, term);
                me.set(keys::TERM, term);
                me.set(keys::TERM_BY, self_id);
                return Some(term);
            }
        } else if my_leader_term.is_some() {
            me.set(keys::LEADER_TERM, "");
            info!(node = %inner.config.node_id, "no longer coordinator");
        }
        None
    }

    /// Publishes `ready` once it was asked for and this node has reached the cluster.
    fn promote_if_reached(&self, chitchat: &mut Chitchat, view: &ClusterView) -> bool {
        if !self.inner.wants_ready.load(Ordering::SeqCst) {
            return false;
        }
        let me = chitchat.self_node_state();
        if me.get(keys::STATE) != Some("joining") {
            return false;
        }
        let alone_by_design = self.inner.config.foreign_seeds().is_empty();
        let reached = view.members.iter().any(|m| !m.is_self && m.is_live());
        if alone_by_design || reached {
            me.set(keys::STATE, "ready");
            info!(node = %self.inner.config.node_id, "ready");
            true
        } else {
            false
        }
    }

    /// Node ids whose heartbeat was seen rising within `within` (this node included). Ages count
    /// from when the view was last rebuilt, so a process that stalled sees everyone as silent for
    /// the length of its stall: the answer errs towards "not heard".
    pub fn heard_within(&self, within: Duration) -> std::collections::BTreeSet<String> {
        let now = Instant::now();
        let mut heard: std::collections::BTreeSet<String> = self
            .inner
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, (_, rose))| now.duration_since(*rose) <= within)
            .map(|(id, _)| id.node_id.to_string())
            .collect();
        heard.insert(self.inner.chitchat_id.node_id.to_string());
        heard
    }

    /// The view of what chitchat knows now, with the highest term this node knows of.
    fn current_view(&self, chitchat: &Chitchat) -> ClusterView {
        let inner = &self.inner;
        build_view(
            &inner.config.cluster_id,
            &inner.config.node_id,
            self.raw_nodes(chitchat),
            inner.known_term.load(Ordering::SeqCst),
        )
    }

    fn raw_nodes(&self, chitchat: &Chitchat) -> Vec<RawNode> {
        let live: std::collections::HashSet<&ChitchatId> = chitchat.live_nodes().collect();
        let dead: std::collections::HashSet<&ChitchatId> = chitchat.dead_nodes().collect();
        let now = Instant::now();
        let mut heartbeats = self
            .inner
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        heartbeats.retain(|id, _| chitchat.node_state(id).is_some());
        chitchat
            .node_states()
            .iter()
            .map(|(id, state)| {
                let is_self = id == &self.inner.chitchat_id;
                let beat = state.heartbeat();
                let entry = heartbeats.entry(id.clone()).or_insert((beat, now));
                if entry.0 != beat {
                    *entry = (beat, now);
                }
                RawNode {
                    node_id: id.node_id.to_string(),
                    generation: id.generation_id,
                    gossip_addr: id.gossip_advertise_addr,
                    live: if live.contains(id) {
                        Some(true)
                    } else if dead.contains(id) {
                        Some(false)
                    } else {
                        None
                    },
                    is_self,
                    heartbeat_age: if is_self {
                        Duration::ZERO
                    } else {
                        now.duration_since(entry.1)
                    },
                    state: state.get_string(keys::STATE),
                    http_addr: state.get_string(keys::HTTP_ADDR),
                    peer_addr: state.get_string(keys::PEER_ADDR),
                    version: state.get_string(keys::VERSION),
                    started_at_ms: state.get_u64(keys::STARTED_AT),
                    term: state.get_u64(keys::TERM),
                    leader_term: state.get_u64(keys::LEADER_TERM),
                    term_by: state.get_string(keys::TERM_BY),
                }
            })
            .collect()
    }
}

/// Refreshes the view every half gossip round until stopped or until the cluster is dropped.
async fn refresher(inner: std::sync::Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let period = match inner.upgrade() {
        Some(i) => (i.config.gossip_interval / 2).max(Duration::from_millis(10)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_lonely_warning = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        let cluster = Cluster { inner };
        cluster.refresh().await;
        let view = cluster.view();
        let me = view.member(cluster.self_id()).map(|m| m.state);
        if me == Some(MemberState::Joining)
            && cluster.inner.wants_ready.load(Ordering::SeqCst)
            && last_lonely_warning.elapsed() > Duration::from_secs(5)
        {
            last_lonely_warning = Instant::now();
            warn!(
                seeds = ?cluster.inner.config.foreign_seeds(),
                "no seed has answered yet; still joining. Check TORUA_SEEDS and that the seeds run with the same TORUA_CLUSTER_ID"
            );
        }
    }
}

fn read_term(dir: Option<&PathBuf>) -> u64 {
    let Some(dir) = dir else { return 0 };
    std::fs::read_to_string(dir.join(TERM_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

async fn write_term(dir: Option<&PathBuf>, term: u64) {
    let Some(dir) = dir else { return };
    let tmp = dir.join(format!("{TERM_FILE}.tmp"));
    let res = async {
        tokio::fs::write(&tmp, term.to_string()).await?;
        tokio::fs::rename(&tmp, dir.join(TERM_FILE)).await
    }
    .await;
    if let Err(err) = res {
        warn!(error = %err, dir = %dir.display(), "cannot persist the coordinator term");
    }
}

/// Stream of [`MembershipChange`]s: the replay first, then live changes.
pub struct ChangeStream {
    replay: Vec<MembershipChange>,
    rx: broadcast::Receiver<MembershipChange>,
}

impl ChangeStream {
    /// The next change; `None` once the cluster handle is gone. A subscriber too slow to keep up
    /// skips the changes it missed (they are logged) and continues with the latest ones.
    pub async fn next(&mut self) -> Option<MembershipChange> {
        if let Some(change) = self.replay.pop() {
            return Some(change);
        }
        loop {
            match self.rx.recv().await {
                Ok(change) => return Some(change),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "membership subscriber lagged behind");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
