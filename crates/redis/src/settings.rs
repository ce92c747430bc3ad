//! Start-up checks, joining the namespace, and refreshing the shared budget.

use std::time::{Duration, Instant};

use shardkeeper_cluster::RestClient;

use crate::error::NodeError;
use crate::link::{Figures, Identity, Link, Terms};
use crate::node::{Inner, NodeConfig, NodeInfo};

/// Redis must never evict: an evicted lease or owner key would let two nodes run one
/// shard. Without AOF a Redis restart loses the schedule (the nodes then pause grants
/// and fetch the budget again), so it is only a warning.
pub(crate) async fn check(link: &Link) -> Result<(), NodeError> {
    let policy = link.setting("maxmemory-policy").await?.unwrap_or_default();
    if policy != "noeviction" {
        return Err(NodeError::conflict(
            "cluster.url",
            format!(
                "Redis evicts keys (maxmemory-policy {policy}); cluster mode needs noeviction \
                 (CONFIG SET maxmemory-policy noeviction, and in redis.conf)"
            ),
        ));
    }
    if link.setting("appendonly").await?.as_deref() != Some("yes") {
        tracing::warn!(
            "Redis runs without AOF (appendonly no): a Redis restart loses the identify \
             schedule and leases, which the nodes then rebuild; appendonly yes is recommended"
        );
    }
    Ok(())
}

/// What this node must agree on with every other.
fn terms(config: &NodeConfig) -> Terms {
    Terms {
        total: config.total,
        max_concurrency: config.max_concurrency,
        window_ms: crate::control::millis(config.identify_window),
        margin_ms: crate::control::millis(config.identify_margin),
    }
}

/// This node's description for the others.
pub(crate) fn info(config: &NodeConfig, leaving: bool) -> String {
    let info = NodeInfo {
        admin_url: config.admin_url.clone(),
        capacity: config.capacity,
        ids: config.ids.clone().map(|ids| (ids.start, ids.end)),
        leaving,
    };
    serde_json::to_string(&info).unwrap_or_default()
}

/// Joins the namespace. A live node with the same id may be this node's previous
/// process, killed before its lease lapsed: the join is retried for one lease before
/// the id counts as taken.
pub(crate) async fn join(
    link: &Link,
    identity: &Identity,
    config: &NodeConfig,
) -> Result<(), NodeError> {
    let deadline = Instant::now() + config.lease + Duration::from_secs(1);
    let info = info(config, false);
    loop {
        match link.join(identity, &info, &terms(config)).await {
            Ok(fresh) => {
                if fresh {
                    tracing::info!(namespace = %config.namespace, "first node of the cluster (or Redis holds no data for it)");
                }
                return Ok(());
            }
            Err(err) => match err.code() {
                Some("DUPLICATE") if Instant::now() < deadline => {
                    tracing::warn!(node = %identity.id, "a live node holds this node id; waiting for its lease to lapse");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Some("DUPLICATE") => {
                    return Err(NodeError::conflict(
                        "cluster.node_id",
                        format!(
                            "another live node already uses the id {:?}; give each node its own",
                            identity.id
                        ),
                    ));
                }
                Some("TOTAL") => {
                    return Err(NodeError::conflict(
                        "shards.total",
                        format!(
                            "this node runs {} shards but the cluster in namespace {:?} runs {}; every node needs the same total",
                            config.total,
                            config.namespace,
                            err.detail().unwrap_or("another count")
                        ),
                    ));
                }
                Some("CONCURRENCY") => {
                    return Err(NodeError::conflict(
                        "identify.max_concurrency",
                        format!(
                            "this node uses max_concurrency {} but the cluster uses {}",
                            config.max_concurrency,
                            err.detail().unwrap_or("another value")
                        ),
                    ));
                }
                Some("WINDOW") => {
                    return Err(NodeError::conflict(
                        "identify.window_ms",
                        format!(
                            "this node spaces identifies by {} ms + {} ms margin but the cluster by {} (window+margin); every node needs the same",
                            crate::control::millis(config.identify_window),
                            crate::control::millis(config.identify_margin),
                            err.detail().unwrap_or("another")
                        ),
                    ));
                }
                Some("PROTOCOL") => {
                    return Err(NodeError::conflict(
                        "cluster.namespace",
                        format!(
                            "namespace {:?} is used by shardkeeper nodes of protocol {}; this node speaks {}",
                            config.namespace,
                            err.detail().unwrap_or("another"),
                            crate::link::PROTOCOL
                        ),
                    ));
                }
                _ => return Err(err.into()),
            },
        }
    }
}

/// Joins again after Redis lost its data (no waiting: the id was this node's).
pub(crate) async fn rejoin(
    link: &Link,
    identity: &Identity,
    config: &NodeConfig,
) -> Result<(), redis::RedisError> {
    link.load_library().await?;
    link.join(identity, &info(config, false), &terms(config))
        .await
        .map(drop)
}

/// Tells the other nodes this one is leaving, so placement gives them its shards.
pub(crate) async fn announce_leaving(
    link: &Link,
    identity: &Identity,
    config: &NodeConfig,
) -> Result<(), redis::RedisError> {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(link.keys.nodes())
        .arg(&identity.id)
        .arg(info(config, true));
    link.query::<i64>(&cmd).await.map(drop)
}

/// Fetches Discord's `session_start_limit` and stores it as the shared budget, charged
/// for the grants made while the request was out. Only the node holding the refresh
/// lease does it, and only while a refresh is due: figures unknown, `every` old or past
/// their reset.
pub(crate) async fn refresh_budget(inner: &Inner, rest: &RestClient, every: Duration) {
    let lease = Duration::from_secs(30);
    let counter = match inner.link.budget_begin(&inner.identity, lease, every).await {
        Ok(Some(counter)) => counter,
        Ok(None) => return,
        Err(err) => {
            tracing::warn!(%err, "cannot start a budget refresh");
            return;
        }
    };
    let limit = match rest.gateway_bot().await {
        Ok(bot) => bot.session_start_limit,
        Err(err) => {
            tracing::warn!(%err, "cannot fetch the session start budget; no IDENTIFY until it is known");
            return;
        }
    };
    let figures = Figures {
        remaining: limit.remaining,
        total: limit.total,
        reset_after_ms: limit.reset_after,
    };
    match inner
        .link
        .budget_set(&inner.identity, figures, counter)
        .await
    {
        Ok(Some(remaining)) => {
            tracing::info!(
                remaining,
                total = limit.total,
                "session start budget refreshed"
            );
        }
        Ok(None) => tracing::warn!("budget refresh lease lapsed; another node refreshes"),
        Err(err) => tracing::warn!(%err, "cannot store the session start budget"),
    }
}
