//! The write path and its guarantee, catching copies up, and whole-copy transfers.
//!
//! A write for shard *s* goes to *s*'s primary. The primary, holding the shard's lock so writes
//! keep their order, gives it the next sequence number, logs it (durably; see
//! `storage::shard_log`), then sends it to every other in-sync copy in parallel. It acknowledges
//! only when every in-sync copy logged it; a copy that fails is first removed from the in-sync set
//! by the coordinator (the map change is the record that the copy is no longer trusted), and if
//! that cannot be done the write fails. So an acknowledged write is on every copy the map calls
//! in-sync, and survives while one of them does.
//!
//! Replicas take writes in sequence order and only from the node their map calls the primary; one
//! that sees a gap refuses the write (it then leaves the in-sync set and catches up from the
//! primary's log, see [`catch_up::rejoin_in_sync`]).
//!
//! - [`write`]: routing a write to the primary ([`route_write`]), the primary's side
//!   ([`write::primary_write`]: where a write waits for its replicas) and the replica's side.
//! - [`ingest`]: writes that span shards: a batch fanned out by shard, an entity's delete cascade.
//! - [`routing`]: where the entities a batch names are stored (routing keys of relation ends,
//!   entities that move to another home).
//! - [`document`]: a document's delete cascade (its text units and what only they support), also
//!   run when a document is ingested again with other text units.
//! - [`catch_up`]: bringing a copy outside the in-sync set level from the primary's log.
//! - [`snapshot`]: copying a whole copy to a node that cannot catch up from the log.
//! - [`anti_entropy`]: comparing the copies of a shard in the background; a copy that differs
//!   from the majority is rebuilt.
//! - [`messages`]: this subsystem's peer messages and their handler.

pub mod anti_entropy;
pub mod catch_up;
pub mod document;
pub mod ingest;
pub mod messages;
pub mod routing;
pub mod snapshot;
pub mod state;
pub mod write;

use crate::cluster::shard_map::ShardMap;
use crate::error::Error;
use crate::node::context::NodeContext;

pub use state::{ShardLocks, Snapshots};
pub use write::{primary_write, route_write, WRITE_DEADLINE};

/// This node's map, if it names this node the primary of `shard`; [`Error::NotPrimary`]
/// otherwise (the asker refreshes its map and asks the right node).
fn map_if_primary(ctx: &NodeContext, shard: u32) -> Result<ShardMap, Error> {
    let map = ctx
        .shard_map
        .get()
        .ok_or_else(|| Error::Unavailable("no shard map yet; retry".into()))?;
    if map.assignment(shard).map(|a| a.primary.as_str()) != Some(ctx.node_id().as_str()) {
        return Err(Error::NotPrimary {
            shard,
            map_version: map.version,
        });
    }
    Ok(map)
}
