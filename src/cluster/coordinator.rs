//! The shard map's duties. On the coordinator: create the map once `TORUA_BOOTSTRAP_EXPECT`
//! nodes are ready, re-stamp it with the coordinator's term when coordination changes hands, run
//! the planner ([`crate::cluster::plan`]: failures, restarts, replacement, moves, drains — only with
//! a quorum) and push the map to every member (on each change and every second, so a node that
//! missed a push catches up). On every node: bring copies that are not in sync back (from the
//! primary's log, or by a snapshot copy when the log cannot), drop copies the map no longer
//! assigns here, and lift its own shutdown drain once restarted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use membership::ClusterView;

use crate::cluster::messages::{MapRequest, MapResponse};
use crate::cluster::plan::{plan, Members};
use crate::cluster::shard_map::{Drain, ShardMap};
use crate::error::Error;
use crate::node::access::Role;
use crate::node::context::NodeContext;
use crate::replication::messages::{ReplicationRequest, ReplicationResponse};

const PUSH_EVERY: Duration = Duration::from_secs(1);
const PUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// A copy asking to rejoin may first be sent the writes it missed.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// A request to the coordinator about drains.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(ctx: Arc<NodeContext>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut views = ctx.cluster.view_watcher();
    // The term in which this node (as coordinator) last collected the members' maps.
    let mut synced_term = None;
    // Since when each node holding copies has been dead (as this coordinator saw it).
    let mut dead_since: HashMap<String, Instant> = HashMap::new();
    let busy = Arc::new(AtomicBool::new(false));
    loop {
        let view = ctx.cluster.view();
        // Without a map of its own (a first start, or a restart with a wiped disk) the
        // coordinator asks again on every pass until it may create one.
        let no_map = ctx.shard_map.get().is_none();
        if view.is_coordinator() && view.term.is_some() && (synced_term != view.term || no_map) {
            // Until it has heard the maps of a majority, a new coordinator changes nothing: its
            // own map may be older than the one the other side of a healed partition made.
            if adopt_newest_map(&ctx).await {
                synced_term = view.term;
            } else if no_map {
                synced_term = None;
            }
        }
        if !view.is_coordinator() || synced_term == view.term {
            if let Some(map) = step(&ctx, &mut dead_since) {
                push(&ctx, map).await;
            }
        }
        crate::replication::snapshot::expire_idle(&ctx);
        // Catching up and copying can take a while: never in the way of the duties above.
        if !busy.swap(true, Ordering::SeqCst) {
            let (ctx, busy) = (ctx.clone(), busy.clone());
            tokio::spawn(async move {
                lift_own_drain(&ctx).await;
                // The coordinator's own map changes reach it without a push.
                open_assigned(&ctx).await;
                drop_unassigned(&ctx).await;
                // A leaving node has handed its places over: it does not take them back.
                if !ctx.is_leaving() {
                    leave_where_rebuild_needed(&ctx).await;
                    rejoin_where_behind(&ctx).await;
                }
                busy.store(false, Ordering::SeqCst);
            });
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = views.changed() => {}
            _ = tokio::time::sleep(PUSH_EVERY) => {}
        }
    }
}

/// What the planner needs to know of the view; keeps `dead_since` up to date.
fn members(
    ctx: &NodeContext,
    view: &ClusterView,
    map: &ShardMap,
    dead_since: &mut HashMap<String, Instant>,
) -> Members {
    let live: BTreeMap<String, u64> = view
        .live_members()
        .map(|m| (m.node_id.as_str().to_string(), m.generation))
        .collect();
    let ready: BTreeSet<String> = view
        .ready_members()
        .map(|m| m.node_id.as_str().to_string())
        .collect();
    let holders: BTreeSet<String> = map.voting().into_iter().map(str::to_string).collect();
    dead_since.retain(|n, _| holders.contains(n) && !live.contains_key(n));
    let now = Instant::now();
    for n in holders.iter().filter(|n| !live.contains_key(*n)) {
        dead_since.entry(n.clone()).or_insert(now);
    }
    let gone = dead_since
        .iter()
        .filter(|(_, since)| since.elapsed() >= ctx.settings.replace_after)
        .map(|(n, _)| n.clone())
        .collect();
    Members { live, ready, gone }
}

