//! The read-only check and the merge analysis on query texts.

use super::*;
use crate::query::cypher::{check_read_only, tokenize};

fn plan(q: &str) -> Result<Plan, Unmergeable> {
    let t = tokenize(q).unwrap();
    analyze(q, &t, &serde_json::Map::new())
}

fn read_only(q: &str) -> Result<(), String> {
    check_read_only(&tokenize(q).unwrap()).map_err(|e| e.0)
}

#[test]
fn writes_are_refused_but_look_alikes_are_not() {
    for q in [
        "CREATE (e:Entity {id: 'x'})",
        "MATCH (e:Entity) SET e.title = 'x'",
        "MATCH (e:Entity) DETACH DELETE e",
        "match (e:Entity) merge (f:Entity {id: 'y'})",
        "DROP TABLE Entity",
        "COPY Entity FROM 'x.csv'",
        "LOAD FROM 'x.csv' RETURN *",
        "CALL create_fts_index('Entity', 'i', ['title'])",
        "MATCH (e:Entity) RETURN e /* comment */ ; CREATE (x:Entity {id: 'y'})",
        "MATCH (c:Community) RETURN list_filter(c.entity_ids, x -> x IN $ids)",
    ] {
        assert!(read_only(q).is_err(), "{q}");
    }
    for q in [
        "MATCH (e:Entity) WHERE e.title = 'CREATE TABLE' RETURN e.set",
        "MATCH (e:Entity) RETURN e.id AS `delete`",
        "MATCH (e:Entity {set: 1}) RETURN count(*) // DROP",
        "CALL table_info('Entity') RETURN *",
        "MATCH (a:Entity)-[r:RELATED]->(b:Entity)-->(c) RETURN count(*)",
        "MATCH (a:Entity)<-[r]-(b)-[]->(c) RETURN a.id",
    ] {
        assert!(read_only(q).is_ok(), "{q}");
    }
}

#[test]
fn node_queries_hide_placeholders_and_keep_the_user_filter_grouped() {
    let p = plan("MATCH (e:Entity) WHERE e.degree > 1 OR e.degree < 0 RETURN e.id").unwrap();
    assert_eq!(
        p.shard_cypher,
        "MATCH (e:Entity) WHERE e.stub = false AND (e.degree > 1 OR e.degree < 0) RETURN e.id AS _c0"
    );
    let p = plan("MATCH (c:Chunk) RETURN c.id").unwrap();
    assert_eq!(p.shard_cypher, "MATCH (c:Chunk) RETURN c.id AS _c0");
}

#[test]
fn order_skip_limit_become_a_per_shard_window() {
    let p = plan(
        "MATCH (e:Entity) RETURN e.id AS id, e.degree ORDER BY e.degree DESC, id SKIP 5 LIMIT 10",
    )
    .unwrap();
    assert_eq!(
        p.shard_cypher,
        "MATCH (e:Entity) WHERE e.stub = false RETURN e.id AS _c0, e.degree AS _c1 ORDER BY _c1 DESC, _c0 LIMIT 15"
    );
    assert_eq!((p.skip, p.limit), (5, Some(10)));
    assert_eq!(p.columns, vec!["id", "e.degree"]);
    // Sorting by something not returned: a hidden column.
    let p = plan("MATCH (e:Entity) RETURN e.id ORDER BY e.title LIMIT 3").unwrap();
    assert!(
        p.shard_cypher
            .ends_with("RETURN e.id AS _c0, e.title AS _o0 ORDER BY _o0 LIMIT 3"),
        "{}",
        p.shard_cypher
    );
    assert_eq!(p.hidden, 1);
}

#[test]
fn aggregates_become_partials() {
    let p = plan("MATCH (e:Entity) RETURN e.type AS t, count(*) AS n, avg(e.degree), count(DISTINCT e.title) ORDER BY n DESC LIMIT 3").unwrap();
    assert_eq!(
        p.shard_cypher,
        "MATCH (e:Entity) WHERE e.stub = false RETURN e.type AS _c0, count(*) AS _c1, sum(e.degree) AS _c2, count(e.degree) AS _n2, collect(DISTINCT e.title) AS _c3"
    );
    assert_eq!(p.items[3], Item::Agg(Agg::CountDistinct, "e.title".into()));
}

#[test]
fn relations_are_counted_in_their_source_shard() {
    let p =
        plan("MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE r.weight > 1 RETURN a.title, b.id")
            .unwrap();
    assert_eq!(
        p.shard_cypher,
        "MATCH (a:Entity)-[r:RELATED]->(b:Entity) WHERE a.stub = false AND (r.weight > 1) RETURN a.title AS _c0, b.id AS _c1"
    );
    let p = plan("MATCH (a)<-[:RELATED]-(b) RETURN count(*)").unwrap();
    assert_eq!(
        p.shard_cypher,
        "MATCH (a)<-[_v1:RELATED]-(b) WHERE b.stub = false RETURN count(*) AS _c0"
    );
    assert!(plan("MATCH (a:Entity)-[r]->(b:Entity) RETURN b.title").is_err());
    assert!(plan("MATCH (a:Entity)-[r]->(b:Entity) RETURN b").is_err());
    assert!(plan("MATCH (a:Entity)-[r]->(b:Entity {title: 'x'}) RETURN a.id").is_err());
    assert!(plan("MATCH (a:Entity)-[r]->(b:Entity {id: 'x'}) RETURN a.id").is_ok());
}

#[test]
fn unmergeable_shapes_say_why() {
    for q in [
        "MATCH (e:Entity) WITH e RETURN e.id",
        "MATCH (a:Entity), (b:Entity) RETURN count(*)",
        "MATCH (a:Entity)-[r*1..2]->(b:Entity) RETURN count(*)",
        "MATCH (a:Entity)-[r]-(b:Entity) RETURN count(*)",
        "MATCH (e) RETURN count(*)",
        "MATCH (e:RelKey) RETURN count(*)",
        "MATCH (e:Entity) RETURN count(*) + 1",
        "MATCH (e:Entity) RETURN collect(e.id)",
        "MATCH (e:Entity) RETURN *",
        "MATCH (e:Entity) RETURN e.type, count(*) ORDER BY e.degree",
        "MATCH (e:Entity) WHERE (e)-[:RELATED]->(:Entity) RETURN e.id",
        "MATCH (e:Entity) RETURN e.id LIMIT 1 + 1",
        "RETURN 1",
        "MATCH (e:Entity) RETURN e.id UNION MATCH (c:Chunk) RETURN c.id",
    ] {
        let e = plan(q).unwrap_err();
        assert!(e.to_string().contains("per_shard"), "{q}: {e}");
    }
}

#[test]
fn string_operators_are_not_clauses() {
    let p =
        plan("MATCH (e:Entity) WHERE e.id STARTS WITH 'a' OR e.id ENDS WITH $x RETURN count(*)")
            .unwrap();
    assert!(p
        .shard_cypher
        .contains("(e.id STARTS WITH 'a' OR e.id ENDS WITH $x)"));
    assert_eq!(
        p.names_cypher,
        "MATCH (e:Entity) WHERE e.id STARTS WITH 'a' OR e.id ENDS WITH $x RETURN count(*) LIMIT 0"
    );
}

#[test]
fn tokenizer_reports_unterminated_input() {
    assert!(tokenize("MATCH (e) WHERE e.id = 'x").is_err());
    assert!(tokenize("MATCH (e) /* x").is_err());
    assert!(tokenize("RETURN $").is_err());
}
