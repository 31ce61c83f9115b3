//! Point reads: one entity with its relations, from embedded Kuzu and from torua (local and
//! remote copies), with nearest-rank percentiles per target.

use super::*;

/// The embedded lookup: entity plus outgoing and incoming relations, all values materialised.
pub(crate) struct Lookup<'c, 'db> {
    conn: &'c Connection<'db>,
    pub(crate) entity: kuzu::PreparedStatement,
    pub(crate) out: kuzu::PreparedStatement,
    pub(crate) inc: kuzu::PreparedStatement,
}

pub(crate) const Q_ENTITY: &str = "MATCH (e:Entity {id: $id}) RETURN e.*";
pub(crate) const Q_OUT: &str =
    "MATCH (a:Entity {id: $id})-[x:RELATED]->(b:Entity) RETURN x.id, a.id, b.id, x.description, x.weight, x.text_unit_ids";
pub(crate) const Q_IN: &str =
    "MATCH (a:Entity)-[x:RELATED]->(b:Entity {id: $id}) WHERE a.id <> b.id \
                    RETURN x.id, a.id, b.id, x.description, x.weight, x.text_unit_ids";

impl<'c, 'db> Lookup<'c, 'db> {
    pub(crate) fn new(conn: &'c Connection<'db>) -> Result<Self> {
        Ok(Lookup {
            conn,
            entity: conn.prepare(Q_ENTITY)?,
            out: conn.prepare(Q_OUT)?,
            inc: conn.prepare(Q_IN)?,
        })
    }

    /// Number of relations (None if the entity is absent).
    pub(crate) fn get(&mut self, id: &str) -> Result<Option<usize>> {
        let rows: Vec<Vec<KValue>> = self
            .conn
            .execute(&mut self.entity, vec![("id", string(id))])?
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let out: Vec<Vec<KValue>> = self
            .conn
            .execute(&mut self.out, vec![("id", string(id))])?
            .collect();
        let inc: Vec<Vec<KValue>> = self
            .conn
            .execute(&mut self.inc, vec![("id", string(id))])?
            .collect();
        Ok(Some(out.len() + inc.len()))
    }
}

/// The same lookup the way torua's `get_entity` does it today: a new connection and every statement
/// prepared for this one read.
pub(crate) fn lookup_per_call(db: &Database, id: &str) -> Result<Option<usize>> {
    let conn = Connection::new(db)?;
    let run = |q: &str| -> Result<Vec<Vec<KValue>>> {
        let mut stmt = conn.prepare(q)?;
        Ok(conn.execute(&mut stmt, vec![("id", string(id))])?.collect())
    };
    if run("MATCH (e:Entity {id: $id}) WHERE e.stub = false RETURN e.id, e.title, e.type, e.description, e.text_unit_ids, e.frequency, e.degree")?
        .is_empty()
    {
        return Ok(None);
    }
    Ok(Some(run(Q_OUT)?.len() + run(Q_IN)?.len()))
}

pub(crate) fn pct_json(p: Option<Pct>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => {
            json!({"n": p.n, "p50_us": r1(p.p50), "p90_us": r1(p.p90), "p99_us": r1(p.p99), "max_us": r1(p.max), "mean_us": r1(p.mean)})
        }
    }
}

pub(crate) struct ReadResult {
    embedded: Vec<f64>,
    per_call: Vec<f64>,
    torua: Vec<f64>,
    torua_local: Vec<f64>,
    torua_remote: Vec<f64>,
    pub(crate) mismatches: usize,
    relations_mean: f64,
}

/// Shards of which `node` holds an in-sync copy (reads of these are answered locally).
pub(crate) fn local_shards(cluster: &TestCluster, node: usize) -> Result<Vec<u64>> {
    let answer = cluster
        .node(node)
        .get_json("/cluster/shards", Duration::from_secs(60))?;
    let me = cluster.node(node).id.as_str();
    Ok(answer["copies"]
        .as_array()
        .map(|copies| {
            copies
                .iter()
                .filter(|c| c["node"] == me && c["in_sync"] == true)
                .filter_map(|c| c["shard"].as_u64())
                .collect()
        })
        .unwrap_or_default())
}

