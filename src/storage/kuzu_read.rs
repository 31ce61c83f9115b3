//! Reads that distributed queries send to one shard copy: a user's Cypher (bounded in time and
//! size, answered as JSON rows), and one breadth-first step of a traversal (the relations of a
//! frontier, the properties of entities). Also the read-only, time-limited transaction that user
//! queries and retrieval reads (`kuzu_retrieval`) run in.

use std::collections::HashSet;

use kuzu::{LogicalType, Value};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Number, Value as Json};

use super::cypher::{check_params_given, tokenize, Tok};
use super::kuzu_readers::Session;
use super::kuzu_values::*;
use super::Error;

/// A checked read-only query for one shard copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardQuery {
    pub cypher: String,
    /// A JSON object; each statement gets the parameters it uses.
    pub params_json: String,
    pub timeout_ms: u64,
    /// A statement (with `LIMIT 0`) whose column names the answer should carry: the user's own
    /// query, when `cypher` is its rewrite.
    pub names_cypher: Option<String>,
    /// Only parse and bind `cypher` (to report errors); run nothing.
    pub prepare_only: bool,
}

/// Kuzu's answer to a query: column names and rows as JSON text (postcard cannot carry
/// `serde_json::Value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows_json: String,
    /// The columns of `names_cypher`, when asked.
    pub user_columns: Option<Vec<String>>,
}

/// Why a shard could not answer a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueryFailure {
    /// The query is wrong (syntax, unknown names, types): the same on every shard.
    Invalid(String),
    /// The query ran past its time limit and was interrupted.
    Timeout(String),
    /// The answer is larger than a shard may send.
    TooLarge(String),
    Other(String),
}

impl QueryFailure {
    pub fn reason(&self) -> &str {
        match self {
            QueryFailure::Invalid(s)
            | QueryFailure::Timeout(s)
            | QueryFailure::TooLarge(s)
            | QueryFailure::Other(s) => s,
        }
    }
}

/// Runs a read-only query (checked by the caller) inside a read-only transaction, so that even
/// a statement the check missed cannot write; Kuzu interrupts it after `timeout_ms`.
pub fn run_user_query(
    session: &mut Session<'_>,
    query: &ShardQuery,
    max_bytes: usize,
) -> Result<Rows, QueryFailure> {
    let params: Map<String, Json> = serde_json::from_str(&query.params_json)
        .map_err(|e| QueryFailure::Invalid(format!("params: {e}")))?;
    if query.prepare_only {
        session
            .connection()
            .prepare(&query.cypher)
            .map_err(classify)?;
        return Ok(Rows {
            columns: vec![],
            rows_json: "[]".into(),
            user_columns: None,
        });
    }
    read_only(session, query.timeout_ms, |session| {
        let user_columns = match &query.names_cypher {
            Some(q) => Some(execute(session, q, params_for(q, &params)?, max_bytes)?.columns),
            None => None,
        };
        let mut rows = execute(
            session,
            &query.cypher,
            params_for(&query.cypher, &params)?,
            max_bytes,
        )?;
        rows.user_columns = user_columns;
        Ok(rows)
    })
}

