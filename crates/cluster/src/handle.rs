//! `ClusterHandle`: what an embedding program or the admin API holds.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use shardkeeper_protocol::payload::{PresenceUpdate, RequestGuildMembers, VoiceStateUpdate};
use shardkeeper_protocol::shard_for_guild;
use shardkeeper_session::{ClientPayload, Command, StateKind};
use tokio::sync::oneshot;

use crate::audit::{AuditLog, MemoryAudit};
use crate::clock;
use crate::directory::Directory;
use crate::error::ClusterError;
use crate::jobs::Jobs;
use crate::members::{MembersError, MembersResult};
use crate::metrics::Metrics;
use crate::peers::{Peers, PlacedShard, ShardAction};
use crate::permit::PermitSource;
use crate::persist::{HealthCell, Persister, StoreHealth};
use crate::shard::{RequestMembers, Shard, ShardCommand};
use crate::snapshot::{IdentifyStatus, ShardSnapshot};
use crate::supervisor::{StandDown, Supervisor};

mod rolling;
/// How long a member request waits for its last chunk.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(30);

/// What `Cluster::start` hands over to the handle.
pub(crate) struct Parts {
    pub(crate) directory: Arc<Directory>,
    pub(crate) permits: Arc<dyn PermitSource>,
    pub(crate) supervisor: Addr<Supervisor>,
    pub(crate) persister: Persister,
    pub(crate) health: HealthCell,
    pub(crate) total: u32,
    pub(crate) arbiters: Vec<Arbiter>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) peers: Option<Arc<dyn Peers>>,
    pub(crate) audit: Arc<dyn AuditLog>,
}

struct Inner {
    directory: Arc<Directory>,
    permits: Arc<dyn PermitSource>,
    supervisor: Addr<Supervisor>,
    health: HealthCell,
    metrics: Arc<Metrics>,
    peers: Option<Arc<dyn Peers>>,
    /// Replaced by a memory log at shutdown, so the store (which may keep the log)
    /// closes with the cluster even while handles live on.
    audit: Mutex<Arc<dyn AuditLog>>,
    jobs: Arc<Jobs>,
    total: NonZeroU32,
    /// Taken by `shutdown`.
    running: Mutex<Option<(Persister, Vec<Arbiter>)>>,
}

/// A running cluster. Cheap to clone.
#[derive(Clone)]
pub struct ClusterHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle")
            .field("total", &self.inner.total)
            .finish_non_exhaustive()
    }
}

impl ClusterHandle {
    pub(crate) fn new(parts: Parts) -> Self {
        Self {
            inner: Arc::new(Inner {
                directory: parts.directory,
                permits: parts.permits,
                supervisor: parts.supervisor,
                health: parts.health,
                metrics: parts.metrics,
                peers: parts.peers,
                audit: Mutex::new(parts.audit),
                jobs: Arc::default(),
                total: NonZeroU32::new(parts.total).unwrap_or(NonZeroU32::MIN),
                running: Mutex::new(Some((parts.persister, parts.arbiters))),
            }),
        }
    }

