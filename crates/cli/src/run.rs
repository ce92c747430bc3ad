//! `shardkeeper run`: the cluster against Discord (or any stand-in), the store, sinks and
//! the admin API, until SIGINT/SIGTERM. In redis mode the process is one node of a
//! cluster: it joins through Redis, runs the shards it owns, and on SIGTERM hands them
//! to the other nodes before it exits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shardkeeper_admin::{AdminConfig, EventHub};
use shardkeeper_cluster::{
    Auto, Cluster, ClusterBuilder, ClusterConfig, LineSink, RestClient, ShardIds, SledStore,
    client_config,
};
use shardkeeper_redis::{Node, NodeConfig, NodeError};

use crate::config::{Config, ConfigError, Mode, SinkSpec};

/// Longest a SIGTERM waits for the other nodes to take this node's shards.
const HANDOVER_PATIENCE: Duration = Duration::from_secs(30);

/// Adds the configured sinks; returns the WebSocket hub when `websocket` is one of them.
pub(crate) fn with_sinks(
    mut builder: ClusterBuilder,
    config: &Config,
) -> anyhow::Result<(ClusterBuilder, EventHub)> {
    let hub = EventHub::new();
    for spec in &config.sinks {
        builder = match spec {
            SinkSpec::Stdout => builder.sink(Arc::new(
                LineSink::stdout().context("starting the stdout sink")?,
            )),
            SinkSpec::File(path) => builder
                .sink(Arc::new(LineSink::file(path).with_context(|| {
                    format!("opening the event file {}", path.display())
                })?)),
            SinkSpec::WebSocket => builder.sink(Arc::new(hub.clone())),
        };
    }
    Ok((builder, hub))
}

pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = crate::Shutdown::install()?;
    let token = Config::secret(&config.token_env, "discord.token_env")?;
    let admin_token = Config::secret(&config.admin_token_env, "admin.token_env")?;
    let mut cluster_config = config.cluster(token);
    let (builder, node) = match config.mode {
        Mode::Single => {
            let store = SledStore::open(&config.store_path)?;
            (
                Cluster::builder(cluster_config).store(Arc::new(store)),
                None,
            )
        }
        Mode::Redis => {
            let node = join(&config, &mut cluster_config).await?;
            tracing::info!(node = node.id(), "joined the cluster");
            let builder = Cluster::builder(cluster_config)
                .placement(node.placement())
                .permits(node.permits())
                .session_store(node.store())
                .peers(node.peers())
                .audit(node.audit());
            (builder, Some(node))
        }
    };
    let (builder, hub) = with_sinks(builder, &config)?;
    let cluster = builder.start().await.context("starting the cluster")?;
    if let Some(node) = &node {
        node.serve(cluster.clone());
    }
    let admin = shardkeeper_admin::start(
        AdminConfig {
            bind: config.admin_bind,
            token: admin_token,
            read_token: config.read_token(),
        },
        cluster.clone(),
        hub,
    )?;
    tracing::info!(admin = %admin.addr(), shards = cluster.ids().len(), "shardkeeper running; SIGINT or SIGTERM to stop");
    shutdown.wait().await;
    if let Some(node) = node {
        tracing::info!("shutting down: handing every shard to the other nodes");
        node.leave(HANDOVER_PATIENCE).await;
    }
    tracing::info!("shutting down: closing every shard with 4000 so sessions stay resumable");
    admin.stop().await;
    cluster.shutdown().await?;
    Ok(())
}

/// Resolves the shard count and buckets (every node must agree on them), then joins.
async fn join(config: &Config, cluster: &mut ClusterConfig) -> anyhow::Result<Node> {
    let tls = client_config(cluster.ca_file.as_deref())?;
    let rest = RestClient::new(&cluster.api_base, cluster.session.token.clone(), tls)?
        .with_retries(cluster.rest_attempts, cluster.rest_backoff);
    let bot = rest.gateway_bot().await?;
    let total = match cluster.total {
        Auto::Fixed(n) => n,
        Auto::Auto => bot.shards.max(1),
    };
    let max_concurrency = match cluster.max_concurrency {
        Auto::Fixed(n) => n,
        Auto::Auto => bot.session_start_limit.max_concurrency.max(1),
    };
    cluster.total = Auto::Fixed(total);
    cluster.max_concurrency = Auto::Fixed(max_concurrency);
    let node_id = if config.node_id.is_empty() {
        format!("{}-{}", hostname(), std::process::id())
    } else {
        config.node_id.clone()
    };
    let admin_url = if config.advertise_admin.is_empty() {
        format!("http://{}", config.admin_bind)
    } else {
        config.advertise_admin.clone()
    };
    let node = NodeConfig {
        url: config.redis_url.expose().to_owned(),
        namespace: config.namespace.clone(),
        node_id,
        lease: config.lease,
        capacity: config.capacity,
        admin_url,
        ids: match &cluster.ids {
            ShardIds::All => None,
            ShardIds::Range(range) => Some(range.clone()),
        },
        total,
        max_concurrency,
        identify_window: cluster.identify_window,
        identify_margin: cluster.identify_margin,
        reserve: None,
    };
    Node::join(node, rest).await.map_err(|err| match err {
        NodeError::Conflict { key, message } => {
            ConfigError::new("cluster check", key, message).into()
        }
        other => anyhow::Error::new(other).context("joining the cluster"),
    })
}

/// The machine's name, for the default node id.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "node".into())
}
