//! Node configuration: `TORUA_*` environment variables, each also a `torua serve` flag.
//!
//! Parsing is strict: a bad value stops the process at start with a message naming the variable
//! and what it accepts (see `explain_clap_error` in `cli.rs`). Durations are written `500ms`,
//! `30s`, `5m`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use membership::NodeId;

/// `torua serve` settings. Field docs are the `--help` text and match the README table.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Node id: letters, digits, '.', '_', '-'. Unset: generated once and kept in the data dir.
    #[arg(long, env = "TORUA_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<NodeId>,

    /// Cluster name; nodes only join nodes with the same cluster id.
    #[arg(long, env = "TORUA_CLUSTER_ID", default_value = "torua", value_parser = parse_cluster_id)]
    pub cluster_id: String,

    /// UDP address the gossip socket listens on.
    #[arg(long, env = "TORUA_GOSSIP_ADDR", default_value = "127.0.0.1:7200", value_parser = parse_socket_addr)]
    pub gossip_addr: SocketAddr,

    /// UDP address of the QUIC peer transport.
    #[arg(long, env = "TORUA_PEER_ADDR", default_value = "127.0.0.1:7300", value_parser = parse_socket_addr)]
    pub peer_addr: SocketAddr,

    /// TCP address of the HTTP API.
    #[arg(long, env = "TORUA_HTTP_ADDR", default_value = "127.0.0.1:7100", value_parser = parse_socket_addr)]
    pub http_addr: SocketAddr,

    /// Host or IP other nodes dial to reach this one. Required when listening on 0.0.0.0 / [::].
    #[arg(long, env = "TORUA_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,

    /// Comma-separated gossip addresses (host:port) of existing nodes. Empty: this is the first node.
    #[arg(long, env = "TORUA_SEEDS", default_value = "", value_parser = parse_seeds)]
    pub seeds: Seeds,

    /// Directory for this node's files (node id, coordinator term, later: shards).
    #[arg(long, env = "TORUA_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Length of a gossip round (10ms..60s). Failure detection takes about phi x this.
    #[arg(long, env = "TORUA_GOSSIP_INTERVAL", default_value = "100ms", value_parser = |s: &str| interval(s, "10ms", "60s", false))]
    pub gossip_interval: Duration,

    /// Failure detector threshold (2..=50): a member is dead after ~phi mean heartbeat intervals of
    /// silence (~0.9 s at 20 with 3 nodes and 100 ms rounds; see membership's DEFAULT_PHI_THRESHOLD).
    #[arg(long, env = "TORUA_PHI_THRESHOLD", default_value = "20", value_parser = parse_phi)]
    pub phi_threshold: f64,

    /// How long a dead member stays listed as `dead` before it is forgotten.
    #[arg(long, env = "TORUA_DEAD_NODE_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub dead_node_grace: Duration,

    /// Maximum time a graceful shutdown (SIGTERM/SIGINT) may take before the node exits anyway.
    #[arg(long, env = "TORUA_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Shared secret of the cluster. Every node derives the cluster CA (mutual TLS between peers)
    /// and the gossip MAC key from it. Unset: a well-known development secret, allowed only when
    /// every listen address is loopback.
    #[arg(long, env = "TORUA_CLUSTER_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub cluster_secret: Option<String>,

    /// Whether the HTTP API asks for API keys. `auto`: yes, unless the node runs in the loopback
    /// development mode (no cluster secret, no operator certificates).
    #[arg(long, env = "TORUA_AUTH", value_enum, default_value_t = Toggle::Auto)]
    pub auth: Toggle,

    /// An admin API key chosen by the operator, accepted by every node given it (not stored:
    /// rotate it by changing it and restarting). Create the cluster's other keys with it.
    #[arg(long, env = "TORUA_BOOTSTRAP_API_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub bootstrap_api_key: Option<String>,

    /// Whether the HTTP API is served over TLS. `auto`: yes, unless the node runs in the loopback
    /// development mode. The certificate is TORUA_HTTP_TLS_CERT's, or one issued from the CA
    /// derived from the cluster secret.
    #[arg(long, env = "TORUA_HTTP_TLS", value_enum, default_value_t = Toggle::Auto)]
    pub http_tls: Toggle,

    /// The HTTP API's certificate chain (PEM), instead of one issued from the cluster secret's CA
    /// (needed with operator certificates).
    #[arg(long, env = "TORUA_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,

    /// The private key (PEM) of TORUA_HTTP_TLS_CERT.
    #[arg(long, env = "TORUA_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,

    /// Operator CA certificate (PEM). With TORUA_TLS_CERT and TORUA_TLS_KEY, peers use these
    /// instead of certificates derived from the secret (see `torua cert`).
    #[arg(long, env = "TORUA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// This node's certificate (PEM) signed by TORUA_TLS_CA; its common name is the node id.
    #[arg(long, env = "TORUA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// This node's private key (PEM).
    #[arg(long, env = "TORUA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// How often a node pushes its health report to the coordinator (100ms..60s).
    #[arg(long, env = "TORUA_REPORT_INTERVAL", default_value = "1s", value_parser = |s: &str| interval(s, "100ms", "60s", false))]
    pub report_interval: Duration,

    /// How often a shard's primary compares its copy with the other in-sync copies (anti-entropy),
    /// one shard at a time; `0s` turns it off (0s, or 1s..1h).
    #[arg(long, env = "TORUA_ANTI_ENTROPY_INTERVAL", default_value = "10s", value_parser = |s: &str| interval(s, "1s", "1h", true))]
    pub anti_entropy_interval: Duration,

    /// A shard copy that applies nothing for this long while writes wait is stuck (unless it waits
    /// for an apply slot, or its round has run less than three times its longest round before):
    /// it is reported in health and, when another in-sync copy of its shard exists, rebuilt from
    /// it (1s..1h).
    #[arg(long, env = "TORUA_STUCK_AFTER", default_value = "60s", value_parser = |s: &str| interval(s, "1s", "1h", false))]
    pub stuck_after: Duration,

    /// How long a read waits for the writes acknowledged before it to be applied before it
    /// answers from what is applied and names the lagging copies (header `x-torua-behind`,
    /// `_shards.behind`); a request's `freshness=strict` waits for them instead (0s, or
    /// 10ms..8s).
    #[arg(long, env = "TORUA_READ_WAIT", default_value = "2s", value_parser = |s: &str| interval(s, "10ms", "8s", true))]
    pub read_wait: Duration,

    /// Backpressure by time: a shard's primary refuses new writes as busy (the routing node
    /// retries them for up to 15 s) while its oldest unapplied write has waited longer than
    /// this, or than four times the longest lag of the last rounds of the node's copies if that
    /// is longer (a bulk load's rounds grow with the copies), so that acknowledged writes become
    /// readable within about this long; `0s` turns it off, leaving only the byte limit (0s, or
    /// 1s..1h).
    #[arg(long, env = "TORUA_MAX_APPLY_LAG", default_value = "5s", value_parser = |s: &str| interval(s, "1s", "1h", true))]
    pub max_apply_lag: Duration,

    /// How long `/cluster/health` and `/cluster/nodes` wait for the coordinator before answering
    /// from this node's own view (`source: "local"`).
    #[arg(long, env = "TORUA_COORDINATOR_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub coordinator_timeout: Duration,

    /// Number of graph shards, fixed when the cluster first forms (1..=1024).
    #[arg(long, env = "TORUA_SHARDS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub shards: u32,

    /// Copies of each shard, on distinct nodes (1..=5).
    #[arg(long, env = "TORUA_REPLICAS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub replicas: u32,

    /// Ready nodes the coordinator waits for before creating the shard map (1..=1000).
    #[arg(long, env = "TORUA_BOOTSTRAP_EXPECT", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub bootstrap_expect: u64,

    /// Memory budget of this node's graph databases in MiB, split between its shard copies (64..=1048576).
    #[arg(long, env = "TORUA_MEMORY_MB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    pub memory_mb: u64,

    /// Largest size of one shard copy's database in GiB (address space reserved by the engine).
    #[arg(long, env = "TORUA_MAX_SHARD_GB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_shard_gb: u64,

    /// Dimension of entity and chunk embeddings (0 = no embeddings); fixed when a shard is created.
    #[arg(long, env = "TORUA_EMBEDDING_DIM", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=8192))]
    pub embedding_dim: u32,

    /// How new rows reach Kuzu: `create` (logged in Kuzu's WAL: nothing applied is lost to
    /// kill -9, even with one copy; ingest 2-15x slower), `copy` (bulk COPY; a copy killed
    /// mid-commit is rebuilt from another copy, so only with TORUA_REPLICAS >= 2), or `auto`
    /// (`create` with TORUA_REPLICAS=1, else `copy`).
    #[arg(long, env = "TORUA_INSERT_MODE", default_value_t = crate::storage::InsertMode::Auto,
          value_parser = clap::builder::TypedValueParser::map(
              clap::builder::PossibleValuesParser::new(["auto", "create", "copy"]),
              |s: String| s.parse::<crate::storage::InsertMode>().expect("a listed value")))]
    pub insert_mode: crate::storage::InsertMode,

    /// Whether queries answer with what they have when a shard has no answering copy (the answer
    /// says so in `_shards`); `false` makes such queries fail with 503. A request's
    /// `allow_partial` overrides it.
    #[arg(long, env = "TORUA_ALLOW_PARTIAL", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_partial: bool,

    /// Whether a node answering a traversal step goes on by itself over the shard copies it
    /// holds (the far ends' relations for the levels left, then their summaries) and sends
    /// that back with the step, so later steps ask the network only for what it did not hold.
    /// Off by default: with entities placed by hash, a far end's shard is sent to another node
    /// about two times in three, the later rounds stay, and reading ahead made neighbourhoods
    /// slower (bench/RESULTS.md); it pays when nodes hold most of what a search reaches.
    #[arg(long, env = "TORUA_TRAVERSE_LOCALLY", default_value_t = false, action = clap::ArgAction::Set)]
    pub traverse_locally: bool,

    /// User Cypher statements (`POST /query`) this node runs at once; more wait up to a second,
    /// then get 429. Bounds what admin keys can make one node do (each statement also holds a
    /// reader of every shard copy it reaches, and Kuzu's memory comes from the copy's buffer pool).
    #[arg(long, env = "TORUA_MAX_USER_QUERIES", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_user_queries: u32,

    /// How long a node may stay dead before its shard copies are re-created on other nodes.
    #[arg(long, env = "TORUA_REPLACE_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub replace_after: Duration,

    /// Shard copies being filled at the same time, cluster-wide (re-replication, rebalancing and
    /// drains share it; 1..=64).
    #[arg(long, env = "TORUA_MAX_CONCURRENT_MOVES", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_concurrent_moves: u64,

    /// On SIGTERM, how long the node may spend moving its copies to other nodes before it leaves
    /// (a decommission). `0s` (the default): it hands its primary roles and places in the in-sync
    /// sets over and leaves; its data stays for its return.
    #[arg(long, env = "TORUA_DRAIN_TIMEOUT", default_value = "0s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `info,membership=debug`.
    #[arg(long, env = "TORUA_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub log: String,

    /// Log line format: `text` or `json`.
    #[arg(long, env = "TORUA_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Tests only: fault-injection points to arm, `name=actions;...` (see `node::failpoints`).
    #[arg(long, env = "TORUA_FAILPOINTS", hide = true)]
    pub failpoints: Option<String>,
}

