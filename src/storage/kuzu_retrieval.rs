//! How a Kuzu shard copy answers a [`RetrievalRead`]: the one place that knows the statements,
//! tables and index names retrieval reads through (`QUERY_VECTOR_INDEX` over `EntityVec` /
//! `ChunkVec`, `QUERY_FTS_INDEX` over `entity_title` / `entity_text` / `chunk_text`, primary-key
//! lookups, community reports), and that turns Kuzu's values into typed rows.
//!
//! Statements run like a user's query on the copy's query readers (`kuzu_read`): prepared once
//! per reader thread, inside a read-only transaction, cut off by Kuzu after the read's time
//! limit.

use kuzu::{LogicalType, Value};

use super::kuzu_read::{execute_values, BoundedRead, QueryFailure};
use super::kuzu_readers::Session;
use super::kuzu_values::{as_bool, as_f64, as_i64, as_string, s, strings};
use super::retrieval::{
    ChunkItem, CommunityReport, EntityItem, ItemKind, RetrievalRead, RetrievalRows, RetrievedItem,
    ScoredItem, TextIndex, VectorHit,
};

/// Kuzu's default HNSW search list: at 64 one 100k-vector index found 0.73 of the true top 10,
/// at 200 0.93 (bench/RESULTS.md). A search for more than this many uses `k`.
const MIN_EFS: usize = 200;

impl BoundedRead for RetrievalRead {
    type Rows = RetrievalRows;

    fn answer(&self, session: &mut Session<'_>) -> Result<RetrievalRows, QueryFailure> {
        answer(session, self)
    }

    fn too_large(mib: usize) -> String {
        format!("a shard's retrieval answer passed {mib} MiB")
    }
}

fn answer(session: &mut Session<'_>, read: &RetrievalRead) -> Result<RetrievalRows, QueryFailure> {
    Ok(match read {
        RetrievalRead::Nearest {
            items,
            embedding,
            k,
        } => {
            // Ids and distances only: joining the vector table's hits to their rows made Kuzu
            // scan the whole item table (stubs included; 34 ms vs 2 ms on 100k rows). Callers
            // read the rows of the global top k afterwards by primary key.
            let (table, index) = match items {
                ItemKind::Entities => ("EntityVec", "entity_vec"),
                ItemKind::Chunks => ("ChunkVec", "chunk_vec"),
            };
            let efs = (*k).max(MIN_EFS);
            let cypher = format!(
                "CALL QUERY_VECTOR_INDEX('{table}', '{index}', $embedding, {k}, efs := {efs}) \
                 WITH node AS v, distance RETURN v.id, distance"
            );
            let rows = execute_values(session, &cypher, vec![("embedding", vector(embedding))])?;
            RetrievalRows::Nearest(
                rows.iter()
                    .filter(|r| r.len() >= 2)
                    .map(|r| VectorHit {
                        id: as_string(&r[0]),
                        distance: number(&r[1]),
                    })
                    .collect(),
            )
        }
        RetrievalRead::TextSearch { index, words, k } => {
            // The words are a parameter: one prepared statement per index and k.
            let items = index.items();
            let name = match index {
                TextIndex::EntityTitle => "entity_title",
                TextIndex::EntityText => "entity_text",
                TextIndex::ChunkText => "chunk_text",
            };
            let cypher = format!(
                "CALL QUERY_FTS_INDEX('{}', '{name}', $text, top := {k}) WITH node AS n, score \
                 RETURN {}, score",
                table(items),
                returns(items)
            );
            let width = columns(items);
            let rows = execute_values(session, &cypher, vec![("text", s(words))])?;
            RetrievalRows::Scored(
                rows.iter()
                    .filter(|r| r.len() > width)
                    .map(|r| ScoredItem {
                        item: item(items, r),
                        score: number(&r[width]),
                    })
                    .collect(),
            )
        }
        RetrievalRead::Lookup { items, ids } => {
            // One primary-key lookup per id: an `UNWIND $ids ... MATCH` is a hash join over the
            // whole table (12-16 ms at 100k chunks against ~84 µs per lookup).
            let cypher = format!(
                "MATCH (n:{} {{id: $id}}) RETURN {}",
                table(*items),
                returns(*items)
            );
            let width = columns(*items);
            let mut found = Vec::new();
            for id in ids {
                for r in execute_values(session, &cypher, vec![("id", s(id))])? {
                    if r.len() >= width {
                        found.push(item(*items, &r));
                    }
                }
            }
            RetrievalRows::Items(found)
        }
        RetrievalRead::ReportsOf {
            entity_ids,
            level,
            limit,
        } => {
            if entity_ids.is_empty() {
                return Ok(RetrievalRows::Reports(vec![]));
            }
            let level_filter = if level.is_some() {
                " AND c.level = $level"
            } else {
                ""
            };
            // (A parameter inside a list lambda trips an assertion in Kuzu 0.11; UNWIND does
            // not.)
            let cypher = format!(
                "UNWIND $ids AS i MATCH (c:Community) WHERE list_contains(c.entity_ids, i){level_filter} \
                 WITH c, count(*) AS m \
                 RETURN c.id, c.title, c.level, c.rank, c.full_content, c.summary, c.stale, m \
                 ORDER BY m DESC, c.rank DESC, c.id LIMIT {limit}"
            );
            let mut params = vec![("ids", strings(entity_ids))];
            if let Some(l) = level {
                params.push(("level", Value::Int64(*l)));
            }
            let rows = execute_values(session, &cypher, params)?;
            RetrievalRows::Reports(
                rows.iter()
                    .filter(|r| r.len() >= 8)
                    .map(|r| CommunityReport {
                        matches: as_i64(&r[7]),
                        ..report(r)
                    })
                    .collect(),
            )
        }
        RetrievalRead::AllReports { level, limit } => {
            let level_filter = if level.is_some() {
                "WHERE c.level = $level "
            } else {
                ""
            };
            let cypher = format!(
                "MATCH (c:Community) {level_filter}\
                 RETURN c.id, c.title, c.level, c.rank, c.full_content, c.summary, c.stale \
                 ORDER BY c.rank DESC, c.id LIMIT {limit}"
            );
            let params = match level {
                Some(l) => vec![("level", Value::Int64(*l))],
                None => vec![],
            };
            let rows = execute_values(session, &cypher, params)?;
            RetrievalRows::Reports(
                rows.iter()
                    .filter(|r| r.len() >= 7)
                    .map(|r| report(r))
                    .collect(),
            )
        }
    })
}

