//! The answer: entities and relations ranked, every section fitted into the token budget in
//! GraphRAG's proportions, and the JSON the API returns.
//!
//! Counting tokens is CPU work of several milliseconds: callers run [`assemble`] off the async
//! workers.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::context::{assemble as assemble_tables, row, Table};
use super::gather::{Report, TextUnit};
use super::request::{Mode, RetrieveRequest};
use super::search::{Item, Seed};
use crate::query::scatter::ShardsReport;
use crate::query::traverse::TraversalStats;
use crate::storage::Edge;

/// Share of the budget for community reports and for text units (Microsoft GraphRAG's local
/// search: `community_prop` 0.25, `text_unit_prop` 0.5; entities and relations get the rest).
const COMMUNITY_PROP: f64 = 0.25;
const TEXT_UNIT_PROP: f64 = 0.5;
/// An entity of the answer: a seed (with its fused score) or reached by the expansion.
pub struct Selected {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub description: String,
    pub degree: i64,
    pub hop: u32,
    pub score: Option<f64>,
}

pub fn selected_seed(s: &Seed) -> Selected {
    let (title, kind, description, degree) = match &s.item {
        Some(Item::Entity {
            title,
            kind,
            description,
            degree,
            ..
        }) => (title.clone(), kind.clone(), description.clone(), *degree),
        _ => Default::default(),
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

/// The relations of the best-ranked seed first (a relation counts for its better-ranked seed
/// endpoint), then relations between two seeds, then by weight (desc), the endpoints' summed
/// degree (desc), id, source, target.
pub fn rank_relations(relations: &mut [Edge], seeds: &[String], selected: &[Selected]) {
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
pub struct Answer {
    entities: Vec<Selected>,
    relations: Vec<Edge>,
    units: Vec<TextUnit>,
    reports: Vec<Report>,
    context_text: String,
    tokens: Value,
}

pub fn assemble(
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
    let (context_text, total) = assemble_tables(
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

pub fn to_json(
    a: Answer,
    req: &RetrieveRequest,
    seeds: &[Seed],
    chunk_seeds: &[Seed],
    report: ShardsReport,
    traversal: TraversalStats,
    timings: Vec<(&'static str, f64)>,
) -> Value {
    let timings: serde_json::Map<String, Value> = timings
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
        "traversal": traversal,
        "timings_ms": timings,
    });
    if matches!(req.mode, Mode::Naive | Mode::Hybrid) {
        out["chunk_seeds"] = json!(chunk_seeds);
    }
    out
}
