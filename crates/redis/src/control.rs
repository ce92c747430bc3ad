//! The node's control loop: every tick it renews its leases (one call for all of its
//! shards), reads the namespace, and claims or hands over shards so each runs on the
//! node placement chose; between ticks it serves identify permits. A watchdog task
//! stops every shard the moment the last renewal stops covering them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardkeeper_cluster::{Fence, Grant, RestClient, ShardSet};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::NodeError;
use crate::link::{GrantAsk, Identity, Link};
use crate::node::{GRANT_VALIDITY, Inner, NodeConfig, NodeCounters};
use crate::view::identify_status;

mod permits;
mod placement;

/// Most shards a node hands to others per tick, so a joining node takes its share a
/// few at a time.
const HANDOVERS_PER_TICK: usize = 8;
/// Ticks between two prunings of dead nodes' descriptions.
const PRUNE_EVERY: u64 = 120;
/// How long a dead node's description stays listed in Redis.
const FORGET_DEAD_AFTER_MS: u64 = 3_600_000;
/// Most shards a node claims per tick (the rest wait for the next one).
const CLAIMS_PER_TICK: usize = 128;
/// Longest tick: the reconcile pace even with a long lease.
const MAX_TICK: Duration = Duration::from_millis(500);
/// How long an orphan waits for its target before the next node in rank may take it,
/// on top of the lease.
const TAKEOVER_SLACK: Duration = Duration::from_secs(2);
/// Shortest time between two refreshes of the shared budget from `/gateway/bot`.
const REFRESH_EVERY_MS: u64 = 60_000;
/// Longest a waiting permit request goes without asking again.
const POLL: Duration = Duration::from_millis(200);
/// How often a parked or failing permit request is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What the seams ask of the control loop.
pub(crate) enum Command {
    Ask(u32, oneshot::Sender<Grant>),
    Cancel(u32),
    Written(u32, Instant),
    Unused(u32),
    Released(u32),
    Running(ShardSet),
    StopGranting,
    Leave(oneshot::Sender<()>),
    Halt,
}

/// A shard waiting for a permit.
struct Waiter {
    reply: oneshot::Sender<Grant>,
    request: u64,
    /// When the earliest request whose outcome is unknown (its reply was lost) was
    /// sent: a grant it made counts from then, whichever retry reads it back.
    unknown_since: Option<Instant>,
}

pub(crate) struct Control {
    inner: Arc<Inner>,
    rest: RestClient,
    commands: mpsc::UnboundedReceiver<Command>,
    run_id: String,
    tick: Duration,
    orphan_since: HashMap<u32, Instant>,
    /// The node each shard was last seen owned by: a claim of a shard whose last owner
    /// is gone is a failover, not a handover.
    last_owner: HashMap<u32, String>,
    handing_over: BTreeSet<u32>,
    /// What the supervisor last said it runs: only those are handed over (one that
    /// left the set before the supervisor saw it would never be released).
    started: ShardSet,
    leaving: Option<oneshot::Sender<()>>,
    waiting: BTreeMap<u32, Waiter>,
    /// Shard → a delivered grant and when its request was sent, until the IDENTIFY is
    /// written.
    granted: HashMap<u32, (GrantAsk, Instant)>,
    next_permits: Instant,
    refreshing: Arc<Mutex<bool>>,
    /// The cluster is shutting down: no more grants.
    halted: bool,
    /// Shards told they wait for the budget to reset (told once).
    parked: BTreeSet<u32>,
    /// Ticks so far.
    rounds: u64,
    /// Another live process took this node's id: it runs nothing from now on.
    deposed: bool,
    /// Shards this node took in place of a target that did not claim them, kept until
    /// then.
    fallback_until: HashMap<u32, Instant>,
}

