//! Identify permits for the node's waiting shards, from the shared schedule in Redis,
//! and refreshes of the shared budget.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardkeeper_cluster::Grant;

use super::{Control, POLL, REFRESH_EVERY_MS, RETRY, millis, spacing};
use crate::link::GrantAsk;
use crate::node::{GRANT_VALIDITY, NodeCounters};

impl Control {
    /// Asks Redis for the permits waiting shards need, lowest shard id first, one
    /// request per bucket per pass. Any doubt means no grant: the shard waits.
    pub(super) async fn permits(&mut self) {
        let inner = Arc::clone(&self.inner);
        let config = &inner.config;
        let mut next = Instant::now() + RETRY;
        let mut asked = BTreeSet::new();
        let shards: Vec<u32> = self.waiting.keys().copied().collect();
        for shard in shards {
            let bucket = shard % config.max_concurrency.max(1);
            let epoch = inner.held().get(&shard).copied();
            let (Some(epoch), Some(waiter)) = (epoch, self.waiting.get(&shard)) else {
                continue;
            };
            if waiter.reply.is_closed() {
                self.waiting.remove(&shard);
                continue;
            }
            if !asked.insert(bucket) {
                continue;
            }
            let ask = GrantAsk {
                shard,
                epoch,
                bucket,
                request: waiter.request,
                spacing_ms: millis(spacing(config)),
                validity_ms: millis(GRANT_VALIDITY),
                reserve: config.reserve,
                pause_ms: millis(config.lease.max(spacing(config))),
            };
            let now = Instant::now();
            let answer = inner.link.grant(&inner.identity, &ask).await;
            let Some(waiter) = self.waiting.get_mut(&shard) else {
                continue;
            };
            let sent = *waiter.unknown_since.get_or_insert(now);
            let Some(verdict) = self.redis(answer) else {
                break;
            };
            if let Some(waiter) = self.waiting.get_mut(&shard)
                && !matches!(verdict, crate::link::Verdict::Grant(_))
            {
                // A definite "no": no grant of this request is outstanding.
                waiter.unknown_since = None;
            }
            match verdict {
                crate::link::Verdict::Grant(valid_ms) => {
                    let Some(waiter) = self.waiting.remove(&shard) else {
                        continue;
                    };
                    // Valid from before the first request that may have made it was
                    // sent, less a margin for the hop to the shard's socket.
                    let deadline = sent + Duration::from_millis(valid_ms - valid_ms / 4);
                    self.parked.remove(&shard);
                    let grant = Grant {
                        bucket,
                        valid_until: Some(deadline),
                    };
                    if Instant::now() < deadline && waiter.reply.send(grant).is_ok() {
                        NodeCounters::add(&inner.counters.grants, 1);
                        self.granted.insert(shard, (ask, sent));
                    } else {
                        self.redis(inner.link.unused(&ask).await);
                    }
                }
                crate::link::Verdict::Wait(ms) => {
                    // Another node's IDENTIFY may shorten the wait: look again soon.
                    let wait = Duration::from_millis(ms.max(1)).min(POLL);
                    next = next.min(Instant::now() + wait);
                }
                crate::link::Verdict::Budget(remaining) => {
                    // The budget is shared: every waiting shard is parked, each told once.
                    for &parked in self.waiting.keys() {
                        if self.parked.insert(parked) {
                            tracing::warn!(
                                shard = parked,
                                remaining,
                                "session start budget at its reserve; shard parked until it resets"
                            );
                        }
                    }
                    break;
                }
                // The next round's reading shows the budget unknown and refreshes it.
                crate::link::Verdict::Unknown => break,
                crate::link::Verdict::NotOwner => {}
            }
        }
        self.next_permits = next;
    }

    /// Starts a refresh of the shared budget from `/gateway/bot` when it is unknown,
    /// past its reset or a minute old; one node at a time holds the refresh lease.
    pub(super) fn refresh_budget(&mut self, view: &crate::link::View) {
        let due = view
            .budget_field("fetched_at")
            .is_none_or(|at| view.redis_now_ms.saturating_sub(at) >= REFRESH_EVERY_MS)
            || view
                .budget_field("reset_at")
                .is_none_or(|at| view.redis_now_ms >= at);
        let mut refreshing = self
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !due || *refreshing {
            return;
        }
        *refreshing = true;
        let flag = Arc::clone(&self.refreshing);
        let inner = Arc::clone(&self.inner);
        let rest = self.rest.clone();
        tokio::spawn(async move {
            crate::settings::refresh_budget(&inner, &rest, Duration::from_millis(REFRESH_EVERY_MS))
                .await;
            *flag
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
        });
    }
}
