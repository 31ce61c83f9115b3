//! How a Kuzu shard copy answers the cascade's reads ([`CascadeRead`]) and applies its steps
//! ([`Prune`]).
//!
//! "Cites any of these text units" is a scan: each list is unwound and its items looked up in
//! the parameter list (`list_contains`; Kuzu 0.11 has no list intersection, and a parameter
//! inside a list lambda trips an assertion). New lists are computed here, in Rust, and written
//! back with `SET`. A pruned entity's or relation's content hash is reset to 0, so that the next
//! upsert of the item, even one identical to what was stored before, rewrites it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use kuzu::{Connection, LogicalType, Value};

use super::cascade::{CascadeRead, CascadeRows, Prune, RelationKey, TextUnitUse};
use super::kuzu_apply::{delete_rel_keys, key_of};
use super::kuzu_index::{self, Indexed};
use super::kuzu_read::{execute_values, BoundedRead, QueryFailure};
use super::kuzu_readers::Session;
use super::kuzu_values::*;
use super::Error;

/// Runs a statement with its parameters and collects the rows: a reader's session inside a
/// read-only transaction, or the writer's connection inside a write's.
trait Statements<E>: FnMut(&str, Vec<(&str, Value)>) -> Result<Vec<Vec<Value>>, E> {}

impl<E, F: FnMut(&str, Vec<(&str, Value)>) -> Result<Vec<Vec<Value>>, E>> Statements<E> for F {}

const ENTITIES_CITING: &str = "MATCH (e:Entity) WHERE e.stub = false UNWIND e.text_unit_ids AS t \
     WITH e, t WHERE list_contains($units, t) RETURN e.id, e.text_unit_ids";
const RELATIONS_CITING: &str =
    "MATCH (a:Entity)-[x:RELATED]->(b:Entity) UNWIND x.text_unit_ids AS t \
     WITH x, t WHERE list_contains($units, t) RETURN x.id, x.source, x.target, x.text_unit_ids";
const RELATIONS_OF: &str = "UNWIND $ids AS i MATCH (e:Entity {id: i})-[x:RELATED]-() \
     RETURN x.id, x.source, x.target, x.source_routing, x.target_routing";
const COMMUNITIES_OF: &str =
    "UNWIND $ids AS i MATCH (c:Community) WHERE list_contains(c.entity_ids, i) \
     RETURN c.id, c.entity_ids";

impl BoundedRead for CascadeRead {
    type Rows = CascadeRows;

    fn answer(&self, session: &mut Session<'_>) -> Result<CascadeRows, QueryFailure> {
        let mut q =
            |query: &str, params: Vec<(&str, Value)>| execute_values(session, query, params);
        answer(&mut q, self)
    }

    fn too_large(mib: usize) -> String {
        format!("a shard's answer about the document passed {mib} MiB; the document cites too much to remove at once")
    }
}

fn answer<E>(q: &mut impl Statements<E>, read: &CascadeRead) -> Result<CascadeRows, E> {
    Ok(match read {
        CascadeRead::ChunksOf { document_id, ids } => {
            let mut found = BTreeSet::new();
            if let Some(document_id) = document_id {
                for r in q(
                    "MATCH (c:Chunk) WHERE c.document_id = $doc RETURN c.id",
                    vec![("doc", s(document_id))],
                )? {
                    found.insert(as_string(&r[0]));
                }
            }
            // One primary-key probe per id (an UNWIND ... MATCH scans the table).
            for id in ids {
                for r in q("MATCH (c:Chunk {id: $id}) RETURN c.id", vec![("id", s(id))])? {
                    found.insert(as_string(&r[0]));
                }
            }
            CascadeRows::Chunks(found.into_iter().collect())
        }
        CascadeRead::UseOf { text_unit_ids } => CascadeRows::Use(use_of(q, text_unit_ids)?),
        CascadeRead::CommunitiesOf { entity_ids } => {
            CascadeRows::Communities(communities_of(q, entity_ids)?.into_keys().collect())
        }
    })
}