impl Control {
    /// Connects, checks, joins; the loop and what the seams share.
    pub(crate) async fn join(
        config: NodeConfig,
        rest: RestClient,
    ) -> Result<(Self, Arc<Inner>), NodeError> {
        let lease_ms = u64::try_from(config.lease.as_millis()).unwrap_or(u64::MAX);
        let timeout = (config.lease / 5).clamp(Duration::from_millis(100), Duration::from_secs(2));
        let link = Link::connect(&config.url, &config.namespace, timeout).await?;
        crate::settings::check(&link).await?;
        link.load_library().await.map_err(|err| {
            NodeError::conflict(
                "cluster.url",
                format!(
                    "cannot load shardkeeper's functions (Redis 7.0 or later is needed): {err}"
                ),
            )
        })?;
        let identity = Identity {
            id: config.node_id.clone(),
            instance: format!("{:016x}", rand::random::<u64>()),
            lease_ms,
        };
        crate::settings::join(&link, &identity, &config).await?;
        let run_id = link.run_id().await?;
        let (commands, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            identity,
            config,
            link,
            runtime: tokio::runtime::Handle::current(),
            commands,
            assigned: watch::Sender::new(ShardSet::new()),
            held: Mutex::default(),
            status: Mutex::default(),
            valid_until: Mutex::default(),
            fence: Fence::expired(Instant::now()),
            handle: std::sync::OnceLock::new(),
            last_ok: Mutex::default(),
            written: Mutex::default(),
            published: Mutex::default(),
            counters: NodeCounters::default(),
        });
        let tick = (inner.config.lease / 3).min(MAX_TICK);
        Ok((
            Self {
                inner: Arc::clone(&inner),
                rest,
                commands: rx,
                run_id,
                tick,
                orphan_since: HashMap::new(),
                last_owner: HashMap::new(),
                handing_over: BTreeSet::new(),
                started: ShardSet::new(),
                leaving: None,
                waiting: BTreeMap::new(),
                granted: HashMap::new(),
                next_permits: Instant::now(),
                refreshing: Arc::default(),
                halted: false,
                parked: BTreeSet::new(),
                rounds: 0,
                deposed: false,
                fallback_until: HashMap::new(),
            },
            inner,
        ))
    }

    /// Runs until halted.
    pub(crate) async fn run(mut self) {
        tokio::spawn(watchdog(Arc::clone(&self.inner)));
        let mut next_tick = Instant::now();
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(Command::Halt) => break,
                    Some(command) => self.command(command).await,
                },
                () = tokio::time::sleep_until(next_tick.into()) => {
                    self.round().await;
                    next_tick = Instant::now() + self.tick;
                }
                () = tokio::time::sleep_until(self.next_permits.into()), if !self.waiting.is_empty() => {
                    self.permits().await;
                }
            }
        }
        self.inner.fence("the node is stopping");
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Ask(_, _) if self.halted => {}
            Command::Ask(shard, reply) => {
                self.waiting.insert(
                    shard,
                    Waiter {
                        reply,
                        request: rand::random(),
                        unknown_since: None,
                    },
                );
                self.next_permits = Instant::now();
            }
            Command::Cancel(shard) => {
                self.waiting.remove(&shard);
                self.parked.remove(&shard);
            }
            Command::Written(shard, at) => {
                if let Some((ask, sent)) = self.granted.remove(&shard) {
                    let config = &self.inner.config;
                    let gap = config.identify_window + config.identify_margin;
                    let elapsed = at.saturating_duration_since(sent);
                    self.redis(self.inner.link.written(&ask, elapsed, gap).await);
                    self.next_permits = Instant::now();
                }
            }
            Command::Unused(shard) => {
                if let Some((ask, _)) = self.granted.remove(&shard) {
                    self.redis(self.inner.link.unused(&ask).await);
                }
            }
            Command::Released(shard) => self.released(shard).await,
            Command::Running(shards) => self.started = shards,
            Command::Leave(done) => {
                tracing::info!(node = %self.inner.identity.id, "leaving: handing every shard over");
                self.leaving = Some(done);
                let inner = Arc::clone(&self.inner);
                let announced =
                    crate::settings::announce_leaving(&inner.link, &inner.identity, &inner.config)
                        .await;
                self.redis(announced);
                self.round().await;
            }
            Command::StopGranting => {
                self.halted = true;
                self.waiting.clear();
            }
            Command::Halt => {}
        }
    }

    /// Counts a failed Redis call; the value of a successful one.
    fn redis<T>(&self, result: Result<T, redis::RedisError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                NodeCounters::add(&self.inner.counters.redis_errors, 1);
                tracing::warn!(node = %self.inner.identity.id, %err, "Redis call failed");
                None
            }
        }
    }

    /// One tick: notice a Redis restart, renew, reconcile, refresh the budget.
    async fn round(&mut self) {
        let inner = Arc::clone(&self.inner);
        if inner
            .valid_until()
            .is_some_and(|until| Instant::now() >= until)
        {
            inner.fence("the lease could not be renewed in time");
        }
        // The new run_id is taken only once the grace period is set: a Redis still
        // loading its data refuses the pause, and it is tried again next tick.
        if let Some(run_id) = self.redis(inner.link.run_id().await)
            && run_id != self.run_id
        {
            if !self.redis_restarted().await {
                // No renewal either: it would move Redis's clock past the silence its
                // grant function looks for.
                return;
            }
            self.run_id = run_id;
        }
        if self.deposed {
            return;
        }
        self.renew().await;
        let Some(view) = self.redis(inner.link.view(inner.config.total).await) else {
            return;
        };
        let listed = view.nodes.iter().any(|(id, _, _)| *id == inner.identity.id);
        if !listed && self.leaving.is_none() {
            self.data_lost().await;
        }
        self.reconcile(&view).await;
        self.refresh_budget(&view);
        self.rounds += 1;
        if self.rounds.is_multiple_of(PRUNE_EVERY) {
            self.prune(&view).await;
        }
        let published = crate::remote::publish(&inner).await;
        self.redis(published);
        inner.counters.waiting.store(
            self.waiting.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        *inner
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            identify_status(&inner.config, &view, self.waiting.keys().copied());
        self.finish_leaving().await;
    }

    /// Redis came back with another `run_id`: no grants for a grace period (a grant
    /// made just before it died may be lost with its data), and if the data is gone, the
    /// namespace is joined again and the budget fetched before any grant.
    async fn redis_restarted(&mut self) -> bool {
        let inner = Arc::clone(&self.inner);
        NodeCounters::add(&inner.counters.redis_restarts, 1);
        let pause = inner.config.lease.max(spacing(&inner.config));
        tracing::error!(node = %inner.identity.id, pause_ms = pause.as_millis(), "Redis restarted; no identify permits during the grace period");
        if self.redis(inner.link.pause_grants(pause).await).is_none() {
            return false;
        }
        if self.redis(inner.link.has_meta().await) == Some(false) {
            self.data_lost().await;
        }
        true
    }

    /// Redis lost the namespace (seen as its description gone, or as this node missing
    /// from the node list): every node raises the alarm, joins again, writes its
    /// sessions back, and fetches the budget before any grant.
    async fn data_lost(&mut self) {
        let inner = Arc::clone(&self.inner);
        NodeCounters::add(&inner.counters.data_losses, 1);
        tracing::error!(node = %inner.identity.id, "Redis lost the cluster's data; rejoining, owners re-assert their shards, and the budget is fetched again before any grant");
        self.rejoin().await;
    }

    /// Joins the namespace again and writes the sessions of this node's shards back
    /// (their leases come back with the renewal just before).
    async fn rejoin(&mut self) {
        let inner = Arc::clone(&self.inner);
        let joined = crate::settings::rejoin(&inner.link, &inner.identity, &inner.config).await;
        if self.redis(joined).is_none() {
            tracing::error!(node = %inner.identity.id, "cannot rejoin the cluster; trying again next tick");
            return;
        }
        // The owner keys must be back before a fenced write can pass; every snapshot
        // goes out again.
        self.renew().await;
        inner
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        let held = inner.held().clone();
        let changes: Vec<(u32, u64, Option<String>)> = {
            let written = inner
                .written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            held.iter()
                .filter_map(|(&shard, &epoch)| {
                    Some((shard, epoch, Some(written.get(&shard)?.clone())))
                })
                .collect()
        };
        if !changes.is_empty() {
            let saved = inner.link.save(&inner.identity, &changes).await;
            if let Some(refused) = self.redis(saved) {
                tracing::info!(node = %inner.identity.id, sessions = changes.len() - refused.len(), "sessions written again");
            }
        }
    }

    /// Renews every lease; a shard found owned by another stops at once.
    async fn renew(&mut self) {
        let inner = Arc::clone(&self.inner);
        let held: Vec<(u32, u64)> = inner.held().iter().map(|(&s, &e)| (s, e)).collect();
        let sent = Instant::now();
        let result = inner.link.beat(&inner.identity, &held).await;
        let elapsed = sent.elapsed();
        match result {
            Ok(kept) => {
                inner.counters.renew_us.store(
                    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let mut current = inner.held();
                let mut until = inner.valid_until();
                // A renewal is only worth what it covers from before it was sent.
                *inner
                    .last_ok
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                let covered = sent + inner.config.lease.mul_f64(0.9);
                *until = Some(covered);
                inner.fence.extend(covered);
                for (&(shard, epoch), kept) in held.iter().zip(kept) {
                    if !kept && current.get(&shard) == Some(&epoch) {
                        tracing::warn!(node = %inner.identity.id, shard, "shard is owned by another node now; stopping it");
                        current.remove(&shard);
                        self.handing_over.remove(&shard);
                        NodeCounters::add(&inner.counters.lost, 1);
                    }
                }
                let running: ShardSet = current
                    .keys()
                    .copied()
                    .filter(|s| !self.handing_over.contains(s))
                    .collect();
                drop((current, until));
                publish(&inner, running);
            }
            Err(err) if err.code().is_some_and(|code| code == "DUPLICATE") => {
                inner.fence("another live node took this node's id");
                tracing::error!(node = %inner.identity.id, "this node's id is another live node's now; it claims nothing more (restart it with its own cluster.node_id)");
                self.deposed = true;
            }
            Err(err) => {
                self.redis::<()>(Err(err));
            }
        }
    }
}

/// Sets what the supervisor runs, if it changed.
fn publish(inner: &Inner, running: ShardSet) {
    inner.assigned.send_if_modified(|set| {
        let changed = *set != running;
        *set = running;
        changed
    });
}

/// Stops every shard once the last renewal no longer covers them, whatever the
/// control loop is waiting for.
async fn watchdog(inner: Arc<Inner>) {
    loop {
        let until = *inner.valid_until();
        match until {
            Some(until) if Instant::now() >= until => {
                inner.fence("the lease could not be renewed in time");
            }
            Some(until) => tokio::time::sleep_until(until.into()).await,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Time between two grants of one bucket: the window, the time a grant stays valid
/// (its IDENTIFY may go out at the end of it) and the margin.
pub(crate) fn spacing(config: &NodeConfig) -> Duration {
    config.identify_window + GRANT_VALIDITY + config.identify_margin
}

/// Session starts kept back of a daily `total`: max(10, 5 %) unless configured.
pub(crate) fn reserve(config: &NodeConfig, total: u32) -> u32 {
    config.reserve.unwrap_or((total / 20).max(10))
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