/// One pass; returns the map to push if this node coordinates and has one.
fn step(ctx: &NodeContext, dead_since: &mut HashMap<String, Instant>) -> Option<ShardMap> {
    let _guard = ctx.map_changes.lock().expect("map change lock");
    let view = ctx.cluster.view();
    if !view.is_coordinator() {
        return None;
    }
    let term = view.term?;
    let settings = &ctx.settings;
    let mut map = match ctx.shard_map.get() {
        Some(map) => map,
        None => {
            let ready: Vec<_> = view.ready_members().map(|m| m.node_id.clone()).collect();
            if ready.len() < settings.bootstrap_expect {
                tracing::debug!(
                    ready = ready.len(),
                    expect = settings.bootstrap_expect,
                    "waiting for nodes before creating the shard map"
                );
                return None;
            }
            let generations = view
                .ready_members()
                .map(|m| (m.node_id.as_str().to_string(), m.generation))
                .collect();
            let mut map = ShardMap::create(
                &ready,
                generations,
                settings.shards,
                settings.replicas,
                term,
            );
            if ctx.access.enabled && !ctx.access.has_bootstrap() {
                let (record, key) = crate::node::access::new_key("initial admin", Role::Admin);
                print_initial_key(&record.id, &key);
                map.api_keys.push(record);
            }
            tracing::info!(
                nodes = ready.len(),
                shards = map.shards,
                replicas = map.replicas,
                "created the shard map"
            );
            ctx.shard_map.offer(map.clone());
            return Some(map);
        }
    };
    let members = members(ctx, &view, &map, dead_since);
    // Without a quorum nothing changes, not even the term stamp: a coordinator elected on the
    // minority side of a partition must not produce a map that outranks the majority's.
    if let Err(reason) = ctx.fresh_quorum(&map) {
        tracing::debug!(%reason, "the shard map stays as it is");
        return Some(map);
    }
    let changed = match plan(&mut map, &members, settings.max_concurrent_moves) {
        Ok(changed) => changed || map.term < term,
        Err(blocked) => {
            tracing::debug!(reason = %blocked, "the shard map stays as it is");
            return Some(map);
        }
    };
    if changed {
        map.version += 1;
        map.term = term.max(map.term);
        ctx.shard_map.offer(map.clone());
    }
    Some(map)
}

/// Shows the initial admin key of a cluster formed without a bootstrap key: once, on standard
/// error and not through the logger, so that it reaches the operator's terminal and no log
/// pipeline.
fn print_initial_key(id: &str, key: &str) {
    eprintln!(
        "\n\
         ================================================================================\n\
         torua: the cluster formed with API keys required and no TORUA_BOOTSTRAP_API_KEY.\n\
         An admin key was created; it is shown only this once:\n\
         \n    {key}\n\n\
         Use it to create your own keys (TORUA_API_KEY=<it> torua key create --role admin),\n\
         then revoke it (torua key revoke {id}).\n\
         ================================================================================\n"
    );
    tracing::warn!(
        key_id = id,
        "created the initial admin key and printed it to standard error (only there, only now)"
    );
}

/// A new coordinator first adopts the newest map any member holds (by term, then version): its
/// own copy may be older than what the previous coordinator published.
///
/// Returns whether maps were heard from a majority of the voting membership of the newest map
/// (itself included): any change the cluster made was made with such a majority, so one of them
/// holds it.
async fn adopt_newest_map(ctx: &Arc<NodeContext>) -> bool {
    let view = ctx.cluster.view();
    let mut tasks = tokio::task::JoinSet::new();
    for m in view.live_members() {
        if m.is_self {
            continue;
        }
        let (ctx, id) = (ctx.clone(), m.node_id.as_str().to_string());
        tasks.spawn(async move {
            let answer = crate::peer::call(&ctx, &id, MapRequest::Get, PUSH_TIMEOUT).await;
            (id, answer)
        });
    }
    let mut heard: BTreeSet<String> = BTreeSet::from([ctx.node_id().as_str().to_string()]);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((id, Ok(MapResponse::Map(map)))) => {
                heard.insert(id);
                if let Some(map) = map {
                    ctx.shard_map.offer(map);
                }
            }
            Ok((id, other)) => {
                tracing::debug!(node = %id, answer = ?other, "no shard map from a member")
            }
            Err(_) => {}
        }
    }
    let Some(map) = ctx.shard_map.get() else {
        // No member that answered has a map. Creating the first one is safe only if every live
        // member answered: one that did not may hold the cluster's map (a node restarted with a
        // wiped disk would otherwise coordinate and create a new, empty map over the cluster's
        // data).
        let live = view.live_members().count();
        return heard.len() >= live;
    };
    let voting = map.voting();
    let answered = voting.iter().filter(|n| heard.contains(**n)).count();
    if answered * 2 > voting.len() {
        true
    } else {
        tracing::info!(
            answered,
            voting = voting.len(),
            "waiting to hear the shard maps of a majority before coordinating"
        );
        false
    }
}

