//! The question: `POST /retrieve`'s body, its defaults (Microsoft GraphRAG's local search) and
//! its limits. Every refusal names the field and what would be accepted.

use serde::Deserialize;

use super::tokens::Tokenizer;
use crate::error::Error;

pub const MAX_QUERY_BYTES: usize = 4096;
pub const DEFAULT_TOP_K: usize = 10;
pub const MAX_TOP_K: usize = 100;
pub const DEFAULT_HOPS: u32 = 1;
pub const MAX_HOPS: u32 = 3;
/// GraphRAG's local search default (`max_context_tokens`).
pub const DEFAULT_MAX_TOKENS: usize = 12_000;
pub const MIN_MAX_TOKENS: usize = 100;
pub const MAX_MAX_TOKENS: usize = 200_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
pub const SECTIONS: [&str; 4] = ["entities", "relations", "text_units", "community_reports"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Local,
    Global,
    Naive,
    Hybrid,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Global => "global",
            Mode::Naive => "naive",
            Mode::Hybrid => "hybrid",
        }
    }
}

/// The body as sent. The schema attributes state the limits [`RetrieveRequest::parse`] checks
/// (the OpenAPI document's test holds them equal to the constants above).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(description = "A question: text, an embedding, or both, with the retrieval's settings.")]
#[serde(deny_unknown_fields)]
pub(crate) struct RetrieveBody {
    /// The question as text (at most 4096 bytes). Give `query`, `embedding`, or both.
    #[schema(max_length = 4096)]
    query: Option<String>,
    /// The question's embedding: exactly `TORUA_EMBEDDING_DIM` finite numbers, not all zero;
    /// refused when the cluster stores no embeddings.
    embedding: Option<Vec<f64>>,
    /// `local` (default), `global`, `naive` or `hybrid`.
    #[schema(pattern = "^(local|global|naive|hybrid)$")]
    mode: Option<String>,
    /// Seeds to search for: 1 to 100 (default 10).
    #[schema(minimum = 1, maximum = 100)]
    top_k: Option<i64>,
    /// Hops of expansion from the seeds: 0 to 3 (default 1).
    #[schema(minimum = 0, maximum = 3)]
    hops: Option<i64>,
    /// Token budget of the context: 100 to 200000 (default 12000).
    #[schema(minimum = 100, maximum = 200000)]
    max_tokens: Option<i64>,
    /// Sections of the answer (default all): `entities`, `relations`, `text_units`,
    /// `community_reports`.
    include: Option<Vec<String>>,
    /// Community level of the reports: 0 to 100 (default: every level).
    #[schema(minimum = 0, maximum = 100)]
    community_level: Option<i64>,
    /// `cl100k_base` (default) or `o200k_base`.
    #[schema(pattern = "^(cl100k_base|o200k_base)$")]
    tokenizer: Option<String>,
    /// Time limit in milliseconds: 1 to 60000 (default 10000).
    #[schema(minimum = 1, maximum = 60000)]
    timeout_ms: Option<i64>,
    /// Answer from the shards that answered when some did not (default: the node's
    /// `TORUA_ALLOW_PARTIAL`).
    allow_partial: Option<bool>,
}

/// A checked question.
#[derive(Debug, Clone)]
pub struct RetrieveRequest {
    pub query: Option<String>,
    pub embedding: Option<Vec<f32>>,
    pub mode: Mode,
    pub top_k: usize,
    pub hops: u32,
    pub max_tokens: usize,
    pub include: Vec<String>,
    pub community_level: Option<i64>,
    pub tokenizer: Tokenizer,
    pub timeout_ms: u64,
    pub allow_partial: Option<bool>,
}

impl RetrieveRequest {
    pub fn includes(&self, section: &str) -> bool {
        self.include.iter().any(|s| s == section)
    }

