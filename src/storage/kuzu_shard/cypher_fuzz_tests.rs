//! Fuzzing the read-only check against a real shard. Statements are generated from fragments:
//! reads, writes in every spelling and position, keywords hidden where they are not keywords
//! (strings, comments, quoted names, properties, map keys), list lambdas and unbound parameters
//! (both have crashed Kuzu 0.11). Every statement with a write, a lambda or an unbound parameter
//! must be refused; every statement that passes runs on a real Kuzu copy, which must answer
//! (rows or an error, not a crash) and hold exactly what it held before.
//!
//! `make test` runs a bounded number of cases with a fixed seed; longer runs:
//! `TORUA_FUZZ_CASES=20000 TORUA_FUZZ_SEED=$RANDOM cargo test --release -p torua --lib cypher_fuzz`.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use super::*;
use crate::graph::model::{Batch, Relation};
use crate::storage::cypher::{check_params_given, check_read_only, tokenize};
use crate::storage::ReadScope;

/// Reads that are valid alone or in sequence often enough to reach Kuzu's binder and executor.
const READS: &[&str] = &[
    "MATCH (e:Entity)",
    "MATCH (a:Entity)-[r:RELATED]->(b:Entity)",
    "OPTIONAL MATCH (e)-[:RELATED]->(f:Entity)",
    "MATCH p = (a:Entity)-[:RELATED*1..2]->(b:Entity)",
    "WHERE e.stub = false",
    "WHERE e.title = 'CREATE (x) SET x.a = 1 DELETE x'",
    "WHERE e.description CONTAINS \"DROP TABLE Entity\"",
    "WITH e",
    "WITH e, count(*) AS n",
    "UNWIND [1, 2, 3] AS x",
    "UNWIND range(1, 3) AS x",
    "RETURN e.id",
    "RETURN e.set, e.`create`, e.delete",
    "RETURN {create: 1, merge: 'set', `drop`: 2} AS m",
    "RETURN count(*)",
    "RETURN x",
    "RETURN *",
    "RETURN $p",
    "RETURN size($q)",
    "RETURN 1 // DELETE everything\n",
    "RETURN 2 /* SET e.x = 1 */",
    "MATCH (n:`CREATE`)",
    "ORDER BY e.id",
    "LIMIT 3",
    "SKIP 1",
    "CALL show_tables() RETURN *",
    "CALL table_info('Entity') RETURN *",
    "CALL db_version() RETURN *",
    "RETURN list_contains([1, 2], 2)",
    "RETURN [x IN [1, 2, 3] WHERE x > 1]",
    "RETURN CASE WHEN 1 = 1 THEN 'set' ELSE 'merge' END",
    "RETURN 'it''s', \"a\\\"b\"",
    ";",
];

/// Statements that write, change the schema or settings, or reach outside the database.
const WRITES: &[&str] = &[
    "CREATE (x:Entity {id: 'fz', stub: false})",
    "MERGE (x:Entity {id: 'fz'})",
    "SET e.title = 'fz'",
    "SET e += {title: 'fz'}",
    "DELETE e",
    "DETACH DELETE e",
    "REMOVE e.title",
    "DROP TABLE Chunk",
    "ALTER TABLE Entity ADD fz INT64",
    "ALTER TABLE Entity RENAME TO Ent",
    "COPY Entity FROM '/tmp/torua-fuzz.csv'",
    "COPY (MATCH (e:Entity) RETURN e.id) TO '/tmp/torua-fuzz.csv'",
    "LOAD FROM '/tmp/torua-fuzz.csv' RETURN *",
    "INSTALL json",
    "LOAD EXTENSION json",
    "UNINSTALL json",
    "ATTACH '/tmp/torua-fuzz.kz' AS fz (dbtype kuzu)",
    "USE fz",
    "CHECKPOINT",
    "BEGIN TRANSACTION",
    "COMMIT",
    "ROLLBACK",
    "EXPORT DATABASE '/tmp/torua-fuzz'",
    "IMPORT DATABASE '/tmp/torua-fuzz'",
    "TRUNCATE Entity",
    "CALL threads = 1",
    "CALL create_fts_index('Entity', 'fz', ['title'])",
    "CALL drop_fts_index('Entity', 'entity_title')",
    "CALL create_vector_index('EntityVec', 'fz', 'embedding')",
    "CALL project_graph('fz', ['Entity'], ['RELATED'])",
    "CALL clear_warnings()",
    "FOREACH (x IN [1] | CREATE (:Entity {id: 'fz'}))",
    "MATCH (e:Entity) SET e.stub = true",
    "CREATE NODE TABLE Fz(id STRING, PRIMARY KEY(id))",
];

/// Shapes refused because they crashed Kuzu 0.11 in torua (list lambdas over outer variables,
/// in every spelling: `x -> ...`, `(a, b) -> ...`) or are reported to (a parameter without a
/// value; Kuzu answers null for it in our runs, but the statement is wrong either way).
const CRASHERS: &[&str] = &[
    "RETURN list_transform([1, 2], x -> x + 1)",
    "MATCH (e:Entity) RETURN list_filter([1, 2], y->y > e.degree)",
    "RETURN list_reduce([1, 2], (a, b) -> a + b)",
    "RETURN all(x IN [1] WHERE list_any([1], z -> z = x))",
    "RETURN $unbound",
    "MATCH (e:Entity) WHERE e.id = $missing RETURN e",
];

