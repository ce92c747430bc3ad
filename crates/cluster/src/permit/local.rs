//! The local permit source: one actor that decides which shard may IDENTIFY when.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use shardkeeper_session::IdentifySchedule;
use tokio::sync::oneshot;

use super::{Grant, PermitSource};
use crate::clock;
use crate::snapshot::{BucketView, IdentifyStatus};
use crate::store::ScheduleStore;
use crate::transport::rest::RestClient;

/// How long the first window waits for the start-up batch to connect and ask, so
/// lower shard ids go first even if a higher one connected earlier.
const GATHER: Duration = Duration::from_secs(1);
/// Shortest time between two budget refreshes from `/gateway/bot`.
const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// A shard asks to IDENTIFY.
#[derive(Message)]
#[rtype(result = "()")]
struct Ask {
    shard: u32,
    reply: oneshot::Sender<Grant>,
}

/// A shard no longer needs its permit.
#[derive(Message)]
#[rtype(result = "()")]
struct Cancel {
    shard: u32,
}

/// What became of a granted permit: the IDENTIFY was written at `at`, or never (`None`).
#[derive(Message)]
#[rtype(result = "()")]
struct Used {
    shard: u32,
    written_at: Option<Instant>,
}

/// The cluster is shutting down.
#[derive(Message)]
#[rtype(result = "()")]
struct Halt;

/// Fresh `session_start_limit` figures (`None`: the request failed), with the grants
/// counter as of the request.
#[derive(Message)]
#[rtype(result = "()")]
struct BudgetRefreshed {
    figures: Option<(u32, u32, Duration)>,
    granted_before: u64,
}

/// Shared view of the coordinator's state.
type StatusCell = Arc<Mutex<Option<IdentifyStatus>>>;

/// Identify permits from a schedule kept in this process: one actor decides, its
/// grants are written to the store before a shard hears of them, so not even a crash
/// loop opens a window early.
pub struct LocalPermits {
    coordinator: Addr<IdentifyCoordinator>,
    status: StatusCell,
}

impl std::fmt::Debug for LocalPermits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPermits").finish_non_exhaustive()
    }
}

impl LocalPermits {
    /// Starts the coordinator with `schedule` (restored from `store`, which also keeps
    /// every grant), refreshing the budget through `rest` when it runs out. The first
    /// window waits up to a second for the `expected` start-up batch to ask, so lower
    /// shard ids go first. Must run inside an actix system.
    #[must_use]
    pub fn start(
        schedule: IdentifySchedule,
        expected: HashSet<u32>,
        store: Arc<dyn ScheduleStore>,
        rest: RestClient,
    ) -> Self {
        let status = Arc::new(Mutex::new(None));
        let coordinator = IdentifyCoordinator {
            schedule,
            waiting: HashMap::new(),
            expected,
            gather_until: None,
            timer: None,
            store,
            status: Arc::clone(&status),
            rest,
            last_refresh: clock::now(),
            refreshing: false,
            granted: 0,
        };
        // The status is there before the first message: a fresh restart asked for at
        // once sees the budget instead of refusing an unknown one.
        coordinator.publish(clock::now());
        let coordinator = coordinator.start();
        Self {
            coordinator,
            status,
        }
    }
}

impl PermitSource for LocalPermits {
    fn ask(&self, shard: u32) -> oneshot::Receiver<Grant> {
        let (reply, granted) = oneshot::channel();
        self.coordinator.do_send(Ask { shard, reply });
        granted
    }

    fn cancel(&self, shard: u32) {
        self.coordinator.do_send(Cancel { shard });
    }

    fn written(&self, shard: u32, at: Instant) {
        self.coordinator.do_send(Used {
            shard,
            written_at: Some(at),
        });
    }

    fn unused(&self, shard: u32) {
        self.coordinator.do_send(Used {
            shard,
            written_at: None,
        });
    }