pub(crate) fn point_reads(
    args: &Args,
    db: &Database,
    cluster: &TestCluster,
    g: &Graph,
) -> Result<ReadResult> {
    let local = local_shards(cluster, 0)?;
    let conn = Connection::new(db)?;
    let mut lookup = Lookup::new(&conn)?;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let base = cluster.node(0).url("/graph/entities/");
    let mut rng = Rng(args.graph.seed ^ 0x005E_ED0F_4EAD);
    let mut r = ReadResult {
        embedded: vec![],
        per_call: vec![],
        torua: vec![],
        torua_local: vec![],
        torua_remote: vec![],
        mismatches: 0,
        relations_mean: 0.0,
    };
    let mut relations_total = 0usize;
    for i in 0..args.read_warmup + args.reads {
        let id = &g.entities[rng.below(g.entities.len())].id;
        let t = Instant::now();
        let want = lookup
            .get(id)?
            .with_context(|| format!("{id} missing in the embedded database"))?;
        let embedded = us(t.elapsed());
        let t = Instant::now();
        let per_call = lookup_per_call(db, id)?;
        let per_call_us = us(t.elapsed());
        let t = Instant::now();
        let resp = agent
            .get(&format!("{base}{id}"))
            .call()
            .with_context(|| format!("GET /graph/entities/{id}"))?;
        let body: Value = resp.into_json()?;
        let torua = us(t.elapsed());
        let got = body["relations"].as_array().map(Vec::len);
        if got != Some(want) || per_call != Some(want) || body["entity"]["id"] != id.as_str() {
            r.mismatches += 1;
            if r.mismatches <= 3 {
                log(format!("read mismatch for {id}: embedded {want} relations, per-call {per_call:?}, torua {got:?}"));
            }
        }
        if i < args.read_warmup {
            continue;
        }
        relations_total += want;
        r.embedded.push(embedded);
        r.per_call.push(per_call_us);
        r.torua.push(torua);
        if local.contains(&u64::from(shard_of(id, args.sizing.shards))) {
            r.torua_local.push(torua);
        } else {
            r.torua_remote.push(torua);
        }
    }
    r.relations_mean = relations_total as f64 / args.reads.max(1) as f64;
    Ok(r)
}

pub(crate) fn report_reads(out: &mut Out, target: &str, r: &ReadResult) -> Result<()> {
    let base = pct(&r.embedded);
    let ratio = |p: Option<Pct>| -> Option<f64> { Some(p?.p50 / base?.p50) };
    let rows: [(&str, &[f64]); 5] = [
        ("embedded Kuzu, prepared once", &r.embedded),
        ("embedded Kuzu, torua's per-read way", &r.per_call),
        (target, &r.torua),
        ("  of which: a copy on the node", &r.torua_local),
        ("  of which: a QUIC hop away", &r.torua_remote),
    ];
    println!(
        "\npoint reads through {target} ({} reads, mean {:.1} relations per entity)",
        r.embedded.len(),
        r.relations_mean
    );
    println!(
        "{:<40} {:>6} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "", "n", "p50 µs", "p90 µs", "p99 µs", "mean µs", "p50 ratio"
    );
    for (name, v) in rows {
        let p = pct(v);
        match p {
            None => println!("{name:<40} {:>6}", 0),
            Some(p) => println!(
                "{name:<40} {:>6} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.2}x",
                p.n,
                p.p50,
                p.p90,
                p.p99,
                p.mean,
                ratio(Some(p)).unwrap_or(f64::NAN)
            ),
        }
    }
    let torua = pct(&r.torua);
    let met = ratio(torua).is_some_and(|x| x <= 2.0);
    println!(
        "target p50 <= 2x embedded: {} ({:.2}x); relation-count mismatches: {}",
        if met { "met" } else { "NOT met" },
        ratio(torua).unwrap_or(f64::NAN),
        r.mismatches
    );
    out.emit(json!({
        "kind": "point_read", "target": target, "reads": r.embedded.len(), "relations_mean": r1(r.relations_mean),
        "embedded": pct_json(base), "embedded_per_read_prepare": pct_json(pct(&r.per_call)),
        "torua": pct_json(torua), "torua_local_copy": pct_json(pct(&r.torua_local)),
        "torua_remote_copy": pct_json(pct(&r.torua_remote)), "p50_ratio": ratio(torua),
        "target_p50_ratio_max": 2.0, "target_met": met, "mismatches": r.mismatches,
    }))
}
