//! The measured queries: retrieve requests built from topic centres plus noise, and their
//! exact nearest neighbours (the recall reference).

use super::*;
use torua_testkit::graphrag::WithEmbedding as _;

/// A `/retrieve` request (serialised directly: embeddings as short f32 decimals).
#[derive(Serialize, Default)]
pub(crate) struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) embedding: Option<&'a [f32]>,
    pub(crate) mode: &'static str,
    pub(crate) top_k: usize,
    pub(crate) hops: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) include: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) allow_partial: Option<bool>,
}

pub(crate) struct Query {
    /// The entity it was made from.
    pub(crate) source: usize,
    pub(crate) text: String,
    pub(crate) embedding: Vec<f32>,
    /// The timed request's body.
    pub(crate) body: Vec<u8>,
}

/// The run's queries, the warm-up first, and the exact top k of the recall queries (the first
/// ones after the warm-up).
pub(crate) struct Queries {
    pub(crate) all: Vec<Query>,
    exact: Vec<Vec<String>>,
    warmup: usize,
}

impl Queries {
    /// The recall queries, each with its exact top k.
    pub(crate) fn recall(&self) -> impl Iterator<Item = (&Query, &[String])> {
        let exact = self.exact.iter().map(Vec::as_slice);
        self.all[self.warmup..].iter().zip(exact)
    }
}

pub(crate) fn make_queries(a: &Args, g: &Graph) -> Result<Queries> {
    let all = requests(a, g)?;
    let norms: Vec<f32> = g
        .items
        .entities
        .iter()
        .map(|e| e.vector().iter().map(|x| x * x).sum::<f32>().sqrt())
        .collect();
    let exact = all[a.warmup..]
        .iter()
        .take(a.recall_queries)
        .map(|q| exact_top(g, &norms, &q.embedding, a.top_k))
        .collect();
    Ok(Queries {
        all,
        exact,
        warmup: a.warmup,
    })
}

fn requests(a: &Args, g: &Graph) -> Result<Vec<Query>> {
    let mut rng = Rng(a.graph.seed ^ 0x5eed_9e7e);
    (0..a.warmup + a.queries)
        .map(|_| {
            let i = rng.below(g.items.entities.len());
            let e = &g.items.entities[i];
            let title: Vec<&str> = e.title.split(' ').collect();
            let desc: Vec<&str> = e.description.split(' ').collect();
            let text = format!(
                "{} {} {}",
                title[rng.below(title.len())].to_lowercase(),
                desc[rng.below(desc.len())],
                desc[rng.below(desc.len())]
            );
            let centre: Vec<f64> = e.vector().iter().map(|&x| f64::from(x)).collect();
            let embedding = quantize(&around(&mut rng, &centre, a.query_noise));
            let body = serde_json::to_vec(&Request {
                query: Some(&text),
                embedding: Some(&embedding),
                mode: "local",
                top_k: a.top_k,
                hops: a.hops,
                max_tokens: a.max_tokens,
                include: a.include.as_deref(),
                allow_partial: None,
            })?;
            Ok(Query {
                source: i,
                body,
                text,
                embedding,
            })
        })
        .collect()
}

/// Exact top `k` entity ids by cosine similarity (brute force over the stored vectors).
fn exact_top(g: &Graph, norms: &[f32], q: &[f32], k: usize) -> Vec<String> {
    let qn = q.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut scored: Vec<(f32, usize)> = g
        .items
        .entities
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let dot: f32 = e.vector().iter().zip(q).map(|(a, b)| a * b).sum();
            (dot / (norms[i] * qn), i)
        })
        .collect();
    scored.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
    scored.truncate(k);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .map(|(_, i)| g.items.entities[i].id.clone())
        .collect()
}