    fn status(&self) -> Option<IdentifyStatus> {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn halt(&self) {
        self.coordinator.do_send(Halt);
    }
}

struct IdentifyCoordinator {
    schedule: IdentifySchedule,
    waiting: HashMap<u32, oneshot::Sender<Grant>>,
    /// Shards expected to identify at start-up; the first window opens once all asked.
    expected: HashSet<u32>,
    gather_until: Option<Instant>,
    timer: Option<SpawnHandle>,
    store: Arc<dyn ScheduleStore>,
    status: StatusCell,
    rest: RestClient,
    last_refresh: Instant,
    refreshing: bool,
    granted: u64,
}

impl IdentifyCoordinator {
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
                if let Some(reply) = self.waiting.remove(&shard) {
                    let bucket = self.schedule.bucket_of(shard);
                    tracing::info!(
                        shard,
                        bucket,
                        remaining = self.schedule.remaining(),
                        "identify permit granted"
                    );
                    let grant = Grant {
                        bucket,
                        valid_until: None,
                    };
                    if reply.send(grant).is_err() {
                        // The shard went away meanwhile: the grant's window still holds.
                        self.schedule.unused(shard);
                    }
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
        // Wake at the reset too, to fetch the new figures.
        let reset = Some(self.schedule.reset_at()).filter(|&at| at > now);
        let next = next.into_iter().chain(reset).min();
        if let Some(at) = next {
            let delay = at.saturating_duration_since(now);
            self.timer = Some(ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                act.pump(ctx);
            }));
        }
    }

    /// Refreshes the budget from `/gateway/bot` when it ran out and shards wait, and
    /// once its reset has passed (else the figures of the day before stay).
    fn maybe_refresh(&mut self, ctx: &mut Context<Self>, now: Instant) {
        let spent = self.schedule.remaining() == 0 && self.schedule.queued() > 0;
        let refill = self.schedule.reset_at();
        if self.refreshing || !(spent || now >= refill) {
            return;
        }
        // At most once a minute, but the first time after a reset at once.
        let first_past_reset = now >= refill && self.last_refresh < refill;
        if !first_past_reset && now.saturating_duration_since(self.last_refresh) < REFRESH_EVERY {
            return;
        }
        self.refreshing = true;
        self.last_refresh = now;
        let rest = self.rest.clone();
        let addr = ctx.address();
        let granted_before = self.granted;
        actix::spawn(async move {
            let figures = match rest.gateway_bot().await {
                Ok(bot) => {
                    let limit = bot.session_start_limit;
                    Some((
                        limit.total,
                        limit.remaining,
                        Duration::from_millis(limit.reset_after),
                    ))
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot refresh the session start budget");
                    None
                }
            };
            addr.do_send(BudgetRefreshed {
                figures,
                granted_before,
            });
        });
    }

    fn publish(&self, now: Instant) {
        let status = self.schedule.status(now);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = self.schedule.config();
        let view = IdentifyStatus {
            reserve: 0,
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

impl Handler<Halt> for IdentifyCoordinator {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Ask> for IdentifyCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Ask, ctx: &mut Self::Context) {
        let now = clock::now();
        if self.gather_until.is_none() {
            self.gather_until = Some(now + GATHER);
        }
        self.expected.remove(&msg.shard);
        self.schedule.request(msg.shard);
        self.waiting.insert(msg.shard, msg.reply);
        self.pump(ctx);
    }
}

impl Handler<Cancel> for IdentifyCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) {
        if self.waiting.remove(&msg.shard).is_some() {
            self.schedule.cancel(msg.shard);
            self.pump(ctx);
        } else if self.schedule.unused(msg.shard) {
            // Granted, but the shard gave the request up before it saw the grant: no
            // IDENTIFY was written for it.
            self.pump(ctx);
        }
    }
}

impl Handler<Used> for IdentifyCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Used, ctx: &mut Self::Context) {
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
        let Some((total, remaining, reset_after)) = msg.figures else {
            return;
        };
        // Grants made while the request was out may be missing from Discord's figure:
        // charged again (one Discord had counted reads as spent twice: low, never high).
        let during =
            u32::try_from(self.granted.saturating_sub(msg.granted_before)).unwrap_or(u32::MAX);
        let remaining = remaining.saturating_sub(during);
        tracing::info!(total, remaining, "session start budget refreshed");
        // A reset announced as (nearly) now is looked at again in a minute, not at once:
        // no refresh loop, whatever `reset_after` says.
        let reset_after = reset_after.max(REFRESH_EVERY);
        self.schedule
            .set_budget(total, remaining, reset_after, clock::now());
        self.pump(ctx);
    }
}
