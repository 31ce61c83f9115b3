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
use crate::graph::partition::{shard_of, split};
use crate::node::context::NodeContext;
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
    let deadline = Instant::now() + WRITE_DEADLINE;
    let mut tasks = tokio::task::JoinSet::new();
    for (shard, part) in split(batch, shards) {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let op = WriteOp::Upsert(part);
            let result = route_write(&ctx, shard, &op, deadline).await;
            let WriteOp::Upsert(part) = op else {
                unreachable!()
            };
            (shard, part, result)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let Ok((shard, part, Err(reason))) = done else {
            continue;
        };
        busy |= matches!(reason, Error::Busy(_));
        let reason = format!("shard {shard}: {reason}");
        let ids = (part.entities.iter().map(|e| (Kind::Entity, &e.id)))
            .chain(part.relations.iter().map(|r| (Kind::Relation, &r.id)))
            .chain(part.chunks.iter().map(|c| (Kind::Chunk, &c.id)))
            .chain(part.communities.iter().map(|c| (Kind::Community, &c.id)))
            .chain(part.documents.iter().map(|d| (Kind::Document, &d.id)));
        for (kind, id) in ids {
            failed.push(ItemError {
                kind,
                index: 0,
                id: id.clone(),
                reason: reason.clone(),
            });
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

/// Deletes entity `id` with its relations; returns how many relations it had. The relation
/// copies held in the neighbours' shards go first, then the entity itself, so a failure
/// half-way leaves the entity readable and the delete can be retried.
pub async fn delete_entity(ctx: &Arc<NodeContext>, id: &str, shards: u32) -> Result<usize, Error> {
    let shard = shard_of(id, shards);
    let record = crate::query::read::route_get_entity(ctx, shard, id, &ReadScope::strict())
        .await?
        .ok_or_else(|| Error::NotFound(format!("no entity with id {id:?}")))?;
    let deadline = Instant::now() + WRITE_DEADLINE;
    let mut others: Vec<u32> = record
        .relations
        .iter()
        .flat_map(|r| [&r.source, &r.target])
        .map(|n| shard_of(n, shards))
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