    /// The other nodes of the cluster (cluster mode), if any.
    #[must_use]
    pub fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.inner.peers.as_ref()
    }

    /// Whether sessions reach the store.
    #[must_use]
    pub fn store_health(&self) -> StoreHealth {
        let status = self
            .inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        status.health.clone()
    }

    /// The metrics registry, to add metrics of an embedding program or the admin API.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Every metric in the Prometheus text format.
    #[must_use]
    pub fn render_metrics(&self) -> String {
        let identify = self.identify_status();
        let (lag, degraded) = {
            let status = self
                .inner
                .health
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (
                clock::now().saturating_duration_since(status.last_flush),
                status.health != StoreHealth::Healthy,
            )
        };
        self.inner
            .metrics
            .render(&self.shards(), identify.as_ref(), lag, degraded)
    }

    /// The bot's shard count.
    #[must_use]
    pub fn total(&self) -> u32 {
        self.inner.total.get()
    }

    /// The shard ids this process runs.
    #[must_use]
    pub fn ids(&self) -> Vec<u32> {
        self.inner.directory.ids()
    }

    /// Every owned shard.
    #[must_use]
    pub fn shards(&self) -> Vec<ShardSnapshot> {
        self.inner.directory.snapshots()
    }

    /// One shard, if owned.
    #[must_use]
    pub fn shard(&self, id: u32) -> Option<ShardSnapshot> {
        self.inner.directory.snapshot(id)
    }

    /// Whether every owned shard is Ready.
    #[must_use]
    pub fn all_ready(&self) -> bool {
        self.shards().iter().all(|s| s.state == StateKind::Ready)
    }

    /// Buckets, queues, next grant times and the session start budget.
    #[must_use]
    pub fn identify_status(&self) -> Option<IdentifyStatus> {
        self.inner.permits.status()
    }

    /// The shard that owns a guild.
    #[must_use]
    pub fn shard_for_guild(&self, guild_id: u64) -> u32 {
        shard_for_guild(guild_id, self.inner.total)
    }

    fn addr(&self, id: u32) -> Result<Addr<Shard>, ClusterError> {
        self.inner
            .directory
            .addr(id)
            .ok_or(ClusterError::NotOwned(id))
    }

    async fn command(&self, id: u32, command: Command) -> Result<(), ClusterError> {
        let addr = self.addr(id)?;
        addr.send(ShardCommand(command))
            .await
            .map_err(|_| ClusterError::Unavailable(id))?
            .map_err(|source| ClusterError::Command { shard: id, source })
    }

    /// Reconnects a shard now: RESUME, or with `fresh` a new session by IDENTIFY —
    /// refused with [`ClusterError::Budget`] when the session-start budget cannot afford
    /// it.
    pub async fn restart(&self, id: u32, fresh: bool) -> Result<(), ClusterError> {
        if fresh {
            return self.fresh_restart(&[id], false).await;
        }
        self.command(id, Command::Restart { fresh: false }).await
    }

    /// Drops the sessions of `ids` and has each IDENTIFY anew. Unless `force`, the
    /// whole restart is refused with [`ClusterError::Budget`] when the session-start
    /// budget cannot afford every one of them.
    pub async fn fresh_restart(&self, ids: &[u32], force: bool) -> Result<(), ClusterError> {
        if let Some(&missing) = ids.iter().find(|&&id| !self.inner.directory.contains(id)) {
            return Err(ClusterError::NotOwned(missing));
        }
        if !force {
            self.check_budget(u32::try_from(ids.len()).unwrap_or(u32::MAX))?;
        }
        for &id in ids {
            self.command(id, Command::Restart { fresh: true }).await?;
        }
        Ok(())
    }

    /// Refuses what needs more session starts than remain. An unknown budget (the
    /// permit source has not reported yet) refuses too: fail closed.
    fn check_budget(&self, cost: u32) -> Result<(), ClusterError> {
        let status = self.identify_status();
        let (remaining, reserve, total, reset_in_ms) = status.map_or((0, 0, 0, 0), |s| {
            (s.remaining, s.reserve, s.total, s.reset_in_ms)
        });
        if remaining.saturating_sub(reserve) >= cost {
            return Ok(());
        }
        Err(ClusterError::Budget {
            cost,
            remaining,
            reserve,
            total,
            reset_in_ms,
        })
    }

    /// Closes a shard with 4000 (its session stays resumable) and keeps it stopped.
    pub async fn stop(&self, id: u32) -> Result<(), ClusterError> {
        self.command(id, Command::Stop).await
    }

    /// Starts a stopped, quarantined or failed shard (resuming when possible).
    pub async fn start(&self, id: u32) -> Result<(), ClusterError> {
        self.command(id, Command::Start).await
    }

    fn jobs_table(&self) -> &Arc<Jobs> {
        &self.inner.jobs
    }

    /// Where operator actions are recorded.
    #[must_use]
    pub fn audit(&self) -> Arc<dyn AuditLog> {
        Arc::clone(
            &self
                .inner
                .audit
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Sends a presence update to one shard, or to every owned shard. Returns how many
    /// shards took it.
    pub async fn presence(
        &self,
        shard: Option<u32>,
        presence: PresenceUpdate,
    ) -> Result<usize, ClusterError> {
        let targets = match shard {
            Some(id) => vec![id],
            None => self.ids(),
        };
        for &id in &targets {
            self.command(id, Command::Send(ClientPayload::Presence(presence.clone())))
                .await?;
        }
        Ok(targets.len())
    }

    /// Sends a voice state update on the shard that owns the guild.
    pub async fn voice_state(&self, update: VoiceStateUpdate) -> Result<u32, ClusterError> {
        let id = self.shard_for_guild(update.guild_id.0);
        self.command(id, Command::Send(ClientPayload::VoiceState(update)))
            .await?;
        Ok(id)
    }

    /// Requests guild members on the owning shard and waits for every chunk.
    pub async fn request_members(
        &self,
        request: RequestGuildMembers,
    ) -> Result<Vec<Box<serde_json::value::RawValue>>, ClusterError> {
        let id = self.shard_for_guild(request.guild_id.0);
        let addr = self.addr(id)?;
        let (reply, done) = oneshot::channel::<MembersResult>();
        addr.send(RequestMembers { request, reply })
            .await
            .map_err(|_| ClusterError::Unavailable(id))?
            .map_err(|source| ClusterError::Command { shard: id, source })?;
        match tokio::time::timeout(MEMBERS_TIMEOUT, done).await {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(_)) => Err(MembersError::Interrupted.into()),
            Err(_) => Err(ClusterError::Timeout(MEMBERS_TIMEOUT)),
        }
    }

    /// Test-only: makes a shard's handler panic so the supervisor restarts it.
    #[cfg(feature = "fault-injection")]
    pub fn crash_shard(&self, id: u32) -> Result<(), ClusterError> {
        self.addr(id)?.do_send(crate::shard::Crash);
        Ok(())
    }

    /// Graceful shutdown: every shard closes with 4000 (its session stays resumable),
    /// events received so far are delivered, the store is flushed, threads stop.
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        let _ = self.inner.supervisor.send(StandDown).await;
        self.inner.permits.halt();
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((persister, arbiters)) = running {
            let _ = tokio::task::spawn_blocking(move || persister.finish()).await;
            for arbiter in arbiters {
                arbiter.stop();
            }
        }
        *self
            .inner
            .audit
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(MemoryAudit::default());
        tracing::info!("cluster stopped");
        Ok(())
    }
}

