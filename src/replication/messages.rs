//! The replication subsystem's peer messages and their handler.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cluster::shard_map::ShardMap;
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::node::wire::Serve;
use crate::storage::WriteOp;

/// Writes to shard copies and catching copies up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicationRequest {
    /// To a shard's primary: sequence, apply, replicate, acknowledge.
    Write { shard: u32, op: WriteOp },
    /// From a primary to an in-sync replica: apply write `seq`.
    Replicate { shard: u32, seq: u64, op: WriteOp },
    /// To a primary, from a copy outside the in-sync set: "I have writes up to `applied_seq`,
    /// and the checksum of that write is `last_crc`" (when its log still has it). The primary
    /// sends what the copy misses from its log, then puts it back in sync.
    RequestInSync {
        shard: u32,
        applied_seq: u64,
        last_crc: Option<u32>,
    },
    /// From a primary to an in-sync replica, while it holds the shard's write lock: the
    /// checksum of the replica's copy once it applied every write it logged.
    Checksum { shard: u32 },
    /// From a primary to a replica whose checksum differs from the majority's at write `seq`:
    /// rebuild your copy.
    Diverged { shard: u32, seq: u64 },
    /// From the node an operator asked (`POST /nodes/{id}/shards/{shard}/rebuild`): rebuild your
    /// copy of `shard` from another in-sync copy.
    Rebuild { shard: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicationResponse {
    /// The write is acknowledged under this sequence number.
    Written {
        seq: u64,
    },
    Replicated,
    /// The copy is back in the in-sync set of this map.
    InSync(ShardMap),
    /// The copy's checksum, taken after applying every write up to `seq`.
    Checksum {
        seq: u64,
        sum: String,
    },
    /// The copy will be rebuilt.
    WillRebuild,
}

/// Answers a [`ReplicationRequest`] from `from`.
impl Serve for ReplicationRequest {
    type Reply = ReplicationResponse;

    async fn serve(self, ctx: &Arc<NodeContext>, from: &str) -> Result<ReplicationResponse, Error> {
        match self {
            ReplicationRequest::Write { shard, op } => super::write::primary_write(ctx, shard, op)
                .await
                .map(|seq| ReplicationResponse::Written { seq }),
            ReplicationRequest::Replicate { shard, seq, op } => {
                super::write::replica_write(ctx, shard, from, seq, op)
                    .await
                    .map(|()| ReplicationResponse::Replicated)
            }
            ReplicationRequest::RequestInSync {
                shard,
                applied_seq,
                last_crc,
            } => super::catch_up::rejoin_in_sync(ctx, shard, from, applied_seq, last_crc)
                .await
                .map(ReplicationResponse::InSync),
            ReplicationRequest::Checksum { shard } => {
                super::anti_entropy::checksum(ctx, shard, from)
                    .await
                    .map(|(seq, sum)| ReplicationResponse::Checksum { seq, sum })
            }
            ReplicationRequest::Diverged { shard, seq } => {
                super::anti_entropy::diverged(ctx, shard, from, seq)
                    .await
                    .map(|()| ReplicationResponse::WillRebuild)
            }
            ReplicationRequest::Rebuild { shard } => {
                super::anti_entropy::rebuild_here(ctx, shard, from)
                    .await
                    .map(|()| ReplicationResponse::WillRebuild)
            }
        }
    }
}
