//! Building and supervising a cluster of shards.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use shardkeeper_protocol::ShardId;
use shardkeeper_protocol::payload::GatewayBot;
use shardkeeper_session::{
    IdentifySchedule, ResumeInfo, ScheduleConfig, SessionConfig, SessionStats, ShardSession,
};

use crate::config::{Auto, ClusterConfig, QuarantinePolicy, ShardIds};
use crate::coordinator::IdentifyCoordinator;
use crate::handle::{ClusterError, ClusterHandle, Parts};
use crate::metrics::Metrics;
use crate::persist::{Persister, health_cell};
use crate::registry::Registry;
use crate::rest::RestClient;
use crate::shard::Shard;
use crate::sink::{EventSink, Sinks};
use crate::store::{MemoryStore, SessionStore};
use crate::{clock, tls};

/// Everything a shard actor needs; the supervisor keeps one per shard to rebuild it.
#[derive(Clone)]
pub(crate) struct ShardParams {
    pub(crate) id: u32,
    pub(crate) total: u32,
    /// Shared by every shard; the shard's own id is set when its session is built.
    pub(crate) session: Arc<SessionConfig>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) coordinator: Addr<IdentifyCoordinator>,
    pub(crate) sinks: Sinks,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) quarantine: QuarantinePolicy,
    pub(crate) supervisor: Recipient<ShardGone>,
    pub(crate) metrics: Arc<Metrics>,
}

/// A shard actor stopped without being retired: it crashed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ShardGone {
    pub(crate) id: u32,
}

/// Stop restarting shards (the cluster is shutting down).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StandDown;

/// Restarts crashed shard actors with their session, on the same thread.
pub(crate) struct Supervisor {
    /// Shared with the shard actor: one copy per shard, however often it restarts.
    params: HashMap<u32, (Arc<ShardParams>, ArbiterHandle)>,
    /// Stored sessions for the first start of each shard.
    initial: HashMap<u32, ResumeInfo>,
    registry: Arc<Registry>,
    standing_down: bool,
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        let mut ids: Vec<u32> = self.params.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some((params, arbiter)) = self.params.get(&id).cloned() {
                spawn_shard(params, &arbiter, self.initial.remove(&id));
            }
        }
    }
}

impl Handler<ShardGone> for Supervisor {
    type Result = ();

    fn handle(&mut self, ShardGone { id }: ShardGone, _: &mut Self::Context) {
        if self.standing_down {
            return;
        }
        let Some((params, arbiter)) = self.params.get(&id).cloned() else {
            return;
        };
        let resume = {
            let Some(mut entry) = self.registry.entry(id) else {
                return;
            };
            let snap = &entry.snapshot;
            let carried = SessionStats {
                identifies: snap.identifies,
                resumes: snap.resumes,
                reconnects: snap.reconnects,
                zombies: snap.zombies,
                last_close_code: snap.last_close_code,
                latency: None,
                guilds: 0,
            };
            entry.carried = carried;
            entry.snapshot.restarts += 1;
            params.metrics.restarted();
            entry.addr = None;
            tracing::error!(
                shard = id,
                restarts = entry.snapshot.restarts,
                "shard actor crashed; restarting it with its session"
            );
            entry.resume.clone()
        };
        spawn_shard(params, &arbiter, resume);
    }
}

impl Handler<StandDown> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: StandDown, ctx: &mut Self::Context) {
        self.standing_down = true;
        ctx.stop();
    }
}

fn spawn_shard(params: Arc<ShardParams>, arbiter: &ArbiterHandle, resume: Option<ResumeInfo>) {
    Shard::start_in_arbiter(arbiter, move |_| {
        let seed = rand::random::<u64>();
        let shard = shard_id(params.id, params.total);
        let session = ShardSession::new(shard, Arc::clone(&params.session), resume, seed);
        Shard::new(params, session)
    });
}

/// Entry point: `Cluster::builder()`.
#[derive(Debug)]
pub struct Cluster;

