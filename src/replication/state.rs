//! What replication keeps between requests on a node: the per-shard write locks of the shards it
//! is primary of, and the whole-copy snapshots it is serving to nodes rebuilding a copy.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::storage::KuzuShard;

/// One lock per shard this node is primary of: orders its writes.
#[derive(Default)]
pub struct ShardLocks {
    locks: std::sync::Mutex<BTreeMap<u32, Arc<tokio::sync::Mutex<()>>>>,
}

impl ShardLocks {
    pub(super) fn get(&self, shard: u32) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("locks")
            .entry(shard)
            .or_default()
            .clone()
    }
}

/// The snapshots this node is serving.
#[derive(Default)]
pub struct Snapshots {
    pub(super) next: AtomicU64,
    pub(super) active: Mutex<HashMap<u64, Active>>,
}

pub(super) struct Active {
    pub(super) shard: u32,
    pub(super) path: PathBuf,
    pub(super) bytes: u64,
    pub(super) store: Arc<KuzuShard>,
    pub(super) last_used: Instant,
}
