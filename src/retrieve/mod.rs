//! GraphRAG retrieval (`POST /retrieve`): from a question (text and/or embedding) to the entities,
//! relations, text units and community reports an LLM needs, fitted to a token budget, from a
//! graph spread over the cluster. [`request`] reads and checks the question; [`search`] finds
//! seeds on every shard and fuses them; the neighbourhood comes from the traversal of
//! `query::traverse`; [`gather`] fetches text units and reports; [`context`] fits everything into
//! GraphRAG's context tables, counted with [`tokens`]. Each stage goes through [`stage`], which
//! keeps the `_shards` account.

pub mod context;
pub mod gather;
pub mod request;
pub mod search;
pub mod stage;
pub mod tokens;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::context::NodeContext;
use crate::query::scatter::ShardsReport;
use crate::query::traverse::{neighborhood, Traversal, TraverseError};
use crate::shard_map::ShardMap;
use crate::storage::{Direction, Edge, EntitySummary, RelationFilter};
use context::{assemble, row, Table};
use gather::{Report, TextUnit};
pub use request::{Mode, RetrieveRequest};
use search::{Item, Seed, Target};
use stage::{StageError, Stages};

/// Share of the budget for community reports and for text units (Microsoft GraphRAG's local
/// search: `community_prop` 0.25, `text_unit_prop` 0.5; entities and relations get the rest).
const COMMUNITY_PROP: f64 = 0.25;
const TEXT_UNIT_PROP: f64 = 0.5;
/// Caps of the expansion (the budget keeps far fewer rows).
const EXPAND_MAX_NODES: usize = 2000;
const EXPAND_MAX_RELATIONS: usize = 10_000;

/// Why a retrieval has no answer.
#[derive(Debug)]
pub enum RetrieveError {
    /// Shards missing and partial answers refused (503).
    Unavailable(String),
    /// Past the time limit (504).
    Timeout(String),
    /// Too large to expand (422).
    TooLarge(String),
    /// A bug: torua's own statement was refused (500).
    Internal(String),
}

impl From<StageError> for RetrieveError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Timeout => {
                RetrieveError::Timeout("the retrieval ran past timeout_ms".into())
            }
            StageError::Internal(r) => RetrieveError::Internal(r),
        }
    }
}