impl Cluster {
    /// A builder for a cluster with `config`.
    #[must_use]
    pub fn builder(config: ClusterConfig) -> ClusterBuilder {
        ClusterBuilder {
            config,
            store: None,
            sinks: Sinks::default(),
        }
    }
}

/// Collects the store and sinks, then starts the cluster.
pub struct ClusterBuilder {
    config: ClusterConfig,
    store: Option<Arc<dyn SessionStore>>,
    sinks: Sinks,
}

impl std::fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("sinks", &self.sinks)
            .finish_non_exhaustive()
    }
}

impl ClusterBuilder {
    /// Where sessions are kept between runs (default: memory only).
    #[must_use]
    pub fn store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds a destination for events.
    #[must_use]
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Asks `/gateway/bot`, restores sessions and the identify schedule, and starts every
    /// shard. Must run inside an actix system.
    pub async fn start(self) -> Result<ClusterHandle, ClusterError> {
        let Self {
            config,
            store,
            sinks,
        } = self;
        let store = store.unwrap_or_else(|| Arc::new(MemoryStore::default()));
        let tls = tls::client_config(config.ca_file.as_deref())?;
        let rest = RestClient::new(&config.api_base, config.token.clone(), Arc::clone(&tls))?
            .with_retries(config.rest_attempts, config.rest_backoff);
        let bot = rest.gateway_bot().await?;
        let plan = Plan::new(&config, &bot)?;
        let stored = load_sessions(store.as_ref(), plan.total, config.session_max_age)?;
        let schedule = restore_schedule(store.as_ref(), &config, &plan, &bot)?;
        let expected: HashSet<u32> = plan
            .ids
            .iter()
            .copied()
            .filter(|id| !stored.contains_key(id))
            .collect();
        tracing::info!(
            total = plan.total,
            owned = plan.ids.len(),
            max_concurrency = plan.max_concurrency,
            resumable = stored.len(),
            remaining = schedule.remaining(),
            "starting cluster"
        );
        let status = Arc::new(Mutex::new(None));
        let coordinator = IdentifyCoordinator::new(
            schedule,
            expected,
            Arc::clone(&store),
            rest,
            Arc::clone(&status),
        )
        .start();
        let registry = Arc::new(Registry::new(plan.ids.iter().copied()));
        let arbiters: Vec<Arbiter> = (0..plan.threads).map(|_| Arbiter::new()).collect();
        let metrics = Arc::new(Metrics::new());
        let session = Arc::new(session_config(&config, &bot.url));
        let supervisor = Supervisor::create(|ctx| {
            let recipient = ctx.address().recipient();
            let params = plan
                .ids
                .iter()
                .enumerate()
                .map(|(index, &id)| {
                    let shard = ShardParams {
                        id,
                        total: plan.total,
                        session: Arc::clone(&session),
                        tls: Arc::clone(&tls),
                        coordinator: coordinator.clone(),
                        sinks: sinks.clone(),
                        store: Arc::clone(&store),
                        registry: Arc::clone(&registry),
                        quarantine: config.quarantine,
                        metrics: Arc::clone(&metrics),
                        supervisor: recipient.clone(),
                    };
                    (
                        id,
                        (Arc::new(shard), arbiters[index % arbiters.len()].handle()),
                    )
                })
                .collect();
            Supervisor {
                params,
                initial: stored,
                registry: Arc::clone(&registry),
                standing_down: false,
            }
        });
        let health = health_cell();
        let persister = Persister::spawn(
            store,
            sinks,
            config.flush_interval,
            Arc::clone(&health),
            Arc::clone(&registry),
        );
        Ok(ClusterHandle::new(Parts {
            registry,
            identify: status,
            supervisor,
            coordinator,
            persister,
            health,
            total: plan.total,
            arbiters,
            metrics,
        }))
    }
}

