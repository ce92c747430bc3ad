//! Shared, lock-per-shard view of every shard, for the handle, the API and metrics.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use shardkeeper_session::{ResumeInfo, SessionStats, StateKind};

/// A shard's state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ShardState {
    /// Not started.
    Idle,
    /// Opening the connection or waiting for HELLO.
    Connecting,
    /// Waiting for a permit or for READY.
    Identifying,
    /// Waiting for RESUMED.
    Resuming,
    /// Receiving events.
    Ready,
    /// Waiting before reconnecting.
    Reconnecting,
    /// Stopped by the operator.
    Stopped,
    /// Parked after failing too often; an operator restart brings it back.
    Quarantined,
    /// Closed with a fatal code; an operator restart brings it back.
    Failed,
}

impl ShardState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 9] = [
        Self::Idle,
        Self::Connecting,
        Self::Identifying,
        Self::Resuming,
        Self::Ready,
        Self::Reconnecting,
        Self::Stopped,
        Self::Quarantined,
        Self::Failed,
    ];

    /// The name used by the admin API and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Identifying => "identifying",
            Self::Resuming => "resuming",
            Self::Ready => "ready",
            Self::Reconnecting => "reconnecting",
            Self::Stopped => "stopped",
            Self::Quarantined => "quarantined",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn from_session(kind: StateKind, quarantined: bool) -> Self {
        match kind {
            StateKind::Stopped if quarantined => Self::Quarantined,
            StateKind::Idle => Self::Idle,
            StateKind::Connecting | StateKind::AwaitingHello => Self::Connecting,
            StateKind::Identifying => Self::Identifying,
            StateKind::Resuming => Self::Resuming,
            StateKind::Ready => Self::Ready,
            StateKind::Reconnecting => Self::Reconnecting,
            StateKind::Stopped => Self::Stopped,
            StateKind::Failed => Self::Failed,
        }
    }
}

/// One shard, as the admin API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardSnapshot {
    /// Shard id.
    pub id: u32,
    /// State.
    pub state: ShardState,
    /// Last heartbeat round trip.
    pub latency_ms: Option<u64>,
    /// Last sequence received.
    pub seq: Option<u64>,
    /// Current session.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub session_id: Option<std::sync::Arc<str>>,
    /// Whether a RESUME is possible.
    pub resumable: bool,
    /// IDENTIFYs sent.
    pub identifies: u64,
    /// Successful resumes.
    pub resumes: u64,
    /// Connections after the first.
    pub reconnects: u64,
    /// Last close code from the server.
    pub last_close_code: Option<u16>,
    /// Guilds held.
    pub guilds: usize,
    /// Zombie connections detected.
    pub zombies: u64,
    /// The fatal close code, when failed.
    pub failed_code: Option<u16>,
    /// Times the supervisor restarted the shard's actor after a crash.
    pub restarts: u64,
}

impl ShardSnapshot {
    fn idle(id: u32) -> Self {
        Self {
            id,
            state: ShardState::Idle,
            latency_ms: None,
            seq: None,
            session_id: None,
            resumable: false,
            identifies: 0,
            resumes: 0,
            reconnects: 0,
            last_close_code: None,
            guilds: 0,
            zombies: 0,
            failed_code: None,
            restarts: 0,
        }
    }
}

/// What the registry keeps per shard.
pub(crate) struct Entry {
    /// The live actor.
    pub(crate) addr: Option<actix::Addr<crate::shard::Shard>>,
    pub(crate) snapshot: ShardSnapshot,
    /// The latest session, so a crashed actor can be rebuilt with it.
    pub(crate) resume: Option<ResumeInfo>,
    /// Counters of previous actor incarnations, added to the live session's.
    pub(crate) carried: SessionStats,
}

/// Every owned shard.
pub(crate) struct Registry {
    entries: BTreeMap<u32, Mutex<Entry>>,
}

impl Registry {
    pub(crate) fn new(ids: impl IntoIterator<Item = u32>) -> Self {
        Self {
            entries: ids
                .into_iter()
                .map(|id| {
                    let entry = Entry {
                        addr: None,
                        snapshot: ShardSnapshot::idle(id),
                        resume: None,
                        carried: SessionStats::default(),
                    };
                    (id, Mutex::new(entry))
                })
                .collect(),
        }
    }

    pub(crate) fn entry(&self, id: u32) -> Option<MutexGuard<'_, Entry>> {
        self.entries
            .get(&id)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.keys().copied()
    }

    /// No shard is on its way up: each is Ready or parked (stopped, quarantined, failed).
    pub(crate) fn settled(&self) -> bool {
        self.entries.values().all(|m| {
            matches!(
                m.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .snapshot
                    .state,
                ShardState::Ready
                    | ShardState::Stopped
                    | ShardState::Quarantined
                    | ShardState::Failed
            )
        })
    }

    pub(crate) fn snapshots(&self) -> Vec<ShardSnapshot> {
        self.entries
            .values()
            .map(|m| {
                m.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .snapshot
                    .clone()
            })
            .collect()
    }

    pub(crate) fn snapshot(&self, id: u32) -> Option<ShardSnapshot> {
        self.entry(id).map(|e| e.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::{Registry, ShardState};

    #[test]
    fn settled_once_no_shard_is_on_its_way_up() {
        let registry = Registry::new([0, 1, 2]);
        assert!(!registry.settled(), "idle shards have not started");
        let set = |id: u32, state: ShardState| {
            if let Some(mut entry) = registry.entry(id) {
                entry.snapshot.state = state;
            }
        };
        set(0, ShardState::Ready);
        set(1, ShardState::Quarantined);
        set(2, ShardState::Resuming);
        assert!(!registry.settled(), "shard 2 is still resuming");
        set(2, ShardState::Failed);
        assert!(registry.settled());
        set(0, ShardState::Reconnecting);
        assert!(!registry.settled());
    }
}
