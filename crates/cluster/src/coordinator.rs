//! The identify coordinator: one actor that decides which shard may IDENTIFY when.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use shardkeeper_session::IdentifySchedule;

use crate::clock;
use crate::rest::RestClient;
use crate::store::SessionStore;

/// How long the first window waits for the start-up batch to connect and ask, so
/// lower shard ids go first even if a higher one connected earlier.
const GATHER: Duration = Duration::from_secs(1);
/// Shortest time between two budget refreshes from `/gateway/bot`.
const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// A shard asks to IDENTIFY.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RequestPermit {
    pub(crate) shard: u32,
    pub(crate) ticket: u64,
    pub(crate) reply: Recipient<PermitGranted>,
}

/// A shard no longer needs its permit.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CancelPermit {
    pub(crate) shard: u32,
    pub(crate) ticket: u64,
}

/// The coordinator's answer: IDENTIFY now.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PermitGranted {
    pub(crate) ticket: u64,
}

/// What became of a granted permit: the IDENTIFY was written at `at`, or never (`None`:
/// the connection went first).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PermitUsed {
    pub(crate) shard: u32,
    pub(crate) written_at: Option<Instant>,
}

/// Reports what became of a permit exactly once: when the IDENTIFY was handed to the
/// socket, or — if it is dropped before that — that it was never written.
pub(crate) struct PermitReport {
    shard: u32,
    coordinator: Option<Addr<IdentifyCoordinator>>,
}

impl PermitReport {
    pub(crate) fn new(shard: u32, coordinator: Addr<IdentifyCoordinator>) -> Self {
        Self {
            shard,
            coordinator: Some(coordinator),
        }
    }

    /// The IDENTIFY went out (or its write failed part-way: it may have arrived).
    pub(crate) fn written(mut self) {
        self.send(Some(clock::now()));
    }

    fn send(&mut self, written_at: Option<Instant>) {
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.do_send(PermitUsed {
                shard: self.shard,
                written_at,
            });
        }
    }
}

impl Drop for PermitReport {
    fn drop(&mut self) {
        self.send(None);
    }
}

/// The cluster is shutting down.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Halt;

impl Handler<Halt> for IdentifyCoordinator {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Fresh `session_start_limit` figures.
#[derive(Message)]
#[rtype(result = "()")]
struct BudgetRefreshed {
    total: u32,
    remaining: u32,
    reset_after: Duration,
}

/// One bucket, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BucketView {
    /// `shard_id % max_concurrency`.
    pub bucket: u32,
    /// Shards waiting, in grant order.
    pub queued: Vec<u32>,
    /// Milliseconds until the bucket may grant again (0: now).
    pub next_grant_in_ms: u64,
    /// Milliseconds since the last grant.
    pub last_grant_ago_ms: Option<u64>,
}

/// The coordinator's state, for the admin API and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdentifyStatus {
    /// Buckets.
    pub max_concurrency: u32,
    /// Window per bucket.
    pub window_ms: u64,
    /// Session starts per budget period.
    pub total: u32,
    /// Session starts left.
    pub remaining: u32,
    /// Milliseconds until the budget resets.
    pub reset_in_ms: u64,
    /// Shards waiting for a permit.
    pub queued: usize,
    /// Permits granted since start.
    pub granted: u64,
    /// Per bucket.
    pub buckets: Vec<BucketView>,
}

/// Shared view of the coordinator's state.
pub(crate) type StatusCell = Arc<Mutex<Option<IdentifyStatus>>>;

pub(crate) struct IdentifyCoordinator {
    schedule: IdentifySchedule,
    waiting: HashMap<u32, (u64, Recipient<PermitGranted>)>,
    /// Shards expected to identify at start-up; the first window opens once all asked.
    expected: HashSet<u32>,
    gather_until: Option<Instant>,
    timer: Option<SpawnHandle>,
    store: Arc<dyn SessionStore>,
    status: StatusCell,
    rest: RestClient,
    last_refresh: Instant,
    refreshing: bool,
    granted: u64,
}

impl IdentifyCoordinator {
    pub(crate) fn new(
        schedule: IdentifySchedule,
        expected: HashSet<u32>,
        store: Arc<dyn SessionStore>,
        rest: RestClient,
        status: StatusCell,
    ) -> Self {
        Self {
            schedule,
            waiting: HashMap::new(),
            expected,
            gather_until: None,
            timer: None,
            store,
            status,
            rest,
            last_refresh: clock::now(),
            refreshing: false,
            granted: 0,
        }
    }

    fn gate_open(&self, now: Instant) -> bool {
        self.expected.is_empty() || self.gather_until.is_some_and(|until| now >= until)
    }

