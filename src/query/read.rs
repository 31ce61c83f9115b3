//! Reads of one node's shard copies asked by other nodes ([`ReadRequest`]: point reads of an
//! entity, a chunk or a document, one traversal step, a user's Cypher on some shards, retrieval's
//! and the document cascade's typed reads on some shards), their handler, and point reads routed
//! from any node to an in-sync copy ([`find_entity`], [`route_get_chunk`],
//! [`route_get_document`], [`route_placements`]).
//!
//! Only a copy that its own map calls in sync answers (a copy that just fell out may miss
//! acknowledged writes); the asker then tries another copy. Every read travels with its
//! [`Freshness`] ([`ReadCall`]), and the answer names the copies that answered behind
//! ([`ReadReply`]); [`ask`] sends one and notes those lags in the asker's [`ReadScope`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::graph::model::{Chunk, Document};
use crate::graph::partition::shard_of;
use crate::node::context::NodeContext;
use crate::node::wire::Serve;
use crate::query::traverse::{Ahead, Traversed};
use crate::storage::{
    CascadeRead, CascadeRows, Direction, EntityRecord, Freshness, Lag, Placement, QueryFailure,
    ReadScope, RelationFilter, RetrievalRead, RetrievalRows, Rows, ShardQuery,
};

/// Per copy; above the storage's wait for pending writes to be applied (`kuzu_shard::READ_WAIT`).
const READ_TIMEOUT: Duration = Duration::from_secs(12);

/// A read of this node's copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReadRequest {
    /// An entity and its relations from this node's copy of `shard`.
    GetEntity { shard: u32, id: String },
    /// A chunk (text unit) from this node's copy of `shard`.
    GetChunk { shard: u32, id: String },
    /// One traversal step on several of this node's shard copies: for each `(shard, ids)`, the
    /// entities' properties and (when `relations`) their relations; then what `ahead` lets this
    /// node read on by itself over the copies it holds.
    Traverse {
        parts: Vec<(u32, Vec<String>)>,
        direction: Direction,
        filter: RelationFilter,
        relations: bool,
        ahead: Ahead,
    },
    /// A read-only Cypher query (already checked) on this node's copies of `shards`
    /// (`names_cypher` on the first only).
    QueryShards { shards: Vec<u32>, query: ShardQuery },
    /// A retrieval read on this node's copies of `shards`, each cut off after `timeout_ms`.
    Retrieval {
        shards: Vec<u32>,
        read: RetrievalRead,
        timeout_ms: u64,
    },
    /// A document from this node's copy of `shard`.
    GetDocument { shard: u32, id: String },
    /// How this node's copy of `shard` holds each of `ids` and `all` (owned, stub or pointer,
    /// with its routing key), counting acknowledged writes not yet applied; of `ids` only those
    /// stored with a key are sure to be listed (see `KuzuShard::placements`).
    Placements {
        shard: u32,
        ids: Vec<String>,
        all: Vec<String>,
    },
    /// One of the document cascade's reads on this node's copies of `shards`, each cut off
    /// after `timeout_ms`.
    Cascade {
        shards: Vec<u32>,
        read: CascadeRead,
        timeout_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReadResponse {
    Entity(Option<EntityRecord>),
    /// A `GetEntity` of an entity that lives in another shard: its routing key.
    Pointer(String),
    Placements(Vec<Placement>),
    Chunk(Option<Chunk>),
    /// Per part of a `Traverse`, in the order asked, and what the node read ahead.
    Traversed(Traversed),
    /// Per shard of a `QueryShards`, in the order asked.
    QueryRows(Vec<(u32, Result<Rows, QueryFailure>)>),
    /// Per shard of a `Retrieval`, in the order asked.
    Retrieved(Vec<(u32, Result<RetrievalRows, QueryFailure>)>),
    Document(Option<Document>),
    /// Per shard of a `Cascade`, in the order asked.
    Cascaded(Vec<(u32, Result<CascadeRows, QueryFailure>)>),
}

/// A [`ReadRequest`] with how fresh its answers must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadCall {
    pub request: ReadRequest,
    pub freshness: Freshness,
}

