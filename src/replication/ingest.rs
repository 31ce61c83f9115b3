//! Writes that span shards: a batch split by shard and routed to each shard's primary in
//! parallel ([`ingest`]; documents stored before with other text units first lose the old ones,
//! see [`super::document`]), and an entity's delete with the relation copies its neighbours'
//! shards hold ([`delete_entity`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::document::{replace_text_units, Replaced};
use super::{route_write, WRITE_DEADLINE};
use crate::error::Error;
use crate::graph::model::{Batch, ItemError, Kind};
use crate::graph::partition::{home_shard, shard_of, split, Split};
use crate::node::context::NodeContext;
use crate::query::read::find_entity;
use crate::storage::{ReadScope, WriteOp};

/// What an ingest left undone.
pub struct IngestOutcome {
    /// The items of every shard whose write was not acknowledged, by kind and id, with why.
    pub failed: Vec<ItemError>,
    /// Whether a shard refused for lack of room to apply (the client should slow down).
    pub busy: bool,
    /// What the old text units of re-ingested documents took with them.
    pub replaced: Replaced,
}

/// Writes a valid batch: each shard's part goes to its primary in parallel, retried until
/// [`WRITE_DEADLINE`]. Parts are independent: one shard failing leaves the others written.
///
/// Routed entities: relation ends learn their keys, and an entity stored under another home is
/// deleted (with its relations) before it is written under its new key — a reader meanwhile
/// finds it in neither place, never in both (see [`super::routing`]).
///
/// First, documents stored before lose the text units their new version drops (with what only
/// those supported). A document whose old text units could not be removed is not written (it is
/// listed as failed, and a retry of the batch removes them then).
pub async fn ingest(ctx: &Arc<NodeContext>, mut batch: Batch, shards: u32) -> IngestOutcome {
    let (replaced, not_replaced) = replace_text_units(ctx, &batch, shards).await;
    let mut failed: Vec<ItemError> = Vec::new();
    let mut busy = false;
    if !not_replaced.is_empty() {
        let why: HashMap<&str, &Error> = not_replaced
            .iter()
            .map(|(id, e)| (id.as_str(), e))
            .collect();
        for (index, d) in batch.documents.iter().enumerate() {
            if let Some(e) = why.get(d.id.as_str()) {
                busy |= matches!(e, Error::Busy(_));
                failed.push(ItemError {
                    kind: Kind::Document,
                    index,
                    id: d.id.clone(),
                    reason: format!("not written: {e}"),
                });
            }
        }
        batch.documents.retain(|d| !why.contains_key(d.id.as_str()));
    }
    let mut fail = |kind: Kind, id: &str, reason: &str| {
        failed.push(ItemError {
            kind,
            index: 0,
            id: id.to_string(),
            reason: reason.to_string(),
        })
    };
    // Where the batch's entities are stored now: relation ends learn their routing keys, and
    // entities stored under another home are deleted first (moved).
    let looked_up = Instant::now();
    let moved = match super::routing::resolve(ctx, &mut batch, shards).await {
        Ok(moved) => {
            ctx.metrics
                .placement_lookup(looked_up.elapsed(), moved.len());
            moved
        }
        Err(e) => {
            busy |= matches!(e, Error::Busy(_));
            let reason = format!("not written: {e}");
            for (kind, id) in items(&batch) {
                fail(kind, id, &reason);
            }
            batch = Batch::default();
            Vec::new()
        }
    };
    for id in moved {
        if let Err(e) = delete_entity(ctx, &id, shards).await {
            // Written under its new key, it would live twice: it and its relations wait.
            busy |= matches!(e, Error::Busy(_));
            let reason = format!(
                "not moved to its new routing key: deleting it where it is stored failed: {e}"
            );
            fail(Kind::Entity, &id, &reason);
            batch.entities.retain(|e| e.id != id);
            batch.relations.retain(|r| {
                let touches = r.source == id || r.target == id;
                if touches {
                    fail(Kind::Relation, &r.id, &reason);
                }
                !touches
            });
        }
    }
    let deadline = Instant::now() + WRITE_DEADLINE;
    let mut tasks = tokio::task::JoinSet::new();
    let Split { parts, pointers } = split(batch, shards);
    let parts = parts
        .into_iter()
        .map(|(s, part)| (s, WriteOp::Upsert(part)));
    let pointers = pointers.into_iter().map(|(s, p)| (s, WriteOp::Point(p)));
    for (shard, op) in parts.chain(pointers) {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let result = route_write(&ctx, shard, &op, deadline).await;
            (shard, op, result)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let Ok((shard, op, Err(reason))) = done else {
            continue;
        };
        busy |= matches!(reason, Error::Busy(_));
        let reason = format!("shard {shard}: {reason}");
        match &op {
            WriteOp::Upsert(part) => {
                for (kind, id) in items(part) {
                    fail(kind, id, &reason);
                }
            }
            // Without its pointer the entity cannot be found by id: not written.
            WriteOp::Point(pointers) => {
                for (id, _) in pointers {
                    fail(Kind::Entity, id, &reason);
                }
            }
            _ => {}
        }
    }
    failed.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    failed.dedup_by(|a, b| a.kind == b.kind && a.id == b.id);
    IngestOutcome {
        failed,
        busy,
        replaced,
    }
}

/// The kind and id of every item of `batch`.
fn items(batch: &Batch) -> impl Iterator<Item = (Kind, &str)> {
    (batch.entities.iter().map(|e| (Kind::Entity, e.id.as_str())))
        .chain(
            batch
                .relations
                .iter()
                .map(|r| (Kind::Relation, r.id.as_str())),
        )
        .chain(batch.chunks.iter().map(|c| (Kind::Chunk, c.id.as_str())))
        .chain(
            batch
                .communities
                .iter()
                .map(|c| (Kind::Community, c.id.as_str())),
        )
        .chain(
            batch
                .documents
                .iter()
                .map(|d| (Kind::Document, d.id.as_str())),
        )
}

/// Deletes entity `id` with its relations; returns how many relations it had. The relation
/// copies held in the neighbours' shards go first (and the entity's pointer, for an entity
/// placed by a routing key), then the entity itself, so a failure half-way leaves the entity
/// readable and the delete can be retried.
pub async fn delete_entity(ctx: &Arc<NodeContext>, id: &str, shards: u32) -> Result<usize, Error> {
    let (shard, record) = find_entity(ctx, id, shards, &ReadScope::strict())
        .await?
        .ok_or_else(|| Error::NotFound(format!("no entity with id {id:?}")))?;
    let deadline = Instant::now() + WRITE_DEADLINE;
    let far_ends = record.relations.iter().flat_map(|r| {
        [
            home_shard(&r.source, r.source_routing.as_deref(), shards),
            home_shard(&r.target, r.target_routing.as_deref(), shards),
        ]
    });
    let mut others: Vec<u32> = far_ends
        .chain([shard_of(id, shards)])
        .filter(|s| *s != shard)
        .collect();
    others.sort_unstable();
    others.dedup();
    let id = id.to_string();
    for s in others {
        route_write(ctx, s, &WriteOp::DeleteRelationsOf(id.clone()), deadline)
            .await
            .map_err(|e| e.context(format!("shard {s}")))?;
    }
    route_write(ctx, shard, &WriteOp::DeleteEntity(id), deadline)
        .await
        .map_err(|e| e.context(format!("shard {shard}")))?;
    Ok(record.relations.len())
}
