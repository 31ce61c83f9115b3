//! API keys as cluster metadata: creating and revoking one is a shard-map change made by the
//! coordinator (under a quorum) and pushed to every node, so any node checks any key and a
//! revocation reaches all of them with the push. The key itself is made here and shown once to
//! the caller; only its salted hash leaves this node. Checking a request's key is
//! [`crate::node::access`]'s.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::coordinator::ask_map_change;
use crate::cluster::messages::MapRequest;
use crate::cluster::shard_map::ShardMap;
use crate::error::Error;
use crate::node::access::{self, KeyInfo, Role};
use crate::node::context::NodeContext;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates a key: returns what `GET /keys` will list and the key itself (the only time it is
/// shown).
pub async fn create(
    ctx: &Arc<NodeContext>,
    name: &str,
    role: Role,
) -> Result<(KeyInfo, String), Error> {
    if name.trim().is_empty() || name.chars().count() > access::MAX_NAME {
        return Err(Error::Invalid(format!(
            "a key's name must be 1 to {} characters",
            access::MAX_NAME
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "a key's name must not contain control characters".into(),
        ));
    }
    let (record, key) = access::new_key(name.trim(), role);
    let info = KeyInfo::from(&record);
    ask(ctx, MapRequest::PutKey(record)).await?;
    Ok((info, key))
}

/// Revokes key `id` on every node (with the map push that records it).
pub async fn revoke(ctx: &Arc<NodeContext>, id: &str) -> Result<(), Error> {
    ask(ctx, MapRequest::RevokeKey { id: id.to_string() })
        .await
        .map(|_| ())
}

/// The cluster's keys, as this node's map lists them.
pub fn list(ctx: &NodeContext) -> Vec<KeyInfo> {
    ctx.shard_map.read(|m| {
        m.map(|m| m.api_keys.iter().map(KeyInfo::from).collect())
            .unwrap_or_default()
    })
}

/// Asks the coordinator for a key change, again for a while when it is changing hands; installs
/// the map it answers with.
async fn ask(ctx: &Arc<NodeContext>, request: MapRequest) -> Result<ShardMap, Error> {
    ask_map_change(ctx, "key change", request, CALL_TIMEOUT, |e| {
        matches!(e, Error::NotFound(_) | Error::Invalid(_))
    })
    .await
}
