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
    #[arg(long, value_delimiter = ',', required_unless_present = "secret_ca")]
    pub nodes: Vec<String>,
    /// Print (to stdout, PEM) the CA certificate every node derives from TORUA_CLUSTER_SECRET
    /// and TORUA_CLUSTER_ID instead: what `curl --cacert` or `--ca` needs to trust the nodes'
    /// HTTPS. Writes nothing.
    #[arg(long, conflicts_with = "nodes")]
    pub secret_ca: bool,
    /// The cluster secret (for --secret-ca).
    #[arg(long, env = "TORUA_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// The cluster id (for --secret-ca): it salts the derived CA.
    #[arg(long, env = "TORUA_CLUSTER_ID", default_value = "torua")]
    pub cluster_id: String,
}

pub fn run(args: CertArgs) -> anyhow::Result<()> {
    if args.secret_ca {
        let secret = args.cluster_secret.as_deref().ok_or_else(|| {
            anyhow::anyhow!("--secret-ca: set TORUA_CLUSTER_SECRET (or --cluster-secret)")
        })?;
        let ca = transport::ClusterCa::derive(secret, &args.cluster_id)
            .context("cannot derive the cluster CA from the secret")?;
        print!("{}", ca.cert_pem());
        return Ok(());
    }
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