/// The parsed seed list.
#[derive(Debug, Clone, Default)]
pub struct Seeds(pub Vec<String>);

/// Addresses this node publishes, derived from listen addresses and the advertise host.
#[derive(Debug, Clone)]
pub struct Advertised {
    pub gossip: SocketAddr,
    pub http: String,
    pub peer: String,
}

impl ServeArgs {
    /// Cross-field checks and the addresses to advertise.
    pub fn advertised(&self) -> anyhow::Result<Advertised> {
        let unspecified = [self.gossip_addr, self.peer_addr, self.http_addr]
            .iter()
            .any(|a| a.ip().is_unspecified());
        let host = match (&self.advertise_host, unspecified) {
            (Some(h), _) => h.clone(),
            (None, true) => bail!(
                "TORUA_ADVERTISE_HOST (--advertise-host) must be set when a listen address is \
                 0.0.0.0 or [::]: other nodes need an address they can dial"
            ),
            (None, false) => String::new(),
        };
        let with_host = |a: SocketAddr| -> String {
            if host.is_empty() {
                a.to_string()
            } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
                format!("[{host}]:{}", a.port())
            } else {
                format!("{host}:{}", a.port())
            }
        };
        let gossip_text = with_host(self.gossip_addr);
        let gossip = gossip_text
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .with_context(|| {
                format!("TORUA_ADVERTISE_HOST: cannot resolve {gossip_text:?}; give an IP address or a resolvable host name")
            })?;
        Ok(Advertised {
            gossip,
            http: with_host(self.http_addr),
            peer: with_host(self.peer_addr),
        })
    }

    /// Whether the HTTP API asks for keys (see [`Toggle`]).
    pub fn auth_enabled(&self) -> bool {
        self.auth.resolve(self.is_dev_mode())
    }

    /// Whether the HTTP API is served over TLS (see [`Toggle`]).
    pub fn http_tls_enabled(&self) -> bool {
        self.http_tls.resolve(self.is_dev_mode())
    }

    /// No cluster secret and no operator certificates: the loopback development mode.
    pub fn is_dev_mode(&self) -> bool {
        self.cluster_secret.is_none() && self.tls_ca.is_none()
    }

    /// Whether every listen address is loopback (the development secret is allowed then).
    pub fn is_loopback_only(&self) -> bool {
        [self.gossip_addr, self.peer_addr, self.http_addr]
            .iter()
            .all(|a| a.ip().is_loopback())
    }
}