/// Milliseconds per stage, in the order they ran.
#[derive(Default)]
struct Timings(Vec<(&'static str, f64)>);

impl Timings {
    fn since(&mut self, stage: &'static str, t: &mut Instant) {
        let now = Instant::now();
        self.0.push((stage, (now - *t).as_secs_f64() * 1000.0));
        *t = now;
    }
}

/// An entity of the answer: a seed (with its fused score) or reached by the expansion.
struct Selected {
    id: String,
    title: String,
    kind: String,
    description: String,
    degree: i64,
    hop: u32,
    score: Option<f64>,
}

pub async fn retrieve(
    ctx: &Arc<NodeContext>,
    map: ShardMap,
    req: &RetrieveRequest,
    allow_partial: bool,
) -> Result<Value, RetrieveError> {
    let started = Instant::now();
    let deadline = started + std::time::Duration::from_millis(req.timeout_ms);
    let stages = Stages::new(ctx, map.clone(), deadline);
    let mut timings = Timings::default();
    let mut t = Instant::now();
    let text_query = req.query.as_deref();
    let embedding = req.embedding.as_deref();
    let local = matches!(req.mode, Mode::Local | Mode::Hybrid);
    let naive = matches!(req.mode, Mode::Naive | Mode::Hybrid);

    // Stage 1: seeds (entities and/or chunks), every search at once.
    let entity_seeds = async {
        if !local {
            return Ok(vec![]);
        }
        search::seeds(&stages, Target::Entities, text_query, embedding, req.top_k).await
    };
    let chunk_seeds = async {
        if !naive {
            return Ok(vec![]);
        }
        search::seeds(&stages, Target::Chunks, text_query, embedding, req.top_k).await
    };
    let (seeds, chunk_seeds) = tokio::join!(entity_seeds, chunk_seeds);
    let (seeds, chunk_seeds): (Vec<Seed>, Vec<Seed>) = (seeds?, chunk_seeds?);
    timings.since("seeds", &mut t);

    // Stage 2, all at once: the neighbourhood, the text units and the community reports of the
    // seeds.
    let seed_ids: Vec<String> = seeds.iter().map(|s| s.id.clone()).collect();
    let expansion = async {
        if !local || req.hops == 0 || seeds.is_empty() {
            return Ok((vec![], vec![], 0.0));
        }
        let started = Instant::now();
        let mut traversal = Traversal::new(
            ctx,
            map.clone(),
            deadline,
            true,
            Direction::Both,
            RelationFilter::default(),
        );
        let n = neighborhood(
            &mut traversal,
            &seed_ids,
            req.hops,
            EXPAND_MAX_NODES,
            EXPAND_MAX_RELATIONS,
        )
        .await
        .map_err(|e| match e {
            TraverseError::TooLarge(r) => RetrieveError::TooLarge(r),
            TraverseError::Unavailable(r) => RetrieveError::Unavailable(r),
            TraverseError::Timeout(r) => RetrieveError::Timeout(r),
        })?;
        stages.absorb(traversal.report());
        Ok::<_, RetrieveError>((n.entities, n.relations, ms_since(started)))
    };
    let units = async {
        let started = Instant::now();
        let units = if req.includes("text_units") {
            text_units(&stages, req.mode, &seeds, &chunk_seeds).await?
        } else {
            vec![]
        };
        Ok::<_, RetrieveError>((units, ms_since(started)))
    };
    let reports = async {
        let started = Instant::now();
        let reports = if !req.includes("community_reports") {
            vec![]
        } else if req.mode == Mode::Global {
            gather::all_reports(&stages, req.community_level).await?
        } else if local {
            let ids: Vec<&str> = seed_ids.iter().map(String::as_str).collect();
            gather::reports_of(&stages, &ids, req.community_level).await?
        } else {
            vec![]
        };
        Ok::<_, RetrieveError>((reports, ms_since(started)))
    };
    let (expansion, units, reports) = tokio::join!(expansion, units, reports);
    let ((reached, mut relations, expand_ms), (units, units_ms), (reports, reports_ms)) =
        (expansion?, units?, reports?);
    timings.0.push(("expand", expand_ms));
    timings.0.push(("text_units", units_ms));
    timings.0.push(("community_reports", reports_ms));
    t = Instant::now();

    // Entities: the seeds by score, then the entities reached by hop, degree (desc), id.
    let mut selected: Vec<Selected> = seeds.iter().map(selected_seed).collect();
    let seed_set: HashSet<&str> = seed_ids.iter().map(String::as_str).collect();
    let mut expanded: Vec<(EntitySummary, u32)> = reached
        .into_iter()
        .filter(|(e, _)| !seed_set.contains(e.id.as_str()))
        .collect();
    expanded.sort_by(|(a, ha), (b, hb)| {
        ha.cmp(hb)
            .then(b.degree.cmp(&a.degree))
            .then_with(|| a.id.cmp(&b.id))
    });
    selected.extend(expanded.into_iter().map(|(e, hop)| Selected {
        id: e.id,
        title: e.title,
        kind: e.kind,
        description: e.description,
        degree: e.degree,
        hop,
        score: None,
    }));
    rank_relations(&mut relations, &seed_ids, &selected);

    let report = stages.report();
    if report.failed > 0 && (!allow_partial || report.successful == 0) {
        return Err(RetrieveError::Unavailable(report.summary()));
    }

    // Counting tokens is CPU work of several milliseconds: off the async workers.
    let owned = req.clone();
    let answer = tokio::task::spawn_blocking(move || {
        assemble_answer(&owned, selected, relations, units, reports)
    })
    .await
    .map_err(|e| RetrieveError::Internal(format!("assembling the context failed: {e}")))?;
    timings.since("assemble", &mut t);
    Ok(finish(
        answer,
        req,
        &seeds,
        &chunk_seeds,
        report,
        timings,
        started,
    ))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Text units: those the seed entities name, by the summed score of the seeds naming them;
/// naive mode's chunks as found; in hybrid mode both lists fused by rank.
async fn text_units(
    stages: &Stages<'_>,
    mode: Mode,
    seeds: &[Seed],
    chunk_seeds: &[Seed],
) -> Result<Vec<TextUnit>, StageError> {
    let mut score: HashMap<&str, f64> = HashMap::new();
    for s in seeds {
        if let Item::Entity { text_unit_ids, .. } = &s.item {
            for id in text_unit_ids {
                *score.entry(id).or_default() += s.score;
            }
        }
    }
    let mut named: Vec<(String, f64)> =
        score.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    named.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    match mode {
        Mode::Global => Ok(vec![]),
        Mode::Local => gather::text_units(stages, &named).await,
        Mode::Naive => Ok(chunk_seeds.iter().map(unit_of_seed).collect()),
        Mode::Hybrid => {
            let named_ids: Vec<String> = named.iter().map(|(id, _)| id.clone()).collect();
            let found_ids: Vec<String> = chunk_seeds.iter().map(|s| s.id.clone()).collect();
            let fused = search::fuse_ids(&[named_ids, found_ids]);
            let found: HashMap<&str, &Seed> =
                chunk_seeds.iter().map(|s| (s.id.as_str(), s)).collect();
            let to_fetch: Vec<(String, f64)> = fused
                .iter()
                .filter(|(id, _)| !found.contains_key(id.as_str()))
                .cloned()
                .collect();
            let mut fetched: HashMap<String, TextUnit> = gather::text_units(stages, &to_fetch)
                .await?
                .into_iter()
                .map(|u| (u.id.clone(), u))
                .collect();
            Ok(fused
                .iter()
                .filter_map(|(id, score)| {
                    let mut u = match found.get(id.as_str()) {
                        Some(s) => unit_of_seed(s),
                        None => fetched.remove(id)?,
                    };
                    u.score = *score;
                    Some(u)
                })
                .collect())
        }
    }
}

fn selected_seed(s: &Seed) -> Selected {
    let (title, kind, description, degree) = match &s.item {
        Item::Entity {
            title,
            kind,
            description,
            degree,
            ..
        } => (title.clone(), kind.clone(), description.clone(), *degree),
        Item::Chunk { .. } => Default::default(),
    };
    Selected {
        id: s.id.clone(),
        title,
        kind,
        description,
        degree,
        hop: 0,
        score: Some(s.score),
    }
}

fn unit_of_seed(s: &Seed) -> TextUnit {
    let (text, n_tokens, document_id) = match &s.item {
        Item::Chunk {
            text,
            n_tokens,
            document_id,
        } => (text.clone(), *n_tokens, document_id.clone()),
        Item::Entity { .. } => Default::default(),
    };
    TextUnit {
        id: s.id.clone(),
        text,
        n_tokens,
        document_id,
        score: s.score,
    }
}

/// The relations of the best-ranked seed first (a relation counts for its better-ranked seed
/// endpoint), then relations between two seeds, then by weight (desc), the endpoints' summed
/// degree (desc), id, source, target.
fn rank_relations(relations: &mut [Edge], seeds: &[String], selected: &[Selected]) {
    let position: HashMap<&str, usize> = seeds
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let pos = |id: &str| position.get(id).copied().unwrap_or(usize::MAX);
    let degree: HashMap<&str, i64> = selected.iter().map(|e| (e.id.as_str(), e.degree)).collect();
    let d = |id: &str| degree.get(id).copied().unwrap_or(0);
    relations.sort_by(|a, b| {
        let best = |e: &Edge| pos(&e.source).min(pos(&e.target));
        let inner = |e: &Edge| pos(&e.source) != usize::MAX && pos(&e.target) != usize::MAX;
        best(a)
            .cmp(&best(b))
            .then(inner(b).cmp(&inner(a)))
            .then(b.weight.total_cmp(&a.weight))
            .then((d(&b.source) + d(&b.target)).cmp(&(d(&a.source) + d(&a.target))))
            .then_with(|| (&a.id, &a.source, &a.target).cmp(&(&b.id, &b.source, &b.target)))
    });
}

/// The fitted rows and the context text.
struct Answer {
    entities: Vec<Selected>,
    relations: Vec<Edge>,
    units: Vec<TextUnit>,
    reports: Vec<Report>,
    context_text: String,
    tokens: Value,
}

fn assemble_answer(
    req: &RetrieveRequest,
    mut entities: Vec<Selected>,
    mut relations: Vec<Edge>,
    mut units: Vec<TextUnit>,
    mut reports: Vec<Report>,
) -> Answer {
    let (budget, tok) = (req.max_tokens, req.tokenizer);
    if !req.includes("entities") {
        entities.clear();
    }
    if !req.includes("relations") {
        relations.clear();
    }
    let (report_budget, local_budget) = match req.mode {
        Mode::Global => (budget, 0),
        Mode::Naive => (0, 0),
        Mode::Local | Mode::Hybrid => (
            (budget as f64 * COMMUNITY_PROP) as usize,
            (budget as f64 * (1.0 - COMMUNITY_PROP - TEXT_UNIT_PROP)) as usize,
        ),
    };
    let mut t_reports = Table::reports();
    t_reports.fill(
        reports.iter().map(|r| row(&[&r.id, &r.title, &r.content])),
        report_budget,
        tok,
    );
    let local_budget = local_budget + report_budget.saturating_sub(t_reports.tokens);
    let title: HashMap<&str, &str> = entities
        .iter()
        .map(|e| (e.id.as_str(), e.title.as_str()))
        .collect();
    let links: HashMap<&str, usize> = relations.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.source.as_str()).or_default() += 1;
        if r.target != r.source {
            *m.entry(r.target.as_str()).or_default() += 1;
        }
        m
    });
    let mut t_entities = Table::entities();
    t_entities.fill(
        entities.iter().map(|e| {
            let count = links
                .get(e.id.as_str())
                .copied()
                .unwrap_or(0)
                .max(e.degree as usize);
            row(&[&e.id, &e.title, &e.description, &count.to_string()])
        }),
        if relations.is_empty() {
            local_budget
        } else {
            local_budget / 2
        },
        tok,
    );
    let mut t_relations = Table::relations();
    let name = |id: &str| -> String {
        title
            .get(id)
            .filter(|t| !t.is_empty())
            .map(|t| t.to_string())
            .unwrap_or_else(|| id.to_string())
    };
    t_relations.fill(
        relations.iter().map(|r| {
            row(&[
                &r.id,
                &name(&r.source),
                &name(&r.target),
                &r.description,
                &r.weight.to_string(),
            ])
        }),
        local_budget.saturating_sub(t_entities.tokens),
        tok,
    );
    let used = t_reports.tokens + t_entities.tokens + t_relations.tokens;
    let mut t_sources = Table::sources();
    t_sources.fill(
        units.iter().map(|u| row(&[&u.id, &u.text])),
        budget.saturating_sub(used),
        tok,
    );
    let (context_text, total) = assemble(
        &mut [
            &mut t_reports,
            &mut t_entities,
            &mut t_relations,
            &mut t_sources,
        ],
        budget,
        tok,
    );
    reports.truncate(t_reports.rows.len());
    entities.truncate(t_entities.rows.len());
    relations.truncate(t_relations.rows.len());
    units.truncate(t_sources.rows.len());
    let tokens = json!({
        "tokenizer": tok.name(),
        "budget": budget,
        "total": total,
        "community_reports": t_reports.tokens,
        "entities": t_entities.tokens,
        "relations": t_relations.tokens,
        "text_units": t_sources.tokens,
    });
    Answer {
        entities,
        relations,
        units,
        reports,
        context_text,
        tokens,
    }
}

