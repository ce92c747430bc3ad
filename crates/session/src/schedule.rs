//! The identify schedule: who may send IDENTIFY, and when.

use std::collections::{BTreeSet, HashSet};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::clock::DrivenClock;

type Gcra = RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<Nanos>>;

/// How long the budget lasts when Discord has not said (`reset_after` unknown).
const DEFAULT_BUDGET_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// Shape of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Number of buckets (`max_concurrency` from `/gateway/bot`).
    pub max_concurrency: NonZeroU32,
    /// One IDENTIFY per bucket per window (Discord: 5 s).
    pub window: Duration,
    /// Added to the window, so a grant can never reach Discord early.
    pub margin: Duration,
}

impl ScheduleConfig {
    /// Discord's identify window per bucket.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5);
    /// Discord measures the window when an IDENTIFY arrives, and a busy host can delay
    /// the write of one IDENTIFY more than the next; the margin absorbs that jitter.
    pub const DEFAULT_MARGIN: Duration = Duration::from_millis(250);

    /// Discord's window with the default margin.
    #[must_use]
    pub fn new(max_concurrency: NonZeroU32) -> Self {
        Self {
            max_concurrency,
            window: Self::DEFAULT_WINDOW,
            margin: Self::DEFAULT_MARGIN,
        }
    }

    /// Time between two grants of one bucket.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.window + self.margin
    }
}

/// The schedule's persistent part, in wall-clock milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSnapshot {
    /// Last grant per bucket.
    pub last_grants_ms: Vec<Option<u64>>,
    /// Session starts per budget period.
    pub total: u32,
    /// Session starts left.
    pub remaining: u32,
    /// When the budget resets.
    pub reset_at_ms: u64,
}

/// One bucket, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketStatus {
    /// Bucket index (`shard_id % max_concurrency`).
    pub bucket: u32,
    /// Shards waiting, in grant order.
    pub queued: Vec<u32>,
    /// Last grant.
    pub last_grant: Option<Instant>,
    /// Earliest next grant.
    pub next_grant: Instant,
}

/// The whole schedule, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleStatus {
    /// Buckets in index order.
    pub buckets: Vec<BucketStatus>,
    /// Session starts per budget period.
    pub total: u32,
    /// Session starts left.
    pub remaining: u32,
    /// When the budget resets.
    pub reset_at: Instant,
}

#[derive(Debug)]
struct Bucket {
    limiter: Gcra,
    /// No grant before this instant (restored from a snapshot, or a window after the
    /// last IDENTIFY was written).
    hold_until: Option<Instant>,
    /// The last IDENTIFY of the bucket: when it was written, or granted until then.
    last_grant: Option<Instant>,
    /// A granted shard whose IDENTIFY is not written yet, and when it was granted: the
    /// bucket waits for the write, so a delayed write cannot bring two IDENTIFYs closer.
    unwritten: Option<(u32, Instant)>,
    /// `(ticket, shard)`: ticket 0 for a shard's first request, so the start-up batch
    /// goes out by shard id; later requests are FIFO behind it.
    queue: BTreeSet<(u64, u32)>,
}

impl Bucket {
    /// An emptied `BTreeSet` keeps its node; with a bucket per shard (large
    /// `max_concurrency`) that is a node per idle shard, so an empty queue lets it go.
    fn release_empty_queue(&mut self) {
        if self.queue.is_empty() {
            self.queue = BTreeSet::new();
        }
    }
}

/// Serialises IDENTIFYs: one per bucket per window, FIFO per bucket with lower shard ids
/// first at start-up, and never more than the session-start budget allows.
#[derive(Debug)]
pub struct IdentifySchedule {
    config: ScheduleConfig,
    clock: DrivenClock,
    /// When the schedule was built: a bucket that never granted is free since then.
    created: Instant,
    buckets: Vec<Bucket>,
    total: u32,
    remaining: u32,
    reset_at: Instant,
    /// When `remaining` was last taken from Discord's figures (or reset): a grant made
    /// since is not in them, so an unused one goes back.
    figures_at: Instant,
    next_ticket: u64,
    requested_before: HashSet<u32>,
}

