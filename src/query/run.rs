//! The `/query` driver: a user's read-only Cypher checked ([`prepare`]), sent to one copy of
//! each shard and merged into the answer one database holding the whole graph would give
//! ([`execute`]). The HTTP layer only parses the body, takes a query slot between the two steps
//! and renders the [`CypherAnswer`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

use super::cypher::{check_params_given, check_read_only, tokenize, MAX_CYPHER_BYTES};
use super::merge::merge;
use super::plan::{analyze, Plan};
use super::scatter::{scatter, Prefer, ShardsReport};
use crate::cluster::shard_map::ShardMap;
use crate::error::Error;
use crate::node::context::NodeContext;
use crate::storage::{ReadScope, ShardQuery};

/// How long the one shard that checks a query Kuzu's way may take.
const CHECK_TIMEOUT_MS: u64 = 2_000;

/// A user's query, its fields validated one by one by the caller.
pub struct CypherRequest {
    pub cypher: String,
    pub params: Map<String, Value>,
    /// Only these shards (all when `None`).
    pub shards: Option<Vec<u32>>,
    pub timeout_ms: u64,
    /// Answer with what the reachable shards hold when some do not answer.
    pub allow_partial: bool,
    /// Each shard's rows apart instead of merged.
    pub per_shard: bool,
}

/// A checked query, ready to send.
pub struct Prepared {
    request: CypherRequest,
    map: ShardMap,
    /// How answers merge; `None` for a per-shard answer.
    plan: Option<Plan>,
    shards: Vec<u32>,
}

impl Prepared {
    pub fn timeout_ms(&self) -> u64 {
        self.request.timeout_ms
    }
}

