//! `torua dev`: a local cluster of real `torua serve` processes on loopback, for trying torua out.
//! It prints where to look (every node's API, the first node's web console), waits until the
//! cluster is green, and stops every node on Ctrl-C.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Number of nodes (1..=32).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub nodes: u16,
    /// Directory for the nodes' data and logs.
    #[arg(long, default_value = "data/dev")]
    pub dir: PathBuf,
    /// First HTTP port; node i listens on HTTP base+i, gossip base+100+i, peer base+200+i.
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: sending a signal to a child we spawned.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot locate the torua binary")?;
    let port = |offset: u16, i: u16| args.base_port + offset + i;
    let seeds = format!("127.0.0.1:{}", port(100, 1));
    let scheme = if nodes_use_https() { "https" } else { "http" };
    let mut nodes = Nodes(Vec::new());
    println!(
        "starting {} torua nodes (data and logs in {})",
        args.nodes,
        args.dir.display()
    );
    for i in 1..=args.nodes {
        let dir = args.dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let log_path = dir.join("torua.log");
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("serve")
            .env("TORUA_NODE_ID", format!("node-{i}"))
            .env("TORUA_HTTP_ADDR", format!("127.0.0.1:{}", port(0, i)))
            .env("TORUA_GOSSIP_ADDR", format!("127.0.0.1:{}", port(100, i)))
            .env("TORUA_PEER_ADDR", format!("127.0.0.1:{}", port(200, i)))
            .env("TORUA_SEEDS", &seeds)
            // Spread the shards over every node of the dev cluster, not just the first one up.
            .env("TORUA_BOOTSTRAP_EXPECT", args.nodes.to_string())
            .env("TORUA_REPLICAS", if args.nodes == 1 { "1" } else { "2" })
            .env("TORUA_DATA_DIR", &dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start torua serve")?;
        println!(
            "  node-{i}: {scheme}://127.0.0.1:{}  log: {}",
            port(0, i),
            log_path.display()
        );
        nodes.0.push(child);
    }
    let first = format!("{scheme}://127.0.0.1:{}", port(0, 1));
    println!("console: {first}/ui");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, child) in nodes.0.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("node-{} exited ({status}); see its log", i + 1);
            }
        }
        let health = ureq::get(&format!("{first}/cluster/health"))
            .timeout(Duration::from_secs(1))
            .call()
            .ok()
            .and_then(|r| r.into_json::<serde_json::Value>().ok());
        if let Some(h) = &health {
            if h["status"] == "green" && h["number_of_ready_nodes"] == args.nodes {
                println!(
                    "cluster is green: {} nodes, coordinator {}",
                    args.nodes, h["coordinator"]
                );
                break;
            }
        }
        if Instant::now() > deadline {
            println!("cluster not green after 30 s; last answer: {health:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "\ntry:\n  the web console: {first}/ui\n  curl -s {first}/cluster/health\n  curl -s {first}/cluster/shards\n  curl -s {first}/nodes\n  \
         curl -s {first}/metrics\n  {exe} import graphrag tests/data/graphrag-operation-dulce --url {first}\n\
         Ctrl-C stops every node.",
        exe = exe.display()
    );
    wait_for_ctrl_c();
    println!("stopping...");
    drop(nodes);
    Ok(())
}

/// Whether the nodes serve HTTPS, as `serve` decides from the environment they inherit from this
/// process: a cluster secret or operator certificates turn it on unless `TORUA_HTTP_TLS=off`.
fn nodes_use_https() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    match std::env::var("TORUA_HTTP_TLS")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "on" => true,
        "off" => false,
        _ => set("TORUA_CLUSTER_SECRET") || set("TORUA_TLS_CA"),
    }
}

fn wait_for_ctrl_c() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    });
}
