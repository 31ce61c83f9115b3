//! One retrieval stage: a fixed read-only statement sent to one copy of each chosen shard
//! (through the same fan-out as `/query`, a failed copy retried on the next), its rows parsed,
//! and the shards that did not answer remembered for `_shards`. Retrieval asks each shard's
//! primary first: the copies' HNSW graphs differ, and every node must give the same answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};

use crate::cluster::shard_map::ShardMap;
use crate::node::context::NodeContext;
use crate::query::scatter::{query_shards, Prefer, ShardsReport};
use crate::storage::ShardQuery;

/// What the stages of one retrieval share: where to ask, until when, and what failed.
pub struct Stages<'a> {
    pub ctx: &'a Arc<NodeContext>,
    pub map: ShardMap,
    pub deadline: Instant,
    /// Shards that failed in any stage, with the copy and reason of their last failure.
    failed: Mutex<BTreeMap<u32, (Option<String>, String)>>,
}

/// Why a stage produced nothing usable.
#[derive(Debug)]
pub enum StageError {
    /// Past the request's time limit.
    Timeout,
    /// A statement torua wrote was refused by Kuzu: a bug, reported as such.
    Internal(String),
}

impl<'a> Stages<'a> {
    pub fn new(ctx: &'a Arc<NodeContext>, map: ShardMap, deadline: Instant) -> Self {
        Stages {
            ctx,
            map,
            deadline,
            failed: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn all_shards(&self) -> Vec<u32> {
        (0..self.map.shards).collect()
    }

    /// Runs `cypher` with `params` on `shards`; returns every answering shard's rows (each row a
    /// list of values in the statement's column order). Stages may run concurrently.
    pub async fn run(
        &self,
        shards: &[u32],
        cypher: String,
        params: Map<String, Value>,
    ) -> Result<Vec<Vec<Value>>, StageError> {
        if shards.is_empty() {
            return Ok(vec![]);
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StageError::Timeout);
        }
        let query = ShardQuery {
            cypher,
            params_json: Value::Object(params).to_string(),
            timeout_ms: (left.as_millis() as u64).max(1),
            names_cypher: None,
            prepare_only: false,
        };
        let (answers, report, invalid) =
            query_shards(self.ctx, &self.map, shards, query, Prefer::Primary).await;
        if let Some(reason) = invalid {
            return Err(StageError::Internal(reason));
        }
        let mut failed = self.failed.lock().expect("failed lock");
        for f in report.failures {
            failed.insert(f.shard, (f.node, f.reason));
        }
        let mut rows = Vec::new();
        for a in answers {
            match serde_json::from_str::<Vec<Vec<Value>>>(&a.rows.rows_json) {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    failed.insert(a.shard, (Some(a.node), format!("unreadable answer: {e}")));
                }
            }
        }
        Ok(rows)
    }

    /// Records shards a traversal could not reach.
    pub fn absorb(&self, report: ShardsReport) {
        let mut failed = self.failed.lock().expect("failed lock");
        for f in report.failures {
            failed.entry(f.shard).or_insert((f.node, f.reason));
        }
    }

    /// The `_shards` report of the whole retrieval: every shard of the graph counts once.
    pub fn report(&self) -> ShardsReport {
        let mut r = ShardsReport::new(self.map.shards as usize);
        for (shard, (node, reason)) in self.failed.lock().expect("failed lock").iter() {
            r.fail(*shard, node.clone(), reason.clone());
        }
        r.successful = r.total - r.failed;
        r
    }
}

pub fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

pub fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
