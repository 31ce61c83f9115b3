//! The embedded-Kuzu baseline: the corpus loaded into a Kuzu database in this process (CSV,
//! vector and full-text indexes), and the same retrieval computed there.

use super::*;
use torua_testkit::graphrag::WithEmbedding as _;

/// Room for the baseline database (vectors and indexes of the full-size corpus).
const MAX_DB_SIZE: u64 = 1 << 37;

/// Opens the baseline's database at `path`, its buffer pool `--embedded-memory-mb`.
pub(crate) fn open_baseline(a: &Args, path: &Path) -> Result<Database> {
    open_embedded(path, a.embedded_memory_mb, MAX_DB_SIZE)
}

pub(crate) fn schema(dim: usize) -> Vec<String> {
    vec![
        "CREATE NODE TABLE Entity(id STRING, title STRING, type STRING, description STRING, \
         text_unit_ids STRING[], frequency INT64, degree INT64, PRIMARY KEY(id))"
            .into(),
        format!("CREATE NODE TABLE EntityVec(id STRING, embedding FLOAT[{dim}], PRIMARY KEY(id))"),
        "CREATE REL TABLE RELATED(FROM Entity TO Entity, id STRING, description STRING, \
         weight DOUBLE, text_unit_ids STRING[], source STRING, target STRING)"
            .into(),
        "CREATE NODE TABLE Chunk(id STRING, text STRING, n_tokens INT64, document_id STRING, \
         entity_ids STRING[], PRIMARY KEY(id))"
            .into(),
        "CREATE NODE TABLE Community(id STRING, level INT64, parent STRING, title STRING, \
         entity_ids STRING[], summary STRING, full_content STRING, rank DOUBLE, PRIMARY KEY(id))"
            .into(),
    ]
}

pub(crate) const INDEX_DDL: [(&str, &str); 4] = [
    (
        "entity_vec (HNSW)",
        "CALL CREATE_VECTOR_INDEX('EntityVec', 'entity_vec', 'embedding', metric := 'cosine', mu := 16, ml := 32, efc := 100)",
    ),
    (
        "entity_text (FTS)",
        "CALL CREATE_FTS_INDEX('Entity', 'entity_text', ['title', 'description'])",
    ),
    (
        "entity_title (FTS)",
        "CALL CREATE_FTS_INDEX('Entity', 'entity_title', ['title'])",
    ),
    (
        "chunk_text (FTS)",
        "CALL CREATE_FTS_INDEX('Chunk', 'chunk_text', ['text'])",
    ),
];

pub(crate) fn csv_file(
    dir: &Path,
    name: &str,
    header: &str,
    rows: impl Iterator<Item = String>,
) -> Result<PathBuf> {
    let path = dir.join(name);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    writeln!(w, "{header}")?;
    for row in rows {
        writeln!(w, "{row}")?;
    }
    w.flush()?;
    Ok(path)
}