    /// Reads and checks a body for a cluster whose embeddings have `dim` dimensions (0 = none).
    pub fn parse(body: &[u8], dim: usize) -> Result<RetrieveRequest, Error> {
        let b: RetrieveBody = serde_json::from_slice(body)
            .map_err(|e| Error::Invalid(format!("malformed request: {e}")))?;
        let query = b.query.filter(|q| !q.trim().is_empty());
        if let Some(q) = &query {
            if q.len() > MAX_QUERY_BYTES {
                return Err(Error::Invalid(format!(
                    "query is {} bytes; at most {MAX_QUERY_BYTES}",
                    q.len()
                )));
            }
        }
        let embedding = match b.embedding {
            None => None,
            Some(_) if dim == 0 => return Err(Error::Invalid(
                "this cluster stores no embeddings (TORUA_EMBEDDING_DIM=0): send query text only"
                    .into(),
            )),
            Some(v) if v.len() != dim => {
                return Err(Error::Invalid(format!(
                    "embedding has {} dimensions; this cluster uses TORUA_EMBEDDING_DIM={dim}",
                    v.len()
                )))
            }
            Some(v) => {
                let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(Error::Invalid(
                        "embedding contains a number out of 32-bit float range".into(),
                    ));
                }
                if v.iter().all(|x| *x == 0.0) {
                    return Err(Error::Invalid(
                        "embedding is all zeros: it has no direction to compare".into(),
                    ));
                }
                Some(v)
            }
        };
        if query.is_none() && embedding.is_none() {
            return Err(Error::Invalid(
                "give the question as \"query\" text, an \"embedding\", or both".into(),
            ));
        }
        let mode = match b.mode.as_deref().unwrap_or("local") {
            "local" => Mode::Local,
            "global" => Mode::Global,
            "naive" => Mode::Naive,
            "hybrid" => Mode::Hybrid,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown mode {other:?}; use local, global, naive or hybrid"
                )))
            }
        };
        let top_k = in_range("top_k", b.top_k, DEFAULT_TOP_K as i64, 1, MAX_TOP_K as i64)? as usize;
        let hops = in_range("hops", b.hops, DEFAULT_HOPS as i64, 0, MAX_HOPS as i64)? as u32;
        let max_tokens = in_range(
            "max_tokens",
            b.max_tokens,
            DEFAULT_MAX_TOKENS as i64,
            MIN_MAX_TOKENS as i64,
            MAX_MAX_TOKENS as i64,
        )? as usize;
        let timeout_ms = in_range(
            "timeout_ms",
            b.timeout_ms,
            DEFAULT_TIMEOUT_MS as i64,
            1,
            MAX_TIMEOUT_MS as i64,
        )? as u64;
        let include = match b.include {
            None => SECTIONS.iter().map(|s| s.to_string()).collect(),
            Some(list) => {
                if let Some(bad) = list.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    return Err(Error::Invalid(format!(
                        "unknown include item {bad:?}; use any of {}",
                        SECTIONS.join(", ")
                    )));
                }
                list
            }
        };
        let community_level = match b.community_level {
            Some(l) if !(0..=100).contains(&l) => {
                return Err(Error::Invalid(
                    "community_level must be between 0 and 100".into(),
                ))
            }
            l => l,
        };
        let tokenizer = match b.tokenizer.as_deref() {
            None => Tokenizer::Cl100k,
            Some(name) => Tokenizer::parse(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown tokenizer {name:?}; use {}",
                    Tokenizer::NAMES.join(" or ")
                ))
            })?,
        };
        Ok(RetrieveRequest {
            query,
            embedding,
            mode,
            top_k,
            hops,
            max_tokens,
            include,
            community_level,
            tokenizer,
            timeout_ms,
            allow_partial: b.allow_partial,
        })
    }
}

fn in_range(name: &str, v: Option<i64>, default: i64, min: i64, max: i64) -> Result<i64, Error> {
    let v = v.unwrap_or(default);
    if !(min..=max).contains(&v) {
        return Err(Error::Invalid(format!(
            "{name} must be between {min} and {max} (got {v})"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, dim: usize) -> Result<RetrieveRequest, String> {
        RetrieveRequest::parse(body.as_bytes(), dim).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_graphrags_local_search() {
        let r = parse(r#"{"query": "who is Alex?"}"#, 0).unwrap();
        assert_eq!(r.mode, Mode::Local);
        assert_eq!((r.top_k, r.hops, r.max_tokens), (10, 1, 12_000));
        assert_eq!(r.include.len(), 4);
        assert_eq!(r.tokenizer, Tokenizer::Cl100k);
    }

    #[test]
    fn bad_questions_are_refused_with_their_reason() {
        for (body, dim, needle) in [
            (r#"{}"#, 0, "query"),
            (r#"{"query": "  "}"#, 0, "query"),
            (
                r#"{"query": "x", "embedding": [1.0]}"#,
                0,
                "TORUA_EMBEDDING_DIM=0",
            ),
            (r#"{"embedding": [1.0, 2.0]}"#, 3, "has 2 dimensions"),
            (r#"{"embedding": [0, 0, 0]}"#, 3, "all zeros"),
            (r#"{"embedding": [1e300, 0, 0]}"#, 3, "float range"),
            (r#"{"query": "x", "mode": "deep"}"#, 0, "unknown mode"),
            (r#"{"query": "x", "top_k": 0}"#, 0, "top_k"),
            (r#"{"query": "x", "top_k": 1000}"#, 0, "top_k"),
            (r#"{"query": "x", "hops": 4}"#, 0, "hops"),
            (r#"{"query": "x", "max_tokens": 0}"#, 0, "max_tokens"),
            (
                r#"{"query": "x", "max_tokens": 1000000000}"#,
                0,
                "max_tokens",
            ),
            (r#"{"query": "x", "timeout_ms": 0}"#, 0, "timeout_ms"),
            (r#"{"query": "x", "include": ["claims"]}"#, 0, "include"),
            (r#"{"query": "x", "tokenizer": "gpt2"}"#, 0, "tokenizer"),
            (r#"{"query": "x", "colour": 1}"#, 0, "colour"),
            (
                r#"{"query": "x", "community_level": -1}"#,
                0,
                "community_level",
            ),
        ] {
            let err = parse(body, dim).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let long = format!(r#"{{"query": "{}"}}"#, "a".repeat(MAX_QUERY_BYTES + 1));
        assert!(parse(&long, 0).unwrap_err().contains("at most"));
    }
}