/// Runs `work` inside a read-only transaction (nothing it runs can write), with Kuzu's time
/// limit set to `timeout_ms` for each of its statements.
pub fn read_only<T>(
    session: &mut Session<'_>,
    timeout_ms: u64,
    work: impl FnOnce(&mut Session<'_>) -> Result<T, QueryFailure>,
) -> Result<T, QueryFailure> {
    session.connection().set_query_timeout(timeout_ms.max(1));
    transaction(session, "BEGIN TRANSACTION READ ONLY")?;
    let result = work(session);
    let _ = transaction(session, "ROLLBACK");
    result
}

/// A typed read answered like a user query: in one read-only transaction cut off after its time
/// limit, refused when its answer passes a size.
pub trait BoundedRead: Send + 'static {
    type Rows: Serialize + Send + 'static;
    /// Runs the read's statements inside the transaction.
    fn answer(&self, session: &mut Session<'_>) -> Result<Self::Rows, QueryFailure>;
    /// Why an answer over `mib` MiB is refused.
    fn too_large(mib: usize) -> String;
}

/// Answers `read` in one read-only transaction limited to `timeout_ms`; an answer larger than
/// `max_bytes` (encoded) is refused.
pub fn run_bounded<R: BoundedRead>(
    session: &mut Session<'_>,
    read: &R,
    timeout_ms: u64,
    max_bytes: usize,
) -> Result<R::Rows, QueryFailure> {
    let rows = read_only(session, timeout_ms, |session| read.answer(session))?;
    within_bytes(rows, max_bytes, R::too_large)
}

/// `rows`, unless their encoding passes `max_bytes`: then `TooLarge` with `too_large(MiB)`.
pub fn within_bytes<T: Serialize>(
    rows: T,
    max_bytes: usize,
    too_large: impl FnOnce(usize) -> String,
) -> Result<T, QueryFailure> {
    let size = postcard::to_stdvec(&rows)
        .map_err(|e| QueryFailure::Other(format!("cannot encode the answer: {e}")))?
        .len();
    if size > max_bytes {
        return Err(QueryFailure::TooLarge(too_large(max_bytes >> 20)));
    }
    Ok(rows)
}

/// Runs `cypher` (prepared once per reader thread) with `params`, collecting the rows; a failure
/// is classified as [`run_user_query`]'s are.
pub fn execute_values(
    session: &mut Session<'_>,
    cypher: &str,
    params: Vec<(&str, Value)>,
) -> Result<Vec<Vec<Value>>, QueryFailure> {
    let (conn, stmt) = session.prepared(cypher).map_err(classify)?;
    Ok(conn.execute(stmt, params).map_err(classify)?.collect())
}

/// Runs a transaction statement, prepared once per reader thread.
fn transaction(session: &mut Session<'_>, statement: &str) -> Result<(), QueryFailure> {
    let (conn, stmt) = session
        .prepared(statement)
        .map_err(|e| QueryFailure::Other(e.to_string()))?;
    conn.execute(stmt, vec![])
        .map(drop)
        .map_err(|e| QueryFailure::Other(e.to_string()))
}

/// The parameters `cypher` uses (Kuzu refuses unused ones), as Kuzu values. Uses are found by
/// the query tokenizer, so a `$name` inside a string literal does not count.
fn params_for(
    cypher: &str,
    params: &Map<String, Json>,
) -> Result<Vec<(String, Value)>, QueryFailure> {
    let tokens = tokenize(cypher).map_err(|e| QueryFailure::Invalid(e.0))?;
    check_params_given(&tokens, |name| params.contains_key(name))
        .map_err(|e| QueryFailure::Invalid(e.0))?;
    let used: HashSet<String> = tokens
        .into_iter()
        .filter_map(|t| match t.tok {
            Tok::Param(name) => Some(name),
            _ => None,
        })
        .collect();
    params
        .iter()
        .filter(|(name, _)| used.contains(*name))
        .map(|(name, v)| param_value(name, v).map(|v| (name.clone(), v)))
        .collect()
}

fn classify(e: kuzu::Error) -> QueryFailure {
    let msg = e.to_string();
    let lower = msg.to_ascii_lowercase();
    if lower.contains("interrupted") || lower.contains("timeout") {
        QueryFailure::Timeout(format!(
            "the query ran past its time limit on this shard and was interrupted ({msg})"
        ))
    } else if lower.contains("parser exception")
        || lower.contains("binder exception")
        || lower.contains("catalog exception")
        || lower.contains("parameter ")
    {
        QueryFailure::Invalid(msg)
    } else {
        QueryFailure::Other(msg)
    }
}

fn execute(
    session: &mut Session<'_>,
    cypher: &str,
    params: Vec<(String, Value)>,
    max_bytes: usize,
) -> Result<Rows, QueryFailure> {
    let (conn, stmt) = session.prepared(cypher).map_err(classify)?;
    let params: Vec<(&str, Value)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let result = conn.execute(stmt, params).map_err(classify)?;
    let columns = result.get_column_names();
    let mut out = String::from("[");
    for (n, row) in result.enumerate() {
        if n > 0 {
            out.push(',');
        }
        let row: Vec<Json> = row.iter().map(to_json).collect();
        out.push_str(&serde_json::to_string(&row).map_err(|e| QueryFailure::Other(e.to_string()))?);
        if out.len() > max_bytes {
            return Err(QueryFailure::TooLarge(format!(
                "a shard's answer passed {} MiB; add a LIMIT, aggregate, or return fewer columns",
                max_bytes >> 20
            )));
        }
    }
    out.push(']');
    Ok(Rows {
        columns,
        rows_json: out,
        user_columns: None,
    })
}

/// A JSON parameter as a Kuzu value: strings, integers, floats, booleans, and lists of one of
/// these.
fn param_value(name: &str, v: &Json) -> Result<Value, QueryFailure> {
    Ok(match v {
        Json::String(s) => Value::String(s.clone()),
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int64(i),
            None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::Array(items) => {
            let values = items
                .iter()
                .map(|i| param_value(name, i))
                .collect::<Result<Vec<_>, _>>()?;
            let ty = match values.first() {
                None | Some(Value::String(_)) => LogicalType::String,
                Some(Value::Bool(_)) => LogicalType::Bool,
                Some(Value::Int64(_)) => LogicalType::Int64,
                Some(Value::Double(_)) => LogicalType::Double,
                _ => {
                    return Err(QueryFailure::Invalid(format!(
                        "parameter {name}: lists of lists are not supported"
                    )))
                }
            };
            // Numbers written without a fraction ([1, 0.5]) make a list of doubles.
            let numbers = values
                .iter()
                .all(|v| matches!(v, Value::Int64(_) | Value::Double(_)));
            if numbers && values.iter().any(|v| matches!(v, Value::Double(_))) {
                let doubles = values
                    .into_iter()
                    .map(|v| match v {
                        Value::Int64(i) => Value::Double(i as f64),
                        v => v,
                    })
                    .collect();
                return Ok(Value::List(LogicalType::Double, doubles));
            }
            if values.iter().any(|v| LogicalType::from(v) != ty) {
                return Err(QueryFailure::Invalid(format!(
                    "parameter {name}: a list's items must have one type"
                )));
            }
            Value::List(ty, values)
        }
        Json::Null => {
            return Err(QueryFailure::Invalid(format!(
                "parameter {name}: null is not supported"
            )))
        }
        Json::Object(_) => {
            return Err(QueryFailure::Invalid(format!(
                "parameter {name}: objects are not supported"
            )))
        }
    })
}

/// Properties torua keeps for itself; not part of the graph users see.
const INTERNAL: [&str; 2] = ["stub", "hash"];

/// A Kuzu value as JSON: nodes and relations as objects of their properties with `_label`
/// (internal ids are per shard and left out), times as strings.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int64(i) => json!(i),
        Value::Int32(i) => json!(i),
        Value::Int16(i) => json!(i),
        Value::Int8(i) => json!(i),
        Value::UInt64(i) => json!(i),
        Value::UInt32(i) => json!(i),
        Value::UInt16(i) => json!(i),
        Value::UInt8(i) => json!(i),
        Value::Int128(i) => match i64::try_from(*i) {
            Ok(i) => json!(i),
            Err(_) => float(*i as f64),
        },
        Value::Double(f) => float(*f),
        Value::Float(f) => float(f64::from(*f)),
        Value::String(s) => Json::String(s.clone()),
        Value::List(_, items) | Value::Array(_, items) => {
            Json::Array(items.iter().map(to_json).collect())
        }
        Value::Struct(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Value::Node(n) => {
            let mut m = Map::new();
            m.insert("_label".into(), Json::String(n.get_label_name().clone()));
            for (k, v) in n.get_properties() {
                if !INTERNAL.contains(&k.as_str()) {
                    m.insert(k.clone(), to_json(v));
                }
            }
            Json::Object(m)
        }
        Value::Rel(r) => {
            let mut m = Map::new();
            m.insert("_label".into(), Json::String(r.get_label_name().clone()));
            for (k, v) in r.get_properties() {
                m.insert(k.clone(), to_json(v));
            }
            Json::Object(m)
        }
        Value::Map(_, entries) => Json::Array(
            entries
                .iter()
                .map(|(k, v)| json!([to_json(k), to_json(v)]))
                .collect(),
        ),
        Value::InternalID(id) => Json::String(format!("{}:{}", id.table_id, id.offset)),
        other => Json::String(other.to_string()),
    }
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map_or(Json::Null, Json::Number)
}