impl ClusterHandle {
    /// Every shard of the bot with its node: this process's shards as they are now,
    /// the others as their owners last published them. Alone, only this process's.
    pub async fn placed_shards(&self) -> Result<Vec<PlacedShard>, ClusterError> {
        let local = self.shards();
        let Some(peers) = self.peers() else {
            return Ok(local
                .into_iter()
                .map(|snapshot| PlacedShard {
                    snapshot,
                    node: None,
                })
                .collect());
        };
        let me = peers.node_id();
        // Without the cluster's view (Redis away) this node still answers for its own.
        let mut all = peers.shards().await.unwrap_or_else(|err| {
            tracing::warn!(%err, "cannot read the other nodes' shards; listing this node's only");
            Vec::new()
        });
        for snapshot in local {
            let id = snapshot.id;
            let placed = PlacedShard {
                snapshot,
                node: Some(me.clone()),
            };
            match all.iter_mut().find(|p| p.snapshot.id == id) {
                Some(slot) => *slot = placed,
                None => all.push(placed),
            }
        }
        all.sort_by_key(|p| p.snapshot.id);
        Ok(all)
    }

    /// Carries out `action` on `shard` here if this process runs it, else on the node
    /// that owns it.
    pub async fn act(&self, shard: u32, action: ShardAction) -> Result<(), ClusterError> {
        if self.shard(shard).is_some() {
            return self.act_here(shard, action).await;
        }
        let Some(peers) = self.peers().filter(|_| shard < self.total()) else {
            return Err(ClusterError::NotOwned(shard));
        };
        // The budget is shared: it is checked here, before the command travels.
        if action
            == (ShardAction::Restart {
                fresh: true,
                force: false,
            })
        {
            self.check_budget(1)?;
        }
        peers.forward(shard, action).await
    }

    /// Carries out `action` on a shard this process runs (a peer's forwarded command
    /// lands here).
    pub async fn act_here(&self, shard: u32, action: ShardAction) -> Result<(), ClusterError> {
        match action {
            ShardAction::Restart { fresh: true, force } => {
                self.fresh_restart(&[shard], force).await
            }
            ShardAction::Restart { fresh: false, .. } => self.restart(shard, false).await,
            ShardAction::Stop => self.stop(shard).await,
            ShardAction::Start => self.start(shard).await,
        }
    }
}