fn finish(
    a: Answer,
    req: &RetrieveRequest,
    seeds: &[Seed],
    chunk_seeds: &[Seed],
    report: ShardsReport,
    mut timings: Timings,
    started: Instant,
) -> Value {
    timings
        .0
        .push(("total", started.elapsed().as_secs_f64() * 1000.0));
    let timings: serde_json::Map<String, Value> = timings
        .0
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!((v * 100.0).round() / 100.0)))
        .collect();
    let entities: Vec<Value> = a
        .entities
        .iter()
        .map(|e| {
            json!({
                "id": e.id, "title": e.title, "type": e.kind, "description": e.description,
                "degree": e.degree, "hop": e.hop, "score": e.score,
            })
        })
        .collect();
    let relations: Vec<Value> = a
        .relations
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "source": r.source, "target": r.target,
                "description": r.description, "weight": r.weight,
            })
        })
        .collect();
    let mut out = json!({
        "mode": req.mode.name(),
        "seeds": seeds,
        "entities": entities,
        "relations": relations,
        "text_units": a.units,
        "community_reports": a.reports,
        "context_text": a.context_text,
        "tokens": a.tokens,
        "_shards": report,
        "timings_ms": timings,
    });
    if matches!(req.mode, Mode::Naive | Mode::Hybrid) {
        out["chunk_seeds"] = json!(chunk_seeds);
    }
    out
}
