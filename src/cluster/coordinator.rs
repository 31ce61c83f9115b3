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
use crate::cluster::shard_map::{Drain, MapHolder, Promise, ShardMap};
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
    // The members (and their generations) that promised `synced_term`.
    let mut promised: HashMap<String, u64> = HashMap::new();
    let busy = Arc::new(AtomicBool::new(false));
    loop {
        let view = ctx.cluster.view();
        // Without a map of its own (a first start, or a restart with a wiped disk) the
        // coordinator asks again on every pass until it may create one.
        let no_map = ctx.shard_map.get().is_none();
        if view.is_coordinator() && view.term.is_some() && (synced_term != view.term || no_map) {
            // Until it has heard the maps of a majority, a new coordinator changes nothing: its
            // own map may be older than the one the other side of a healed partition made.
            promised.clear();
            if let Some(heard) = adopt_newest_map(&ctx, view.term.unwrap_or_default()).await {
                synced_term = view.term;
                promised = generations(&view, &heard);
            } else if no_map {
                synced_term = None;
            }
        }
        if view.is_coordinator() && synced_term == view.term {
            if let Some(term) = view.term {
                collect_newcomers(&ctx, &view, term, &mut promised).await;
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

/// The current generations of the live members among `nodes`.
fn generations(view: &ClusterView, nodes: &BTreeSet<String>) -> HashMap<String, u64> {
    view.live_members()
        .filter(|m| nodes.contains(m.node_id.as_str()))
        .map(|m| (m.node_id.as_str().to_string(), m.generation))
        .collect()
}

/// Collects, under the coordinator's `term`, the live members that have not promised it in their
/// current process: those that did not answer the first collection, and restarted ones (a node
/// that restarted without its data directory forgot its promises and does not count towards a
/// majority until it promises again).
async fn collect_newcomers(
    ctx: &Arc<NodeContext>,
    view: &ClusterView,
    term: u64,
    promised: &mut HashMap<String, u64>,
) {
    let me = ctx.node_id().as_str().to_string();
    let generation = ctx.cluster.generation();
    let mine = ctx.shard_map.promised();
    if !mine.is_to(term, &me, generation) {
        // This node promised a later coordinator since it collected (one that may have died
        // before its claim reached gossip): its own changes would no longer count.
        outbid(ctx, &mine, term);
        return;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for m in view.live_members().filter(|m| !m.is_self) {
        let id = m.node_id.as_str().to_string();
        if promised.get(&id) == Some(&m.generation) {
            continue;
        }
        let (ctx, theirs) = (ctx.clone(), m.generation);
        tasks.spawn(async move {
            let req = MapRequest::Collect { term, generation };
            let answer = crate::peer::call(&ctx, &id, req, PUSH_TIMEOUT).await;
            (id, theirs, answer)
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok((id, theirs, Ok(MapResponse::Collected { promised: p, .. }))) = done {
            // A member that forgot its maps counts again once it holds one of ours (pushed every
            // second); the promise is what this collection is for.
            if p.is_to(term, &me, generation) {
                promised.insert(id, theirs);
            } else if p.term >= term {
                // It promised a later coordinator, or another under this term: claim past it.
                outbid(ctx, &p, term);
            }
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
    if map.term > term {
        // A coordinator of a later term made this map: this node's term is over.
        return None;
    }
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
        stamp(&ctx.shard_map, &mut map, term);
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
/// own copy may be older than what the previous coordinator published. Each member that answers
/// promises `term` (installs no map of a lower term from then on; see
/// [`crate::cluster::shard_map::MapHolder`]).
///
/// Returns whether maps were heard, under that promise, from a majority of the voting membership
/// of the newest map (itself included): any change the cluster completed was held by such a
/// majority, so one of them holds it, and a change the previous coordinator had not completed can
/// no longer complete.
async fn adopt_newest_map(ctx: &Arc<NodeContext>, term: u64) -> Option<BTreeSet<String>> {
    let me = ctx.node_id().as_str().to_string();
    let generation = ctx.cluster.generation();
    let mine = ctx.shard_map.promise(term, &me, generation);
    if !mine.is_to(term, &me, generation) {
        // Another coordinator collected here under this term or a later one: claim past it.
        outbid(ctx, &mine, term);
        return None;
    }
    let view = ctx.cluster.view();
    let mut tasks = tokio::task::JoinSet::new();
    for m in view.live_members() {
        if m.is_self {
            continue;
        }
        let (ctx, id) = (ctx.clone(), m.node_id.as_str().to_string());
        tasks.spawn(async move {
            let req = MapRequest::Collect { term, generation };
            let answer = crate::peer::call(&ctx, &id, req, PUSH_TIMEOUT).await;
            (id, answer)
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((
                id,
                Ok(MapResponse::Collected {
                    map,
                    promised,
                    forgot,
                }),
            )) => answers.push(Answer {
                node: id,
                map,
                promised,
                forgot,
            }),
            Ok((id, other)) => {
                tracing::debug!(node = %id, answer = ?other, "no shard map from a member")
            }
            Err(_) => {}
        }
    }
    for a in &answers {
        if a.promised.term > term
            || (a.promised.term == term && !a.promised.is_to(term, &me, generation))
        {
            outbid(ctx, &a.promised, term);
        }
    }
    conclude_collect(
        &ctx.shard_map,
        (&me, generation),
        term,
        answers,
        view.live_members().count(),
    )
}

/// A member promised `promised` (a later term, or this `term` to another node, which may have died
/// before its claim reached gossip): this node's next claim goes past it, or its collections would
/// be refused forever.
fn outbid(ctx: &NodeContext, promised: &Promise, term: u64) {
    let past = if promised.term > term {
        promised.term
    } else {
        term + 1
    };
    ctx.cluster.observe_term(past, &promised.to);
}

/// A member's answer to a collection.
pub(crate) struct Answer {
    pub node: String,
    pub map: Option<ShardMap>,
    pub promised: Promise,
    /// It started without a map and has not held one of its coordinator's since.
    pub forgot: bool,
}

/// The end of a collection under `term` by coordinator `me`, whose map holder is `holder`:
/// adopts the newest map among the `answers`, and returns the members that promised `term` to
/// `me` (itself included) if they are a majority of the newest map's voting members (not counting
/// members that forgot what they held) or all of them, or all `live` members when nobody has a
/// map yet (the first map is created only then: a member that did not answer may hold the
/// cluster's map).
/// Records the collection in `holder` when it succeeded.
pub(crate) fn conclude_collect(
    holder: &MapHolder,
    (me, generation): (&str, u64),
    term: u64,
    answers: Vec<Answer>,
    live: usize,
) -> Option<BTreeSet<String>> {
    let mut answered: BTreeSet<String> = BTreeSet::from([me.to_string()]);
    let mut heard = BTreeSet::new();
    if !holder.forgot() {
        heard.insert(me.to_string());
    }
    for a in answers {
        if let Some(map) = a.map {
            holder.offer(map);
        }
        if a.promised.is_to(term, me, generation) {
            answered.insert(a.node.clone());
            if !a.forgot {
                heard.insert(a.node);
            }
        } else {
            tracing::info!(node = %a.node, promised = a.promised.term, to = %a.promised.to, term, "a member promised another coordinator");
        }
    }
    let complete = match holder.get() {
        None => answered.len() >= live,
        Some(map) => {
            let voting = map.voting();
            // Every voting member answering also does: with fewer than a majority of them
            // wiped, each majority that committed a change still has a member that remembers
            // it among the answers (and without this, members that all forgot at once — a
            // cluster's first maps while its nodes still claim terms against each other —
            // could never be collected, nor learn a map to remember).
            let complete =
                majority_of(&voting, &heard) || voting.iter().all(|n| answered.contains(*n));
            if !complete {
                tracing::info!(
                    answered = voting.iter().filter(|n| heard.contains(**n)).count(),
                    voting = voting.len(),
                    "waiting to hear the shard maps of a majority before coordinating"
                );
            }
            complete
        }
    };
    if !complete {
        return None;
    }
    holder.set_collected(term);
    Some(answered)
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
    let mut map = changeable_map(&ctx.shard_map, term)?;
    map.quorum(|n| view.member_by_str(n).is_some_and(|m| m.is_live()))
        .map_err(|b| Error::NoQuorum(b.to_string()))?;
    ctx.fresh_quorum(&map)?;
    if change(&mut map, &view)? {
        stamp(&ctx.shard_map, &mut map, term);
    }
    Ok(map)
}

/// The map a coordinator of `term` may change: its own, once it collected a majority's maps under
/// `term` (before, its own copy may be older than the cluster's, and a change to it could undo
/// changes the previous coordinator made).
pub(crate) fn changeable_map(holder: &MapHolder, term: u64) -> Result<ShardMap, Error> {
    if holder.collected() != term {
        return Err(Error::Unavailable(
            "the coordinator is still collecting the members' shard maps; retry".into(),
        ));
    }
    let map = holder
        .get()
        .ok_or_else(|| Error::Unavailable("no shard map yet; retry".into()))?;
    if map.term > term {
        // A coordinator of a later term changed the map since: this node's term is over.
        return Err(Error::Unavailable(format!(
            "this node coordinated under term {term}, and a coordinator of term {} has taken over; retry",
            map.term
        )));
    }
    Ok(map)
}

/// Gives a changed `map` (of `term` or an earlier one) the next version under `term` and installs
/// it in `holder`.
pub(crate) fn stamp(holder: &MapHolder, map: &mut ShardMap, term: u64) {
    debug_assert!(
        map.term <= term,
        "a coordinator stamps only maps of its term or older"
    );
    map.version += 1;
    map.term = term;
    holder.offer(map.clone());
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

/// Sends the map to every live member in parallel; returns the members that hold it (or a later
/// map of its term) afterwards.
pub async fn push(ctx: &Arc<NodeContext>, map: ShardMap) -> BTreeSet<String> {
    push_to(ctx, map, None).await
}

/// [`push`], and also to `extra` when gossip calls it dead.
async fn push_to(ctx: &Arc<NodeContext>, map: ShardMap, extra: Option<&str>) -> BTreeSet<String> {
    let view = ctx.cluster.view();
    let mut targets: BTreeSet<String> = view
        .live_members()
        .filter(|m| !m.is_self)
        .map(|m| m.node_id.as_str().to_string())
        .collect();
    if let Some(node) = extra {
        if view.member_by_str(node).is_some_and(|m| !m.is_self) {
            targets.insert(node.to_string());
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for id in targets {
        let (ctx, map) = (ctx.clone(), map.clone());
        tasks.spawn(async move {
            let holds = send_map(&ctx, &id, map).await;
            (id, holds)
        });
    }
    let mut holders = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok((id, true)) = done {
            holders.insert(id);
        }
    }
    holders
}

/// One `InstallMap` call, bounded by `PUSH_TIMEOUT`; returns whether the node holds the map (or a
/// later one of its term) afterwards. A failure is only logged (the next push or the node's own
/// asking brings the map later).
async fn send_map(ctx: &Arc<NodeContext>, node: &str, map: ShardMap) -> bool {
    match crate::peer::call(ctx, node, MapRequest::Install(map), PUSH_TIMEOUT).await {
        Ok(MapResponse::Installed { accepted }) => accepted,
        Ok(other) => {
            tracing::debug!(node, answer = ?other, "unexpected answer to a shard map push");
            false
        }
        Err(e) => {
            tracing::debug!(node, error = %e, "shard map push failed");
            false
        }
    }
}

/// Whether coordinator `me` (whose map holder is `holder`) made `map` a committed change: the
/// members in `holders` answered its push holding it, and with this node (if its own promise still
/// lets it count) they are a majority of the map's voting members.
pub(crate) fn committed(
    holder: &MapHolder,
    me: &str,
    map: &ShardMap,
    mut holders: BTreeSet<String>,
) -> bool {
    if holder.accept(map.clone(), me).1 {
        holders.insert(me.to_string());
    }
    majority_of(&map.voting(), &holders)
}

/// Whether `nodes` hold a strict majority of `voting`.
pub fn majority_of(voting: &BTreeSet<&str>, nodes: &BTreeSet<String>) -> bool {
    let count = voting.iter().filter(|n| nodes.contains(**n)).count();
    voting.is_empty() || count * 2 > voting.len()
}

/// Completes a map change: pushes `map` to every live member (and to `extra` when gossip calls it
/// dead: a copy dropped from an in-sync set because its node looked dead may belong to a live
/// node, which must learn that its copy is no longer trusted) and succeeds once a majority of the
/// map's voting members hold it. Only then may what the change allows be done (a write
/// acknowledged without the copy it dropped): a later coordinator collects the maps of a
/// majority, so it starts from this one or a later one.
pub async fn commit(
    ctx: &Arc<NodeContext>,
    map: ShardMap,
    extra: Option<&str>,
) -> Result<(), Error> {
    let holders = push_to(ctx, map.clone(), extra).await;
    if committed(
        &ctx.shard_map,
        ctx.node_id().as_str(),
        &map,
        holders.clone(),
    ) {
        return Ok(());
    }
    let voting = map.voting();
    let holding = voting.iter().filter(|n| holders.contains(**n)).count();
    Err(Error::NoQuorum(format!(
        "the shard map change (version {}, term {}) reached {holding} of the {} nodes holding \
         copies, not a majority (a coordinator of a later term may have taken over, or nodes are \
         unreachable); nothing was acknowledged on it, retry",
        map.version,
        map.term,
        voting.len()
    )))
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

/// Installs a map pushed by the coordinator if it is newer and not of a term older than this
/// node promised; returns whether this node holds it (or a later map of its term) afterwards.
pub fn install(ctx: &Arc<NodeContext>, map: ShardMap, from: &str) -> bool {
    let (installed, holds) = ctx.shard_map.accept(map, from);
    if installed {
        let ctx = ctx.clone();
        tokio::spawn(async move { open_assigned(&ctx).await });
    }
    holds
}