/// What cites any of `units` in this copy.
fn use_of<E>(q: &mut impl Statements<E>, units: &[String]) -> Result<TextUnitUse, E> {
    let mut found = TextUnitUse::default();
    if units.is_empty() {
        return Ok(found);
    }
    let set: HashSet<&str> = units.iter().map(String::as_str).collect();
    for (id, list) in entities_citing(q, units)? {
        if list.iter().all(|t| set.contains(t.as_str())) {
            found.emptied_entities.push(id);
        } else {
            found.pruned_entities.push(id);
        }
    }
    for (key, list) in relations_citing(q, units)? {
        let only = list.iter().all(|t| set.contains(t.as_str()));
        found.relations.push((key, only));
    }
    if !found.emptied_entities.is_empty() {
        let (keys, routed) = relations_of(q, &found.emptied_entities)?;
        found.relations_of_emptied = keys.into_iter().collect();
        found.routed_ends = routed.into_iter().collect();
    }
    Ok(found)
}

/// Entities (not stubs) citing any of `units`, with their text units, by id.
fn entities_citing<E>(
    q: &mut impl Statements<E>,
    units: &[String],
) -> Result<BTreeMap<String, Vec<String>>, E> {
    citing(q, ENTITIES_CITING, units, |r| as_string(&r[0]))
}

/// Relation copies citing any of `units`, with their text units, by key.
fn relations_citing<E>(
    q: &mut impl Statements<E>,
    units: &[String],
) -> Result<BTreeMap<RelationKey, Vec<String>>, E> {
    citing(q, RELATIONS_CITING, units, |r| {
        (as_string(&r[0]), as_string(&r[1]), as_string(&r[2]))
    })
}

/// The rows of `query` (items citing `$units`, their text units in the last column), by `key`.
fn citing<K: Ord, E>(
    q: &mut impl Statements<E>,
    query: &str,
    units: &[String],
    key: impl Fn(&[Value]) -> K,
) -> Result<BTreeMap<K, Vec<String>>, E> {
    Ok(q(query, vec![("units", strings(units))])?
        .iter()
        .map(|r| (key(r), as_strings(&r[r.len() - 1])))
        .collect())
}

/// Relation copies attached to any of `ids` here (a self-loop once).
/// The relations attached to `ids`, and the routing keys of their routed ends.
fn relations_of<E>(
    q: &mut impl Statements<E>,
    ids: &[String],
) -> Result<(BTreeSet<RelationKey>, BTreeMap<String, String>), E> {
    let (mut keys, mut routed) = (BTreeSet::new(), BTreeMap::new());
    for r in q(RELATIONS_OF, vec![("ids", strings(ids))])? {
        let (source, target) = (as_string(&r[1]), as_string(&r[2]));
        for (end, key) in [(&source, &r[3]), (&target, &r[4])] {
            if let Some(key) = as_optional_string(key) {
                routed.insert(end.clone(), key);
            }
        }
        keys.insert((as_string(&r[0]), source, target));
    }
    Ok((keys, routed))
}

/// Communities holding any of `ids`, with their entity ids, by id.
fn communities_of<E>(
    q: &mut impl Statements<E>,
    ids: &[String],
) -> Result<BTreeMap<String, Vec<String>>, E> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    Ok(q(COMMUNITIES_OF, vec![("ids", strings(ids))])?
        .iter()
        .map(|r| (as_string(&r[0]), as_strings(&r[1])))
        .collect())
}

/// `list` without the ids in `gone`.
fn without(list: Vec<String>, gone: &HashSet<&str>) -> Vec<String> {
    list.into_iter()
        .filter(|t| !gone.contains(t.as_str()))
        .collect()
}

/// Rows `[id, list without the ids in gone]` of `(id, list)` pairs.
fn lists_without(
    lists: impl IntoIterator<Item = (String, Vec<String>)>,
    gone: &HashSet<&str>,
) -> Vec<Vec<Value>> {
    lists
        .into_iter()
        .map(|(id, list)| vec![s(&id), strings(&without(list, gone))])
        .collect()
}

