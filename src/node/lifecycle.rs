//! `torua serve`: one node's life — open the data dir, bind the ports, join the cluster, serve
//! HTTP, and leave gracefully on SIGTERM/SIGINT.

use std::time::Duration;

use anyhow::Context;
use std::sync::Arc;

use membership::{AuthenticatedUdpTransport, Cluster, MembershipConfig};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};
use transport::{Endpoint, TransportConfig};

use crate::api;
use crate::cluster::coordinator;
use crate::cluster::drain;
use crate::cluster::registry::Registry;
use crate::cluster::reporter;
use crate::cluster::shard_map::MapHolder;
use crate::node::access::Access;
use crate::node::config::ServeArgs;
use crate::node::context::{NodeContext, Settings};
use crate::node::data_dir::DataDir;
use crate::node::logging;
use crate::node::metrics::Metrics;
use crate::node::security::Security;
use crate::node::wire::PeerService;
use crate::replication::snapshot;
use crate::storage::Storage;

/// Gossip rounds a leaving node waits at each step so every peer hears of it.
const LEAVE_ROUNDS: u32 = 3;
/// How long SIGTERM's hand-over of this node's places in the in-sync sets may take in all.
const HAND_OVER_BUDGET: Duration = Duration::from_secs(2);
/// Ingest requests a node works on at once; more get 429 with Retry-After.
const INGEST_CONCURRENCY: usize = 16;

