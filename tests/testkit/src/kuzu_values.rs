//! Building Kuzu parameter values (there is no serde for them), for the benchmarks' embedded
//! baseline and the tests' reference database — both use Kuzu directly, not torua's code: strings,
//! `UNWIND` rows, and GraphRAG entities and relations as such rows.

use kuzu::{LogicalType, Value};

use crate::graphrag::{Entity, Relation};

pub fn string(v: &str) -> Value {
    Value::String(v.to_string())
}

pub fn strings(v: &[String]) -> Value {
    Value::List(LogicalType::String, v.iter().map(|x| string(x)).collect())
}

/// A list of structs with `fields` (for `UNWIND $rows AS r ...`).
pub fn struct_rows(fields: &[(&str, LogicalType)], values: Vec<Vec<Value>>) -> Value {
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

/// The type of a list of strings.
pub fn string_list() -> LogicalType {
    LogicalType::List {
        child_type: Box::new(LogicalType::String),
    }
}

/// The fields of [`entity_row`]'s rows.
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

/// The fields of [`relation_row`]'s rows.
pub fn relation_fields() -> [(&'static str, LogicalType); 6] {
    [
        ("id", LogicalType::String),
        ("source", LogicalType::String),
        ("target", LogicalType::String),
        ("description", LogicalType::String),
        ("weight", LogicalType::Double),
        ("text_unit_ids", string_list()),
    ]
}

/// An entity as the parameter row of `UNWIND $rows AS r CREATE (:Entity ...)`.
pub fn entity_row(e: &Entity) -> Vec<Value> {
    vec![
        string(&e.id),
        string(&e.title),
        string(&e.kind),
        string(&e.description),
        strings(&e.text_unit_ids),
        Value::Int64(e.frequency),
        Value::Int64(e.degree),
    ]
}

/// A relation as the parameter row of `UNWIND $rows AS r ... CREATE (a)-[:RELATED ...]->(b)`.
pub fn relation_row(r: &Relation) -> Vec<Value> {
    vec![
        string(&r.id),
        string(&r.source),
        string(&r.target),
        string(&r.description),
        Value::Double(r.weight),
        strings(&r.text_unit_ids),
    ]
}