/// On every node: a copy whose database refused writes it acknowledged misses them (as does one
/// that anti-entropy or an operator marked for a rebuild), so it must not answer reads or stay
/// primary. It asks the coordinator to take it out of the in-sync set (another in-sync copy
/// becomes primary); [`rejoin_where_behind`] then rebuilds it from a snapshot of the primary. A
/// shard's last in-sync copy stays (it is all there is); health reports it.
async fn leave_where_rebuild_needed(ctx: &Arc<NodeContext>) {
    let Some(map) = ctx.shard_map.get() else {
        return;
    };
    let me = ctx.node_id().as_str();
    for a in &map.assignments {
        if !a.is_in_sync(me) || a.in_sync.len() < 2 {
            continue;
        }
        let Some(store) = ctx.storage.get(a.shard) else {
            continue;
        };
        if !store.needs_rebuild() {
            continue;
        }
        tracing::warn!(
            shard = a.shard,
            refused = store.refused_writes(),
            "this copy refused acknowledged writes, differs from the other copies or was asked to be rebuilt; leaving the in-sync set to be rebuilt from another copy"
        );
        if let Err(e) = crate::replication::write::mark_stale(ctx, a.shard, me).await {
            tracing::warn!(shard = a.shard, error = %e, "cannot leave the in-sync set; retrying");
        }
    }
}

/// On every node: ask the primary to put back the copies this node holds that are not in sync
/// (after a restart, a network blip, or as a new copy); the primary first sends what they miss
/// from its log, or, when the log cannot bring them level, this node rebuilds the copy from a
/// snapshot first. Copies are handled concurrently.
async fn rejoin_where_behind(ctx: &Arc<NodeContext>) {
    let Some(map) = ctx.shard_map.get() else {
        return;
    };
    if ctx.trusted(&map).is_err() {
        return; // the coordinator has not noted this restart yet
    }
    let me = ctx.node_id().as_str().to_string();
    let behind = map
        .assignments
        .iter()
        .filter(|a| a.primary != me && !a.is_in_sync(&me) && a.copies().any(|c| *c == me))
        .map(|a| (a.shard, a.primary.clone()));
    futures_util::future::join_all(behind.map(|(shard, primary)| rejoin(ctx, shard, primary)))
        .await;
}

async fn rejoin(ctx: &Arc<NodeContext>, shard: u32, primary: String) {
    if !crate::peer::is_live(ctx, &primary) {
        return;
    }
    let (seq, last_crc) = {
        let Ok(store) = ctx.storage.open(shard).await else {
            return;
        };
        if store.recovered_from_crash() || store.needs_rebuild() {
            // Its database may be damaged, misses writes it refused, or differs from the other
            // copies: ask for a whole copy (an empty copy gets one).
            (0, None)
        } else {
            match store.last_logged() {
                Some((s, crc)) if s == store.seq() => (s, Some(crc)),
                _ => (store.seq(), None),
            }
        }
    };
    if let Err(Error::NeedsRebuild(why) | Error::Diverged(why)) =
        ask_in_sync(ctx, shard, &primary, seq, last_crc).await
    {
        tracing::info!(shard, reason = %why, "rebuilding this copy from a snapshot of the primary");
        match crate::replication::snapshot::rebuild(ctx, shard, &primary).await {
            Ok(lease) => {
                let _ = ask_in_sync(ctx, shard, &primary, lease.seq, None).await;
                lease.release(ctx, &primary).await;
            }
            Err(e) => tracing::warn!(shard, error = %e, "rebuilding a copy failed; retrying later"),
        }
    }
}