impl IdentifySchedule {
    /// A schedule with `remaining` of `total` session starts left until `now + reset_after`.
    #[must_use]
    pub fn new(
        config: ScheduleConfig,
        total: u32,
        remaining: u32,
        reset_after: Duration,
        now: Instant,
    ) -> Self {
        let clock = DrivenClock::new(now);
        let quota = Quota::with_period(config.period())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::MIN);
        let buckets = (0..config.max_concurrency.get())
            .map(|_| Bucket {
                limiter: RateLimiter::direct_with_clock(quota, clock.governor_clock()),
                hold_until: None,
                last_grant: None,
                unwritten: None,
                queue: BTreeSet::new(),
            })
            .collect();
        Self {
            config,
            clock,
            created: now,
            buckets,
            total,
            remaining: remaining.min(total),
            reset_at: now + reset_after,
            figures_at: now,
            next_ticket: 1,
            requested_before: HashSet::new(),
        }
    }

    /// Rebuilds a schedule from a snapshot taken by a previous process, so its grants
    /// keep holding their buckets and its budget stays spent.
    #[must_use]
    pub fn restore(
        config: ScheduleConfig,
        snapshot: &ScheduleSnapshot,
        now: Instant,
        wall_ms: u64,
    ) -> Self {
        let reset_after = Duration::from_millis(snapshot.reset_at_ms.saturating_sub(wall_ms));
        let mut schedule = Self::new(config, snapshot.total, snapshot.remaining, reset_after, now);
        let same_shape = snapshot.last_grants_ms.len() == schedule.buckets.len();
        let newest = snapshot.last_grants_ms.iter().flatten().max().copied();
        let period = config.period();
        for (index, bucket) in schedule.buckets.iter_mut().enumerate() {
            let last_ms = if same_shape {
                snapshot.last_grants_ms[index]
            } else {
                newest
            };
            let Some(last_ms) = last_ms else { continue };
            let age = Duration::from_millis(wall_ms.saturating_sub(last_ms));
            bucket.last_grant = now.checked_sub(age);
            if age < period {
                bucket.hold_until = Some(now + period.saturating_sub(age));
            }
        }
        schedule
    }

    /// The persistent part, with instants turned into wall-clock milliseconds.
    #[must_use]
    pub fn snapshot(&self, now: Instant, wall_ms: u64) -> ScheduleSnapshot {
        let to_wall = |at: Instant| {
            if at >= now {
                wall_ms.saturating_add(duration_ms(at - now))
            } else {
                wall_ms.saturating_sub(duration_ms(now - at))
            }
        };
        ScheduleSnapshot {
            last_grants_ms: self
                .buckets
                .iter()
                .map(|b| b.last_grant.map(to_wall))
                .collect(),
            total: self.total,
            remaining: self.remaining,
            reset_at_ms: to_wall(self.reset_at),
        }
    }

    /// The bucket of a shard.
    #[must_use]
    pub fn bucket_of(&self, shard: u32) -> u32 {
        shard % self.config.max_concurrency.get()
    }

    /// Queues a shard for a permit; a shard already queued keeps its place.
    pub fn request(&mut self, shard: u32) {
        let ticket = if self.requested_before.insert(shard) {
            0
        } else {
            self.next_ticket += 1;
            self.next_ticket
        };
        let bucket = self.bucket_mut(shard);
        if !bucket.queue.iter().any(|&(_, s)| s == shard) {
            bucket.queue.insert((ticket, shard));
        }
    }

    /// Withdraws a shard's request; returns whether it was queued.
    pub fn cancel(&mut self, shard: u32) -> bool {
        let bucket = self.bucket_mut(shard);
        let before = bucket.queue.len();
        bucket.queue.retain(|&(_, s)| s != shard);
        bucket.release_empty_queue();
        bucket.queue.len() != before
    }

    /// The next shard allowed to IDENTIFY at `now`, spending one session start.
    pub fn poll_grant(&mut self, now: Instant) -> Option<u32> {
        self.clock.advance_to(now);
        if self.remaining == 0 {
            if now < self.reset_at {
                return None;
            }
            self.remaining = self.total;
            self.reset_at = now + DEFAULT_BUDGET_PERIOD;
            self.figures_at = now;
        }
        let give_up = self.unwritten_limit();
        let bucket = self.buckets.iter_mut().find(|b| {
            !b.queue.is_empty()
                && b.hold_until.is_none_or(|hold| now >= hold)
                && b.unwritten.is_none_or(|(_, at)| now >= at + give_up)
                && b.limiter.check().is_ok()
        })?;
        let (_, shard) = bucket.queue.pop_first()?;
        bucket.release_empty_queue();
        bucket.last_grant = Some(now);
        bucket.hold_until = None;
        bucket.unwritten = Some((shard, now));
        self.remaining -= 1;
        Some(shard)
    }

    /// The IDENTIFY of a granted shard was written at `at`: its bucket's next window
    /// counts from then, not from the grant. Returns whether the grant was outstanding.
    pub fn written(&mut self, shard: u32, at: Instant) -> bool {
        let period = self.config.period();
        if self.settle_grant(shard).is_none() {
            return false;
        }
        let bucket = self.bucket_mut(shard);
        if bucket.last_grant.is_none_or(|last| at > last) {
            bucket.last_grant = Some(at);
        }
        let reopen = at + period;
        bucket.hold_until = Some(bucket.hold_until.map_or(reopen, |hold| hold.max(reopen)));
        true
    }

    /// A granted shard lost its connection before its IDENTIFY was written: the bucket
    /// stops waiting for the write and keeps the window of the grant, and the session
    /// start goes back to the budget unless the figures were replaced since the grant
    /// (they may count it already). Returns whether the grant was outstanding.
    pub fn unused(&mut self, shard: u32) -> bool {
        let figures_at = self.figures_at;
        let Some(granted_at) = self.settle_grant(shard) else {
            return false;
        };
        if granted_at >= figures_at {
            self.remaining = (self.remaining + 1).min(self.total);
        }
        true
    }

    /// Ends the bucket's wait for the write of `shard`'s IDENTIFY; the grant's instant,
    /// or `None` if the bucket was not waiting for that shard.
    fn settle_grant(&mut self, shard: u32) -> Option<Instant> {
        let bucket = self.bucket_mut(shard);
        let (waiting, granted_at) = bucket.unwritten?;
        if waiting != shard {
            return None;
        }
        bucket.unwritten = None;
        Some(granted_at)
    }

    /// How long a bucket waits to hear that a granted IDENTIFY was written before it
    /// treats the grant as written at that moment (a lost report must not stall it).
    fn unwritten_limit(&self) -> Duration {
        self.config.period() * 2
    }

    fn bucket_mut(&mut self, shard: u32) -> &mut Bucket {
        let index = self.bucket_of(shard) as usize;
        &mut self.buckets[index]
    }

    /// When [`poll_grant`](Self::poll_grant) may next return a shard, if any is queued.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self
            .buckets
            .iter()
            .filter(|b| !b.queue.is_empty())
            .map(|b| self.next_grant(b))
            .min()?;
        Some(if self.remaining == 0 {
            next.max(self.reset_at)
        } else {
            next
        })
    }

    /// Replaces the budget with fresh figures from `/gateway/bot`.
    pub fn set_budget(&mut self, total: u32, remaining: u32, reset_after: Duration, now: Instant) {
        self.total = total;
        self.remaining = remaining.min(total);
        self.reset_at = now + reset_after;
        self.figures_at = now;
    }

    /// Session starts left.
    #[must_use]
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// When the budget resets: Discord refills it then, and only fresh figures say by
    /// how much.
    #[must_use]
    pub fn reset_at(&self) -> Instant {
        self.reset_at
    }

    /// Shards waiting for a permit.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.buckets.iter().map(|b| b.queue.len()).sum()
    }

    /// The schedule's shape.
    #[must_use]
    pub fn config(&self) -> ScheduleConfig {
        self.config
    }

    /// Buckets, queues, next grant times and budget.
    #[must_use]
    pub fn status(&self, now: Instant) -> ScheduleStatus {
        ScheduleStatus {
            buckets: self
                .buckets
                .iter()
                .zip(0..)
                .map(|(b, index)| BucketStatus {
                    bucket: index,
                    queued: b.queue.iter().map(|&(_, shard)| shard).collect(),
                    last_grant: b.last_grant,
                    next_grant: self.next_grant(b).max(now),
                })
                .collect(),
            total: self.total,
            remaining: self.remaining,
            reset_at: self.reset_at,
        }
    }

    fn next_grant(&self, bucket: &Bucket) -> Instant {
        [
            bucket.last_grant.map(|last| last + self.config.period()),
            bucket.hold_until,
            bucket.unwritten.map(|(_, at)| at + self.unwritten_limit()),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(self.created)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
