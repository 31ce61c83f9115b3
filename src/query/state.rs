//! What the read side keeps between requests on a node: the slots of the distributed queries it
//! coordinates, whose turn it is among a shard's copies, and which nodes recently failed to
//! answer a read.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;

/// Distributed queries (`/query`, traversals, `/retrieve`) this node coordinates at once.
const QUERY_CONCURRENCY: usize = 64;

pub struct Reads {
    /// Bounds concurrent distributed queries this node coordinates.
    pub permits: Arc<Semaphore>,
    /// Bounds concurrent user Cypher statements (`/query`) among them.
    pub user_queries: Arc<Semaphore>,
    /// Their limit, for messages.
    pub max_user_queries: usize,
    /// Rotates which copy of a shard answers a query (load spreading).
    pub(super) turn: AtomicUsize,
    /// Nodes that recently failed to answer a read, and when: tried last for a while, so that
    /// a node that died is not waited for again before gossip declares it dead.
    pub(super) suspects: Mutex<HashMap<String, Instant>>,
}

impl Reads {
    pub fn new(max_user_queries: usize) -> Self {
        Reads {
            permits: Arc::new(Semaphore::new(QUERY_CONCURRENCY)),
            user_queries: Arc::new(Semaphore::new(max_user_queries)),
            max_user_queries,
            turn: AtomicUsize::new(0),
            suspects: Mutex::new(HashMap::new()),
        }
    }
}