/// The answer to a [`ReadCall`], with the copies that answered it behind (`Bounded` reads only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadReply {
    pub response: ReadResponse,
    pub behind: Vec<Lag>,
}

/// Answers a [`ReadCall`] on this node.
impl Serve for ReadCall {
    type Reply = ReadReply;

    async fn serve(self, ctx: &Arc<NodeContext>, _from: &str) -> Result<ReadReply, Error> {
        let scope = ReadScope::new(self.freshness);
        let response = self.request.answer(ctx, &scope).await?;
        Ok(ReadReply {
            response,
            behind: scope.lags(),
        })
    }
}

impl ReadRequest {
    /// Answers this read from this node's copies, catching up as `scope` asks.
    async fn answer(
        self,
        ctx: &Arc<NodeContext>,
        scope: &ReadScope,
    ) -> Result<ReadResponse, Error> {
        Ok(match self {
            ReadRequest::GetEntity { shard, id } => {
                let copy = held_copy(ctx, shard).await?;
                match copy.get_entity(id.clone(), scope).await? {
                    Some(record) => ReadResponse::Entity(Some(record)),
                    None => match copy.placements(vec![id], vec![]).await?.pop() {
                        Some(Placement {
                            stub: true,
                            routing: Some(key),
                            ..
                        }) => ReadResponse::Pointer(key),
                        _ => ReadResponse::Entity(None),
                    },
                }
            }
            ReadRequest::Placements { shard, ids, all } => {
                ReadResponse::Placements(held_copy(ctx, shard).await?.placements(ids, all).await?)
            }
            ReadRequest::GetChunk { shard, id } => {
                ReadResponse::Chunk(held_copy(ctx, shard).await?.get_chunk(id, scope).await?)
            }
            ReadRequest::Traverse {
                parts,
                direction,
                filter,
                relations,
                ahead,
            } => ReadResponse::Traversed(
                super::traverse::step_here(ctx, parts, direction, filter, relations, ahead, scope)
                    .await,
            ),
            ReadRequest::QueryShards { shards, query } => ReadResponse::QueryRows(
                super::scatter::run_on_shards(ctx, shards, query, scope).await,
            ),
            ReadRequest::Retrieval {
                shards,
                read,
                timeout_ms,
            } => ReadResponse::Retrieved(
                super::scatter::Retrieval::on_shards(ctx, shards, read, timeout_ms, scope).await,
            ),
            ReadRequest::GetDocument { shard, id } => {
                ReadResponse::Document(held_copy(ctx, shard).await?.get_document(id, scope).await?)
            }
            ReadRequest::Cascade {
                shards,
                read,
                timeout_ms,
            } => ReadResponse::Cascaded(
                super::scatter::Cascade::on_shards(ctx, shards, read, timeout_ms, scope).await,
            ),
        })
    }
}

/// Sends `request` to `node` with `scope`'s freshness and notes the lags it reports in `scope`.
pub async fn ask(
    ctx: &Arc<NodeContext>,
    node: &str,
    request: ReadRequest,
    scope: &ReadScope,
    timeout: Duration,
) -> Result<ReadResponse, Error> {
    let call = ReadCall {
        request,
        freshness: scope.freshness,
    };
    let reply = crate::peer::call(ctx, node, call, timeout).await?;
    scope.note_from(node, reply.behind);
    Ok(reply.response)
}

