//! Building Kuzu parameter values (there is no serde for them), for the benchmarks' embedded
//! baseline and the tests' reference database — both use Kuzu directly, not torua's code.

use kuzu::{LogicalType, Value};

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