/// Which relations a traversal step follows from an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Relations whose source is the entity.
    Out,
    /// Relations whose target is the entity.
    In,
    Both,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelationFilter {
    pub min_weight: Option<f64>,
    /// Case-insensitive substring of the description.
    pub description_contains: Option<String>,
}

/// A relation as traversals return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub id: String,
    pub source: String,
    pub target: String,
    pub description: String,
    pub weight: f64,
    /// The routing keys of routed endpoints (their shard is `shard_of(key)`, not of the id).
    pub source_routing: Option<String>,
    pub target_routing: Option<String>,
}

impl Edge {
    /// The shard that owns `end` (this relation's source or target).
    pub fn shard_of_end(&self, end: &str, shards: u32) -> u32 {
        let routing = if end == self.source {
            self.source_routing.as_deref()
        } else {
            self.target_routing.as_deref()
        };
        crate::graph::partition::home_shard(end, routing, shards)
    }
}

/// An entity as traversals return it (no embedding, no id lists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntitySummary {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub description: String,
    pub degree: i64,
    pub frequency: i64,
}

/// The relations of `ids` (entities owned by this shard) in `direction` that pass `filter`.
pub fn expand(
    session: &mut Session<'_>,
    rows: u64,
    ids: &[String],
    direction: Direction,
    filter: &RelationFilter,
) -> Result<Vec<Edge>, Error> {
    // One primary-key lookup per id (~0.35 ms with its relations), or — when the copy is small
    // for the number of ids — one statement filtering `f.id IN $ids`, a scan of every entity
    // row (stubs included). `UNWIND $ids .. {id: i}` is never used here: Kuzu joins it over
    // every relation (over 100 ms at 1M). `source`/`target` are read from the relation:
    // fetching the far node's id costs a join over the node table. Costs: `step_costs`.
    let k = ids.len() as u64;
    let scan = rows * (SCAN_ROW_NS + k * IN_ITEM_NS) < k * EXPAND_LOOKUP_NS;
    let mut conditions = Vec::new();
    if scan {
        conditions.push("f.id IN $ids");
    }
    if filter.min_weight.is_some() {
        conditions.push("r.weight >= $w");
    }
    if filter.description_contains.is_some() {
        conditions.push("contains(lower(r.description), $d)");
    }
    let node = if scan {
        "(f:Entity)"
    } else {
        "(f:Entity {id: $id})"
    };
    let arrow = match direction {
        Direction::Out => "-[r:RELATED]->()",
        Direction::In => "<-[r:RELATED]-()",
        Direction::Both => "-[r:RELATED]-()",
    };
    let filter_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let q = format!(
        "MATCH {node}{arrow}{filter_clause} RETURN r.id, r.source, r.target, r.description, r.weight, \
         r.source_routing, r.target_routing"
    );
    let filter_params = || {
        let mut params = Vec::new();
        if let Some(w) = filter.min_weight {
            params.push(("w", Value::Double(w)));
        }
        if let Some(d) = &filter.description_contains {
            params.push(("d", Value::String(d.to_lowercase())));
        }
        params
    };
    let batches: Vec<Vec<(&str, Value)>> = if scan {
        let mut p = vec![("ids", strings(ids))];
        p.extend(filter_params());
        vec![p]
    } else {
        ids.iter()
            .map(|id| {
                let mut p = vec![("id", s(id))];
                p.extend(filter_params());
                p
            })
            .collect()
    };
    let mut edges = Vec::new();
    let mut seen = HashSet::new();
    for params in batches {
        for row in session.run(&q, params)? {
            let edge = Edge {
                id: as_string(&row[0]),
                source: as_string(&row[1]),
                target: as_string(&row[2]),
                description: as_string(&row[3]),
                weight: as_f64(&row[4]),
                source_routing: as_optional_string(&row[5]),
                target_routing: as_optional_string(&row[6]),
            };
            // A self-loop (and a relation between two frontier ids) is found twice.
            if seen.insert((edge.id.clone(), edge.source.clone(), edge.target.clone())) {
                edges.push(edge);
            }
        }
    }
    Ok(edges)
}

