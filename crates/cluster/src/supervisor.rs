//! The supervisor: the one actor that starts, restarts and retires shard actors, and
//! keeps the directory of what runs where.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use shardkeeper_session::{ResumeInfo, SessionStats};
use tokio::sync::watch;

use crate::directory::Directory;
use crate::placement::{Placement, ShardSet};
use crate::shard::{Incarnation, Retire, Shard, ShardGone, Shared};
use crate::status::StatusCell;

/// Reads of a shard's stored session tried again after the first fails.
const LOAD_ATTEMPTS: u32 = 3;
/// Pause between those reads.
const LOAD_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// The placement's set changed.
#[derive(Message)]
#[rtype(result = "()")]
struct Assigned(ShardSet);

/// Retire every shard and stop restarting them (the cluster is shutting down).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StandDown;

/// Everything the supervisor starts with.
pub(crate) struct Setup {
    pub(crate) arbiters: Vec<ArbiterHandle>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) placement: Arc<dyn Placement>,
    /// Stored sessions of the shards of the placement's first set, for their first start;
    /// shards assigned later read the store when they come.
    pub(crate) stored: HashMap<u32, ResumeInfo>,
    /// How long a stored session stays resumable (for shards assigned later).
    pub(crate) session_max_age: std::time::Duration,
}

pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    setup: Setup,
    /// The arbiter each shard runs on, so a restarted actor stays on its thread.
    homes: HashMap<u32, usize>,
    /// The number of each shard's current actor: a crash report of an older one is stale.
    generations: HashMap<u32, u64>,
    next_home: usize,
    retiring: HashSet<u32>,
    standing_down: bool,
}

impl Supervisor {
    /// Starts the supervisor; `shared` is built with the supervisor's own address.
    pub(crate) fn start(
        setup: Setup,
        shared: impl FnOnce(Recipient<ShardGone>) -> Shared,
    ) -> Addr<Self> {
        Self::create(|ctx| {
            let mut changes = setup.placement.watch();
            let first = changes.borrow_and_update().clone();
            let mut supervisor = Self {
                shared: Arc::new(shared(ctx.address().recipient())),
                setup,
                homes: HashMap::new(),
                generations: HashMap::new(),
                next_home: 0,
                retiring: HashSet::new(),
                standing_down: false,
            };
            // The first set starts before `start` returns: the handle finds every shard.
            supervisor.reconcile(ctx, &first);
            Self::follow(ctx, changes);
            supervisor
        })
    }

