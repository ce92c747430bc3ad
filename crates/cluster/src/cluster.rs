//! Building a cluster: configuration and `/gateway/bot` become a plan, the seams get
//! their defaults, and the supervisor starts the shards.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use shardkeeper_protocol::payload::GatewayBot;
use shardkeeper_session::{IdentifySchedule, ScheduleConfig, SessionConfig};

use crate::audit::{AuditLog, MemoryAudit};
use crate::clock;
use crate::config::{Auto, ClusterConfig, ShardIds};
use crate::directory::Directory;
use crate::error::ClusterError;
use crate::handle::{ClusterHandle, Parts};
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::permit::{LocalPermits, PermitSource};
use crate::persist::{Persister, health_cell};
use crate::placement::{Placement, StaticPlacement};
use crate::shard::Shared;
use crate::sink::{EventSink, Sinks};
use crate::store::{MemoryStore, ScheduleStore, SessionLedger, SessionStore};
use crate::supervisor::{Setup, Supervisor};
use crate::transport::net::Dialer;
use crate::transport::rest::RestClient;
use crate::transport::tls;

/// Entry point: `Cluster::builder()`.
#[derive(Debug)]
pub struct Cluster;

impl Cluster {
    /// A builder for a cluster with `config`.
    #[must_use]
    pub fn builder(config: ClusterConfig) -> ClusterBuilder {
        ClusterBuilder {
            config,
            sessions: None,
            schedule: None,
            sinks: Sinks::default(),
            placement: None,
            permits: None,
            peers: None,
            audit: None,
            dialer: None,
        }
    }
}

/// Collects the store and sinks, then starts the cluster.
pub struct ClusterBuilder {
    config: ClusterConfig,
    sessions: Option<Arc<dyn SessionStore>>,
    schedule: Option<Arc<dyn ScheduleStore>>,
    sinks: Sinks,
    placement: Option<Arc<dyn Placement>>,
    permits: Option<Arc<dyn PermitSource>>,
    peers: Option<Arc<dyn Peers>>,
    audit: Option<Arc<dyn AuditLog>>,
    dialer: Option<Arc<dyn Dialer>>,
}

impl std::fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("sinks", &self.sinks)
            .finish_non_exhaustive()
    }
}

impl ClusterBuilder {
    /// Where sessions, the identify schedule and the audit log are kept between runs,
    /// e.g. a [`SledStore`](crate::SledStore) (default: memory only).
    #[must_use]
    pub fn store<S: SessionStore + ScheduleStore + AuditLog>(mut self, store: Arc<S>) -> Self {
        self.schedule = Some(Arc::clone(&store) as Arc<dyn ScheduleStore>);
        self.audit = Some(Arc::clone(&store) as Arc<dyn AuditLog>);
        self.sessions = Some(store);
        self
    }

    /// Where sessions are kept, when the identify schedule lives elsewhere (cluster
    /// mode: with the permit source).
    #[must_use]
    pub fn session_store(mut self, sessions: Arc<dyn SessionStore>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Which shards this process runs, and when that changes (default: a
    /// [`StaticPlacement`] of `ids` from the configuration).
    #[must_use]
    pub fn placement(mut self, placement: Arc<dyn Placement>) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Where identify permits come from (default: [`LocalPermits`], with the schedule
    /// restored from the store and the budget from `/gateway/bot`).
    #[must_use]
    pub fn permits(mut self, permits: Arc<dyn PermitSource>) -> Self {
        self.permits = Some(permits);
        self
    }

    /// The other nodes of the cluster (cluster mode): the handle then answers for every
    /// shard of the bot and carries commands to their owners.
    #[must_use]
    pub fn peers(mut self, peers: Arc<dyn Peers>) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Where operator actions are recorded, e.g. a [`SledStore`](crate::SledStore)
    /// (default: memory only).
    #[must_use]
    pub fn audit(mut self, audit: Arc<dyn AuditLog>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Opens the shards' gateway connections through `dialer` instead of TCP (tests of
    /// the actor layer against an in-process gateway; `/gateway/bot` still goes over
    /// HTTP).
    #[must_use]
    pub fn dialer(mut self, dialer: Arc<dyn Dialer>) -> Self {
        self.dialer = Some(dialer);
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
            sessions,
            schedule,
            sinks,
            placement,
            permits,
            peers,
            audit,
            dialer,
        } = self;
        let store = sessions.unwrap_or_else(|| Arc::new(MemoryStore::default()));
        let tls = tls::client_config(config.ca_file.as_deref())?;
        let rest = RestClient::new(
            &config.api_base,
            config.session.token.clone(),
            Arc::clone(&tls),
        )?
        .with_retries(config.rest_attempts, config.rest_backoff);
        let bot = rest.gateway_bot().await?;
        let plan = Plan::new(&config, &bot)?;
        let ledger = Arc::new(SessionLedger::new(Arc::clone(&store)));
        let placement =
            placement.unwrap_or_else(|| Arc::new(StaticPlacement::new(plan.ids.iter().copied())));
        let first = placement.watch().borrow().clone();
        let stored = ledger.resumable(
            &|id| first.contains(&id),
            plan.total,
            config.session_max_age,
        )?;
        let permits = if let Some(permits) = permits {
            permits
        } else {
            let kept = schedule.unwrap_or_else(|| Arc::new(MemoryStore::default()));
            let schedule = restore_schedule(kept.as_ref(), &config, &plan, &bot)?;
            let expected: HashSet<u32> = first
                .iter()
                .copied()
                .filter(|id| !stored.contains_key(id))
                .collect();
            let local = LocalPermits::start(schedule, expected, kept, rest);
            Arc::new(local) as Arc<dyn PermitSource>
        };
        tracing::info!(
            total = plan.total,
            owned = first.len(),
            max_concurrency = plan.max_concurrency,
            resumable = stored.len(),
            "starting cluster"
        );
        let arbiters: Vec<Arbiter> = (0..plan.threads).map(|_| Arbiter::new()).collect();
        let directory = Arc::new(Directory::default());
        let metrics = Arc::new(Metrics::new());
        let setup = Setup {
            arbiters: arbiters.iter().map(Arbiter::handle).collect(),
            directory: Arc::clone(&directory),
            placement,
            stored,
            session_max_age: config.session_max_age,
        };
        let session = Arc::new(session_config(&config, &bot.url));
        let fence = setup.placement.fence();
        let supervisor = Supervisor::start(setup, |supervisor| Shared {
            total: plan.total,
            session,
            tls,
            dialer,
            permits: Arc::clone(&permits),
            sinks: sinks.clone(),
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(&metrics),
            fence,
            supervisor,
        });
        let health = health_cell();
        let settled = Arc::clone(&directory);
        let persister = Persister::spawn(
            ledger,
            sinks,
            config.flush_interval,
            Arc::clone(&health),
            Box::new(move || settled.settled()),
        );
        Ok(ClusterHandle::new(Parts {
            directory,
            permits,
            supervisor,
            persister,
            health,
            total: plan.total,
            arbiters,
            metrics,
            peers,
            audit: audit.unwrap_or_else(|| Arc::new(MemoryAudit::default())),
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
    store: &dyn ScheduleStore,
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
    let mut session = config.session.clone();
    gateway_url.clone_into(&mut session.gateway_url);
    session
}
