//! `torua cert`: creates an operator CA and one certificate per node, for clusters that prefer
//! their own PKI over certificates derived from the cluster secret.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct CertArgs {
    /// Directory to write `ca.pem`, `ca.key`, `<node>.pem`, `<node>.key` into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Comma-separated node ids to issue certificates for.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
}

pub fn run(args: CertArgs) -> anyhow::Result<()> {
    let ids: Vec<String> = args
        .nodes
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() {
        anyhow::bail!("--nodes: give at least one node id");
    }
    transport::generate_operator_pki(&args.out, &ids)
        .with_context(|| format!("cannot create certificates in {}", args.out.display()))?;
    println!(
        "wrote {} (keep ca.key offline)",
        args.out.join("ca.pem").display()
    );
    for id in &ids {
        println!(
            "  {id}: TORUA_NODE_ID={id} TORUA_TLS_CA={ca} TORUA_TLS_CERT={cert} TORUA_TLS_KEY={key}",
            ca = args.out.join("ca.pem").display(),
            cert = args.out.join(format!("{id}.pem")).display(),
            key = args.out.join(format!("{id}.key")).display(),
        );
    }
    println!("every node also needs the same TORUA_CLUSTER_SECRET (it keys gossip authentication)");
    Ok(())
}