/// Sends `RequestInSync` to the primary and installs the map it brings back.
async fn ask_in_sync(
    ctx: &Arc<NodeContext>,
    shard: u32,
    primary: &str,
    applied_seq: u64,
    last_crc: Option<u32>,
) -> Result<(), Error> {
    let req = ReplicationRequest::RequestInSync {
        shard,
        applied_seq,
        last_crc,
    };
    match crate::peer::call(ctx, primary, req, CATCH_UP_TIMEOUT).await {
        Ok(ReplicationResponse::InSync(map)) => {
            ctx.shard_map.offer(map);
            tracing::info!(shard, "copy is back in sync");
            Ok(())
        }
        Ok(other) => Err(Error::Internal(format!("unexpected answer {other:?}"))),
        Err(e) => {
            tracing::debug!(shard, error = %e, "copy stays out of sync");
            Err(e)
        }
    }
}

/// On every node: deletes the copies on disk that the map does not assign here (replaced while
/// this node was away, or moved elsewhere).
async fn drop_unassigned(ctx: &Arc<NodeContext>) {
    let Some(map) = ctx.shard_map.get() else {
        return;
    };
    let mine = map.held_by(ctx.node_id().as_str());
    for shard in ctx.storage.with_files() {
        if mine.contains(&shard) {
            continue;
        }
        match ctx.storage.remove(shard).await {
            Ok(()) => tracing::info!(
                shard,
                version = map.version,
                "dropped a copy the shard map no longer assigns here"
            ),
            Err(e) => tracing::debug!(shard, error = %e, "cannot drop an unassigned copy yet"),
        }
    }
}

/// On every node: a drain this node asked for before shutting down ends when it runs again.
async fn lift_own_drain(ctx: &Arc<NodeContext>) {
    let me = ctx.node_id().as_str().to_string();
    let Some(map) = ctx.shard_map.get() else {
        return;
    };
    if ctx.is_leaving() || !map.draining.iter().any(|d| d.node == me && d.until_restart) {
        return;
    }
    if let Err(e) = ask_set_draining(ctx, &me, false, true).await {
        tracing::debug!(error = %e, "cannot lift this node's shutdown drain yet");
    }
}

/// Asks the coordinator to start or stop draining `node`; installs the map it answers with.
pub async fn ask_set_draining(
    ctx: &Arc<NodeContext>,
    node: &str,
    draining: bool,
    until_restart: bool,
) -> Result<ShardMap, Error> {
    let req = MapRequest::SetDraining {
        node: node.to_string(),
        draining,
        until_restart,
    };
    offered_map(
        ctx,
        crate::peer::call_coordinator(ctx, req, DRAIN_TIMEOUT).await?,
    )
}

/// The map of the coordinator's answer to a map change, installed here.
pub(crate) fn offered_map(ctx: &NodeContext, answer: MapResponse) -> Result<ShardMap, Error> {
    match answer {
        MapResponse::Map(Some(map)) => {
            ctx.shard_map.offer(map.clone());
            Ok(map)
        }
        other => Err(Error::Internal(format!("unexpected answer {other:?}"))),
    }
}

/// How long an operator's change (a drain, a key) is asked for again while the coordinator
/// changes hands or is busy, and the pause between two tries.
const ASK_FOR: Duration = Duration::from_secs(10);
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(300);

/// Runs `attempt` (asking the coordinator for the change `what`) until it succeeds, again for
/// [`ASK_FOR`] while it fails; an error `is_final` says retrying cannot change comes back at
/// once, one still there after [`ASK_FOR`] as `Unavailable`.
pub(crate) async fn ask_until_accepted<T, Fut>(
    what: &str,
    is_final: impl Fn(&Error) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, Error>
where
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + ASK_FOR;
    loop {
        match attempt().await {
            Ok(answer) => return Ok(answer),
            Err(e) if is_final(&e) => return Err(e),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "{what} not accepted yet; retrying");
                tokio::time::sleep(ASK_AGAIN_AFTER).await;
            }
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "the coordinator did not accept the {what}: {e}; retry"
                )))
            }
        }
    }
}

