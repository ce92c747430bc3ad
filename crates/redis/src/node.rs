//! A node of a cluster: joining it, the state its seams share with the control loop,
//! and leaving it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shardkeeper_cluster::{ClusterHandle, Fence, IdentifyStatus, RestClient, ShardSet};
use tokio::sync::{mpsc, oneshot, watch};

use crate::control::{Command, Control};
use crate::error::NodeError;
use crate::link::{Identity, Link};

/// How long a grant stays valid: the node sends its IDENTIFY within this or reports it
/// unused, and a bucket's next grant waits window + validity + margin.
pub(crate) const GRANT_VALIDITY: Duration = Duration::from_secs(2);

/// Everything a node needs to join.
#[derive(Clone)]
pub struct NodeConfig {
    /// Redis URL (may hold a password; never logged).
    pub url: String,
    /// Key prefix shared by every node of the bot.
    pub namespace: String,
    /// This node's id.
    pub node_id: String,
    /// A node silent this long loses its shards.
    pub lease: Duration,
    /// Most shards this node runs (0 = no limit).
    pub capacity: u32,
    /// Admin URL other nodes show for this node.
    pub admin_url: String,
    /// Shard ids this node may take (`None` = all).
    pub ids: Option<Range<u32>>,
    /// The bot's shard count, resolved before joining.
    pub total: u32,
    /// Identify buckets, resolved before joining.
    pub max_concurrency: u32,
    /// One IDENTIFY per bucket per window.
    pub identify_window: Duration,
    /// Added to the spacing of a bucket's grants.
    pub identify_margin: Duration,
    /// Session starts kept back: no grant once the budget is down to this
    /// (`None` = max(10, 5 % of the daily total)).
    pub reserve: Option<u32>,
}

impl std::fmt::Debug for NodeConfig {
    /// Everything but the URL, which may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("namespace", &self.namespace)
            .field("node_id", &self.node_id)
            .field("lease", &self.lease)
            .field("capacity", &self.capacity)
            .field("ids", &self.ids)
            .field("total", &self.total)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// What a node tells the others about itself (the value in the `nodes` hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Admin URL.
    pub admin_url: String,
    /// Most shards it runs (0 = no limit).
    pub capacity: u32,
    /// Shard ids it may take, as `[start, end)`; `None` = all.
    pub ids: Option<(u32, u32)>,
    /// It is handing its shards over before it exits: placement leaves it out.
    #[serde(default)]
    pub leaving: bool,
}

/// Counters of what the node did, for metrics and tests.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Shards claimed (at start, on failover, on handover).
    pub claims: AtomicU64,
    /// Claims of a shard whose previous owner died (its lease lapsed).
    pub failovers: AtomicU64,
    /// Shards this node handed to another.
    pub handovers: AtomicU64,
    /// Session writes Redis refused because this node no longer owned the shard.
    pub fenced_writes: AtomicU64,
    /// Times the node stopped its shards because its lease could not be renewed.
    pub fences: AtomicU64,
    /// Shards lost to another owner found at renewal.
    pub lost: AtomicU64,
    /// Redis calls that failed.
    pub redis_errors: AtomicU64,
    /// Redis restarts seen (its `run_id` changed).
    pub redis_restarts: AtomicU64,
    /// Redis restarts that lost the namespace's data.
    pub data_losses: AtomicU64,
    /// Identify permits granted to this node's shards.
    pub grants: AtomicU64,
    /// Last lease renewal round trip, in microseconds.
    pub renew_us: AtomicU64,
    /// This node's shards waiting for an identify permit.
    pub waiting: AtomicU64,
}

