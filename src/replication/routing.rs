//! Routing keys at ingest: where the entities a batch names are stored now. A relation is stored
//! in the homes of both its ends, so before a batch is split its relations learn the routing
//! keys of their ends: from the batch's own entities, else from where each end is stored (its
//! id's shard answers: it owns the entity, or holds its pointer), else from the relation's own
//! `source_routing`/`target_routing`. An entity that is stored under another home than its new
//! routing key gives moves to it: it is deleted (with its relations) before the batch is written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::Error;
use crate::graph::model::Batch;
use crate::graph::partition::{home_shard, shard_of};
use crate::node::context::NodeContext;
use crate::query::read::route_placements;

/// The routing key of each stored entity among `ids` and `all` (`None`: placed by its id),
/// asked of the shard of each id, in parallel. Ids stored nowhere are left out, and so may be
/// ids of `ids` stored without a key (a shard that never held a key answers without reading).
pub async fn stored_keys(
    ctx: &Arc<NodeContext>,
    ids: Vec<String>,
    all: Vec<String>,
    shards: u32,
) -> Result<HashMap<String, Option<String>>, Error> {
    let mut by_shard: BTreeMap<u32, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for id in ids {
        by_shard
            .entry(shard_of(&id, shards))
            .or_default()
            .0
            .push(id);
    }
    for id in all {
        by_shard
            .entry(shard_of(&id, shards))
            .or_default()
            .1
            .push(id);
    }
    let mut asks = tokio::task::JoinSet::new();
    for (shard, (ids, all)) in by_shard {
        let ctx = ctx.clone();
        asks.spawn(async move { (shard, route_placements(&ctx, shard, ids, all).await) });
    }
    let mut keys = HashMap::new();
    while let Some(joined) = asks.join_next().await {
        let (shard, found) = joined.map_err(|e| Error::Internal(e.to_string()))?;
        let found = found.map_err(|e| {
            e.context(format!(
                "cannot look up where entities stored in shard {shard} live"
            ))
        })?;
        for p in found {
            match (p.stub, p.routing) {
                // Owned here (by id, or by a key of this shard).
                (false, key) => {
                    keys.insert(p.id, key);
                }
                // A pointer: the entity lives in its key's shard.
                (true, Some(key)) if shard_of(&key, shards) != shard => {
                    keys.insert(p.id, Some(key));
                }
                // A stub: a relation's far end, or an entity that has not arrived.
                (true, _) => {}
            }
        }
    }
    Ok(keys)
}

/// Fills in the routing keys of `batch`'s relation ends; returns the ids of the batch's entities
/// that are stored under another home (to delete before the batch is written).
pub async fn resolve(
    ctx: &Arc<NodeContext>,
    batch: &mut Batch,
    shards: u32,
) -> Result<Vec<String>, Error> {
    if batch.entities.is_empty() && batch.relations.is_empty() {
        return Ok(Vec::new());
    }
    let in_batch: HashMap<&str, Option<&str>> = (batch.entities.iter())
        .map(|e| (e.id.as_str(), e.routing.as_deref()))
        .collect();
    // An entity whose new key places it outside its id's shard moves if that shard stores it
    // without a key: that must be known (`all`). Of the other ids only keys matter.
    let (mut all, mut ids): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for (id, key) in &in_batch {
        if home_shard(id, *key, shards) != shard_of(id, shards) {
            all.push(id.to_string());
        } else {
            ids.push(id.to_string());
        }
    }
    for r in &batch.relations {
        for end in [&r.source, &r.target] {
            if !in_batch.contains_key(end.as_str()) {
                ids.push(end.clone());
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    all.sort_unstable();
    let stored = stored_keys(ctx, ids, all, shards).await?;
    let key_of = |end: &str, given: &Option<String>| -> Option<String> {
        match in_batch.get(end) {
            Some(key) => key.map(str::to_string),
            None => match stored.get(end) {
                Some(key) => key.clone(),
                None => given.clone(),
            },
        }
    };
    let resolved: Vec<(Option<String>, Option<String>)> = (batch.relations.iter())
        .map(|r| {
            (
                key_of(&r.source, &r.source_routing),
                key_of(&r.target, &r.target_routing),
            )
        })
        .collect();
    let moved = (batch.entities.iter())
        .filter(|e| {
            stored.get(&e.id).is_some_and(|old| {
                home_shard(&e.id, old.as_deref(), shards)
                    != home_shard(&e.id, e.routing.as_deref(), shards)
            })
        })
        .map(|e| e.id.clone())
        .collect();
    for (r, (source, target)) in batch.relations.iter_mut().zip(resolved) {
        r.source_routing = source;
        r.target_routing = target;
    }
    Ok(moved)
}