/// One shard's rows in a per-shard answer.
pub struct ShardRows {
    pub shard: u32,
    pub node: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

pub enum CypherAnswer {
    /// The rows one database holding the whole graph would return.
    Global {
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
        report: ShardsReport,
    },
    PerShard {
        shards: Vec<ShardRows>,
        report: ShardsReport,
    },
}

/// Checks the query (size, read-only, mergeable) and the shards it names; a malformed query
/// gets Kuzu's own message from one shard that parses and binds it without running it.
pub async fn prepare(ctx: &Arc<NodeContext>, request: CypherRequest) -> Result<Prepared, Error> {
    if request.cypher.trim().is_empty() {
        return Err(Error::Invalid("cypher is empty".into()));
    }
    if request.cypher.len() > MAX_CYPHER_BYTES {
        return Err(Error::Invalid(format!(
            "cypher is longer than {MAX_CYPHER_BYTES} bytes"
        )));
    }
    let tokens = tokenize(&request.cypher)
        .map_err(|e| Error::Invalid(format!("cannot read the query: {e}")))?;
    check_read_only(&tokens).map_err(|e| Error::Invalid(e.0))?;
    check_params_given(&tokens, |name| request.params.contains_key(name))
        .map_err(|e| Error::Invalid(e.0))?;
    let map = ctx.shard_map.get().ok_or_else(|| {
        Error::Unavailable(
            "no shard map yet: the cluster is still forming (TORUA_BOOTSTRAP_EXPECT)".into(),
        )
    })?;
    let plan = if request.per_shard {
        None
    } else {
        match analyze(&request.cypher, &tokens, &request.params) {
            Ok(plan) => Some(plan),
            Err(unmergeable) => {
                let check = ShardQuery {
                    cypher: request.cypher.clone(),
                    params_json: Value::Object(request.params.clone()).to_string(),
                    timeout_ms: CHECK_TIMEOUT_MS,
                    names_cypher: None,
                    prepare_only: true,
                };
                let (_, _, invalid) =
                    scatter(ctx, &map, &[0], check, Prefer::Turns, &ReadScope::strict()).await;
                return Err(Error::Invalid(match invalid {
                    Some(kuzu) => format!("invalid query: {kuzu}"),
                    None => unmergeable.to_string(),
                }));
            }
        }
    };
    let shards = match &request.shards {
        None => (0..map.shards).collect(),
        Some(list) => {
            if list.is_empty() {
                return Err(Error::Invalid(
                    "shards is empty; leave it out to query every shard".into(),
                ));
            }
            if let Some(s) = list.iter().find(|s| **s >= map.shards) {
                return Err(Error::Invalid(format!(
                    "unknown shard {s}: this cluster has shards 0..{}",
                    map.shards - 1
                )));
            }
            let mut l = list.clone();
            l.sort_unstable();
            l.dedup();
            l
        }
    };
    Ok(Prepared {
        request,
        map,
        plan,
        shards,
    })
}

/// Sends a prepared query to one copy of each of its shards and merges the answers. Fails with
/// `Unavailable` when a shard did not answer and the request does not allow a partial answer.
/// The shards read as fresh as `scope` asks and note there the copies that answered behind.
pub async fn execute(
    ctx: &Arc<NodeContext>,
    prepared: Prepared,
    scope: &ReadScope,
) -> Result<CypherAnswer, Error> {
    let Prepared {
        request,
        map,
        plan,
        shards,
    } = prepared;
    let known_names = plan.as_ref().and_then(|p| column_names(&p.names_cypher));
    let query = ShardQuery {
        cypher: plan
            .as_ref()
            .map_or(request.cypher, |p| p.shard_cypher.clone()),
        params_json: Value::Object(request.params).to_string(),
        timeout_ms: request.timeout_ms,
        names_cypher: plan
            .as_ref()
            .filter(|_| known_names.is_none())
            .map(|p| p.names_cypher.clone()),
        prepare_only: false,
    };
    let (answers, report, invalid) = scatter(ctx, &map, &shards, query, Prefer::Turns, scope).await;
    if let Some(reason) = invalid {
        return Err(Error::Invalid(format!("invalid query: {reason}")));
    }
    if report.failed > 0 && (!request.allow_partial || report.successful == 0) {
        return Err(Error::Unavailable(report.summary()));
    }
    let mut parsed = Vec::with_capacity(answers.len());
    for a in &answers {
        let rows: Vec<Vec<Value>> = serde_json::from_str(&a.rows.rows_json).map_err(|e| {
            Error::Internal(format!(
                "shard {} sent rows that are not JSON: {e}",
                a.shard
            ))
        })?;
        parsed.push(rows);
    }
    let Some(plan) = plan else {
        let shards = answers
            .into_iter()
            .zip(parsed)
            .map(|(a, rows)| ShardRows {
                shard: a.shard,
                node: a.node,
                columns: a.rows.columns,
                rows,
            })
            .collect();
        return Ok(CypherAnswer::PerShard { shards, report });
    };
    let rows = merge(&plan, parsed)?;
    // Kuzu's names for the user's columns, when the shard that was asked for them answered.
    let asked = answers
        .iter()
        .find_map(|a| a.rows.user_columns.clone())
        .filter(|c| c.len() == plan.columns.len());
    if let Some(names) = &asked {
        remember_column_names(&plan.names_cypher, names.clone());
    }
    let columns = known_names
        .or(asked)
        .unwrap_or_else(|| plan.columns.clone());
    Ok(CypherAnswer::Global {
        columns,
        rows,
        report,
    })
}

/// Kuzu's column names by the query text that asks for them. Asking a shard costs a statement,
/// and the names depend only on the text and the fixed schema, so one cache serves the process.
static COLUMN_NAMES: OnceLock<Mutex<HashMap<String, Vec<String>>>> = OnceLock::new();
const MAX_CACHED_NAMES: usize = 1024;

fn column_names(names_cypher: &str) -> Option<Vec<String>> {
    let cache = COLUMN_NAMES.get_or_init(Default::default);
    cache.lock().ok()?.get(names_cypher).cloned()
}

fn remember_column_names(names_cypher: &str, names: Vec<String>) {
    let cache = COLUMN_NAMES.get_or_init(Default::default);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= MAX_CACHED_NAMES {
            c.clear();
        }
        c.insert(names_cypher.to_string(), names);
    }
}