/// Writes the CSVs (generated text has no commas or quotes), COPYs them and builds the indexes.
pub(crate) fn load_embedded(a: &Args, g: &Graph, dir: &Path) -> Result<(PathBuf, Value)> {
    let t = Instant::now();
    let files = [
        (
            "Entity",
            csv_file(
                dir,
                "entities.csv",
                ENTITY_CSV_HEADER,
                g.items.entities.iter().map(|e| EntityCsv(e).to_string()),
            )?,
        ),
        (
            "RELATED",
            csv_file(
                dir,
                "relations.csv",
                RELATION_CSV_HEADER,
                g.items.relations.iter().map(|r| RelationCsv(r).to_string()),
            )?,
        ),
        (
            "Chunk",
            csv_file(
                dir,
                "chunks.csv",
                "id,text,n_tokens,document_id,entity_ids",
                g.items.chunks.iter().map(|c| {
                    format!(
                        "{},{},{},{},{}",
                        c.id,
                        c.text,
                        c.n_tokens,
                        c.document_id,
                        csv_list(&c.entity_ids)
                    )
                }),
            )?,
        ),
        (
            "Community",
            csv_file(
                dir,
                "communities.csv",
                "id,level,parent,title,entity_ids,summary,full_content,rank",
                g.items.communities.iter().map(|c| {
                    format!(
                        "{},{},{},{},{},{},{},{}",
                        c.id,
                        c.level,
                        c.parent,
                        c.title,
                        csv_list(&c.entity_ids),
                        c.summary,
                        c.full_content,
                        c.rank
                    )
                }),
            )?,
        ),
    ];
    let csv_s = t.elapsed().as_secs_f64();
    let path = dir.join("embedded.kz");
    let db = open_baseline(a, &path)?;
    let conn = Connection::new(&db)?;
    for ddl in schema(a.dim) {
        conn.query(&ddl).with_context(|| format!("schema: {ddl}"))?;
    }
    let mut steps = serde_json::Map::new();
    let t0 = Instant::now();
    for (table, file) in &files {
        let t = Instant::now();
        conn.query(&format!(
            "COPY {table} FROM '{}' (HEADER=true)",
            file.display()
        ))
        .with_context(|| format!("COPY {table}"))?;
        let s = t.elapsed().as_secs_f64();
        log(format!("  embedded: COPY {table} {s:.1} s"));
        steps.insert(format!("copy {table} s"), json!(s));
        let _ = std::fs::remove_file(file);
    }
    // Vectors are not COPYed from CSV: Kuzu 0.11 parses FLOAT[384] from CSV very slowly (5k rows in
    // 0.3 s, 100k rows not done after 7 minutes). Batches of parameter rows instead, the way
    // torua's shards insert them.
    let t = Instant::now();
    let mut stmt = conn.prepare(&format!(
        "COPY EntityVec FROM (UNWIND $rows AS r RETURN r.id, CAST(r.embedding AS FLOAT[{}]))",
        a.dim
    ))?;
    let fields = [
        ("id", LogicalType::String),
        (
            "embedding",
            LogicalType::List {
                child_type: Box::new(LogicalType::Float),
            },
        ),
    ];
    for batch in g.items.entities.chunks(5000) {
        let rows = batch
            .iter()
            .map(|e| vec![string(&e.id), float_list(e.vector())])
            .collect();
        conn.execute(&mut stmt, vec![("rows", struct_rows(&fields, rows))])
            .context("COPY EntityVec")?;
    }
    let s = t.elapsed().as_secs_f64();
    log(format!(
        "  embedded: COPY EntityVec (parameter batches) {s:.1} s"
    ));
    steps.insert("copy EntityVec s".into(), json!(s));
    for (name, ddl) in INDEX_DDL {
        let t = Instant::now();
        // Index DDL expands to several statements, which Kuzu cannot prepare.
        conn.query(ddl).with_context(|| format!("index: {ddl}"))?;
        let s = t.elapsed().as_secs_f64();
        log(format!("  embedded: index {name} {s:.1} s"));
        steps.insert(format!("index {name} s"), json!(s));
    }
    let total = t0.elapsed().as_secs_f64();
    let counts: Vec<u64> = [
        "MATCH (e:Entity) RETURN count(*)",
        "MATCH ()-[r:RELATED]->() RETURN count(*)",
        "MATCH (c:Chunk) RETURN count(*)",
        "MATCH (c:Community) RETURN count(*)",
    ]
    .iter()
    .map(|q| -> Result<u64> {
        let mut r = conn.query(q)?;
        Ok(match r.next().as_ref().and_then(|row| row.first()) {
            Some(KValue::Int64(n)) => *n as u64,
            _ => 0,
        })
    })
    .collect::<Result<_>>()?;
    let expected = [
        g.items.entities.len(),
        g.items.relations.len(),
        g.items.chunks.len(),
        g.items.communities.len(),
    ];
    if counts.iter().zip(expected).any(|(&c, e)| c as usize != e) {
        bail!("embedded database holds {counts:?} (entities, relations, chunks, communities); expected {expected:?}");
    }
    drop(conn);
    drop(db);
    let size = dir_size(&path);
    Ok((
        path,
        json!({"csv_write_s": csv_s, "load_and_index_s": total, "steps": steps, "size_bytes": size}),
    ))
}

