//! Gathering what the seeds point to: text units by id (from the shards that own them) and
//! community reports (from every shard, since a community lives in its own id's shard).

use std::collections::HashMap;

use serde::Serialize;

use super::request::Mode;
use super::search::{self, Item, Seed, Target};
use super::stage::{StageError, Stages};
use crate::storage::{CommunityReport, RetrievalRead, RetrievalRows};

/// Reports each shard returns at most: far more than any budget holds.
const REPORTS_PER_SHARD: usize = 200;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TextUnit {
    pub id: String,
    pub text: String,
    pub n_tokens: i64,
    pub document_id: String,
    pub score: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub id: String,
    pub title: String,
    pub level: i64,
    pub rank: f64,
    pub content: String,
    /// Whether entities were removed from the community (a document deleted or replaced) after
    /// its report was written: the report may describe what is no longer there.
    pub stale: bool,
    /// Selected entities the community contains (local search); absent for global search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<i64>,
}

/// The chunks with these ids, in the order of `ranked` (id, score); ids not found are skipped.
pub async fn text_units(
    stages: &Stages<'_>,
    ranked: &[(String, f64)],
) -> Result<Vec<TextUnit>, StageError> {
    let ids: Vec<String> = ranked.iter().map(|(id, _)| id.clone()).collect();
    let mut found = search::lookup(stages, Target::Chunks, &ids).await?;
    Ok(ranked
        .iter()
        .filter_map(|(id, score)| match found.remove(id)? {
            Item::Chunk {
                text,
                n_tokens,
                document_id,
            } => Some(TextUnit {
                id: id.clone(),
                text,
                n_tokens,
                document_id,
                score: *score,
            }),
            Item::Entity { .. } => None,
        })
        .collect())
}

/// Reports of the communities holding any of `entity_ids`, by how many they hold (desc), rank
/// (desc), id.
pub async fn reports_of(
    stages: &Stages<'_>,
    entity_ids: &[&str],
    level: Option<i64>,
) -> Result<Vec<Report>, StageError> {
    if entity_ids.is_empty() {
        return Ok(vec![]);
    }
    let read = RetrievalRead::ReportsOf {
        entity_ids: entity_ids.iter().map(|id| id.to_string()).collect(),
        level,
        limit: REPORTS_PER_SHARD,
    };
    let mut reports = every_shards_reports(stages, read).await?;
    reports.sort_by(|a, b| {
        b.matches
            .cmp(&a.matches)
            .then(b.rank.total_cmp(&a.rank))
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(reports)
}

/// The reports every shard answers `read` with, in no order.
async fn every_shards_reports(
    stages: &Stages<'_>,
    read: RetrievalRead,
) -> Result<Vec<Report>, StageError> {
    let shards = stages.all_shards();
    let found = stages
        .run(&shards, read, RetrievalRows::into_reports)
        .await?;
    Ok(found.into_iter().map(report).collect())
}

/// Every report (of `level`, if given) by rank (desc), id: global search's input.
pub async fn all_reports(
    stages: &Stages<'_>,
    level: Option<i64>,
) -> Result<Vec<Report>, StageError> {
    let read = RetrievalRead::AllReports {
        level,
        limit: REPORTS_PER_SHARD,
    };
    let mut reports = every_shards_reports(stages, read).await?;
    reports.sort_by(|a, b| b.rank.total_cmp(&a.rank).then_with(|| a.id.cmp(&b.id)));
    Ok(reports)
}

/// A stored report as retrieval shows it: its full content, or its summary when it has none.
fn report(r: CommunityReport) -> Report {
    Report {
        id: r.id,
        title: r.title,
        level: r.level,
        rank: r.rank,
        content: if r.full_content.trim().is_empty() {
            r.summary
        } else {
            r.full_content
        },
        stale: r.stale,
        matches: r.matches,
    }
}

/// Text units: those the seed entities name, by the summed score of the seeds naming them;
/// naive mode's chunks as found; in hybrid mode both lists fused by rank.
pub async fn ranked_text_units(
    stages: &Stages<'_>,
    mode: Mode,
    seeds: &[Seed],
    chunk_seeds: &[Seed],
) -> Result<Vec<TextUnit>, StageError> {
    let mut score: HashMap<&str, f64> = HashMap::new();
    for s in seeds {
        if let Some(Item::Entity { text_unit_ids, .. }) = &s.item {
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
        Mode::Local => text_units(stages, &named).await,
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
            let mut fetched: HashMap<String, TextUnit> = text_units(stages, &to_fetch)
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

fn unit_of_seed(s: &Seed) -> TextUnit {
    let (text, n_tokens, document_id) = match &s.item {
        Some(Item::Chunk {
            text,
            n_tokens,
            document_id,
        }) => (text.clone(), *n_tokens, document_id.clone()),
        _ => Default::default(),
    };
    TextUnit {
        id: s.id.clone(),
        text,
        n_tokens,
        document_id,
        score: s.score,
    }
}