/// Ways to write the space between two fragments (or inside a write).
const GAPS: &[&str] = &[" ", "\n", "\t", " /* gap */ ", " // gap\n", "  "];

#[derive(Debug, Clone)]
struct Statement {
    text: String,
    /// It holds a write or a crashing shape in a keyword position, so the check must refuse it.
    must_refuse: bool,
}

fn spelled(word: &str, case: u8) -> String {
    match case % 3 {
        0 => word.to_string(),
        1 => word.to_ascii_lowercase(),
        _ => word
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect(),
    }
}

fn statement() -> impl Strategy<Value = Statement> {
    let fragment = prop_oneof![
        6 => (0..READS.len()).prop_map(|i| (READS[i].to_string(), false)),
        2 => (0..WRITES.len(), any::<u8>()).prop_map(|(i, case)| (spelled(WRITES[i], case), true)),
        1 => (0..CRASHERS.len()).prop_map(|i| (CRASHERS[i].to_string(), true)),
    ];
    prop::collection::vec((fragment, 0..GAPS.len()), 1..6).prop_map(|parts| {
        let mut text = String::new();
        let mut must_refuse = false;
        for ((fragment, refuse), gap) in parts {
            // A gap that is a line comment must not swallow the fragment after it.
            text.push_str(GAPS[gap]);
            text.push_str(&fragment.replace(' ', GAPS[gap].trim_end_matches("// gap\n")));
            must_refuse |= refuse;
        }
        Statement { text, must_refuse }
    })
}

fn check(text: &str) -> Result<(), String> {
    let tokens = tokenize(text).map_err(|e| e.0)?;
    check_read_only(&tokens).map_err(|e| e.0)?;
    check_params_given(&tokens, |name| name == "p" || name == "q").map_err(|e| e.0)
}

fn config(default_cases: u32) -> Config {
    let cases = std::env::var("TORUA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let seed = std::env::var("TORUA_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}

/// The check alone, on many generated statements: refusals are sound.
#[test]
fn cypher_fuzz_writes_and_crashers_are_refused() {
    let mut runner = TestRunner::new(config(5_000));
    runner
        .run(&statement(), |s| {
            if s.must_refuse {
                prop_assert!(check(&s.text).is_err(), "passed the check: {:?}", s.text);
            }
            Ok(())
        })
        .unwrap();
}

/// The tokenizer and the check on arbitrary text: an answer, never a panic.
#[test]
fn cypher_fuzz_arbitrary_text_never_panics() {
    let mut runner = TestRunner::new(config(5_000));
    let text = prop_oneof![
        any::<String>(),
        "[ -~\\n\\t\u{e9}\u{1F600}]{0,80}",
        "[`'\"$/*\\\\ a-zA-Z0-9().:;\\->\\[\\]{}]{0,40}",
    ];
    runner
        .run(&text, |text| {
            let _ = check(&text);
            Ok(())
        })
        .unwrap();
}

/// What passes the check runs on a real copy and changes nothing in it.
#[test]
fn cypher_fuzz_what_passes_runs_and_writes_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shard = KuzuShard::open(
        &dir.path().join("shard-0.kz"),
        0,
        &StoreConfig::for_budget(256, 1, 1, 0),
        Arc::new(ApplyGate::new(2)),
    )
    .unwrap();
    let entity = |id: &str, title: &str| Entity {
        id: id.into(),
        title: title.into(),
        kind: "PERSON".into(),
        description: format!("{title} CREATE SET DROP TABLE Entity"),
        text_unit_ids: vec![],
        frequency: 1,
        degree: 1,
        embedding: None,
        routing: None,
    };
    let relation = |id: &str, source: &str, target: &str| Relation {
        id: id.into(),
        source: source.into(),
        target: target.into(),
        description: "knows".into(),
        weight: 1.0,
        text_unit_ids: vec![],
        source_routing: None,
        target_routing: None,
    };
    let before = rt.block_on(async {
        let batch = Batch {
            entities: vec![
                entity("a", "ALICE"),
                entity("b", "BOB"),
                entity("c", "CAROL"),
            ],
            relations: vec![relation("r1", "a", "b"), relation("r2", "b", "c")],
            ..Batch::default()
        };
        shard.write(1, WriteOp::Upsert(batch)).await.unwrap();
        shard.checksum().await.unwrap()
    });
    let mut runner = TestRunner::new(config(1_000));
    let ran = std::cell::Cell::new(0usize);
    runner
        .run(&statement(), |s| {
            if check(&s.text).is_err() {
                return Ok(());
            }
            ran.set(ran.get() + 1);
            let query = ShardQuery {
                cypher: s.text.clone(),
                params_json: r#"{"p": 1, "q": "torua"}"#.into(),
                timeout_ms: 2_000,
                names_cypher: None,
                prepare_only: false,
            };
            // Rows or an error: both are answers; a crash ends the test process.
            let _ = rt.block_on(shard.user_query(query, 1 << 20, &ReadScope::strict()));
            let now = rt.block_on(shard.checksum()).unwrap();
            prop_assert_eq!(&now, &before, "changed the copy: {:?}", s.text);
            Ok(())
        })
        .unwrap();
    println!(
        "{} generated statements passed the check and ran",
        ran.get()
    );
    assert!(ran.get() > 0, "no generated statement passed the check");
}