impl NodeCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the seams and the control loop share.
pub(crate) struct Inner {
    pub(crate) identity: Identity,
    pub(crate) config: NodeConfig,
    pub(crate) link: Link,
    /// The control loop's runtime (store calls from other threads run on it).
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    /// The shards the supervisor should run.
    pub(crate) assigned: watch::Sender<ShardSet>,
    /// Shard → epoch of every claim this node holds (running or being handed over).
    pub(crate) held: Mutex<BTreeMap<u32, u64>>,
    /// The shared identify schedule as last read.
    pub(crate) status: Mutex<Option<IdentifyStatus>>,
    /// Until when the last renewal keeps this node's leases (monotonic).
    pub(crate) valid_until: Mutex<Option<Instant>>,
    /// What the shards check before they act: extended by every renewal, revoked when
    /// one comes too late.
    pub(crate) fence: Fence,
    pub(crate) counters: NodeCounters,
    /// The cluster running this node's shards, once started.
    pub(crate) handle: OnceLock<ClusterHandle>,
    /// When a renewal last succeeded.
    pub(crate) last_ok: Mutex<Option<Instant>>,
    /// The last session JSON Redis took for each shard this node runs, to write again
    /// if Redis loses its data (an idle shard writes nothing new on its own).
    pub(crate) written: Mutex<std::collections::HashMap<u32, String>>,
    /// The last snapshot JSON published for each shard: only changes are sent again.
    pub(crate) published: Mutex<std::collections::HashMap<u32, String>>,
}

impl Inner {
    pub(crate) fn held(&self) -> MutexGuard<'_, BTreeMap<u32, u64>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn valid_until(&self) -> MutexGuard<'_, Option<Instant>> {
        self.valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops every shard at once: the lease may lapse before another renewal, and a
    /// shard must never run on two nodes. Their sockets close with 4000 (resumable);
    /// Redis refuses their writes once the lease is gone.
    pub(crate) fn fence(&self, why: &str) {
        let mut held = self.held();
        *self.valid_until() = None;
        self.fence.revoke();
        if held.is_empty() {
            return;
        }
        tracing::error!(
            node = %self.identity.id,
            shards = held.len(),
            "{why}; stopping every shard of this node (fenced)"
        );
        NodeCounters::add(&self.counters.fences, 1);
        held.clear();
        self.assigned.send_replace(ShardSet::new());
    }
}

/// A node of a cluster: its seams plug into `Cluster::builder`.
pub struct Node {
    pub(crate) inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.identity.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Node {
    /// A node dropped without [`leave`](Node::leave) stops renewing: its leases lapse
    /// and the other nodes take its shards.
    fn drop(&mut self) {
        let _ = self.inner.commands.send(Command::Halt);
    }
}

impl Node {
    /// Connects to Redis, checks its settings and the cluster's, joins, and starts the
    /// control loop on a thread of its own (renewals must not wait for shards).
    /// `rest` refreshes the shared session start budget from `/gateway/bot`.
    pub async fn join(config: NodeConfig, rest: RestClient) -> Result<Self, NodeError> {
        let (joined, outcome) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("shardkeeper-node".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = joined.send(Err(NodeError::Redis(err.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Control::join(config, rest).await {
                        Ok((control, inner)) => {
                            if joined.send(Ok(inner)).is_ok() {
                                control.run().await;
                            }
                        }
                        Err(err) => {
                            let _ = joined.send(Err(err));
                        }
                    }
                });
            })
            .map_err(|err| NodeError::Redis(err.to_string()))?;
        let inner = outcome
            .await
            .map_err(|_| NodeError::Redis("the node's thread ended".into()))??;
        Ok(Self {
            inner,
            thread: Some(thread),
        })
    }

    /// This node's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.inner.identity.id
    }

    /// Serves the commands other nodes send for this node's shards, and publishes
    /// their snapshots for the cluster-wide view, through `handle`.
    pub fn serve(&self, handle: ClusterHandle) {
        if self.inner.handle.set(handle.clone()).is_ok() {
            let inner = Arc::clone(&self.inner);
            self.inner
                .runtime
                .spawn(crate::remote::serve(inner, handle));
        }
    }

    /// What the node did so far.
    #[must_use]
    pub fn counters(&self) -> &NodeCounters {
        &self.inner.counters
    }

    /// Hands every shard to the other nodes (each closes resumably, its last seq is
    /// stored, then it is released), leaves the cluster and stops the control loop.
    /// Returns once done, or after `patience`.
    pub async fn leave(mut self, patience: Duration) {
        let (done, left) = oneshot::channel();
        if self.inner.commands.send(Command::Leave(done)).is_ok() {
            let _ = tokio::time::timeout(patience, left).await;
        }
        let _ = self.inner.commands.send(Command::Halt);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
