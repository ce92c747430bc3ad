//! The node's own Prometheus metrics (the cluster's are rendered beside them).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::node::Inner;

fn counter(registry: &mut Registry, name: &str, help: &str, value: &AtomicU64) {
    let counter: Counter = Counter::default();
    counter.inc_by(value.load(Ordering::Relaxed));
    registry.register(name, help, counter);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge: Gauge = Gauge::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

/// Prometheus text (without the end marker) of what the node did.
pub(crate) fn render(inner: &Inner) -> String {
    let c = &inner.counters;
    let mut registry = Registry::with_prefix("shardkeeper_cluster");
    let owned = i64::try_from(inner.held().len()).unwrap_or(i64::MAX);
    gauge(
        &mut registry,
        "owned_shards",
        "Shards this node owns",
        owned,
    );
    let renew = i64::try_from(c.renew_us.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
    gauge(
        &mut registry,
        "lease_renew_microseconds",
        "Round trip of the last lease renewal",
        renew,
    );
    let waiting = i64::try_from(c.waiting.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
    gauge(
        &mut registry,
        "grants_waiting",
        "This node's shards waiting for an identify permit",
        waiting,
    );
    counter(&mut registry, "claims", "Shards claimed", &c.claims);
    counter(
        &mut registry,
        "failovers",
        "Shards claimed after their previous owner died (its lease lapsed)",
        &c.failovers,
    );
    counter(
        &mut registry,
        "handovers",
        "Shards handed to another node",
        &c.handovers,
    );
    counter(
        &mut registry,
        "fenced_writes",
        "Writes Redis refused because this node no longer owned the shard",
        &c.fenced_writes,
    );
    counter(
        &mut registry,
        "fences",
        "Times every shard stopped because the lease could not be renewed in time",
        &c.fences,
    );
    counter(
        &mut registry,
        "lost_shards",
        "Shards found owned by another node at renewal",
        &c.lost,
    );
    counter(
        &mut registry,
        "redis_errors",
        "Redis calls that failed",
        &c.redis_errors,
    );
    counter(
        &mut registry,
        "redis_restarts",
        "Redis restarts seen",
        &c.redis_restarts,
    );
    counter(
        &mut registry,
        "redis_data_losses",
        "Redis restarts that lost the cluster's data",
        &c.data_losses,
    );
    counter(
        &mut registry,
        "grants",
        "Identify permits granted to this node's shards",
        &c.grants,
    );
    let mut text = String::new();
    if encode_registry(&mut text, &registry).is_err() {
        return String::new();
    }
    text
}
