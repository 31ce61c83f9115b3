//! `torua key create|list|revoke`: API key management through any node's `/keys` (needs an
//! admin key, e.g. the bootstrap key).

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::cmd::client::Connect;
use crate::node::access::Role;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub action: KeyAction,
    #[command(flatten)]
    pub connect: Connect,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeyAction {
    /// Create a key and print it (the only time it is shown).
    Create {
        /// read, write or admin.
        #[arg(long)]
        role: Role,
        /// A name to recognise it by in `torua key list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the cluster's keys (without their secrets).
    List,
    /// Revoke a key on every node.
    Revoke {
        /// The key's id (from `torua key list`).
        id: String,
    },
}

pub fn run(args: KeyArgs) -> anyhow::Result<()> {
    let c = &args.connect;
    match args.action {
        KeyAction::Create { role, name } => {
            let mut body = json!({ "role": role.as_str() });
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            let answer = c
                .call("POST", "/keys", Some(&body), TIMEOUT)?
                .ok("POST /keys")?;
            eprintln!(
                "created key {} ({}, role {}); it is shown only now:",
                answer["id"].as_str().unwrap_or_default(),
                answer["name"].as_str().unwrap_or_default(),
                answer["role"].as_str().unwrap_or_default()
            );
            println!("{}", answer["key"].as_str().unwrap_or_default());
        }
        KeyAction::List => {
            let answer = c.call("GET", "/keys", None, TIMEOUT)?.ok("GET /keys")?;
            println!("{:<14} {:<6} {:<24} name", "id", "role", "created");
            for k in answer["keys"].as_array().into_iter().flatten() {
                let created = k["created_ms"].as_u64().map_or_else(String::new, |ms| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(ms),
                    )
                    .to_string()
                });
                println!(
                    "{:<14} {:<6} {:<24} {}",
                    k["id"].as_str().unwrap_or_default(),
                    k["role"].as_str().unwrap_or_default(),
                    created,
                    k["name"].as_str().unwrap_or_default()
                );
            }
        }
        KeyAction::Revoke { id } => {
            let path = format!("/keys/{id}");
            c.call("DELETE", &path, None, TIMEOUT)?
                .ok(&format!("DELETE {path}"))?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
