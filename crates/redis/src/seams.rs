//! The node behind the cluster's three seams — placement (the shards this node owns),
//! identify permits (the shared schedule), the session store (fenced writes) — and
//! behind the handle's view of its peers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardkeeper_cluster::{
    AuditEntry, AuditError, AuditFuture, AuditLog, Change, ClusterError, Fence, Grant,
    IdentifyStatus, PeerFuture, PeerNode, Peers, PermitSource, PlacedShard, Placement,
    SessionBatch, SessionStore, ShardAction, ShardSet, StoreError, StoredSession,
};
use tokio::sync::{oneshot, watch};

use crate::control::Command;
use crate::node::{Inner, NodeCounters};

/// Longest a store call waits for Redis before it counts as failed.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// The seams of one node.
pub(crate) struct Seams(pub(crate) Arc<Inner>);

impl Seams {
    fn send(&self, command: Command) {
        let _ = self.0.commands.send(command);
    }

    /// Runs `call` on the node's runtime and waits for it from any thread (the store is
    /// called from the flush thread and, at start, from the cluster's own runtime).
    fn block<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, redis::RedisError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.0.runtime.spawn(async move {
            let _ = tx.send(call.await);
        });
        match rx.recv_timeout(STORE_TIMEOUT) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                NodeCounters::add(&self.0.counters.redis_errors, 1);
                Err(StoreError::Backend(err.to_string()))
            }
            Err(_) => {
                NodeCounters::add(&self.0.counters.redis_errors, 1);
                Err(StoreError::Backend("Redis did not answer in time".into()))
            }
        }
    }
}

impl Placement for Seams {
    fn watch(&self) -> watch::Receiver<ShardSet> {
        self.0.assigned.subscribe()
    }

    fn released(&self, shard: u32) {
        self.send(Command::Released(shard));
    }

    fn running(&self, shards: &ShardSet) {
        self.send(Command::Running(shards.clone()));
    }

    fn fence(&self) -> Fence {
        self.0.fence.clone()
    }
}

impl PermitSource for Seams {
    fn ask(&self, shard: u32) -> oneshot::Receiver<Grant> {
        let (reply, granted) = oneshot::channel();
        self.send(Command::Ask(shard, reply));
        granted
    }

    fn cancel(&self, shard: u32) {
        self.send(Command::Cancel(shard));
    }

    fn written(&self, shard: u32, at: Instant) {
        self.send(Command::Written(shard, at));
    }

    fn unused(&self, shard: u32) {
        self.send(Command::Unused(shard));
    }

    fn status(&self) -> Option<IdentifyStatus> {
        self.0
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn halt(&self) {
        self.send(Command::StopGranting);
    }
}

impl SessionStore for Seams {
    fn load_sessions(&self) -> Result<HashMap<u32, StoredSession>, StoreError> {
        let link = self.0.link.clone();
        let records = self.block(async move { link.sessions().await })?;
        let mut sessions = HashMap::new();
        for (shard, json) in records {
            match (
                shard.parse::<u32>(),
                serde_json::from_str::<StoredSession>(&json),
            ) {
                (Ok(shard), Ok(stored)) => {
                    sessions.insert(shard, stored);
                }
                _ => {
                    tracing::warn!(%shard, "unreadable session record in Redis; that shard identifies");
                }
            }
        }
        Ok(sessions)
    }

    fn load_session(&self, shard: u32) -> Result<Option<StoredSession>, StoreError> {
        let link = self.0.link.clone();
        let json = self.block(async move { link.session(shard).await })?;
        Ok(json.and_then(|json| {
            let stored = serde_json::from_str(&json).ok();
            if stored.is_none() {
                tracing::warn!(
                    shard,
                    "unreadable session record in Redis; that shard identifies"
                );
            }
            stored
        }))
    }

    fn write_sessions(&self, batch: &SessionBatch) -> Result<(), StoreError> {
        let held = self.0.held().clone();
        let mut refused = 0;
        let mut changes = Vec::with_capacity(batch.len());
        for (&shard, change) in batch {
            let Some(&epoch) = held.get(&shard) else {
                refused += 1;
                continue;
            };
            let session = match change {
                Change::Save(stored) => Some(
                    serde_json::to_string(stored)
                        .map_err(|err| StoreError::Backend(err.to_string()))?,
                ),
                Change::Forget => None,
            };
            changes.push((shard, epoch, session));
        }
        if !changes.is_empty() {
            let link = self.0.link.clone();
            let identity = self.0.identity.clone();
            let sent = changes.clone();
            let fenced = self.block(async move { link.save(&identity, &changes).await })?;
            refused += fenced.len();
            let mut written = self
                .0
                .written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (shard, _, session) in sent {
                match session {
                    Some(json) if !fenced.contains(&shard) => {
                        written.insert(shard, json);
                    }
                    _ => {
                        written.remove(&shard);
                    }
                }
            }
        }
        if refused > 0 {
            tracing::warn!(
                shards = refused,
                "session writes refused: this node no longer owns those shards"
            );
            NodeCounters::add(&self.0.counters.fenced_writes, refused as u64);
        }
        Ok(())
    }
}

impl AuditLog for Seams {
    fn record(&self, entry: AuditEntry) {
        crate::remote::audit(&self.0, entry);
    }

    fn recent(&self, limit: usize) -> AuditFuture {
        let inner = Arc::clone(&self.0);
        let read = on_runtime(&self.0, async move {
            crate::remote::recent_audit(&inner.link, limit)
                .await
                .map_err(unreachable)
        });
        Box::pin(async move { read.await.map_err(|err| AuditError(err.to_string())) })
    }
}

impl Peers for Seams {
    fn node_id(&self) -> String {
        self.0.identity.id.clone()
    }

    fn shards(&self) -> PeerFuture<Result<Vec<PlacedShard>, ClusterError>> {
        let inner = Arc::clone(&self.0);
        on_runtime(&self.0, async move {
            crate::remote::placed(&inner.link, inner.config.total)
                .await
                .map_err(unreachable)
        })
    }

    fn nodes(&self) -> PeerFuture<Result<Vec<PeerNode>, ClusterError>> {
        let inner = Arc::clone(&self.0);
        on_runtime(&self.0, async move {
            crate::remote::nodes(&inner.link, &inner.identity.id, inner.config.total)
                .await
                .map_err(unreachable)
        })
    }

    fn forward(&self, shard: u32, action: ShardAction) -> PeerFuture<Result<(), ClusterError>> {
        let inner = Arc::clone(&self.0);
        on_runtime(&self.0, crate::remote::forward(inner, shard, action))
    }

    fn reachable(&self) -> bool {
        self.0
            .last_ok
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < self.0.config.lease)
    }

    fn render_metrics(&self) -> String {
        crate::metrics::render(&self.0)
    }
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "used as map_err(unreachable)"
)]
fn unreachable(err: redis::RedisError) -> ClusterError {
    ClusterError::Store(StoreError::Backend(format!("Redis: {err}")))
}

/// Runs `call` on the node's runtime (where its Redis connection lives) and awaits it
/// from the caller's.
fn on_runtime<T: Send + 'static>(
    inner: &Inner,
    call: impl Future<Output = Result<T, ClusterError>> + Send + 'static,
) -> PeerFuture<Result<T, ClusterError>> {
    let task = inner.runtime.spawn(call);
    Box::pin(async move {
        task.await.unwrap_or_else(|err| {
            Err(ClusterError::Store(StoreError::Backend(format!(
                "the node's task failed: {err}"
            ))))
        })
    })
}
