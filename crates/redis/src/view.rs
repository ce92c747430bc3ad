//! What a reconcile round reads off the namespace: the live nodes as placement
//! candidates, and the shared identify schedule as operators see it.

use shardkeeper_cluster::{BucketView, IdentifyStatus};

use crate::assign::Candidate;
use crate::link::View;
use crate::node::{NodeConfig, NodeInfo};

/// The live nodes that are not leaving (this one included unless it is). A node whose
/// description does not parse is left out: it cannot be told what to run.
pub(crate) fn candidates(view: &View, me: &str, leaving: bool) -> Vec<Candidate> {
    let mut live: Vec<Candidate> = view
        .nodes
        .iter()
        .filter(|(id, _, alive)| *alive && !(leaving && id == me))
        .filter_map(|(id, info, _)| match serde_json::from_str::<NodeInfo>(info) {
            Ok(info) if info.leaving => None,
            Ok(info) => Some(Candidate {
                id: id.clone(),
                capacity: info.capacity,
                ids: info.ids.map(|(start, end)| start..end),
            }),
            Err(err) => {
                tracing::warn!(node = %id, %err, "unreadable node description in Redis; leaving that node out");
                None
            }
        })
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    live
}

/// The shared schedule: buckets from Redis, the queue of this node's shards.
pub(crate) fn identify_status(
    config: &NodeConfig,
    view: &View,
    waiting: impl Iterator<Item = u32>,
) -> Option<IdentifyStatus> {
    let remaining = view.budget_field("remaining")?;
    let total = view.budget_field("total").unwrap_or(remaining);
    let reset_at = view.budget_field("reset_at").unwrap_or(view.redis_now_ms);
    let buckets_count = config.max_concurrency.max(1);
    let mut buckets: Vec<BucketView> = (0..buckets_count)
        .map(|bucket| {
            let next = view
                .buckets
                .iter()
                .find(|(b, _)| *b == bucket)
                .map(|&(_, next)| next);
            BucketView {
                bucket,
                queued: Vec::new(),
                next_grant_in_ms: next.map_or(0, |n| n.saturating_sub(view.redis_now_ms)),
                last_grant_ago_ms: next.map(|n| {
                    let spacing = crate::control::millis(crate::control::spacing(config));
                    view.redis_now_ms.saturating_sub(n.saturating_sub(spacing))
                }),
            }
        })
        .collect();
    let mut queued = 0;
    for shard in waiting {
        queued += 1;
        if let Some(bucket) = buckets.get_mut((shard % buckets_count) as usize) {
            bucket.queued.push(shard);
        }
    }
    Some(IdentifyStatus {
        max_concurrency: buckets_count,
        window_ms: crate::control::millis(config.identify_window),
        total: u32::try_from(total).unwrap_or(u32::MAX),
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reserve: crate::control::reserve(config, u32::try_from(total).unwrap_or(u32::MAX)),
        reset_in_ms: reset_at.saturating_sub(view.redis_now_ms),
        queued,
        granted: view.budget_field("granted").unwrap_or(0),
        buckets,
    })
}