/// Asks the coordinator for the map change `request` (`what`, for errors), each try within
/// `timeout`, again while it fails as [`ask_until_accepted`] does; installs the map it answers
/// with.
pub(crate) async fn ask_map_change(
    ctx: &Arc<NodeContext>,
    what: &str,
    request: MapRequest,
    timeout: Duration,
    is_final: impl Fn(&Error) -> bool,
) -> Result<ShardMap, Error> {
    let answer = ask_until_accepted(what, is_final, || {
        crate::peer::call_coordinator(ctx, request.clone(), timeout)
    })
    .await?;
    offered_map(ctx, answer)
}

/// A map change asked of the coordinator (drain, in-sync changes): refused unless this node
/// coordinates under a confirmed term and sees a quorum; `change` edits the map and says whether it
/// changed anything, in which case the new version is stamped and installed here.
fn change_map(
    ctx: &NodeContext,
    change: impl FnOnce(&mut ShardMap, &ClusterView) -> Result<bool, Error>,
) -> Result<ShardMap, Error> {
    let _guard = ctx.map_changes.lock().expect("map change lock");
    let view = ctx.cluster.view();
    if !view.is_coordinator() {
        return Err(Error::NotCoordinator {
            coordinator: view.coordinator.as_ref().map(|c| c.as_str().to_string()),
        });
    }
    let term = view.term.ok_or_else(|| {
        Error::Unavailable("the coordinator's term is not confirmed yet; retry".into())
    })?;
    let mut map = ctx
        .shard_map
        .get()
        .ok_or_else(|| Error::Unavailable("no shard map yet; retry".into()))?;
    map.quorum(|n| view.member_by_str(n).is_some_and(|m| m.is_live()))
        .map_err(|b| Error::NoQuorum(b.to_string()))?;
    ctx.fresh_quorum(&map)?;
    if change(&mut map, &view)? {
        map.version += 1;
        map.term = term.max(map.term);
        ctx.shard_map.offer(map.clone());
    }
    Ok(map)
}

/// Coordinator side of `PutKey`.
pub fn put_key(
    ctx: &NodeContext,
    record: crate::node::access::KeyRecord,
) -> Result<ShardMap, Error> {
    change_map(ctx, |map, _| {
        if map.api_keys.iter().any(|k| k.id == record.id) {
            return Err(Error::Invalid(format!(
                "a key with id {} exists; create another",
                record.id
            )));
        }
        if map.api_keys.len() >= crate::node::access::MAX_KEYS {
            return Err(Error::Invalid(format!(
                "the cluster has {} keys, the most it keeps; revoke unused ones first",
                map.api_keys.len()
            )));
        }
        tracing::info!(id = %record.id, name = %record.name, role = record.role.as_str(), "API key created");
        map.api_keys.push(record);
        Ok(true)
    })
}

/// Coordinator side of `RevokeKey`.
pub fn revoke_key(ctx: &NodeContext, id: &str) -> Result<ShardMap, Error> {
    change_map(ctx, |map, _| {
        let before = map.api_keys.len();
        map.api_keys.retain(|k| k.id != id);
        if map.api_keys.len() == before {
            return Err(Error::NotFound(format!("no API key with id {id:?}")));
        }
        tracing::info!(id, "API key revoked");
        Ok(true)
    })
}

/// Coordinator side of `Decide`: records the first decision on `write`; a later one (either
/// way) leaves it as it is.
pub fn decide(ctx: &NodeContext, write: &str, publish: bool) -> Result<ShardMap, Error> {
    if write.is_empty() || write.len() > 512 {
        return Err(Error::Invalid(format!(
            "a write-back id has 1 to 512 bytes, not {}",
            write.len()
        )));
    }
    change_map(ctx, |map, _| {
        if map.decision(write).is_some() {
            return Ok(false);
        }
        tracing::info!(write, publish, "graph algorithm write-back decided");
        map.decisions.push((write.to_string(), publish));
        let over = map
            .decisions
            .len()
            .saturating_sub(crate::cluster::shard_map::MAX_DECISIONS);
        map.decisions.drain(..over);
        Ok(true)
    })
}