/// Inside a write's transaction: applies one step of the cascade.
pub fn apply(conn: &Connection, prune: &Prune, dim: usize) -> Result<(), Error> {
    let mut q = |query: &str, params: Vec<(&str, Value)>| run(conn, query, params);
    match prune {
        Prune::Relations {
            text_unit_ids,
            entities,
        } => {
            let units: HashSet<&str> = text_unit_ids.iter().map(String::as_str).collect();
            let mut ends = BTreeSet::new();
            let (mut gone, mut gone_keys) = (Vec::new(), Vec::new());
            let mut set_units = None;
            for ((id, source, target), list) in relations_citing(&mut q, text_unit_ids)? {
                let left = without(list, &units);
                let key = key_of(&id, &source, &target);
                let endpoints = vec![
                    ("source", s(&source)),
                    ("target", s(&target)),
                    ("id", s(&id)),
                ];
                if left.is_empty() {
                    gone.push(vec![s(&source), s(&target), s(&id)]);
                    gone_keys.push(key);
                    ends.insert(source);
                    ends.insert(target);
                } else {
                    // Matching a relation by pattern costs a scan: one prepared statement.
                    if set_units.is_none() {
                        set_units = Some(
                            conn.prepare(
                                "MATCH (a:Entity {id: $source})-[x:RELATED]->(b:Entity {id: $target}) \
                                 WHERE x.id = $id SET x.text_unit_ids = $units",
                            )
                            .map_err(err)?,
                        );
                    }
                    let stmt = set_units.as_mut().expect("prepared above");
                    let mut params = endpoints;
                    params.push(("units", strings(&left)));
                    conn.execute(stmt, params).map_err(err)?;
                    run(
                        conn,
                        "MATCH (n:RelKey {key: $key}) SET n.hash = 0",
                        vec![("key", s(&key))],
                    )?;
                }
            }
            if !gone.is_empty() {
                // From the source only, the target by its stored id: matching both endpoints
                // in one pattern scans the node table per row.
                let fields = [
                    ("source", LogicalType::String),
                    ("target", LogicalType::String),
                    ("id", LogicalType::String),
                ];
                run(
                    conn,
                    "UNWIND $rows AS r MATCH (a:Entity {id: r.source})-[x:RELATED]->() \
                     WHERE x.id = r.id AND x.target = r.target DELETE x",
                    vec![("rows", rows(&fields, gone))],
                )?;
                run(
                    conn,
                    "UNWIND $keys AS k MATCH (n:RelKey {key: k}) DELETE n",
                    vec![("keys", strings(&gone_keys))],
                )?;
            }
            let stubs = held(conn, entities, true)?;
            ends.extend(delete_entities(conn, &stubs, true)?);
            delete_lone_stubs(conn, ends)
        }
        Prune::Entities {
            text_unit_ids,
            entities,
        } => {
            let here = held(conn, entities, false)?;
            let ends = delete_entities(conn, &here, false)?;
            if dim > 0 && !here.is_empty() {
                let ids: Vec<&str> = here.iter().map(String::as_str).collect();
                kuzu_index::delete_vectors(conn, Indexed::Entity, &ids)?;
            }
            delete_lone_stubs(conn, ends)?;
            if !text_unit_ids.is_empty() {
                let units: HashSet<&str> = text_unit_ids.iter().map(String::as_str).collect();
                set_lists(
                    conn,
                    "UNWIND $rows AS r MATCH (e:Entity {id: r.id}) SET e.text_unit_ids = r.list, e.hash = 0",
                    lists_without(entities_citing(&mut q, text_unit_ids)?, &units),
                )?;
            }
            Ok(())
        }
        Prune::Communities { entities } => {
            let gone: HashSet<&str> = entities.iter().map(String::as_str).collect();
            set_lists(
                conn,
                "UNWIND $rows AS r MATCH (c:Community {id: r.id}) SET c.entity_ids = r.list, c.stale = true",
                lists_without(communities_of(&mut q, entities)?, &gone),
            )
        }
        Prune::Remove { chunks, documents } => {
            run_for_ids(
                conn,
                "UNWIND $ids AS i MATCH (c:Chunk {id: i}) DELETE c",
                chunks,
            )?;
            if dim > 0 && !chunks.is_empty() {
                let ids: Vec<&str> = chunks.iter().map(String::as_str).collect();
                kuzu_index::delete_vectors(conn, Indexed::Chunk, &ids)?;
            }
            run_for_ids(
                conn,
                "UNWIND $ids AS i MATCH (d:Document {id: i}) DELETE d",
                documents,
            )
        }
    }
}