/// `TORUA_AUTH`, `TORUA_HTTP_TLS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    /// On, unless the node runs in the loopback development mode.
    Auto,
    On,
    Off,
}

impl Toggle {
    fn resolve(self, dev_mode: bool) -> bool {
        match self {
            Toggle::On => true,
            Toggle::Off => false,
            Toggle::Auto => !dev_mode,
        }
    }
}

fn parse_node_id(s: &str) -> Result<NodeId, String> {
    NodeId::new(s).map_err(|e| e.to_string())
}

fn parse_cluster_id(s: &str) -> Result<String, String> {
    // Same alphabet and length as node ids: it travels in every gossip packet.
    NodeId::new(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string().replace("node id", "cluster id"))
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("{s:?} is not an address; expected ip:port such as 127.0.0.1:7100 or [::1]:7100")
    })
}

fn parse_seeds(s: &str) -> Result<Seeds, String> {
    let mut seeds = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (host, port) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("seed {part:?} has no port; expected host:port"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "seed {part:?} is not host:port with a port in 1..65535"
            ));
        }
        if host.trim_matches(['[', ']']).parse::<IpAddr>().is_err()
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!(
                "seed {part:?}: {host:?} is neither an IP address nor a host name"
            ));
        }
        seeds.push(part.to_string());
    }
    Ok(Seeds(seeds))
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|_| format!("{s:?} is not a duration; write it like 500ms, 30s or 5m"))
}

