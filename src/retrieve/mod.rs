//! GraphRAG retrieval (`POST /retrieve`): from a question (text and/or embedding) to the entities,
//! relations, text units and community reports an LLM needs, fitted to a token budget, from a
//! graph spread over the cluster. [`request`] reads and checks the question; [`search`] finds
//! seeds on every shard and fuses them; the neighbourhood comes from the traversal of
//! `query::traverse`; [`gather`] fetches and ranks text units and reports; [`answer`] ranks entities
//! and relations and fits everything into GraphRAG's context tables ([`context`]), counted with
//! [`tokens`]. Each stage goes through [`stage`], which
//! keeps the `_shards` account.

pub mod answer;
pub mod context;
pub mod gather;
pub mod request;
pub mod search;
pub mod stage;
pub mod tokens;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::cluster::shard_map::ShardMap;
use crate::node::context::NodeContext;
use crate::query::traverse::{neighborhood, Traversal, TraversalStats, TraverseError};
use crate::storage::{Direction, EntitySummary, ReadScope, RelationFilter};
use answer::{rank_relations, selected_seed, Selected};
pub use request::{Mode, RetrieveRequest};
use search::{Seed, Target};
use stage::{StageError, Stages};

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

/// Answers `req` over the shards of `map`: seeds, expansion, context. Shards that do not answer
/// are left out when the request (or the node's `TORUA_ALLOW_PARTIAL`) allows a partial answer.
/// Every read is as fresh as `scope` asks, and notes there the copies that answered behind.
pub async fn retrieve(
    ctx: &Arc<NodeContext>,
    map: ShardMap,
    req: &RetrieveRequest,
    scope: &ReadScope,
) -> Result<Value, RetrieveError> {
    let allow_partial = req.allow_partial.unwrap_or(ctx.settings.allow_partial);
    let started = Instant::now();
    let deadline = started + std::time::Duration::from_millis(req.timeout_ms);
    let stages = Stages::new(ctx, map.clone(), deadline, scope.clone());
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
            return Ok((vec![], vec![], 0.0, TraversalStats::default()));
        }
        let started = Instant::now();
        let mut traversal = Traversal::new(
            ctx,
            map.clone(),
            deadline,
            true,
            Direction::Both,
            RelationFilter::default(),
            stages.scope.clone(),
        );
        for id in &seed_ids {
            if let Some(shard) = stages.shard_found_in(id) {
                traversal.place(id, shard);
            }
        }
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
        let stats = traversal.stats();
        Ok::<_, RetrieveError>((n.entities, n.relations, ms_since(started), stats))
    };
    let units = async {
        let started = Instant::now();
        let units = if req.includes("text_units") {
            gather::ranked_text_units(&stages, req.mode, &seeds, &chunk_seeds).await?
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
    let ((reached, mut relations, expand_ms, traversal), (units, units_ms), (reports, reports_ms)) =
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
        answer::assemble(&owned, selected, relations, units, reports)
    })
    .await
    .map_err(|e| RetrieveError::Internal(format!("assembling the context failed: {e}")))?;
    timings.since("assemble", &mut t);
    timings.0.push(("total", ms_since(started)));
    Ok(answer::to_json(
        answer,
        req,
        &seeds,
        &chunk_seeds,
        report,
        traversal,
        timings.0,
    ))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
