//! `GET /api/v1/history`: the last hour of the bot in samples, for the dashboard's
//! charts. A sampler takes one every [`INTERVAL`] from the whole bot's shards (every
//! node's in cluster mode) and the identify status; counters are sums over shards,
//! so a rate is the difference of two samples (a shard that moved starts its counters
//! again: a reader keeps only rises).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use actix_web::web;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use shardkeeper_cluster::{ClusterHandle, ShardSnapshot, StateKind};
use utoipa::ToSchema;

use crate::api::ErrorBody;
use crate::auth::Authorized;
use crate::state::AdminState;

/// Time between samples.
pub(crate) const INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept: one hour.
const KEPT: usize = 1800;

/// Shards per state, written as `{"ready": 990, …}` with every state present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StateCounts([u32; StateKind::ALL.len()]);

impl StateCounts {
    fn add(&mut self, state: StateKind) {
        if let Some(index) = StateKind::ALL.iter().position(|&k| k == state) {
            self.0[index] += 1;
        }
    }
}

impl Serialize for StateCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // `awaiting_hello` and `connecting` share their API name: they add up.
        let mut names: Vec<(&str, u32)> = Vec::new();
        for (kind, &count) in StateKind::ALL.iter().zip(&self.0) {
            match names.iter_mut().find(|(name, _)| *name == kind.api_name()) {
                Some((_, sum)) => *sum += count,
                None => names.push((kind.api_name(), count)),
            }
        }
        let mut map = serializer.serialize_map(Some(names.len()))?;
        for (name, count) in names {
            map.serialize_entry(name, &count)?;
        }
        map.end()
    }
}

impl utoipa::PartialSchema for StateCounts {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .description(Some("Shards per state, every state named"))
            .additional_properties(Some(u32::schema()))
            .into()
    }
}

impl ToSchema for StateCounts {}

/// The bot at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct Sample {
    /// Unix milliseconds.
    at_ms: u64,
    /// Shards per state.
    states: StateCounts,
    /// Dispatches received, summed over shards.
    events: u64,
    /// Reconnects, summed over shards.
    reconnects: u64,
    /// Resumes, summed over shards.
    resumes: u64,
    /// IDENTIFYs, summed over shards.
    identifies: u64,
    /// Median heartbeat round trip of the shards that measured one.
    latency_p50_ms: Option<u64>,
    /// 99th percentile of the same.
    latency_p99_ms: Option<u64>,
    /// Shards waiting for an identify permit.
    identify_queue: u64,
    /// Session starts left, once known.
    budget_remaining: Option<u32>,
    /// Session starts per period, once known.
    budget_total: Option<u32>,
    /// Milliseconds until the budget resets, once known.
    budget_reset_in_ms: Option<u64>,
}

impl Sample {
    /// A sample of `shards` and the identify status at `at_ms`.
    fn of(at_ms: u64, shards: &[ShardSnapshot], cluster: &ClusterHandle) -> Self {
        let mut states = StateCounts::default();
        let mut latencies = Vec::with_capacity(shards.len());
        let (mut events, mut reconnects, mut resumes, mut identifies) = (0, 0, 0, 0);
        for shard in shards {
            states.add(shard.state);
            events += shard.events;
            reconnects += shard.reconnects;
            resumes += shard.resumes;
            identifies += shard.identifies;
            latencies.extend(shard.latency_ms);
        }
        latencies.sort_unstable();
        let identify = cluster.identify_status();
        Self {
            at_ms,
            states,
            events,
            reconnects,
            resumes,
            identifies,
            latency_p50_ms: percentile(&latencies, 50),
            latency_p99_ms: percentile(&latencies, 99),
            identify_queue: identify.as_ref().map_or(0, |s| s.queued as u64),
            budget_remaining: identify.as_ref().map(|s| s.remaining),
            budget_total: identify.as_ref().map(|s| s.total),
            budget_reset_in_ms: identify.as_ref().map(|s| s.reset_in_ms),
        }
    }
}

/// The nearest-rank `p`th percentile of sorted `values`.
fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// The samples of the last hour, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples taken after `since_ms` (all of them without it), oldest first.
    fn since(&self, since_ms: Option<u64>) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let newer = since_ms.map_or(0, |since| samples.partition_point(|s| s.at_ms <= since));
        samples.range(newer..).cloned().collect()
    }
}

/// Takes a sample now and then every [`INTERVAL`], for as long as the task runs.
pub(crate) async fn sample(state: web::Data<AdminState>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let shards: Vec<ShardSnapshot> = match state.cluster.placed_shards().await {
            Ok(placed) => placed.into_iter().map(|p| p.snapshot).collect(),
            Err(_) => state.cluster.shards(),
        };
        let at_ms = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        state
            .history
            .push(Sample::of(at_ms, &shards, &state.cluster));
    }
}

/// `GET /api/v1/history`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryWire {
    /// Milliseconds between samples.
    interval_ms: u64,
    /// Oldest first, up to an hour.
    samples: Vec<Sample>,
}

/// Which samples to return.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    /// Only samples taken after this Unix millisecond (a page that holds the older
    /// ones asks for the rest).
    since_ms: Option<u64>,
}

/// The last hour of the bot, one sample every two seconds: shards per state, summed
/// counters, heartbeat latency percentiles, identify queue and budget.
#[utoipa::path(get, path = "/api/v1/history",
    params(HistoryQuery),
    responses((status = 200, body = HistoryWire), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn history(
    _: Authorized,
    query: web::Query<HistoryQuery>,
    state: web::Data<AdminState>,
) -> web::Json<HistoryWire> {
    web::Json(HistoryWire {
        interval_ms: u64::try_from(INTERVAL.as_millis()).unwrap_or(u64::MAX),
        samples: state.history.since(query.since_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 99), Some(7));
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), Some(50));
        assert_eq!(percentile(&values, 99), Some(99));
        assert_eq!(percentile(&[10, 20, 30], 50), Some(20));
    }

    #[test]
    fn state_counts_name_every_state_and_add_up_shared_names() {
        let mut counts = StateCounts::default();
        counts.add(StateKind::Ready);
        counts.add(StateKind::Ready);
        counts.add(StateKind::Stopped);
        let json = serde_json::to_value(counts).expect("serializes");
        assert_eq!(json["ready"], 2);
        assert_eq!(json["stopped"], 1);
        for name in StateKind::api_names() {
            assert!(json.get(name).is_some(), "{name} missing from {json}");
        }
    }
}