/// A duration from `min` to `max` (written as the flags take them), or `0s` when `off` allows
/// turning the thing off.
fn interval(s: &str, min: &str, max: &str, off: bool) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if (off && d.is_zero()) || (parse_duration(min)?..=parse_duration(max)?).contains(&d) {
        return Ok(d);
    }
    let zero = if off { "0s (off) or " } else { "" };
    Err(format!(
        "{s} is out of range; accepted: {zero}{min} to {max}"
    ))
}

fn parse_secret(s: &str) -> Result<String, String> {
    if s.len() < 16 {
        return Err("too short: use at least 16 characters (e.g. `openssl rand -hex 32`)".into());
    }
    Ok(s.to_string())
}

fn parse_phi(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (2.0..=50.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number from 2 to 50")),
    }
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| {
            format!("{s:?} is not a log filter ({e}); examples: info, debug, info,membership=debug")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_documented_forms() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("500ms"));
        assert!(interval("1ms", "10ms", "60s", false).is_err());
        assert_eq!(
            interval("0s", "1s", "1h", false).unwrap_err(),
            "0s is out of range; accepted: 1s to 1h"
        );
        assert_eq!(interval("0s", "1s", "1h", true).unwrap(), Duration::ZERO);
        assert!(interval("2h", "1s", "1h", true)
            .unwrap_err()
            .contains("0s (off) or 1s to 1h"));
    }

    #[test]
    fn seeds_are_checked() {
        assert!(parse_seeds("").unwrap().0.is_empty());
        assert_eq!(
            parse_seeds("127.0.0.1:7200, node-b.local:7200").unwrap().0,
            ["127.0.0.1:7200", "node-b.local:7200"]
        );
        assert!(parse_seeds("127.0.0.1").is_err());
        assert!(parse_seeds("127.0.0.1:0").is_err());
        assert!(parse_seeds("bad host:1").is_err());
    }
}