/// The entities among `ids` that exist here (placeholders included, with empty properties:
/// an entity only named by relations is still part of the graph), each with the routing key
/// it carries when it is a stub (which may say that it lives in another shard).
pub fn entity_summaries(
    session: &mut Session<'_>,
    rows: u64,
    ids: &[String],
) -> Result<Vec<(EntitySummary, Option<String>)>, Error> {
    let ret =
        "RETURN e.id, e.title, e.type, e.description, e.degree, e.frequency, e.stub, e.routing";
    // Many ids: one hash join of the list with the entity table (`UNWIND`; an `IN` filter
    // would search the list once per row).
    let found = if rows * SCAN_ROW_NS < ids.len() as u64 * SUMMARY_LOOKUP_NS {
        session.run(
            &format!("UNWIND $ids AS i MATCH (e:Entity {{id: i}}) {ret}"),
            vec![("ids", strings(ids))],
        )?
    } else {
        let q = format!("MATCH (e:Entity {{id: $id}}) {ret}");
        let mut found = Vec::new();
        for id in ids {
            found.extend(session.run(&q, vec![("id", s(id))])?);
        }
        found
    };
    Ok(found
        .iter()
        .map(|r| {
            let summary = EntitySummary {
                id: as_string(&r[0]),
                title: as_string(&r[1]),
                kind: as_string(&r[2]),
                description: as_string(&r[3]),
                degree: as_i64(&r[4]).unwrap_or(0),
                frequency: as_i64(&r[5]).unwrap_or(0),
            };
            let stub_routing = as_bool(&r[6]).then(|| as_optional_string(&r[7])).flatten();
            (summary, stub_routing)
        })
        .collect())
}

