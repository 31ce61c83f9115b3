//! The coordinator's shard-map duties: create the map once `TORUA_BOOTSTRAP_EXPECT` nodes are
//! ready, re-stamp it with the coordinator's term when coordination changes hands, promote replicas
//! of dead primaries, drop dead copies from in-sync sets, and push the map to every member (on each
//! change and every second, so a node that missed a push catches up).

use std::sync::Arc;
use std::time::Duration;

use crate::context::NodeContext;
use crate::peer::wire::{PeerRequest, PeerResponse};
use crate::shard_map::ShardMap;

const PUSH_EVERY: Duration = Duration::from_secs(1);
const PUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// A copy asking to rejoin may first be sent the writes it missed.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(ctx: Arc<NodeContext>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut views = ctx.cluster.view_watcher();
    // The term in which this node (as coordinator) last collected the members' maps.
    let mut synced_term = None;
    let rejoining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        let view = ctx.cluster.view();
        if view.is_coordinator() && view.term.is_some() && synced_term != view.term {
            adopt_newest_map(&ctx).await;
            synced_term = view.term;
        }
        if let Some(map) = step(&ctx) {
            push(&ctx, map).await;
        }
        // Catching up can take a while: never in the way of the coordinator's duties above.
        if !rejoining.load(std::sync::atomic::Ordering::SeqCst) {
            rejoining.store(true, std::sync::atomic::Ordering::SeqCst);
            let (ctx, rejoining) = (ctx.clone(), rejoining.clone());
            tokio::spawn(async move {
                rejoin_where_behind(&ctx).await;
                rejoining.store(false, std::sync::atomic::Ordering::SeqCst);
            });
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = views.changed() => {}
            _ = tokio::time::sleep(PUSH_EVERY) => {}
        }
    }
}

/// One pass; returns the map to push if this node coordinates and has one.
fn step(ctx: &NodeContext) -> Option<ShardMap> {
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
            let map = ShardMap::create(&ready, settings.shards, settings.replicas, term);
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
    let mut changed = false;
    if map.term < term {
        map.term = term;
        changed = true;
    }
    if map.handle_failures(&view) {
        changed = true;
    }
    if changed {
        map.version += 1;
        map.term = term;
        ctx.shard_map.offer(map.clone());
    }
    Some(map)
}

