//! `shardkeeper run`: the cluster against Discord (or any stand-in), the store, sinks and
//! the admin API, until SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Context as _;
use shardkeeper_admin::{AdminConfig, EventHub};
use shardkeeper_cluster::{Cluster, ClusterBuilder, LineSink, SessionStore, SledStore};

use crate::config::{Config, SinkSpec};

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
    let store: Arc<dyn SessionStore> = Arc::new(SledStore::open(&config.store_path)?);
    let builder = Cluster::builder(config.cluster(token)).store(store);
    let (builder, hub) = with_sinks(builder, &config)?;
    let cluster = builder.start().await.context("starting the cluster")?;
    let admin = shardkeeper_admin::start(
        AdminConfig {
            bind: config.admin_bind,
            token: admin_token,
        },
        cluster.clone(),
        hub,
    )?;
    tracing::info!(admin = %admin.addr(), shards = cluster.ids().len(), "shardkeeper running; SIGINT or SIGTERM to stop");
    shutdown.wait().await;
    tracing::info!("shutting down: closing every shard with 4000 so sessions stay resumable");
    admin.stop().await;
    cluster.shutdown().await?;
    Ok(())
}