/// Runs `query` over `UNWIND $rows AS r` rows of `r.id` and `r.list` (a list of strings), unless
/// there are none.
fn set_lists(conn: &Connection, query: &str, lists: Vec<Vec<Value>>) -> Result<(), Error> {
    if lists.is_empty() {
        return Ok(());
    }
    let fields = [("id", LogicalType::String), ("list", string_list())];
    run(conn, query, vec![("rows", rows(&fields, lists))]).map(drop)
}

/// Those of `ids` held here as stubs (`stubs`) or as entities.
fn held(conn: &Connection, ids: &[String], stubs: bool) -> Result<Vec<String>, Error> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    Ok(run(
        conn,
        "UNWIND $ids AS i MATCH (e:Entity {id: i}) WHERE e.stub = $stub RETURN e.id",
        vec![("ids", strings(ids)), ("stub", Value::Bool(stubs))],
    )?
    .iter()
    .map(|r| as_string(&r[0]))
    .collect())
}

/// Deletes the entities `ids` (held here; `stubs` says as what) with their relation copies and
/// the copies' keys, set-wise; returns the relations' endpoints other than `ids`. Relations go
/// first, one direction at a time (see `kuzu_apply::delete_entity`).
fn delete_entities(
    conn: &Connection,
    ids: &[String],
    stubs: bool,
) -> Result<BTreeSet<String>, Error> {
    let mut ends = BTreeSet::new();
    if ids.is_empty() {
        return Ok(ends);
    }
    let params = || vec![("ids", strings(ids))];
    let mut keys = BTreeSet::new();
    for pattern in ["-[x:RELATED]->()", "<-[x:RELATED]-()"] {
        for r in run(
            conn,
            &format!("UNWIND $ids AS i MATCH (e:Entity {{id: i}}){pattern} RETURN x.id, x.source, x.target"),
            params(),
        )? {
            let (id, source, target) = (as_string(&r[0]), as_string(&r[1]), as_string(&r[2]));
            keys.insert(key_of(&id, &source, &target));
            ends.insert(source);
            ends.insert(target);
        }
    }
    delete_rel_keys(conn, &keys.into_iter().collect::<Vec<_>>())?;
    for pattern in ["-[x:RELATED]->()", "<-[x:RELATED]-()"] {
        run(
            conn,
            &format!("UNWIND $ids AS i MATCH (e:Entity {{id: i}}){pattern} DELETE x"),
            params(),
        )?;
    }
    run(
        conn,
        "UNWIND $ids AS i MATCH (e:Entity {id: i}) WHERE e.stub = $stub DELETE e",
        vec![("ids", strings(ids)), ("stub", Value::Bool(stubs))],
    )?;
    for id in ids {
        ends.remove(id);
    }
    Ok(ends)
}

/// Deletes the stubs among `ids` that no relation copy here is attached to any more (they stood
/// for the far end of relations that are gone).
fn delete_lone_stubs(conn: &Connection, ids: BTreeSet<String>) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let lone: Vec<String> = run(
        conn,
        "UNWIND $ids AS i MATCH (e:Entity {id: i}) WHERE e.stub = true \
         OPTIONAL MATCH (e)-[x:RELATED]-() RETURN e.id, count(x)",
        vec![("ids", strings(&ids))],
    )?
    .iter()
    .filter(|r| as_i64(&r[1]) == Some(0))
    .map(|r| as_string(&r[0]))
    .collect();
    run_for_ids(
        conn,
        "UNWIND $ids AS i MATCH (e:Entity {id: i}) WHERE e.stub = true DELETE e",
        &lone,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_steps_survive_the_log_encoding() {
        let op = super::super::WriteOp::Prune(Prune::Entities {
            text_unit_ids: vec!["t1".into()],
            entities: vec!["e1".into()],
        });
        let bytes = postcard::to_stdvec(&op).unwrap();
        // Appended after the three older variants: existing logs keep their meaning.
        assert_eq!(bytes[0], 3);
        assert_eq!(
            postcard::from_bytes::<super::super::WriteOp>(&bytes).unwrap(),
            op
        );
    }
}
