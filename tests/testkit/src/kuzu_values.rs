//! Building Kuzu parameter values (there is no serde for them), for the benchmarks' embedded
//! baseline and the tests' reference database — both run Kuzu directly, not torua's shards:
//! strings, `UNWIND` rows and relations as such rows (torua's own builders), and GraphRAG
//! entities as such rows.

use kuzu::Value;

use crate::graphrag::Entity;

/// The fields of [`entity_row`]'s rows are torua's [`entity_fields`].
pub use torua::storage::kuzu_values::{
    entity_fields, relation_fields, relation_row, rows as struct_rows, s as string, string_list,
    strings,
};

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
