//! The node behind the cluster's three seams: placement (the shards this node owns),
//! identify permits (the shared schedule) and the session store (fenced writes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardkeeper_cluster::{
    Change, Fence, Grant, IdentifyStatus, PermitSource, Placement, SessionBatch, SessionStore, ShardSet,
    StoreError, StoredSession,
};
use shardkeeper_session::ScheduleSnapshot;
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

    /// The schedule lives in Redis itself, not in snapshots.
    fn load_schedule(&self) -> Result<Option<ScheduleSnapshot>, StoreError> {
        Ok(None)
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
            let fenced = self.block(async move { link.save(&identity, &changes).await })?;
            refused += fenced.len();
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

    fn save_schedule(&self, _snapshot: &ScheduleSnapshot) -> Result<(), StoreError> {
        Ok(())
    }
}