/// A new coordinator first adopts the newest map any member holds (by term, then version): its
/// own copy may be older than what the previous coordinator published.
async fn adopt_newest_map(ctx: &Arc<NodeContext>) {
    let view = ctx.cluster.view();
    let mut tasks = tokio::task::JoinSet::new();
    for m in view.live_members() {
        if m.is_self {
            continue;
        }
        let Some(addr) = m.peer_addr.clone() else {
            continue;
        };
        let (ctx, id) = (ctx.clone(), m.node_id.as_str().to_string());
        tasks.spawn(async move {
            crate::peer::call(&ctx, &id, &addr, &PeerRequest::GetMap, PUSH_TIMEOUT).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(Ok(PeerResponse::Map(Some(map)))) = done {
            ctx.shard_map.offer(map);
        }
    }
}

/// On every node: ask the primary to put back the copies this node holds that are not in sync
/// (after a restart or a network blip); the primary first sends what they miss from its log.
async fn rejoin_where_behind(ctx: &Arc<NodeContext>) {
    let Some(map) = ctx.shard_map.get() else {
        return;
    };
    let me = ctx.node_id().as_str().to_string();
    let view = ctx.cluster.view();
    for a in &map.assignments {
        if a.primary == me || a.is_in_sync(&me) || !a.copies().any(|c| *c == me) {
            continue;
        }
        let Some(addr) = view
            .member_by_str(&a.primary)
            .filter(|m| m.is_live())
            .and_then(|m| m.peer_addr.clone())
        else {
            continue;
        };
        let Ok(store) = ctx.storage.open(a.shard).await else {
            continue;
        };
        let (seq, last_crc) = match store.last_logged() {
            Some((s, crc)) if s == store.seq() => (s, Some(crc)),
            _ => (store.seq(), None),
        };
        let req = PeerRequest::RequestInSync {
            shard: a.shard,
            applied_seq: seq,
            last_crc,
        };
        match crate::peer::call(ctx, &a.primary, &addr, &req, CATCH_UP_TIMEOUT).await {
            Ok(PeerResponse::Map(Some(map))) => {
                ctx.shard_map.offer(map);
                tracing::info!(shard = a.shard, "copy is back in sync")
            }
            Ok(PeerResponse::Failed(e)) => {
                tracing::debug!(shard = a.shard, error = %e, "copy stays out of sync")
            }
            other => {
                tracing::debug!(shard = a.shard, answer = ?other, "in-sync request not answered")
            }
        }
    }
}

/// Coordinator side of `AddInSync`.
pub fn add_in_sync(
    ctx: &NodeContext,
    shard: u32,
    node: &str,
    requester: &str,
) -> Result<ShardMap, String> {
    let _guard = ctx.map_changes.lock().expect("map change lock");
    let view = ctx.cluster.view();
    if !view.is_coordinator() {
        return Err("not the coordinator".into());
    }
    let term = view
        .term
        .ok_or("the coordinator's term is not confirmed yet")?;
    let mut map = ctx.shard_map.get().ok_or("no shard map")?;
    map.require_primary(shard, requester)?;
    if map.add_in_sync(shard, node)? {
        map.version += 1;
        map.term = term.max(map.term);
        ctx.shard_map.offer(map.clone());
        tracing::info!(
            shard,
            node,
            version = map.version,
            "copy added back to the in-sync set"
        );
    }
    Ok(map)
}

/// Coordinator side of `MarkStale`.
pub fn mark_stale(
    ctx: &NodeContext,
    shard: u32,
    node: &str,
    requester: &str,
) -> Result<ShardMap, String> {
    let _guard = ctx.map_changes.lock().expect("map change lock");
    let view = ctx.cluster.view();
    if !view.is_coordinator() {
        return Err("not the coordinator".into());
    }
    let term = view
        .term
        .ok_or("the coordinator's term is not confirmed yet")?;
    let mut map = ctx.shard_map.get().ok_or("no shard map")?;
    map.require_primary(shard, requester)?;
    if map.mark_stale(shard, node)? {
        map.version += 1;
        map.term = term.max(map.term);
        ctx.shard_map.offer(map.clone());
        tracing::warn!(
            shard,
            node,
            version = map.version,
            "copy removed from the in-sync set"
        );
    }
    Ok(map)
}

/// Sends the map to every live member in parallel.
pub async fn push(ctx: &Arc<NodeContext>, map: ShardMap) {
    let view = ctx.cluster.view();
    let mut tasks = tokio::task::JoinSet::new();
    for m in view.live_members() {
        if m.is_self {
            continue;
        }
        let Some(addr) = m.peer_addr.clone() else {
            continue;
        };
        let id = m.node_id.as_str().to_string();
        let ctx = ctx.clone();
        let req = PeerRequest::InstallMap(map.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::peer::call(&ctx, &id, &addr, &req, PUSH_TIMEOUT).await {
                tracing::debug!(node = %id, error = %e, "shard map push failed");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// On every node: after installing a map, open the copies it assigns here.
pub async fn open_assigned(ctx: &Arc<NodeContext>) {
    let Some(map) = ctx.shard_map.get() else {
        return;
    };
    let mine = map.held_by(ctx.node_id().as_str());
    ctx.storage.set_expected_copies(mine.len());
    for shard in mine {
        if let Err(e) = ctx.storage.open(shard).await {
            tracing::error!(shard, error = %e, "cannot open an assigned shard copy");
        }
    }
}

/// Answer to `InstallMap`.
pub fn install(ctx: &Arc<NodeContext>, map: ShardMap) -> PeerResponse {
    let accepted = ctx.shard_map.offer(map);
    if accepted {
        let ctx = ctx.clone();
        tokio::spawn(async move { open_assigned(&ctx).await });
    }
    PeerResponse::MapInstalled { accepted }
}
