//! The `torua` command line: `serve` runs a node, `dev` runs a local cluster of them, `import`
//! loads data, `retrieve` asks for a question's context.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};

use crate::cmd::cert::CertArgs;
use crate::cmd::dev::DevArgs;
use crate::cmd::import::ImportArgs;
use crate::cmd::key::KeyArgs;
use crate::cmd::retrieve::RetrieveArgs;
use crate::node::config::ServeArgs;

#[derive(Debug, Parser)]
#[command(name = "torua", version, about = "A distributed GraphRAG store")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node (configured by TORUA_* environment variables or the flags below).
    Serve(Box<ServeArgs>),
    /// Run a local cluster of `torua serve` processes on loopback and print where to look.
    Dev(DevArgs),
    /// Create an operator CA and node certificates (for TORUA_TLS_CA / _CERT / _KEY).
    Cert(CertArgs),
    /// Load data into a running cluster (e.g. `torua import graphrag <DIR> --url http://node:7101`).
    Import(ImportArgs),
    /// Ask a running cluster for the GraphRAG context of a question (`POST /retrieve`).
    Retrieve(RetrieveArgs),
    /// Create, list and revoke API keys (`torua key create --role read`).
    Key(KeyArgs),
}

/// Parses the command line; on a bad value, exits with a message that names the environment
/// variable as well as the flag, since most deployments configure torua through the environment.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            if matches!(
                err.kind(),
                ErrorKind::ValueValidation | ErrorKind::InvalidValue
            ) {
                if let Some(msg) = explain_value_error(&err) {
                    eprintln!("error: {msg}");
                    std::process::exit(2);
                }
            }
            err.exit()
        }
    }
}

fn explain_value_error(err: &clap::Error) -> Option<String> {
    let arg = match err.get(ContextKind::InvalidArg)? {
        ContextValue::String(s) => s.clone(),
        _ => return None,
    };
    // "--gossip-interval <GOSSIP_INTERVAL>" -> "--gossip-interval" -> "TORUA_GOSSIP_INTERVAL"
    let flag = arg.split_whitespace().next()?.to_string();
    let env = format!(
        "TORUA_{}",
        flag.trim_start_matches('-')
            .replace('-', "_")
            .to_uppercase()
    );
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    let reason = err
        .source()
        .map(|s| s.to_string())
        .or_else(|| match err.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(v)) => Some(format!("accepted values: {}", v.join(", "))),
            _ => None,
        })
        .unwrap_or_else(|| "invalid value".to_string());
    Some(format!("{env} ({flag}) = {value:?}: {reason}"))
}

use std::error::Error as _;