/// Shard count, owned ids and buckets, from configuration and `/gateway/bot`.
struct Plan {
    total: u32,
    ids: Vec<u32>,
    max_concurrency: u32,
    threads: usize,
}

impl Plan {
    fn new(config: &ClusterConfig, bot: &GatewayBot) -> Result<Self, ClusterError> {
        let total = match config.total {
            Auto::Fixed(n) => n,
            Auto::Auto => bot.shards,
        }
        .max(1);
        let ids: Vec<u32> = match &config.ids {
            ShardIds::All => (0..total).collect(),
            ShardIds::Range(range) => range.clone().collect(),
        };
        if ids.is_empty() {
            return Err(ClusterError::Config("no shard ids to run".into()));
        }
        if let Some(bad) = ids.iter().find(|&&id| id >= total) {
            return Err(ClusterError::Config(format!(
                "shard id {bad} is not below the shard count {total}"
            )));
        }
        let max_concurrency = match config.max_concurrency {
            Auto::Fixed(n) => n,
            Auto::Auto => bot.session_start_limit.max_concurrency,
        }
        .max(1);
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            config.threads
        };
        Ok(Self {
            threads: threads.clamp(1, ids.len()),
            total,
            ids,
            max_concurrency,
        })
    }
}

/// The identify schedule: the stored snapshot keeps each bucket's last grant (so a
/// crash loop cannot open a window early); Discord's figures are the truth for the budget.
fn restore_schedule(
    store: &dyn SessionStore,
    config: &ClusterConfig,
    plan: &Plan,
    bot: &GatewayBot,
) -> Result<IdentifySchedule, ClusterError> {
    let now = clock::now();
    let schedule_config = ScheduleConfig {
        max_concurrency: NonZeroU32::new(plan.max_concurrency).unwrap_or(NonZeroU32::MIN),
        window: config.identify_window,
        margin: config.identify_margin,
    };
    let limit = bot.session_start_limit;
    let reset_after = Duration::from_millis(limit.reset_after);
    let mut schedule = match store.load_schedule()? {
        Some(snapshot) => {
            IdentifySchedule::restore(schedule_config, &snapshot, now, clock::wall_ms())
        }
        None => IdentifySchedule::new(
            schedule_config,
            limit.total,
            limit.remaining,
            reset_after,
            now,
        ),
    };
    schedule.set_budget(limit.total, limit.remaining, reset_after, now);
    Ok(schedule)
}

/// The session configuration every shard shares.
fn session_config(config: &ClusterConfig, gateway_url: &str) -> SessionConfig {
    let mut session = SessionConfig::new(config.token.clone(), gateway_url);
    session.compression = config.compression;
    session.intents = config.intents;
    session.large_threshold = Some(config.large_threshold);
    session.presence.clone_from(&config.presence);
    session.timing = config.timing.clone();
    session
}

fn shard_id(id: u32, total: u32) -> ShardId {
    // invariant: `start` checked every id against `total`, which is at least 1
    ShardId::new(id, total).unwrap_or_else(|| unreachable!("shard {id} of {total}"))
}

/// Stored sessions that can still be resumed: same shard count, fresh enough.
fn load_sessions(
    store: &dyn SessionStore,
    total: u32,
    max_age: Duration,
) -> Result<HashMap<u32, ResumeInfo>, ClusterError> {
    let now = clock::wall_ms();
    let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
    let mut usable = HashMap::new();
    for (shard, stored) in store.load_sessions()? {
        let age = now.saturating_sub(stored.updated);
        if stored.total != total {
            tracing::info!(
                shard,
                stored_total = stored.total,
                total,
                "shard count changed; discarding the stored session"
            );
        } else if age > max_age_ms {
            tracing::info!(
                shard,
                age_s = age / 1000,
                "stored session too old to resume; discarding it"
            );
        } else {
            usable.insert(shard, stored.resume_info());
            continue;
        }
        store.forget_session(shard);
    }
    Ok(usable)
}
