//! Neighbourhood queries: what one answer holds, how embedded Kuzu computes it (one query per
//! hop, or per entity) and how a torua answer is read and compared with it.

use super::*;

pub(crate) const Q_HOOD_OUT: &str =
    "UNWIND $ids AS i MATCH (a:Entity {id: i})-[r:RELATED]->(b:Entity) \
                          RETURN a.id, b.id, r.id, r.description, r.weight";
pub(crate) const Q_HOOD_IN: &str =
    "UNWIND $ids AS i MATCH (a:Entity)-[r:RELATED]->(b:Entity {id: i}) \
                         RETURN a.id, b.id, r.id, r.description, r.weight";
pub(crate) const Q_HOOD_PROPS: &str = "UNWIND $ids AS i MATCH (e:Entity {id: i}) \
                            RETURN e.id, e.title, e.type, e.description, e.degree, e.frequency";
pub(crate) const COUNT_QUERIES: [(&str, &str); 2] = [
    ("count entities", "MATCH (e:Entity) RETURN count(*) AS n"),
    (
        "count relations",
        "MATCH (a:Entity)-[r:RELATED]->(b:Entity) RETURN count(*) AS n",
    ),
];
/// Samples a case gets at least before its time cap may stop it.
pub(crate) const QUERY_MIN_SAMPLES: usize = 10;
/// Target of the issue: 1 hop from 10 seeds, p50, on the multi-node cluster.
pub(crate) const TARGET_HOOD_MS: f64 = 20.0;
/// Target of the issue: every query's p50 at most this many times the embedded one.
pub(crate) const TARGET_QUERY_RATIO: f64 = 3.0;

/// A neighbourhood answer reduced to what is compared, in the contract's order.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Hood {
    /// (hop, id), sorted.
    pub(crate) entities: Vec<(u64, String)>,
    /// (id, source, target), sorted.
    pub(crate) relations: Vec<(String, String, String)>,
    pub(crate) truncated: bool,
}

pub(crate) fn kstring(v: KValue) -> String {
    match v {
        KValue::String(s) => s,
        other => other.to_string(),
    }
}