fn table(items: ItemKind) -> &'static str {
    match items {
        ItemKind::Entities => "Entity",
        ItemKind::Chunks => "Chunk",
    }
}

/// The properties an item is read with (the first is its id), as `n.<property>`.
fn returns(items: ItemKind) -> &'static str {
    match items {
        ItemKind::Entities => "n.id, n.title, n.type, n.description, n.degree, n.text_unit_ids",
        ItemKind::Chunks => "n.id, n.text, n.n_tokens, n.document_id",
    }
}

/// How many columns [`returns`] has.
fn columns(items: ItemKind) -> usize {
    match items {
        ItemKind::Entities => 6,
        ItemKind::Chunks => 4,
    }
}

/// An item from the first [`columns`] values of a row in [`returns`]' order.
fn item(items: ItemKind, r: &[Value]) -> RetrievedItem {
    match items {
        ItemKind::Entities => RetrievedItem::Entity(EntityItem {
            id: as_string(&r[0]),
            title: as_string(&r[1]),
            kind: as_string(&r[2]),
            description: as_string(&r[3]),
            degree: as_i64(&r[4]).unwrap_or(0),
            text_unit_ids: string_items(&r[5]),
        }),
        ItemKind::Chunks => RetrievedItem::Chunk(ChunkItem {
            id: as_string(&r[0]),
            text: as_string(&r[1]),
            n_tokens: as_i64(&r[2]).unwrap_or(0),
            document_id: as_string(&r[3]),
        }),
    }
}

/// A report from `c.id, c.title, c.level, c.rank, c.full_content, c.summary, c.stale`.
fn report(r: &[Value]) -> CommunityReport {
    CommunityReport {
        id: as_string(&r[0]),
        title: as_string(&r[1]),
        level: as_i64(&r[2]).unwrap_or(0),
        rank: number(&r[3]),
        full_content: as_string(&r[4]),
        summary: as_string(&r[5]),
        stale: as_bool(&r[6]),
        matches: None,
    }
}

/// An embedding as the statement's `$embedding`: a list of doubles.
fn vector(embedding: &[f32]) -> Value {
    Value::List(
        LogicalType::Double,
        embedding
            .iter()
            .map(|x| Value::Double(f64::from(*x)))
            .collect(),
    )
}

/// A float column; one that is not finite reads as 0.
fn number(v: &Value) -> f64 {
    Some(as_f64(v)).filter(|f| f.is_finite()).unwrap_or(0.0)
}

/// The strings of a list column (null items left out).
fn string_items(v: &Value) -> Vec<String> {
    match v {
        Value::List(_, items) | Value::Array(_, items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
