//! The graph algorithms' oracle: a graph of string ids in one embedded Kuzu database, projected
//! for Kuzu's `algo` functions, and the modularity of a partition. Shared by the in-process
//! checks of `src/query/algorithms` and the cluster test.

use std::collections::HashMap;
use std::hash::Hash;

use kuzu::{Connection, Database, LogicalType, SystemConfig, Value};

/// A small in-memory database for an oracle run: 256 MiB of buffer pool, one thread.
pub fn oracle_db() -> Database {
    Database::in_memory(
        SystemConfig::default()
            .buffer_pool_size(1 << 28)
            .max_num_threads(1)
            .max_db_size(1 << 30),
    )
    .expect("an in-memory Kuzu database")
}

/// `ids` as nodes `N` and `relations` as `R` in `db`, projected as graph `G`.
pub fn projected_graph<'a>(
    db: &'a Database,
    ids: &[String],
    relations: &[(String, String)],
) -> Connection<'a> {
    let conn = Connection::new(db).expect("a connection");
    conn.query("CREATE NODE TABLE N(id STRING, PRIMARY KEY(id))")
        .expect("node table");
    conn.query("CREATE REL TABLE R(FROM N TO N)")
        .expect("rel table");
    let list = |items: Vec<Value>| Value::List(LogicalType::String, items);
    let mut stmt = conn
        .prepare("UNWIND $ids AS i CREATE (:N {id: i})")
        .expect("prepared");
    conn.execute(
        &mut stmt,
        vec![(
            "ids",
            list(ids.iter().map(|i| Value::String(i.clone())).collect()),
        )],
    )
    .expect("nodes created");
    let mut stmt = conn
        .prepare("MATCH (x:N {id: $a}), (y:N {id: $b}) CREATE (x)-[:R]->(y)")
        .expect("prepared");
    for (a, b) in relations {
        conn.execute(
            &mut stmt,
            vec![
                ("a", Value::String(a.clone())),
                ("b", Value::String(b.clone())),
            ],
        )
        .expect("relation created");
    }
    conn.query("CALL project_graph('G', ['N'], ['R'])")
        .expect("projected");
    conn
}

/// The rows of `query`, each an id and one value.
pub fn id_values(conn: &Connection, query: &str) -> Vec<(String, Value)> {
    conn.query(query)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .map(|row| {
            let mut row = row.into_iter();
            let Some(Value::String(id)) = row.next() else {
                panic!("{query}: an id first")
            };
            (id, row.next().expect("a value"))
        })
        .collect()
}

/// Modularity of a partition (entity → its community) with every relation an undirected edge of
/// weight 1, as Kuzu's `louvain` counts it.
pub fn modularity<C: Hash + Eq>(
    relations: &[(String, String)],
    community: &HashMap<String, C>,
) -> f64 {
    let m2 = 2.0 * relations.len() as f64;
    let mut inside: HashMap<&C, f64> = HashMap::new();
    let mut tot: HashMap<&C, f64> = HashMap::new();
    for (a, b) in relations {
        let (ca, cb) = (&community[a], &community[b]);
        *tot.entry(ca).or_default() += 1.0;
        *tot.entry(cb).or_default() += 1.0;
        if ca == cb {
            *inside.entry(ca).or_default() += 2.0;
        }
    }
    tot.iter()
        .map(|(c, t)| inside.get(c).copied().unwrap_or(0.0) / m2 - (t / m2) * (t / m2))
        .sum()
}
