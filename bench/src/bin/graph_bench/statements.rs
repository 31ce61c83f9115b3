//! The statements phase: single Cypher statements timed on embedded Kuzu, with the operators
//! of their plans.

use super::*;

pub(crate) fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64() * 1000.0))
}

pub(crate) fn statements(args: &Args, g: &Graph, dir: &Path, out: &mut Out) -> Result<()> {
    let (db, _) = ingest_copy(dir, g, args.sizing.memory_mb)?;
    let conn = Connection::new(&db)?;
    let mut rng = Rng(args.graph.seed ^ 0xD1A6);
    let rfields = relation_fields();
    let n = g.entities.len();
    let new: Vec<Vec<KValue>> = (0..args.batch)
        .map(|j| {
            let a = &g.entities[rng.below(n)].id;
            let b = &g.entities[rng.below(n)].id;
            vec![
                string(&format!("new-{j}")),
                string(a),
                string(b),
                string("a new relation"),
                KValue::Double(1.0),
                strings(&["tu-1".to_string()]),
            ]
        })
        .collect();
    let existing: Vec<Vec<KValue>> = g.relations[..args.batch.min(g.relations.len())]
        .iter()
        .map(relation_row)
        .collect();
    let mut distinct: Vec<&str> = g.relations[..args.batch.min(g.relations.len())]
        .iter()
        .map(|r| r.source.as_str())
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let sources: Vec<KValue> = distinct.iter().map(|x| string(x)).collect();
    let ids: Vec<KValue> = (0..args.batch)
        .map(|_| string(&g.entities[rng.below(n)].id))
        .collect();
    let rows = |v: &Vec<Vec<KValue>>| struct_rows(&rfields, v.clone());
    let create_rel = "CREATE (a)-[:RELATED {id: r.id, description: r.description, weight: r.weight, text_unit_ids: r.text_unit_ids, source: r.source, target: r.target}]->(b)";
    let cases: Vec<(&str, String, KValue, bool)> = vec![
        ("existing(): UNWIND $ids MATCH (n:Entity {id: i}) RETURN n.id", "UNWIND $rows AS i MATCH (n:Entity {id: i}) RETURN n.id".into(), KValue::List(LogicalType::String, ids.clone()), false),
        (
            "present check: UNWIND MATCH (a {id: r.source})-[x]->(b {id: r.target}) WHERE x.id = r.id (existing rows)",
            "UNWIND $rows AS r MATCH (a:Entity {id: r.source})-[x:RELATED]->(b:Entity {id: r.target}) WHERE x.id = r.id RETURN x.id".into(),
            rows(&existing),
            false,
        ),
        (
            "torua's CREATE: UNWIND MATCH (a {id: r.source}), (b {id: r.target}) CREATE",
            format!("UNWIND $rows AS r MATCH (a:Entity {{id: r.source}}), (b:Entity {{id: r.target}}) {create_rel}"),
            rows(&new),
            true,
        ),
        (
            "two MATCH clauses: UNWIND MATCH (a {id: r.source}) MATCH (b {id: r.target}) CREATE",
            format!("UNWIND $rows AS r MATCH (a:Entity {{id: r.source}}) MATCH (b:Entity {{id: r.target}}) {create_rel}"),
            rows(&new),
            true,
        ),
        (
            "WHERE form: UNWIND MATCH (a), (b) WHERE a.id = r.source AND b.id = r.target CREATE",
            format!("UNWIND $rows AS r MATCH (a:Entity), (b:Entity) WHERE a.id = r.source AND b.id = r.target {create_rel}"),
            rows(&new),
            true,
        ),
        (
            "present check, join on x.id: UNWIND MATCH (a)-[x]->(b) WHERE x.id = r.id AND a.id = r.source AND b.id = r.target",
            "UNWIND $rows AS r MATCH (a:Entity)-[x:RELATED]->(b:Entity) WHERE x.id = r.id AND a.id = r.source AND b.id = r.target RETURN x.id".into(),
            rows(&existing),
            false,
        ),
        (
            "present check by relation id: UNWIND MATCH ()-[x {id: r.id}]->() RETURN x.id, a.id, b.id",
            "UNWIND $rows AS r MATCH (a:Entity)-[x:RELATED {id: r.id}]->(b:Entity) RETURN x.id, a.id, b.id".into(),
            rows(&existing),
            false,
        ),
        (
            "present check via the sources' adjacency: UNWIND $ids MATCH (a {id: i})-[x]->(b) RETURN a.id, x.id, b.id",
            "UNWIND $rows AS i MATCH (a:Entity {id: i})-[x:RELATED]->(b:Entity) RETURN a.id, x.id, b.id".into(),
            KValue::List(LogicalType::String, sources.clone()),
            false,
        ),
        (
            "WITH form: UNWIND MATCH (a {id: r.source}) WITH a, r MATCH (b {id: r.target}) CREATE",
            format!("UNWIND $rows AS r MATCH (a:Entity {{id: r.source}}) WITH a, r MATCH (b:Entity {{id: r.target}}) {create_rel}"),
            rows(&new),
            true,
        ),
        (
            "COPY RELATED FROM (UNWIND $rows RETURN ...)",
            "COPY RELATED FROM (UNWIND $rows AS r RETURN r.source, r.target, r.id, r.description, r.weight, r.text_unit_ids, r.source, r.target)".into(),
            rows(&new),
            true,
        ),
    ];
    println!("\nstatements on one embedded database holding {} entities and {} relations; {} rows per statement", n, g.relations.len(), args.batch);
    for (name, q, param, write) in cases {
        let plan: Vec<String> = match conn.prepare(&format!("EXPLAIN {q}")) {
            Ok(mut stmt) => conn
                .execute(&mut stmt, vec![("rows", param.clone())])
                .map(row_texts)
                .unwrap_or_else(|e| vec![format!("EXPLAIN failed: {e}")]),
            Err(e) => vec![format!("EXPLAIN failed: {e}")],
        };
        if write {
            conn.query("BEGIN TRANSACTION")?;
        }
        let result = timed(|| {
            let mut stmt = conn.prepare(&q)?;
            let r: Vec<Vec<KValue>> = conn
                .execute(&mut stmt, vec![("rows", param.clone())])?
                .collect();
            Ok(r.len())
        });
        if write {
            // What the write did, seen from inside its transaction.
            let total = count(&conn, "MATCH ()-[r:RELATED]->() RETURN count(*)")?;
            println!("{:>17} relations in the transaction after: {total}", "");
        }
        if write {
            let _ = conn.query("ROLLBACK");
        }
        match result {
            Ok((returned, ms)) => {
                let rate = args.batch as f64 / (ms / 1000.0);
                println!(
                    "{:>10.1} ms {:>10.0} rows/s  {name} (returned {returned})",
                    ms, rate
                );
                out.emit(json!({"kind": "statement", "statement": name, "ms": ms, "rows_per_s": rate, "plan": plan}))?;
            }
            Err(e) => {
                println!("{:>10} {:>17}  {name}: {e:#}", "failed", "");
                out.emit(json!({"kind": "statement", "statement": name, "error": format!("{e:#}"), "plan": plan}))?;
            }
        }
        if let Some(text) = plan.first() {
            println!("      plan: {}", operators(text));
        }
    }
    // The point-read queries, one id at a time (prepared once), averaged over 200 ids.
    let mut lookup = Lookup::new(&conn)?;
    let mut sums = [0.0f64; 3];
    let reads = 200;
    for _ in 0..reads {
        let id = string(&g.entities[rng.below(n)].id);
        for (k, stmt) in [&mut lookup.entity, &mut lookup.out, &mut lookup.inc]
            .into_iter()
            .enumerate()
        {
            let t = Instant::now();
            let _: Vec<Vec<KValue>> = conn.execute(stmt, vec![("id", id.clone())])?.collect();
            sums[k] += t.elapsed().as_secs_f64() * 1e6;
        }
    }
    for (k, q) in [Q_ENTITY, Q_OUT, Q_IN].iter().enumerate() {
        let mean = sums[k] / reads as f64;
        println!("{mean:>10.0} µs mean  {q}");
        let plan: Vec<String> = conn
            .query(&format!("EXPLAIN {}", q.replace("$id", "'ent-1'")))
            .map(row_texts)
            .unwrap_or_default();
        if let Some(text) = plan.first() {
            println!("      plan: {}", operators(text));
        }
        out.emit(json!({"kind": "read_statement", "statement": q, "mean_us": mean, "plan": plan}))?;
    }
    Ok(())
}

/// The operator names of a Kuzu plan (`SCAN_NODE_TABLE[0]` ...), root first, on one line.
pub(crate) fn operators(plan: &str) -> String {
    let mut ops = Vec::new();
    for cell in plan.split('│') {
        let t = cell.trim();
        if let Some(open) = t.find('[') {
            let (name, rest) = t.split_at(open);
            let digits = rest.trim_start_matches('[').trim_end_matches(']');
            if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                && !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && rest.ends_with(']')
            {
                ops.push(t.to_string());
            }
        }
    }
    ops.join(" <- ")
}

/// Each row as its values' text, separated by spaces (an `EXPLAIN`'s plan).
fn row_texts(rows: impl Iterator<Item = Vec<KValue>>) -> Vec<String> {
    rows.map(|row| {
        row.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    })
    .collect()
}
