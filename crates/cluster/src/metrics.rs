//! Prometheus metrics of the cluster. Shards update counters as things happen; gauges
//! (shards by state, identify queue, budget, store lag) are refreshed at scrape time.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use shardkeeper_protocol::EventName;
use shardkeeper_session::{SessionStats, StateKind};

use crate::snapshot::{IdentifyStatus, ShardSnapshot};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    t: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

/// Every metric of the cluster, in one registry (the admin API adds its own).
pub struct Metrics {
    registry: Mutex<Registry>,
    events: Family<EventLabels, Counter>,
    /// The counter of each documented event name, so counting one takes no lock.
    known_events: Box<[OnceLock<Counter>]>,
    identifies: Counter,
    resumes: Counter,
    reconnects: Counter,
    zombies: Counter,
    restarts: Counter,
    close_codes: Family<CodeLabels, Counter>,
    latency: Histogram,
    shards: Family<StateLabels, Gauge>,
    identify_queue: Gauge,
    session_starts_remaining: Gauge,
    session_starts_total: Gauge,
    session_starts_reset: Gauge<f64, std::sync::atomic::AtomicU64>,
    store_flush_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    store_degraded: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every `shardkeeper_` metric.
    #[must_use]
    pub fn new() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix("shardkeeper")),
            events: Family::default(),
            known_events: (0..EventName::KNOWN).map(|_| OnceLock::new()).collect(),
            identifies: Counter::default(),
            resumes: Counter::default(),
            reconnects: Counter::default(),
            zombies: Counter::default(),
            restarts: Counter::default(),
            close_codes: Family::default(),
            latency: Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            shards: Family::default(),
            identify_queue: Gauge::default(),
            session_starts_remaining: Gauge::default(),
            session_starts_total: Gauge::default(),
            session_starts_reset: Gauge::default(),
            store_flush_lag: Gauge::default(),
            store_degraded: Gauge::default(),
        };
        {
            let mut r = metrics
                .registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            r.register(
                "events",
                "Dispatch events received, by event name",
                metrics.events.clone(),
            );
            r.register(
                "identifies",
                "IDENTIFY payloads sent",
                metrics.identifies.clone(),
            );
            r.register(
                "resumes",
                "Sessions resumed (RESUMED received)",
                metrics.resumes.clone(),
            );
            r.register(
                "reconnects",
                "Gateway connections opened after a shard's first",
                metrics.reconnects.clone(),
            );
            r.register(
                "zombies",
                "Zombie connections detected (no heartbeat ACK)",
                metrics.zombies.clone(),
            );
            r.register(
                "shard_restarts",
                "Shard actors restarted by the supervisor after a crash",
                metrics.restarts.clone(),
            );
            r.register(
                "close_codes",
                "Close codes received from the gateway",
                metrics.close_codes.clone(),
            );
            r.register(
                "heartbeat_latency_seconds",
                "Heartbeat round trips",
                metrics.latency.clone(),
            );
            r.register("shards", "Owned shards by state", metrics.shards.clone());
            r.register(
                "identify_queue_depth",
                "Shards waiting for an identify permit",
                metrics.identify_queue.clone(),
            );
            r.register(
                "session_starts_remaining",
                "Session starts left in Discord's budget (the last known figure; 0 before the first)",
                metrics.session_starts_remaining.clone(),
            );
            r.register(
                "session_start_limit",
                "Session starts per budget period (the last known figure; 0 before the first)",
                metrics.session_starts_total.clone(),
            );
            r.register(
                "session_starts_reset_seconds",
                "Time until the session start budget resets",
                metrics.session_starts_reset.clone(),
            );
            r.register(
                "store_flush_lag_seconds",
                "Time since sessions were last written to the store",
                metrics.store_flush_lag.clone(),
            );
            r.register(
                "store_degraded",
                "1 while the session store cannot write",
                metrics.store_degraded.clone(),
            );
        }
        metrics
    }

    /// Adds another metric (the admin API's own) to the registry.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// Counts `n` dispatches named `t`.
    pub(crate) fn events(&self, t: &EventName, n: u64) {
        let labels = || EventLabels { t: t.to_string() };
        match t.known_index().and_then(|i| self.known_events.get(i)) {
            Some(slot) => slot
                .get_or_init(|| self.events.get_or_create(&labels()).clone())
                .inc_by(n),
            None => self.events.get_or_create(&labels()).inc_by(n),
        };
    }

    pub(crate) fn close_code(&self, code: u16) {
        self.close_codes.get_or_create(&CodeLabels { code }).inc();
    }

    pub(crate) fn heartbeat(&self, latency: Duration) {
        self.latency.observe(latency.as_secs_f64());
    }

    pub(crate) fn restarted(&self) {
        self.restarts.inc();
    }

    /// Adds what a session counted since `before`.
    pub(crate) fn session_progress(&self, before: &SessionStats, now: &SessionStats) {
        self.identifies
            .inc_by(now.identifies.saturating_sub(before.identifies));
        self.resumes
            .inc_by(now.resumes.saturating_sub(before.resumes));
        self.reconnects
            .inc_by(now.reconnects.saturating_sub(before.reconnects));
        self.zombies
            .inc_by(now.zombies.saturating_sub(before.zombies));
    }

    /// Sets the gauges and renders the Prometheus text format.
    pub(crate) fn render(
        &self,
        shards: &[ShardSnapshot],
        identify: Option<&IdentifyStatus>,
        flush_lag: Duration,
        degraded: bool,
    ) -> String {
        for name in StateKind::api_names() {
            let count = shards.iter().filter(|s| s.state.api_name() == name).count();
            self.shards
                .get_or_create(&StateLabels { state: name })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        // An unknown budget keeps the last figures: 0 would read as spent.
        if let Some(status) = identify {
            self.identify_queue
                .set(i64::try_from(status.queued).unwrap_or(i64::MAX));
            self.session_starts_remaining
                .set(i64::from(status.remaining));
            self.session_starts_total.set(i64::from(status.total));
            #[allow(clippy::cast_precision_loss, reason = "milliseconds of a day fit")]
            self.session_starts_reset
                .set(status.reset_in_ms as f64 / 1000.0);
        }
        self.store_flush_lag.set(flush_lag.as_secs_f64());
        self.store_degraded.set(i64::from(degraded));
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shardkeeper_protocol::EventName;

    use super::{IdentifyStatus, Metrics};

    #[test]
    fn events_are_counted_by_name_documented_or_not() {
        let metrics = Metrics::new();
        for t in ["READY", "MESSAGE_CREATE", "MESSAGE_CREATE", "SOMETHING_NEW"] {
            metrics.events(&EventName::new(t), 1);
        }
        metrics.events(&EventName::new("SOMETHING_NEW"), 1);
        metrics.events(&EventName::new("MESSAGE_CREATE"), 40);
        let text = metrics.render(&[], None, Duration::ZERO, false);
        for line in [
            r#"shardkeeper_events_total{t="READY"} 1"#,
            r#"shardkeeper_events_total{t="MESSAGE_CREATE"} 42"#,
            r#"shardkeeper_events_total{t="SOMETHING_NEW"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn the_budget_gauges_keep_their_last_figures_while_the_budget_is_unknown() {
        let metrics = Metrics::new();
        let status = IdentifyStatus {
            max_concurrency: 1,
            window_ms: 5000,
            total: 1000,
            remaining: 150,
            reserve: 0,
            reset_in_ms: 90_000,
            queued: 3,
            granted: 7,
            buckets: Vec::new(),
        };
        let lines = [
            "shardkeeper_session_starts_remaining 150",
            "shardkeeper_session_start_limit 1000",
            "shardkeeper_session_starts_reset_seconds 90.0",
            "shardkeeper_identify_queue_depth 3",
        ];
        for identify in [Some(&status), None] {
            let text = metrics.render(&[], identify, Duration::ZERO, false);
            for line in lines {
                assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
            }
        }
    }
}