/// The names a client may reach the HTTP API by, for its certificate: the advertised host, the
/// listen address when it is a specific one, and loopback.
fn http_names(args: &ServeArgs, advertised: &str) -> Vec<String> {
    let host = advertised
        .rsplit_once(':')
        .map_or(advertised, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let mut names = vec![host.to_string()];
    if !args.http_addr.ip().is_unspecified() {
        names.push(args.http_addr.ip().to_string());
    }
    names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    names.sort();
    names.dedup();
    names
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let advertised = args.advertised()?;
    let data_dir = DataDir::open(&args.data_dir)?;
    let node_id = data_dir.node_id(args.node_id.as_ref())?;
    let (log_filter, _log_flush) =
        logging::init(node_id.as_str(), &args.log, args.log_format == "json");
    if let Some(spec) = &args.failpoints {
        super::failpoints::configure(spec)?;
    }
    let started = std::time::Instant::now();
    let security = Security::from_args(&args, &node_id, &http_names(&args, &advertised.http))?;
    // Loading the default tokenizer's tables takes ~50 ms: not on the first retrieval's clock.
    std::thread::spawn(|| crate::retrieve::tokens::Tokenizer::Cl100k.count("warm up"));

    let http = TcpListener::bind(args.http_addr).await.with_context(|| {
        format!(
            "TORUA_HTTP_ADDR: cannot listen on {} (port in use, or not an address of this machine)",
            args.http_addr
        )
    })?;

    let mut config = MembershipConfig::new(node_id.clone(), &args.cluster_id, args.gossip_addr);
    config.gossip_advertise_addr = advertised.gossip;
    config.seeds = args.seeds.0.clone();
    config.gossip_interval = args.gossip_interval;
    config.phi_threshold = args.phi_threshold;
    config.dead_node_grace = args.dead_node_grace;
    config.http_addr = Some(advertised.http.clone());
    config.peer_addr = Some(advertised.peer.clone());
    config.state_dir = Some(data_dir.path().to_path_buf());
    let endpoint = Endpoint::bind(
        args.peer_addr,
        security.identity.clone(),
        TransportConfig::default(),
    )
    .with_context(|| {
        format!(
            "TORUA_PEER_ADDR: cannot listen on {} (port in use, or not an address of this machine)",
            args.peer_addr
        )
    })?;
    let gossip_transport = AuthenticatedUdpTransport::new(security.gossip_sealer());
    let gossip_rejected = gossip_transport.rejected_counter();
    let cluster = Cluster::join(config, gossip_transport)
        .await
        .map_err(|e| anyhow::anyhow!("TORUA_GOSSIP_ADDR: {e:#}"))?;

    let metrics = Metrics::new();
    metrics.watch_gossip_rejected(gossip_rejected);
    let insert_mode = args.insert_mode.resolve(args.replicas);
    tracing::info!(
        ?insert_mode,
        replicas = args.replicas,
        "new rows reach Kuzu by this insert mode (TORUA_INSERT_MODE)"
    );
    let storage = Arc::new(Storage::new(
        data_dir.path(),
        args.memory_mb,
        args.max_shard_gb,
        args.embedding_dim as usize,
        insert_mode,
    )?);
    let shard_map = MapHolder::load(data_dir.path());
    if let Some(map) = shard_map.get() {
        if map.shards != args.shards || map.replicas != args.replicas {
            warn!(
                map_shards = map.shards,
                map_replicas = map.replicas,
                "TORUA_SHARDS / TORUA_REPLICAS differ from the cluster's shard map; the map wins (they are fixed when the cluster forms)"
            );
        }
    }
    let ctx = Arc::new(NodeContext {
        cluster: cluster.clone(),
        endpoint: endpoint.clone(),
        registry: Registry::default(),
        metrics,
        log_filter,
        settings: Settings {
            data_dir: data_dir.path().to_path_buf(),
            started,
            http_addr: advertised.http.clone(),
            peer_addr: advertised.peer.clone(),
            gossip_addr: advertised.gossip.to_string(),
            report_interval: args.report_interval,
            coordinator_timeout: args.coordinator_timeout,
            shards: args.shards,
            replicas: args.replicas,
            bootstrap_expect: args.bootstrap_expect as usize,
            allow_partial: args.allow_partial,
            traverse_locally: args.traverse_locally,
            replace_after: args.replace_after,
            max_concurrent_moves: args.max_concurrent_moves as usize,
            anti_entropy_interval: args.anti_entropy_interval,
            stuck_after: args.stuck_after,
            read_wait: args.read_wait,
            max_apply_lag: args.max_apply_lag,
        },
        storage,
        shard_map,
        map_changes: std::sync::Mutex::new(()),
        shard_locks: Default::default(),
        health: Default::default(),
        ingest_permits: Arc::new(tokio::sync::Semaphore::new(INGEST_CONCURRENCY)),
        reads: crate::query::state::Reads::new(args.max_user_queries as usize),
        snapshots: Default::default(),
        leaving: Default::default(),
        access: Access::new(args.auth_enabled(), args.bootstrap_api_key.as_deref()),
        algorithms: Default::default(),
    });
    if ctx.access.enabled {
        info!(
            bootstrap_key = args.bootstrap_api_key.is_some(),
            "the HTTP API asks for API keys (Authorization: Bearer <key>)"
        );
        if args.bootstrap_api_key.is_none() {
            warn!(
                "no TORUA_BOOTSTRAP_API_KEY: this node accepts only the keys in the cluster's list; \
                 if this node forms the cluster it prints an initial admin key to standard error \
                 once; otherwise start a node with TORUA_BOOTSTRAP_API_KEY set (an admin key of 20+ \
                 characters) to create keys with `torua key create`"
            );
        }
    } else {
        warn!(
            "the HTTP API asks for no API key: anyone who reaches {} may read, write, run Cypher \
             and drain nodes (TORUA_AUTH=off, or the loopback development mode)",
            advertised.http
        );
    }
    snapshot::clean_leftovers(&ctx);
    endpoint.serve(PeerService {
        ctx: Arc::downgrade(&ctx),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reporter = tokio::spawn(reporter::run(ctx.clone(), stop_rx.clone()));
    let anti_entropy = tokio::spawn(crate::replication::anti_entropy::run(
        ctx.clone(),
        stop_rx.clone(),
    ));
    let algorithm_sweep = tokio::spawn(crate::query::algorithms::worker::drop_idle(
        ctx.clone(),
        stop_rx.clone(),
    ));
    let algorithm_publish = tokio::spawn(crate::query::algorithms::publish::run(
        ctx.clone(),
        stop_rx.clone(),
    ));
    let map_duties = tokio::spawn(coordinator::run(ctx.clone(), stop_rx));
    let app = api::router(ctx.clone());
    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let scheme = if security.http_tls.is_some() {
        "https"
    } else {
        if args.is_dev_mode() {
            warn!(
                "loopback development mode (no TORUA_CLUSTER_SECRET): the HTTP API is plain HTTP \
                 on {}; set a cluster secret for HTTPS, API keys and non-loopback addresses",
                advertised.http
            );
        } else {
            warn!(
                "TORUA_HTTP_TLS=off: the HTTP API is plain HTTP on {}; API keys and data travel \
                 in the clear",
                advertised.http
            );
        }
        "http"
    };
    let tls = security.http_tls.clone();
    let server = tokio::spawn(crate::node::http_server::serve(
        http,
        tls,
        app,
        stop_http_rx,
    ));
    // After the HTTP server is up (a node with many copies answers /health meanwhile), before the
    // node calls itself ready.
    coordinator::open_assigned(&ctx).await;
    cluster.mark_ready();
    info!(
        node = %node_id,
        cluster = %args.cluster_id,
        http = %format!("{scheme}://{}", advertised.http),
        gossip = %advertised.gossip,
        peer = %advertised.peer,
        security = security.mode,
        data_dir = %data_dir.path().display(),
        "torua node started"
    );

    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    tokio::select! {
        _ = sigterm.recv() => {
            let outcome = if args.drain_timeout.is_zero() {
                info!("SIGTERM received: handing this node's places in the in-sync sets over, then leaving");
                drain::hand_over(&ctx, HAND_OVER_BUDGET).await
            } else {
                info!("SIGTERM received: moving this node's shard copies away (TORUA_DRAIN_TIMEOUT), then leaving");
                drain::drain_self(&ctx, args.drain_timeout).await
            };
            info!(outcome = %outcome, "leaving the cluster");
        }
        _ = tokio::signal::ctrl_c() => info!("SIGINT received, leaving the cluster"),
    }
    let shutdown = async {
        // Leave first: peers must hear of it at once. Background duties stop without waiting for
        // their in-flight peer calls (which may be timing out against a dead node).
        let _ = stop_tx.send(true);
        reporter.abort();
        anti_entropy.abort();
        map_duties.abort();
        algorithm_sweep.abort();
        algorithm_publish.abort();
        cluster.leave(LEAVE_ROUNDS).await;
        let _ = stop_http_tx.send(());
        if let Err(e) = server.await {
            warn!(error = %e, "HTTP server task failed");
        }
        endpoint.shutdown().await;
        ctx.storage.close_all().await;
    };
    if tokio::time::timeout(args.shutdown_timeout, shutdown)
        .await
        .is_err()
    {
        error!(
            timeout = ?args.shutdown_timeout,
            "graceful shutdown took longer than TORUA_SHUTDOWN_TIMEOUT; exiting anyway"
        );
    }
    // Give the log writer a moment; nothing else is pending.
    tokio::time::sleep(Duration::from_millis(10)).await;
    info!("stopped");
    Ok(())
}
