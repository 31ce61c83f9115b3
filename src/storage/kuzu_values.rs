//! Converting between Rust values and Kuzu's `Value` (there is no serde for it), and running a
//! prepared statement with parameters. Public for the test kit, whose reference databases take
//! the same parameter rows as the shards.

use super::Error;
use crate::graph::model::{Entity, Relation};
use kuzu::{Connection, LogicalType, Value};

pub fn err(e: kuzu::Error) -> Error {
    classify(e.to_string())
}

/// Prepares and runs `query` with `params`, collecting the rows.
pub fn run(
    conn: &Connection,
    query: &str,
    params: Vec<(&str, Value)>,
) -> Result<Vec<Vec<Value>>, Error> {
    let mut stmt = conn.prepare(query).map_err(|e| engine_error(e, query))?;
    let result = conn
        .execute(&mut stmt, params)
        .map_err(|e| engine_error(e, query))?;
    Ok(result.collect())
}

/// Kuzu's error from running `query` as a storage error (see [`classify`]).
fn engine_error(e: kuzu::Error, query: &str) -> Error {
    classify(format!("{e} (in {query})"))
}

/// Kuzu's error message as a storage error: [`Error::OutOfMemory`] when its buffer pool was
/// full, else [`Error::Engine`]. The `kuzu` crate reports only text; Kuzu names the exception's
/// class in it, and this is the one place that reads it.
fn classify(text: String) -> Error {
    if text.contains("Buffer manager exception") {
        Error::OutOfMemory(text)
    } else {
        Error::Engine(text)
    }
}

/// Runs `query` with `$ids` bound to `ids`, unless there are none (a write per id, such as
/// `UNWIND $ids AS i MATCH (n:T {id: i}) DELETE n`).
pub fn run_for_ids(conn: &Connection, query: &str, ids: &[String]) -> Result<(), Error> {
    if !ids.is_empty() {
        run(conn, query, vec![("ids", strings(ids))])?;
    }
    Ok(())
}

pub fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

pub fn strings(v: &[String]) -> Value {
    Value::List(LogicalType::String, v.iter().map(|x| s(x)).collect())
}

pub fn string_list_of(ids: &[&str]) -> Value {
    Value::List(LogicalType::String, ids.iter().map(|x| s(x)).collect())
}

/// A content hash stored as Kuzu INT64.
pub fn hash_value(h: u64) -> Value {
    Value::Int64(h as i64)
}

pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int64(i) => Some(*i),
        Value::Int32(i) => Some(i64::from(*i)),
        Value::UInt64(i) => Some(*i as i64),
        _ => None,
    }
}

pub fn as_bool(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

pub fn as_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

pub fn as_strings(v: &Value) -> Vec<String> {
    match v {
        Value::List(_, items) | Value::Array(_, items) => items.iter().map(as_string).collect(),
        _ => Vec::new(),
    }
}

pub fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Double(d) => *d,
        Value::Float(f) => f64::from(*f),
        _ => 0.0,
    }
}

pub fn as_floats(v: &Value) -> Option<Vec<f32>> {
    match v {
        Value::List(_, items) | Value::Array(_, items) => Some(
            items
                .iter()
                .map(|x| match x {
                    Value::Float(f) => *f,
                    Value::Double(d) => *d as f32,
                    _ => 0.0,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// A list of structs as one parameter (for `UNWIND $rows AS r`).
pub fn rows(fields: &[(&str, LogicalType)], values: Vec<Vec<Value>>) -> Value {
    let ty = LogicalType::Struct {
        fields: fields
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect(),
    };
    Value::List(
        ty,
        values
            .into_iter()
            .map(|vals| {
                Value::Struct(
                    fields
                        .iter()
                        .map(|(n, _)| n.to_string())
                        .zip(vals)
                        .collect(),
                )
            })
            .collect(),
    )
}

pub fn string_list() -> LogicalType {
    LogicalType::List {
        child_type: Box::new(LogicalType::String),
    }
}

/// The columns of a GraphRAG entity (a shard's `Entity` rows add their own after these).
pub fn entity_fields() -> [(&'static str, LogicalType); 7] {
    [
        ("id", LogicalType::String),
        ("title", LogicalType::String),
        ("type", LogicalType::String),
        ("description", LogicalType::String),
        ("text_unit_ids", string_list()),
        ("frequency", LogicalType::Int64),
        ("degree", LogicalType::Int64),
    ]
}

/// A GraphRAG entity as a parameter row of [`entity_fields`] (a shard's rows add their own
/// columns after these).
pub fn entity_row(e: &Entity) -> Vec<Value> {
    vec![
        s(&e.id),
        s(&e.title),
        s(&e.kind),
        s(&e.description),
        strings(&e.text_unit_ids),
        Value::Int64(e.frequency),
        Value::Int64(e.degree),
    ]
}

/// The fields of [`relation_row`]'s rows (statements read them by name: `r.source`, ...).
pub fn relation_fields() -> [(&'static str, LogicalType); 8] {
    [
        ("id", LogicalType::String),
        ("source", LogicalType::String),
        ("target", LogicalType::String),
        ("description", LogicalType::String),
        ("weight", LogicalType::Double),
        ("text_unit_ids", string_list()),
        ("source_routing", LogicalType::String),
        ("target_routing", LogicalType::String),
    ]
}

/// A relation as a parameter row (for `UNWIND $rows AS r ... CREATE (a)-[:RELATED ...]->(b)`).
pub fn relation_row(r: &Relation) -> Vec<Value> {
    vec![
        s(&r.id),
        s(&r.source),
        s(&r.target),
        s(&r.description),
        Value::Double(r.weight),
        strings(&r.text_unit_ids),
        optional_string(r.source_routing.as_deref()),
        optional_string(r.target_routing.as_deref()),
    ]
}

/// A string, or a null string.
pub fn optional_string(v: Option<&str>) -> Value {
    v.map_or(Value::Null(LogicalType::String), s)
}

/// A string column's value, `None` when null.
pub fn as_optional_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// An embedding as Kuzu's list text (`[0.1,-2.5,...]`), cast to `FLOAT[n]` by the statement.
/// One string per row instead of one Kuzu value per number: a list parameter of 384 floats costs
/// Kuzu ~100 bytes per number, which at 100k rows is gigabytes the allocator keeps.
pub fn embedding_value(e: &Option<Vec<f32>>) -> Value {
    match e {
        Some(v) => {
            let mut text = String::with_capacity(v.len() * 12 + 2);
            text.push('[');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                // `{}` prints the shortest text that reads back as the same f32.
                text.push_str(&format!("{x:?}"));
            }
            text.push(']');
            Value::String(text)
        }
        None => Value::Null(LogicalType::String),
    }
}