pub(crate) fn dir_size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn kstring(v: &KValue) -> String {
    match v {
        KValue::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn kf64(v: &KValue) -> f64 {
    match v {
        KValue::Double(x) => *x,
        KValue::Float(x) => f64::from(*x),
        KValue::Int64(x) => *x as f64,
        _ => f64::NAN,
    }
}

pub(crate) fn ki64(v: &KValue) -> i64 {
    match v {
        KValue::Int64(x) => *x,
        KValue::Int32(x) => i64::from(*x),
        KValue::UInt64(x) => *x as i64,
        _ => 0,
    }
}

pub(crate) fn kstrings(v: &KValue) -> Vec<String> {
    match v {
        KValue::List(_, items) | KValue::Array(_, items) => items.iter().map(kstring).collect(),
        _ => vec![],
    }
}

pub(crate) fn float_list(v: &[f32]) -> KValue {
    KValue::List(
        LogicalType::Float,
        v.iter().map(|&x| KValue::Float(x)).collect(),
    )
}

pub(crate) const RRF_K: f64 = 60.0;

/// A statement with a per-id form and an `UNWIND $ids` form; which one runs depends on the number
/// of ids and the costs measured by [`Embedded::calibrate`].
pub(crate) struct Lookup {
    one: PreparedStatement,
    set: PreparedStatement,
    /// (µs per id of the per-id form, µs of one set statement).
    cost: (f64, f64),
}

pub(crate) const Q_PROPS_ONE: &str = "MATCH (e:Entity {id: $id}) \
                           RETURN e.id, e.title, e.type, e.description, e.degree, e.text_unit_ids";
pub(crate) const Q_PROPS_SET: &str = "UNWIND $ids AS i MATCH (e:Entity {id: i}) \
                           RETURN e.id, e.title, e.type, e.description, e.degree, e.text_unit_ids";
pub(crate) const Q_CHUNK_ONE: &str =
    "MATCH (c:Chunk {id: $id}) RETURN c.id, c.text, c.n_tokens, c.document_id";
pub(crate) const Q_CHUNK_SET: &str = "UNWIND $ids AS i MATCH (c:Chunk {id: i}) \
                           RETURN c.id, c.text, c.n_tokens, c.document_id";
/// Local search's reports: communities holding any of `$ids`, by matches, rank, id. (A parameter
/// inside a list lambda, `list_filter(c.entity_ids, x -> list_contains($ids, x))`, trips an
/// assertion in Kuzu 0.11.3.) The second form is torua's; the calibration picks the cheaper.
pub(crate) const Q_COMMUNITIES: [&str; 2] = [
    "MATCH (c:Community) UNWIND c.entity_ids AS e WITH c, e WHERE list_contains($ids, e) \
     WITH c, count(*) AS m \
     RETURN c.id, c.title, c.level, c.rank, c.full_content, c.summary, m \
     ORDER BY m DESC, c.rank DESC, c.id LIMIT 200",
    "UNWIND $ids AS i MATCH (c:Community) WHERE list_contains(c.entity_ids, i) \
     WITH c, count(*) AS m \
     RETURN c.id, c.title, c.level, c.rank, c.full_content, c.summary, m \
     ORDER BY m DESC, c.rank DESC, c.id LIMIT 200",
];

/// A relation found by the expansion: source, target, description, weight.
pub(crate) type Rel = (String, String, String, f64);

pub(crate) struct Embedded<'c, 'db> {
    conn: &'c Connection<'db>,
    vector: PreparedStatement,
    text: PreparedStatement,
    title: PreparedStatement,
    out: PreparedStatement,
    inc: PreparedStatement,
    props: Lookup,
    chunks: Lookup,
    communities: [PreparedStatement; 2],
    /// Which of [`Q_COMMUNITIES`] runs.
    community_form: usize,
    /// Whether reports are asked for (`--include`).
    pub(crate) reports: bool,
    /// Statements run (per-id, set) since the start.
    pub(crate) executed: (usize, usize),
}

/// What one embedded retrieval found, and the time of each step (µs).
#[derive(Default)]
pub(crate) struct EmbeddedAnswer {
    pub(crate) seeds: Vec<String>,
    vector_ids: Vec<String>,
    text_ids: Vec<String>,
    pub(crate) entities: usize,
    pub(crate) relations: usize,
    pub(crate) text_units: usize,
    pub(crate) reports: usize,
    pub(crate) stages: Vec<(&'static str, f64)>,
    pub(crate) total_us: f64,
}

impl<'c, 'db> Embedded<'c, 'db> {
    pub(crate) fn new(conn: &'c Connection<'db>, k: usize, efs: usize) -> Result<Self> {
        let prep = |q: &str| conn.prepare(q).with_context(|| format!("prepare {q}"));
        Ok(Embedded {
            conn,
            vector: prep(&format!(
                "CALL QUERY_VECTOR_INDEX('EntityVec', 'entity_vec', $q, {k}, efs := {efs}) RETURN node.id, distance"
            ))?,
            text: prep(&format!(
                "CALL QUERY_FTS_INDEX('Entity', 'entity_text', $text, top := {k}) RETURN node.id, score"
            ))?,
            title: prep(&format!(
                "CALL QUERY_FTS_INDEX('Entity', 'entity_title', $text, top := {k}) RETURN node.id, score"
            ))?,
            out: prep(RELATIONS_OUT)?,
            inc: prep(RELATIONS_IN)?,
            props: Lookup {
                one: prep(Q_PROPS_ONE)?,
                set: prep(Q_PROPS_SET)?,
                cost: (1.0, f64::INFINITY),
            },
            chunks: Lookup {
                one: prep(Q_CHUNK_ONE)?,
                set: prep(Q_CHUNK_SET)?,
                cost: (1.0, f64::INFINITY),
            },
            communities: [prep(Q_COMMUNITIES[0])?, prep(Q_COMMUNITIES[1])?],
            community_form: 0,
            reports: true,
            executed: (0, 0),
        })
    }

    /// Measures both forms of the property and chunk lookups (medians of three rounds).
    pub(crate) fn calibrate(
        &mut self,
        entity_ids: &[String],
        chunk_ids: &[String],
        seed_ids: &[String],
    ) -> Result<Value> {
        let conn = self.conn;
        let mut out = json!({});
        for (name, lookup, ids) in [
            ("entity properties", &mut self.props, entity_ids),
            ("chunks", &mut self.chunks, chunk_ids),
        ] {
            let (mut one, mut set) = (Vec::new(), Vec::new());
            for round in 0..4 {
                let t = Instant::now();
                for id in ids {
                    let _: Vec<Vec<KValue>> = conn
                        .execute(&mut lookup.one, vec![("id", string(id))])?
                        .collect();
                }
                let per_id = us(t.elapsed()) / ids.len() as f64;
                let t = Instant::now();
                let _: Vec<Vec<KValue>> = conn
                    .execute(&mut lookup.set, vec![("ids", strings(ids))])?
                    .collect();
                if round > 0 {
                    one.push(per_id);
                    set.push(us(t.elapsed()));
                }
            }
            one.sort_by(f64::total_cmp);
            set.sort_by(f64::total_cmp);
            lookup.cost = (one[1], set[1]);
            out[name] = json!({"per_id_us": one[1], "set_us": set[1], "sample_ids": ids.len()});
        }
        let mut forms = vec![];
        for stmt in &mut self.communities {
            let mut t_us = vec![];
            for _ in 0..3 {
                let t = Instant::now();
                let _: Vec<Vec<KValue>> = conn
                    .execute(stmt, vec![("ids", strings(seed_ids))])?
                    .collect();
                t_us.push(us(t.elapsed()));
            }
            t_us.sort_by(f64::total_cmp);
            forms.push(t_us[1]);
        }
        self.community_form = usize::from(forms[1] < forms[0]);
        let chosen = ["scan_unwind", "unwind_ids"][self.community_form];
        out["community reports"] =
            json!({"scan_unwind_us": forms[0], "unwind_ids_us": forms[1], "chosen": chosen});
        Ok(out)
    }

    pub(crate) fn lookup(&mut self, which: usize, ids: &[String]) -> Result<Vec<Vec<KValue>>> {
        let lookup = if which == 0 {
            &mut self.props
        } else {
            &mut self.chunks
        };
        rows_for_ids(
            self.conn,
            &mut lookup.set,
            &mut lookup.one,
            ids,
            ids.len() as f64 * lookup.cost.0 > lookup.cost.1,
            &mut self.executed,
        )
    }

    pub(crate) fn vector_top(&mut self, q: &[f32]) -> Result<Vec<String>> {
        let rows: Vec<Vec<KValue>> = self
            .conn
            .execute(&mut self.vector, vec![("q", float_list(q))])?
            .collect();
        let mut hits: Vec<(f64, String)> =
            rows.iter().map(|r| (kf64(&r[1]), kstring(&r[0]))).collect();
        hits.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        Ok(hits.into_iter().map(|h| h.1).collect())
    }

    /// BM25 top k over title+description (or the title alone).
    pub(crate) fn text_top(&mut self, text: &str, title_only: bool) -> Result<Vec<String>> {
        let stmt = if title_only {
            &mut self.title
        } else {
            &mut self.text
        };
        let rows: Vec<Vec<KValue>> = self
            .conn
            .execute(stmt, vec![("text", string(text))])?
            .collect();
        let mut hits: Vec<(f64, String)> =
            rows.iter().map(|r| (kf64(&r[1]), kstring(&r[0]))).collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Ok(hits.into_iter().map(|h| h.1).collect())
    }

    /// Local search's steps for one query.
    pub(crate) fn retrieve(&mut self, q: &Query, k: usize, hops: u32) -> Result<EmbeddedAnswer> {
        let mut ans = EmbeddedAnswer::default();
        let start = Instant::now();
        // 1. Seeds.
        let t = Instant::now();
        ans.vector_ids = self.vector_top(&q.embedding)?;
        let title_ids = self.text_top(&q.text, true)?;
        ans.text_ids = self.text_top(&q.text, false)?;
        let mut fused: HashMap<&str, f64> = HashMap::new();
        for list in [&ans.vector_ids, &title_ids, &ans.text_ids] {
            for (rank, id) in list.iter().enumerate() {
                *fused.entry(id).or_default() += 1.0 / (RRF_K + (rank + 1) as f64);
            }
        }
        let mut seeds: Vec<(&str, f64)> = fused.into_iter().collect();
        seeds.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        seeds.truncate(k);
        let seeds: Vec<(String, f64)> =
            seeds.into_iter().map(|(i, s)| (i.to_string(), s)).collect();
        ans.stages.push(("seeds", us(t.elapsed())));

        // 2. Expansion, relations and entities ranked.
        let t = Instant::now();
        let mut hop: HashMap<String, u32> = seeds.iter().map(|s| (s.0.clone(), 0)).collect();
        let mut frontier: Vec<String> = seeds.iter().map(|s| s.0.clone()).collect();
        let mut rels: HashMap<String, Rel> = HashMap::new();
        for h in 1..=hops {
            let mut next = Vec::new();
            for id in &frontier {
                for stmt in [&mut self.out, &mut self.inc] {
                    self.executed.0 += 1;
                    for r in self.conn.execute(stmt, vec![("id", string(id))])? {
                        let (s, tg) = (kstring(&r[0]), kstring(&r[1]));
                        for end in [&s, &tg] {
                            if !hop.contains_key(end) {
                                hop.insert(end.clone(), h);
                                next.push(end.clone());
                            }
                        }
                        rels.entry(kstring(&r[2]))
                            .or_insert((s, tg, kstring(&r[3]), kf64(&r[4])));
                    }
                }
            }
            frontier = next;
        }
        let all: Vec<String> = hop.keys().cloned().collect();
        // id -> (degree, text_unit_ids, title+description length)
        let mut props: HashMap<String, (i64, Vec<String>, usize)> = HashMap::new();
        for r in self.lookup(0, &all)? {
            let len = kstring(&r[1]).len() + kstring(&r[2]).len() + kstring(&r[3]).len();
            props.insert(kstring(&r[0]), (ki64(&r[4]), kstrings(&r[5]), len));
        }
        let degree = |id: &str| props.get(id).map_or(0, |p| p.0);
        let is_seed: HashSet<&str> = seeds.iter().map(|s| s.0.as_str()).collect();
        let mut relations: Vec<(&String, &Rel)> = rels.iter().collect();
        relations.sort_by(|a, b| {
            let both = |r: &Rel| is_seed.contains(r.0.as_str()) && is_seed.contains(r.1.as_str());
            both(b.1)
                .cmp(&both(a.1))
                .then(b.1 .3.total_cmp(&a.1 .3))
                .then((degree(&b.1 .0) + degree(&b.1 .1)).cmp(&(degree(&a.1 .0) + degree(&a.1 .1))))
                .then(a.0.cmp(b.0))
        });
        let seed_rank: HashMap<&str, usize> = seeds
            .iter()
            .enumerate()
            .map(|(i, s)| (s.0.as_str(), i))
            .collect();
        let mut entities: Vec<&String> = hop.keys().collect();
        entities.sort_by(|a, b| {
            let (ha, hb) = (hop[*a], hop[*b]);
            ha.cmp(&hb)
                .then(
                    seed_rank
                        .get(a.as_str())
                        .unwrap_or(&0)
                        .cmp(seed_rank.get(b.as_str()).unwrap_or(&0)),
                )
                .then(degree(b).cmp(&degree(a)))
                .then(a.cmp(b))
        });
        ans.entities = entities.len();
        ans.relations = relations.len();
        ans.stages.push(("expand", us(t.elapsed())));

        // 3. Text units of the seeds.
        let t = Instant::now();
        let mut tu: HashMap<&str, f64> = HashMap::new();
        for (id, score) in &seeds {
            if let Some(p) = props.get(id) {
                for t in &p.1 {
                    *tu.entry(t).or_default() += score;
                }
            }
        }
        let mut ranked: Vec<(&str, f64)> = tu.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let ids: Vec<String> = ranked.iter().map(|r| r.0.to_string()).collect();
        let rows = if ids.is_empty() {
            vec![]
        } else {
            self.lookup(1, &ids)?
        };
        let found: HashMap<String, Vec<KValue>> =
            rows.into_iter().map(|r| (kstring(&r[0]), r)).collect();
        ans.text_units = ids.iter().filter(|i| found.contains_key(*i)).count();
        ans.stages.push(("text_units", us(t.elapsed())));

        // 4. Community reports.
        if self.reports {
            let t = Instant::now();
            let seed_ids: Vec<String> = seeds.iter().map(|s| s.0.clone()).collect();
            let rows: Vec<Vec<KValue>> = self
                .conn
                .execute(
                    &mut self.communities[self.community_form],
                    vec![("ids", strings(&seed_ids))],
                )?
                .collect();
            self.executed.1 += 1;
            ans.reports = rows.len();
            ans.stages.push(("community_reports", us(t.elapsed())));
        }
        ans.total_us = us(start.elapsed());
        ans.seeds = seeds.into_iter().map(|s| s.0).collect();
        Ok(ans)
    }
}
