//! Building Kuzu parameter values (there is no serde for them), for the benchmarks' embedded
//! baseline and the tests' reference database — both run Kuzu directly, not torua's shards:
//! strings, `UNWIND` rows and relations as such rows (torua's own builders), and GraphRAG
//! entities as such rows.

/// Rows of torua's own [`entity_fields`] and [`relation_fields`], built as the shards build them.
pub use torua::storage::kuzu_values::{
    entity_fields, entity_row, relation_fields, relation_row, rows as struct_rows, s as string,
    string_list, strings,
};