/// Measured costs (see `step_costs`, 100k entity rows in a copy): a primary-key lookup of one
/// entity with its relations (~20) and of one entity's properties; a scan (or hash join) of the
/// entity table per row, and what each item of an `IN` list adds per row (the list is searched
/// linearly: 1,000 ids made a scan 40x slower).
const EXPAND_LOOKUP_NS: u64 = 350_000;
const SUMMARY_LOOKUP_NS: u64 = 66_000;
const SCAN_ROW_NS: u64 = 70;
const IN_ITEM_NS: u64 = 3;

/// This copy's part of the whole graph (see [`super::GraphPart`]): every entity row and every
/// relation, the relations as the rows' internal offsets. Reads Kuzu's answers as Arrow batches:
/// no Kuzu value is built per column, and a relation costs two integers, not two ids. The caller
/// holds the commit gate, so both statements see the same commits.
pub fn graph_part(conn: &kuzu::Connection) -> Result<super::GraphPart, Error> {
    use arrow_array::{Array, BooleanArray, Int64Array, StringArray};
    const NO_ROW: u32 = u32::MAX;
    let mut part = super::GraphPart::default();
    // Entity rows by internal offset (dense but for deleted rows).
    let mut row_of: Vec<u32> = Vec::new();
    let q = "MATCH (e:Entity) RETURN offset(ID(e)), e.id, e.stub, e.routing";
    for_each_batch(conn, q, |batch| {
        let offsets = arrow_column::<Int64Array>(batch, 0, q)?;
        let ids = arrow_column::<StringArray>(batch, 1, q)?;
        let stubs = arrow_column::<BooleanArray>(batch, 2, q)?;
        let keys = arrow_column::<StringArray>(batch, 3, q)?;
        for i in 0..batch.num_rows() {
            if ids.is_null(i) || offsets.is_null(i) {
                continue;
            }
            let offset = usize::try_from(offsets.value(i))
                .map_err(|_| Error::Engine(format!("a negative entity offset (in {q})")))?;
            if row_of.len() <= offset {
                row_of.resize(offset + 1, NO_ROW);
            }
            row_of[offset] = part.entities.len() as u32;
            part.entities.push(super::GraphEntity {
                id: ids.value(i).to_string(),
                stub: stubs.is_valid(i) && stubs.value(i),
                routing: keys.is_valid(i).then(|| keys.value(i).to_string()),
            });
        }
        Ok(())
    })?;
    let q = "MATCH (a:Entity)-[r:RELATED]->(b:Entity) \
             RETURN offset(ID(a)), offset(ID(b)), r.source_routing, r.target_routing";
    let row = |offset: i64| {
        usize::try_from(offset)
            .ok()
            .and_then(|o| row_of.get(o).copied())
            .filter(|r| *r != NO_ROW)
            .ok_or_else(|| {
                Error::Engine(format!("a relation names an entity row not read (in {q})"))
            })
    };
    for_each_batch(conn, q, |batch| {
        let sources = arrow_column::<Int64Array>(batch, 0, q)?;
        let targets = arrow_column::<Int64Array>(batch, 1, q)?;
        let source_keys = arrow_column::<StringArray>(batch, 2, q)?;
        let target_keys = arrow_column::<StringArray>(batch, 3, q)?;
        part.relations.reserve(batch.num_rows());
        for i in 0..batch.num_rows() {
            let (a, b) = (row(sources.value(i))?, row(targets.value(i))?);
            for (end, keys) in [(a, source_keys), (b, target_keys)] {
                let entity = &mut part.entities[end as usize];
                if entity.routing.is_none() && keys.is_valid(i) {
                    entity.routing = Some(keys.value(i).to_string());
                }
            }
            part.relations.push((a, b));
        }
        Ok(())
    })?;
    Ok(part)
}

/// Column `i` of a batch of `q`'s answer, as the Arrow array type `T`.
fn arrow_column<'a, T: arrow_array::Array + 'static>(
    batch: &'a arrow_array::RecordBatch,
    i: usize,
    q: &str,
) -> Result<&'a T, Error> {
    let column = batch.column(i);
    column.as_any().downcast_ref::<T>().ok_or_else(|| {
        Error::Engine(format!(
            "column {i} of ({q}) came as {}, not {}",
            column.data_type(),
            std::any::type_name::<T>()
        ))
    })
}

/// Runs `q` and hands its answer to `f` one Arrow batch at a time.
fn for_each_batch(
    conn: &kuzu::Connection,
    q: &str,
    mut f: impl FnMut(&arrow_array::RecordBatch) -> Result<(), Error>,
) -> Result<(), Error> {
    /// Rows per Arrow batch.
    const BATCH: usize = 64 * 1024;
    let engine = |e: kuzu::Error| Error::Engine(format!("{e} (in {q})"));
    let mut result = conn.query(q).map_err(engine)?;
    for batch in result.iter_arrow(BATCH).map_err(engine)? {
        f(&batch)?;
    }
    Ok(())
}