pub(crate) fn kcount(v: Option<&KValue>) -> Option<u64> {
    match v? {
        KValue::Int64(n) => u64::try_from(*n).ok(),
        KValue::UInt64(n) => Some(*n),
        KValue::Int32(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// The per-id form of the properties step; the relation steps' per-id forms are
/// [`RELATIONS_OUT`] and [`RELATIONS_IN`] (each prepared once, executed once per frontier id).
pub(crate) const Q_HOOD_PROPS_ONE: &str = "MATCH (e:Entity {id: $id}) \
                                RETURN e.id, e.title, e.type, e.description, e.degree, e.frequency";

/// How the embedded search runs each of its three steps (relations out, relations in, properties).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum EmbeddedMode {
    /// Per step, whichever is cheaper for the number of ids, by the costs measured at the start:
    /// one `UNWIND $ids` statement (Kuzu 0.11 plans it as a hash join over the whole table, so its
    /// cost hardly depends on the number of ids) or one primary-key statement per id.
    Auto,
    /// Always the `UNWIND $ids` statements.
    Unwind,
    /// Always one statement per id.
    PerId,
}

/// The embedded breadth-first search (statements prepared once).
pub(crate) struct Bfs<'c, 'db> {
    conn: &'c Connection<'db>,
    pub(crate) mode: EmbeddedMode,
    /// [out, in, props]: the `UNWIND $ids` form and the per-id form.
    set: [kuzu::PreparedStatement; 3],
    one: [kuzu::PreparedStatement; 3],
    /// Measured costs per step: (µs per id of the per-id form, µs of one set statement).
    pub(crate) costs: [(f64, f64); 3],
    /// Statements executed since the last reset: (per-id, set).
    pub(crate) executed: (usize, usize),
}

/// One found entity with the properties the API returns.
#[allow(dead_code)]
pub(crate) struct HoodEntity {
    hop: u64,
    id: String,
    title: String,
    kind: String,
    description: String,
    degree: i64,
    frequency: i64,
}

impl<'c, 'db> Bfs<'c, 'db> {
    /// The search in `mode`, its statements prepared on `conn` and their costs measured on 20
    /// ids of `entities` drawn by `rng`.
    pub(crate) fn calibrated(
        conn: &'c Connection<'db>,
        mode: EmbeddedMode,
        entities: &[Entity],
        rng: &mut Rng,
    ) -> Result<Self> {
        let mut bfs = Bfs::new(conn, mode)?;
        let sample: Vec<String> = (0..20)
            .map(|_| entities[rng.below(entities.len())].id.clone())
            .collect();
        bfs.calibrate(&sample)?;
        Ok(bfs)
    }

    fn new(conn: &'c Connection<'db>, mode: EmbeddedMode) -> Result<Self> {
        Ok(Bfs {
            conn,
            mode,
            set: [
                conn.prepare(Q_HOOD_OUT)?,
                conn.prepare(Q_HOOD_IN)?,
                conn.prepare(Q_HOOD_PROPS)?,
            ],
            one: [
                conn.prepare(RELATIONS_OUT)?,
                conn.prepare(RELATIONS_IN)?,
                conn.prepare(Q_HOOD_PROPS_ONE)?,
            ],
            costs: [(1.0, f64::INFINITY); 3],
            executed: (0, 0),
        })
    }

    /// Measures both forms of each step on `sample` ids (the set form with all of them at once).
    fn calibrate(&mut self, sample: &[String]) -> Result<()> {
        for step in 0..3 {
            let (mut one_us, mut set_us) = (Vec::new(), Vec::new());
            for round in 0..4 {
                let t = Instant::now();
                for id in sample {
                    let _: Vec<Vec<KValue>> = self
                        .conn
                        .execute(&mut self.one[step], vec![("id", string(id))])?
                        .collect();
                }
                let per_id = us(t.elapsed()) / sample.len() as f64;
                let t = Instant::now();
                let _: Vec<Vec<KValue>> = self
                    .conn
                    .execute(&mut self.set[step], vec![("ids", strings(sample))])?
                    .collect();
                let set = us(t.elapsed());
                if round > 0 {
                    one_us.push(per_id);
                    set_us.push(set);
                }
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            self.costs[step] = (median(&mut one_us), median(&mut set_us));
        }
        Ok(())
    }

    /// Whether `step` runs as one set statement for `n` ids.
    pub(crate) fn use_set(&self, step: usize, n: usize) -> bool {
        match self.mode {
            EmbeddedMode::Unwind => true,
            EmbeddedMode::PerId => false,
            EmbeddedMode::Auto => n as f64 * self.costs[step].0 > self.costs[step].1,
        }
    }

    /// Rows of `step` for the ids, by the form chosen for their number.
    pub(crate) fn rows(&mut self, step: usize, ids: &[String]) -> Result<Vec<Vec<KValue>>> {
        let whole_set = self.use_set(step, ids.len());
        rows_for_ids(
            self.conn,
            &mut self.set[step],
            &mut self.one[step],
            ids,
            whole_set,
            &mut self.executed,
        )
    }

    pub(crate) fn run(
        &mut self,
        seeds: &[&str],
        hops: u32,
        max_nodes: usize,
        max_relations: usize,
    ) -> Result<Hood> {
        let mut hop: HashMap<String, u64> = HashMap::new();
        let mut frontier: Vec<String> = Vec::new();
        for seed in seeds {
            if hop.insert(seed.to_string(), 0).is_none() {
                frontier.push(seed.to_string());
            }
        }
        // (id, source, target) -> (description, weight)
        let mut rels: HashMap<(String, String, String), (String, f64)> = HashMap::new();
        for h in 1..=u64::from(hops) {
            if frontier.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for step in [0, 1] {
                for row in self.rows(step, &frontier)? {
                    let mut it = row.into_iter();
                    let mut take = || it.next().map(kstring).unwrap_or_default();
                    let (a, b, id, description) = (take(), take(), take(), take());
                    let weight = match it.next() {
                        Some(KValue::Double(w)) => w,
                        _ => f64::NAN,
                    };
                    for end in [&a, &b] {
                        if !hop.contains_key(end.as_str()) {
                            hop.insert(end.clone(), h);
                            next.push(end.clone());
                        }
                    }
                    rels.entry((id, a, b)).or_insert((description, weight));
                }
            }
            frontier = next;
        }
        let all: Vec<String> = hop.keys().cloned().collect();
        let mut entities: Vec<HoodEntity> = Vec::with_capacity(all.len());
        for row in self.rows(2, &all)? {
            let mut it = row.into_iter();
            let id = it.next().map(kstring).unwrap_or_default();
            let mut take = || it.next().map(kstring).unwrap_or_default();
            let (title, kind, description) = (take(), take(), take());
            let mut int = || match it.next() {
                Some(KValue::Int64(n)) => n,
                _ => 0,
            };
            let (degree, frequency) = (int(), int());
            entities.push(HoodEntity {
                hop: hop.get(&id).copied().unwrap_or(u64::MAX),
                id,
                title,
                kind,
                description,
                degree,
                frequency,
            });
        }
        entities.sort_unstable_by(|x, y| (x.hop, &x.id).cmp(&(y.hop, &y.id)));
        // ((id, source, target), (description, weight))
        #[allow(clippy::type_complexity)]
        let mut relations: Vec<((String, String, String), (String, f64))> =
            rels.into_iter().collect();
        relations.sort_unstable_by(|x, y| x.0.cmp(&y.0));
        let mut truncated = false;
        if entities.len() > max_nodes {
            entities.truncate(max_nodes);
            let kept: HashSet<&str> = entities.iter().map(|e| e.id.as_str()).collect();
            relations
                .retain(|((_, a, b), _)| kept.contains(a.as_str()) && kept.contains(b.as_str()));
            truncated = true;
        }
        if relations.len() > max_relations {
            relations.truncate(max_relations);
            truncated = true;
        }
        Ok(Hood {
            entities: entities.into_iter().map(|e| (e.hop, e.id)).collect(),
            relations: relations.into_iter().map(|(k, _)| k).collect(),
            truncated,
        })
    }
}

/// Torua's answer reduced to a [`Hood`] (sorted here), and whether it came in the contract's order.
pub(crate) fn parse_hood(v: &Value) -> Result<(Hood, bool)> {
    let str_of = |x: &Value, k: &str| -> Result<String> {
        Ok(x[k]
            .as_str()
            .with_context(|| format!("no string {k:?} in {}", short(&x.to_string(), 200)))?
            .to_string())
    };
    let mut entities = Vec::new();
    for e in v["entities"].as_array().context("no \"entities\" array")? {
        let hop = e["hop"]
            .as_u64()
            .with_context(|| format!("no hop in {}", short(&e.to_string(), 200)))?;
        entities.push((hop, str_of(e, "id")?));
    }
    let mut relations = Vec::new();
    for r in v["relations"]
        .as_array()
        .context("no \"relations\" array")?
    {
        relations.push((str_of(r, "id")?, str_of(r, "source")?, str_of(r, "target")?));
    }
    let ordered =
        entities.windows(2).all(|w| w[0] <= w[1]) && relations.windows(2).all(|w| w[0] <= w[1]);
    entities.sort_unstable();
    relations.sort_unstable();
    Ok((
        Hood {
            entities,
            relations,
            truncated: v["truncated"].as_bool().unwrap_or(false),
        },
        ordered,
    ))
}

/// What differs between two answers, for the report.
pub(crate) fn hood_diff(want: &Hood, got: &Hood) -> String {
    fn only<T: Ord + Clone + std::fmt::Debug>(a: &[T], b: &[T]) -> (usize, Vec<T>) {
        let set: std::collections::BTreeSet<&T> = b.iter().collect();
        let v: Vec<T> = a.iter().filter(|x| !set.contains(x)).cloned().collect();
        (v.len(), v.into_iter().take(3).collect())
    }
    let (en, es) = only(&want.entities, &got.entities);
    let (tn, ts) = only(&got.entities, &want.entities);
    let (rn, rs) = only(&want.relations, &got.relations);
    let (sn, ss) = only(&got.relations, &want.relations);
    // The differing relations grouped by the hops of their endpoints (from the embedded answer;
    // "-": not among its entities).
    let hop_of: HashMap<&str, u64> = want
        .entities
        .iter()
        .map(|(h, id)| (id.as_str(), *h))
        .collect();
    let by_hops = |a: &[(String, String, String)], b: &[(String, String, String)]| -> String {
        let set: HashSet<&(String, String, String)> = b.iter().collect();
        let mut groups: BTreeMap<String, usize> = BTreeMap::new();
        for r in a.iter().filter(|r| !set.contains(r)) {
            let h = |id: &str| hop_of.get(id).map_or("-".to_string(), |h| h.to_string());
            *groups
                .entry(format!("{}-{}", h(&r.1), h(&r.2)))
                .or_default() += 1;
        }
        format!("{groups:?}")
    };
    let (rh, sh) = (
        by_hops(&want.relations, &got.relations),
        by_hops(&got.relations, &want.relations),
    );
    format!(
        "embedded {} entities / {} relations (truncated {}), torua {} / {} (truncated {}); \
         (hop, id) only embedded: {en} e.g. {es:?}; only torua: {tn} e.g. {ts:?}; \
         relations only embedded: {rn} e.g. {rs:?} (by source-target hop {rh}); \
         only torua: {sn} e.g. {ss:?} (by source-target hop {sh})",
        want.entities.len(),
        want.relations.len(),
        want.truncated,
        got.entities.len(),
        got.relations.len(),
        got.truncated
    )
}