    /// Forwards every later change of the placement's set to this actor.
    fn follow(ctx: &mut Context<Self>, mut changes: watch::Receiver<ShardSet>) {
        let addr = ctx.address();
        actix::spawn(async move {
            while changes.changed().await.is_ok() {
                let set = changes.borrow_and_update().clone();
                if addr.send(Assigned(set)).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Starts the shards that joined `set` and retires those that left it.
    fn reconcile(&mut self, ctx: &mut Context<Self>, set: &ShardSet) {
        if self.standing_down {
            return;
        }
        for id in self.setup.directory.ids() {
            if !set.contains(&id) && self.retiring.insert(id) {
                self.retire(ctx, id);
            }
        }
        let total = self.shared.total;
        for &id in set {
            if id >= total {
                tracing::warn!(
                    shard = id,
                    total,
                    "placement assigned a shard id beyond the shard count; ignored"
                );
            } else if !self.setup.directory.contains(id) {
                let resume = self.setup.stored.remove(&id).or_else(|| self.load(id));
                self.run(id, StatusCell::new(id, resume), 0);
            }
        }
        self.report_running();
    }

    /// Tells the placement which shards run here now.
    fn report_running(&self) {
        let running: ShardSet = self.setup.directory.ids().into_iter().collect();
        self.setup.placement.running(&running);
    }

    /// The newest session of a shard whose events reached every sink: buffered here, or
    /// stored (by this process, or by another that handed the shard over). A failed read
    /// is tried again a few times first: identifying instead would drop the events
    /// Discord still holds for the session, and spend a session start.
    fn load(&self, id: u32) -> Option<ResumeInfo> {
        self.load_within(id, self.setup.session_max_age)
    }

    /// Like [`load`](Self::load), for a session updated within `max_age`.
    fn load_within(&self, id: u32, max_age: Duration) -> Option<ResumeInfo> {
        let ledger = &self.shared.ledger;
        let mut attempt = 0;
        loop {
            match ledger.delivered_shard(id, self.shared.total, max_age) {
                Ok(resume) => return resume,
                Err(err) if attempt < LOAD_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(shard = id, %err, attempt, "cannot read the stored session; trying again");
                    std::thread::sleep(LOAD_RETRY);
                }
                Err(err) => {
                    tracing::error!(shard = id, %err, "cannot read the stored session; identifying");
                    return None;
                }
            }
        }
    }

    /// Starts an actor for a shard from what its status cell holds: the session and the
    /// counters of earlier runs (none for a new cell), with `crashed` more restarts.
    fn run(&mut self, id: u32, status: StatusCell, crashed: u64) {
        let count = self.setup.arbiters.len().max(1);
        let home = *self.homes.entry(id).or_insert_with(|| {
            self.next_home += 1;
            (self.next_home - 1) % count
        });
        let Some(arbiter) = self.setup.arbiters.get(home) else {
            return;
        };
        let generation = self.generations.entry(id).or_default();
        *generation += 1;
        let run = {
            let published = status.lock();
            let snap = &published.snapshot;
            Incarnation {
                id,
                generation: *generation,
                status: status.clone(),
                resume: published.resume.clone(),
                carried: SessionStats {
                    identifies: snap.identifies,
                    resumes: snap.resumes,
                    reconnects: snap.reconnects,
                    zombies: snap.zombies,
                    last_close_code: snap.last_close_code,
                    latency: None,
                    guilds: 0,
                    events: snap.events,
                },
                restarts: snap.restarts + crashed,
            }
        };
        let shared = Arc::clone(&self.shared);
        let addr = Shard::start_in_arbiter(arbiter, move |_| {
            Shard::new(shared, run, rand::random::<u64>())
        });
        self.setup.directory.set(id, addr, status);
    }

    /// Closes a shard resumably, stores its last sequence, then releases it.
    fn retire(&mut self, ctx: &mut Context<Self>, id: u32) {
        let Some(addr) = self.setup.directory.addr(id) else {
            self.setup.directory.remove(id);
            self.retiring.remove(&id);
            return;
        };
        let shared = Arc::clone(&self.shared);
        let handover = async move {
            let _ = addr.send(Retire).await;
            let flushed = tokio::task::spawn_blocking(move || {
                shared.ledger.flush(&mut || shared.sinks.flush())
            })
            .await;
            matches!(flushed, Ok(Ok(())))
        };
        ctx.spawn(handover.into_actor(self).map(move |stored, act, _| {
            act.retiring.remove(&id);
            let status = act.setup.directory.status(id);
            act.setup.directory.remove(id);
            let assigned = act.setup.placement.watch().borrow().contains(&id);
            match status {
                // Assigned again while it was being handed over: it runs on here.
                Some(status) if assigned && !act.standing_down => {
                    tracing::info!(shard = id, "shard assigned again during its handover");
                    // From what the store holds now (what the sinks took, or what the
                    // node that ran it meanwhile stored), not from what it had received.
                    let stored = act.load(id);
                    status.lock().resume = stored;
                    act.run(id, status, 0);
                }
                _ => {
                    if !stored {
                        // The ledger keeps the session and retries; whoever resumes the
                        // shard meanwhile replays from the older stored seq: duplicates,
                        // never a gap. Holding the shard back would run it nowhere.
                        tracing::error!(
                            shard = id,
                            "shard retired but its session could not be stored; releasing it anyway"
                        );
                    }
                    act.setup.placement.released(id);
                    act.report_running();
                    tracing::info!(shard = id, "shard handed over");
                }
            }
        }));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<Assigned> for Supervisor {
    type Result = ();

    fn handle(&mut self, Assigned(set): Assigned, ctx: &mut Self::Context) {
        self.reconcile(ctx, &set);
    }
}

impl Handler<ShardGone> for Supervisor {
    type Result = ();

    fn handle(&mut self, ShardGone { id, generation }: ShardGone, _: &mut Self::Context) {
        let current = self.generations.get(&id) == Some(&generation);
        if self.standing_down || self.retiring.contains(&id) || !current {
            return;
        }
        let Some(status) = self.setup.directory.status(id) else {
            return;
        };
        self.shared.metrics.restarted();
        tracing::error!(
            shard = id,
            "shard actor crashed; restarting it with its session"
        );
        // From what the sinks took: what it had received but not delivered is replayed.
        // The session was live until the crash, however long ago its last event came.
        let delivered = self.load_within(id, Duration::MAX);
        status.lock().resume = delivered;
        self.run(id, status, 1);
    }
}

impl Handler<StandDown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StandDown, _: &mut Self::Context) -> Self::Result {
        self.standing_down = true;
        let retiring: Vec<_> = self
            .setup
            .directory
            .addrs()
            .into_iter()
            .map(|addr| addr.send(Retire))
            .collect();
        Box::pin(
            futures_util::future::join_all(retiring)
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        )
    }
}