    fn persist(&self, now: Instant) {
        let snapshot = self.schedule.snapshot(now, clock::wall_ms());
        if let Err(err) = self.store.save_schedule(&snapshot) {
            tracing::error!(%err, "cannot persist the identify schedule");
        }
    }

    /// Grants everything the schedule allows now, then arms the timer for the next grant.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = clock::now();
        if self.gate_open(now) {
            self.expected.clear();
            while let Some(shard) = self.schedule.poll_grant(now) {
                self.granted += 1;
                // The grant is on disk before the shard hears of it.
                self.persist(now);
                if let Some((ticket, reply)) = self.waiting.remove(&shard) {
                    tracing::info!(
                        shard,
                        bucket = self.schedule.bucket_of(shard),
                        remaining = self.schedule.remaining(),
                        "identify permit granted"
                    );
                    reply.do_send(PermitGranted { ticket });
                }
            }
        }
        self.maybe_refresh(ctx, now);
        self.publish(now);
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let next = if self.gate_open(now) {
            self.schedule.poll_timeout()
        } else {
            self.gather_until
        };
        if let Some(at) = next {
            let delay = at.saturating_duration_since(now);
            self.timer = Some(ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                act.pump(ctx);
            }));
        }
    }

    /// Refreshes the budget from `/gateway/bot` when it ran out and shards wait.
    fn maybe_refresh(&mut self, ctx: &mut Context<Self>, now: Instant) {
        if self.refreshing || self.schedule.remaining() > 0 || self.schedule.queued() == 0 {
            return;
        }
        if now.saturating_duration_since(self.last_refresh) < REFRESH_EVERY {
            return;
        }
        self.refreshing = true;
        self.last_refresh = now;
        let rest = self.rest.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            match rest.gateway_bot().await {
                Ok(bot) => addr.do_send(BudgetRefreshed {
                    total: bot.session_start_limit.total,
                    remaining: bot.session_start_limit.remaining,
                    reset_after: Duration::from_millis(bot.session_start_limit.reset_after),
                }),
                Err(err) => tracing::warn!(%err, "cannot refresh the session start budget"),
            }
        });
    }

    fn publish(&self, now: Instant) {
        let status = self.schedule.status(now);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = self.schedule.config();
        let view = IdentifyStatus {
            max_concurrency: config.max_concurrency.get(),
            window_ms: ms(config.window),
            total: status.total,
            remaining: status.remaining,
            reset_in_ms: ms(status.reset_at.saturating_duration_since(now)),
            queued: self.schedule.queued(),
            granted: self.granted,
            buckets: status
                .buckets
                .into_iter()
                .map(|b| BucketView {
                    bucket: b.bucket,
                    queued: b.queued,
                    next_grant_in_ms: ms(b.next_grant.saturating_duration_since(now)),
                    last_grant_ago_ms: b.last_grant.map(|at| ms(now.saturating_duration_since(at))),
                })
                .collect(),
        };
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = Some(view);
    }
}

impl Actor for IdentifyCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}

impl Handler<RequestPermit> for IdentifyCoordinator {
    type Result = ();

    fn handle(&mut self, msg: RequestPermit, ctx: &mut Self::Context) {
        let now = clock::now();
        if self.gather_until.is_none() {
            self.gather_until = Some(now + GATHER);
        }
        self.expected.remove(&msg.shard);
        self.schedule.request(msg.shard);
        self.waiting.insert(msg.shard, (msg.ticket, msg.reply));
        self.pump(ctx);
    }
}

impl Handler<CancelPermit> for IdentifyCoordinator {
    type Result = ();

    fn handle(&mut self, msg: CancelPermit, ctx: &mut Self::Context) {
        if self
            .waiting
            .get(&msg.shard)
            .is_some_and(|(ticket, _)| *ticket == msg.ticket)
        {
            self.waiting.remove(&msg.shard);
            self.schedule.cancel(msg.shard);
            self.pump(ctx);
        }
    }
}

impl Handler<PermitUsed> for IdentifyCoordinator {
    type Result = ();

    fn handle(&mut self, msg: PermitUsed, ctx: &mut Self::Context) {
        let outstanding = match msg.written_at {
            Some(at) => {
                let outstanding = self.schedule.written(msg.shard, at);
                if outstanding {
                    self.persist(clock::now());
                }
                outstanding
            }
            None => self.schedule.unused(msg.shard),
        };
        if outstanding {
            self.pump(ctx);
        }
    }
}

impl Handler<BudgetRefreshed> for IdentifyCoordinator {
    type Result = ();

    fn handle(&mut self, msg: BudgetRefreshed, ctx: &mut Self::Context) {
        self.refreshing = false;
        tracing::info!(
            total = msg.total,
            remaining = msg.remaining,
            "session start budget refreshed"
        );
        self.schedule
            .set_budget(msg.total, msg.remaining, msg.reset_after, clock::now());
        self.pump(ctx);
    }
}