/// A point read routed from any node: `$name(ctx, shard, id, scope)` sends `ReadRequest::$request` to an
/// in-sync copy of `shard` (this node's first), failing over to the next copy, and takes the item
/// out of `ReadResponse::$response`.
macro_rules! point_read {
    ($(#[$doc:meta])* $name:ident, $request:ident, $response:ident, $item:ty) => {
        $(#[$doc])*
        pub async fn $name(
            ctx: &Arc<NodeContext>,
            shard: u32,
            id: &str,
            scope: &ReadScope,
        ) -> Result<Option<$item>, Error> {
            let id = id.to_string();
            match route_read(ctx, shard, ReadRequest::$request { shard, id }, scope).await? {
                ReadResponse::$response(item) => Ok(item),
                other => Err(unexpected(other)),
            }
        }
    };
}

/// From any node: finds entity `id` wherever its routing key placed it, with the shard it lives
/// in. Reads the shard of the id (an in-sync copy, this node's first, failing over to the next);
/// when that holds the entity's pointer, reads the shard the pointer names.
pub async fn find_entity(
    ctx: &Arc<NodeContext>,
    id: &str,
    shards: u32,
    scope: &ReadScope,
) -> Result<Option<(u32, EntityRecord)>, Error> {
    let mut shard = shard_of(id, shards);
    for _ in 0..2 {
        let request = ReadRequest::GetEntity {
            shard,
            id: id.to_string(),
        };
        match route_read(ctx, shard, request, scope).await? {
            ReadResponse::Entity(found) => return Ok(found.map(|record| (shard, record))),
            ReadResponse::Pointer(key) if shard_of(&key, shards) != shard => {
                shard = shard_of(&key, shards);
            }
            ReadResponse::Pointer(_) => return Ok(None),
            other => return Err(unexpected(other)),
        }
    }
    // The entity's own shard held a pointer too: it is being moved.
    Ok(None)
}

/// From any node: how the copies of `shard` hold each of `ids` and `all` (see
/// [`ReadRequest::Placements`]).
pub async fn route_placements(
    ctx: &Arc<NodeContext>,
    shard: u32,
    ids: Vec<String>,
    all: Vec<String>,
) -> Result<Vec<Placement>, Error> {
    let request = ReadRequest::Placements { shard, ids, all };
    match route_read(ctx, shard, request, &ReadScope::strict()).await? {
        ReadResponse::Placements(found) => Ok(found),
        other => Err(unexpected(other)),
    }
}

point_read!(
    /// From any node: reads a chunk from an in-sync copy of its shard (this node's first),
    /// failing over to the next copy.
    route_get_chunk,
    GetChunk,
    Chunk,
    Chunk
);
point_read!(
    /// Like [`route_get_chunk`] for a document.
    route_get_document,
    GetDocument,
    Document,
    Document
);

/// This node's copy of `shard`, when it holds one in sync.
async fn held_copy(
    ctx: &Arc<NodeContext>,
    shard: u32,
) -> Result<Arc<crate::storage::KuzuShard>, Error> {
    ctx.holds_copy(shard)?;
    Ok(ctx.storage.open(shard).await?)
}

fn unexpected(answer: ReadResponse) -> Error {
    Error::Internal(format!("unexpected answer {answer:?}"))
}

/// Sends a read to an in-sync copy of `shard`: this node's first, then the primary, then others
/// (a strict read: the primary first).
async fn route_read(
    ctx: &Arc<NodeContext>,
    shard: u32,
    request: ReadRequest,
    scope: &ReadScope,
) -> Result<ReadResponse, Error> {
    let map = ctx.shard_map.get().ok_or_else(|| {
        Error::Unavailable("no shard map yet; the cluster is still forming".into())
    })?;
    let a = map
        .assignment(shard)
        .ok_or_else(|| Error::NotFound(format!("no shard {shard}")))?;
    let me = ctx.node_id().as_str();
    let mut copies: Vec<String> = a.in_sync.clone();
    if scope.freshness == Freshness::Strict {
        // The primary's applier is the one kept within TORUA_MAX_APPLY_LAG: it is the copy most
        // likely to have every acknowledged write applied.
        copies.sort_by_key(|n| (*n != a.primary, n.as_str() != me));
    } else {
        copies.sort_by_key(|n| (n.as_str() != me, *n != a.primary));
    }
    let call = ReadCall {
        request,
        freshness: scope.freshness,
    };
    let (node, reply) = crate::peer::call_first(ctx, copies, &call, READ_TIMEOUT)
        .await
        .map_err(|e| e.context(format!("no copy of shard {shard} answered")))?;
    scope.note_from(&node, reply.behind);
    Ok(reply.response)
}