/// Coordinator side of `SetDraining`.
pub fn set_draining(
    ctx: &NodeContext,
    node: &str,
    draining: bool,
    until_restart: bool,
) -> Result<ShardMap, Error> {
    change_map(ctx, |map, view| {
        let before = map.draining.clone();
        map.draining.retain(|d| d.node != node);
        if draining {
            if view.member_by_str(node).is_none() && !map.voting().contains(node) {
                return Err(Error::NotFound(format!("no node {node:?} in the cluster")));
            }
            map.draining.push(Drain {
                node: node.to_string(),
                until_restart,
            });
        }
        let changed = map.draining != before;
        if changed {
            tracing::info!(node, draining, "drain changed");
        }
        Ok(changed)
    })
}

/// Coordinator side of `AddInSync` (`add`) and `MarkStale` (not `add`): puts `node` back into
/// `shard`'s in-sync set or removes it, asked by the shard's primary `requester` — or removes it
/// asked by `node` itself, whose copy must be rebuilt (see [`leave_where_rebuild_needed`]).
pub fn change_in_sync(
    ctx: &NodeContext,
    shard: u32,
    node: &str,
    requester: &str,
    add: bool,
) -> Result<ShardMap, Error> {
    change_map(ctx, |map, _| {
        if add || requester != node {
            map.require_primary(shard, requester)?;
        }
        let changed = if add {
            map.add_in_sync(shard, node)?
        } else {
            map.mark_stale(shard, node)?
        };
        if changed {
            let version = map.version + 1;
            if add {
                tracing::info!(shard, node, version, "copy added back to the in-sync set");
            } else {
                tracing::warn!(shard, node, version, "copy removed from the in-sync set");
            }
        }
        Ok(changed)
    })
}

/// Sends the map to every live member in parallel.
pub async fn push(ctx: &Arc<NodeContext>, map: ShardMap) {
    let view = ctx.cluster.view();
    let mut tasks = tokio::task::JoinSet::new();
    for m in view.live_members() {
        if m.is_self {
            continue;
        }
        let id = m.node_id.as_str().to_string();
        let (ctx, map) = (ctx.clone(), map.clone());
        tasks.spawn(async move { send_map(&ctx, &id, map).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// One `InstallMap` call, bounded by `PUSH_TIMEOUT`; a failure is only logged (the next push or
/// the node's own asking brings the map later).
async fn send_map(ctx: &Arc<NodeContext>, node: &str, map: ShardMap) {
    if let Err(e) = crate::peer::call(ctx, node, MapRequest::Install(map), PUSH_TIMEOUT).await {
        tracing::debug!(node, error = %e, "shard map push failed");
    }
}

/// Like [`push`], and also to `node` when gossip calls it dead. A copy dropped from an in-sync
/// set because its node looked dead may belong to a live node (a failure detector flapping under
/// load): that node must learn that its copy is no longer trusted before the write that dropped
/// it is acknowledged, or it would answer reads from its own, older copy under the old map.
pub async fn push_also_to(ctx: &Arc<NodeContext>, map: ShardMap, node: &str) {
    let view = ctx.cluster.view();
    let looks_dead = view
        .member_by_str(node)
        .is_some_and(|m| !m.is_live() && !m.is_self);
    let extra = async {
        if looks_dead {
            send_map(ctx, node, map.clone()).await;
        }
    };
    tokio::join!(push(ctx, map.clone()), extra);
}

/// On every node: after installing a map, open the copies it assigns here.
pub async fn open_assigned(ctx: &Arc<NodeContext>) {
    let Some(map) = ctx.shard_map.get() else {
        return;
    };
    let me = ctx.node_id();
    let mine = map.held_by(me.as_str());
    ctx.storage.set_expected_copies(mine.len());
    for shard in mine {
        // A newer map may have moved the copy away while earlier copies were opening (each open
        // builds the search indexes, a second or more under load): opening it again would only
        // build a database that the next reconcile deletes.
        let still_here = ctx
            .shard_map
            .get()
            .is_some_and(|m| m.held_by(me.as_str()).contains(&shard));
        if !still_here {
            continue;
        }
        if let Err(e) = ctx.storage.open(shard).await {
            tracing::error!(shard, error = %e, "cannot open an assigned shard copy");
        }
    }
}

/// Installs a map pushed by the coordinator if it is newer; returns whether it was.
pub fn install(ctx: &Arc<NodeContext>, map: ShardMap) -> bool {
    let accepted = ctx.shard_map.offer(map);
    if accepted {
        let ctx = ctx.clone();
        tokio::spawn(async move { open_assigned(&ctx).await });
    }
    accepted
}
