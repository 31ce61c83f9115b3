//! `torua retrieve "question"`: asks any node's `POST /retrieve` and prints the context an LLM
//! would read (or the whole answer as JSON).

use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::cmd::client::Connect;

#[derive(Debug, Clone, Args)]
pub struct RetrieveArgs {
    /// The question.
    pub query: String,
    #[command(flatten)]
    pub connect: Connect,
    /// local, global, naive or hybrid.
    #[arg(long, default_value = "local")]
    pub mode: String,
    /// Seed entities (local) or chunks (naive).
    #[arg(long, default_value_t = 10)]
    pub top_k: u32,
    /// Graph expansion around the seeds (0-3).
    #[arg(long, default_value_t = 1)]
    pub hops: u32,
    /// Token budget of the context.
    #[arg(long, default_value_t = 12_000)]
    pub max_tokens: u32,
    /// Print the whole answer as JSON instead of the context text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RetrieveArgs) -> anyhow::Result<()> {
    let body = json!({
        "query": args.query,
        "mode": args.mode,
        "top_k": args.top_k,
        "hops": args.hops,
        "max_tokens": args.max_tokens,
    });
    let answer = args
        .connect
        .call("POST", "/retrieve", Some(&body), Duration::from_secs(70))?
        .ok(&format!("POST {}", args.connect.url("/retrieve")))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!("{}", answer["context_text"].as_str().unwrap_or_default());
    let shards = &answer["_shards"];
    if shards["failed"].as_u64().unwrap_or(0) > 0 {
        eprintln!(
            "warning: partial answer: {} of {} shards did not answer ({})",
            shards["failed"], shards["total"], shards["failures"]
        );
    }
    eprintln!(
        "{} tokens ({}), {} ms",
        answer["tokens"]["total"], answer["tokens"]["tokenizer"], answer["timings_ms"]["total"]
    );
    Ok(())
}
