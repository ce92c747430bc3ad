//! Where sessions and the identify schedule are kept between runs.
//!
//! Session writes happen for every dispatch, so stores buffer them; [`SessionStore::flush`]
//! takes the buffer, runs a barrier that makes every sink write out what it was handed,
//! and only then writes the batch. So a stored sequence never runs ahead of what the
//! sinks delivered, whatever moment the process dies at.

mod sled;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use shardkeeper_session::{ResumeInfo, ScheduleSnapshot};

pub use self::sled::SledStore;

/// What is stored per shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// `session_id` from READY.
    pub session_id: String,
    /// `resume_gateway_url` from READY.
    pub resume_gateway_url: String,
    /// Last sequence handed to every sink.
    pub seq: u64,
    /// Shard count the session was identified with.
    pub total: u32,
    /// Wall-clock milliseconds of the last update.
    pub updated: u64,
}

impl StoredSession {
    /// The record for a session of a shard of `total`.
    #[must_use]
    pub fn new(info: &ResumeInfo, total: u32, updated: u64) -> Self {
        Self {
            session_id: info.session_id.to_string(),
            resume_gateway_url: info.resume_url.to_string(),
            seq: info.seq,
            total,
            updated,
        }
    }

    /// What RESUME needs.
    #[must_use]
    pub fn resume_info(&self) -> ResumeInfo {
        ResumeInfo {
            session_id: self.session_id.as_str().into(),
            resume_url: self.resume_gateway_url.as_str().into(),
            seq: self.seq,
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened.
    #[error("cannot open the session store at {path}: {detail}")]
    Open {
        /// The path.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The backing storage failed.
    #[error("session store: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("session store holds an unreadable record for {key}: {detail}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

/// Persistence of sessions and identify state.
pub trait SessionStore: Send + Sync + 'static {
    /// Every stored session, by shard id (written by earlier flushes).
    fn load_sessions(&self) -> Result<HashMap<u32, StoredSession>, StoreError>;
    /// The last identify schedule snapshot.
    fn load_schedule(&self) -> Result<Option<ScheduleSnapshot>, StoreError>;
    /// Buffers a shard's session (of a bot running `total` shards) for the next flush.
    fn save_session(&self, shard: u32, total: u32, info: &ResumeInfo);
    /// Buffers the deletion of a shard's session.
    fn forget_session(&self, shard: u32);
    /// Writes the identify schedule durably before returning: a permit is only granted
    /// once its grant is on disk, so a crash loop cannot break a window.
    fn save_schedule(&self, snapshot: &ScheduleSnapshot) -> Result<(), StoreError>;
    /// Takes the buffered changes, runs `barrier`, then writes them durably.
    fn flush(&self, barrier: &mut dyn FnMut()) -> Result<(), StoreError>;
}

/// A buffered change to one shard's record.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Save(StoredSession),
    Forget,
}

/// Session changes waiting for the next flush, newest per shard.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    changes: Mutex<HashMap<u32, Change>>,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Change>> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn save(&self, shard: u32, total: u32, info: &ResumeInfo) {
        let mut changes = self.lock();
        let now = crate::clock::wall_ms();
        match changes.get_mut(&shard) {
            Some(Change::Save(stored))
                if *stored.session_id == *info.session_id && stored.total == total =>
            {
                stored.seq = info.seq;
                stored.updated = now;
            }
            _ => {
                changes.insert(shard, Change::Save(StoredSession::new(info, total, now)));
            }
        }
    }

    pub(crate) fn forget(&self, shard: u32) {
        self.lock().insert(shard, Change::Forget);
    }

    pub(crate) fn take(&self) -> HashMap<u32, Change> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back changes a failed flush could not write, unless newer ones arrived.
    pub(crate) fn put_back(&self, changes: HashMap<u32, Change>) {
        let mut pending = self.lock();
        for (shard, change) in changes {
            pending.entry(shard).or_insert(change);
        }
    }
}

/// A store that keeps everything in memory (tests, and the fallback when disk fails).
#[derive(Debug, Default)]
pub struct MemoryStore {
    pending: Pending,
    sessions: Mutex<HashMap<u32, StoredSession>>,
    schedule: Mutex<Option<ScheduleSnapshot>>,
}

impl SessionStore for MemoryStore {
    fn load_sessions(&self) -> Result<HashMap<u32, StoredSession>, StoreError> {
        Ok(self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn load_schedule(&self) -> Result<Option<ScheduleSnapshot>, StoreError> {
        Ok(self
            .schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn save_session(&self, shard: u32, total: u32, info: &ResumeInfo) {
        self.pending.save(shard, total, info);
    }

    fn forget_session(&self, shard: u32) {
        self.pending.forget(shard);
    }

    fn save_schedule(&self, snapshot: &ScheduleSnapshot) -> Result<(), StoreError> {
        *self.schedule.lock().unwrap_or_else(PoisonError::into_inner) = Some(snapshot.clone());
        Ok(())
    }

    fn flush(&self, barrier: &mut dyn FnMut()) -> Result<(), StoreError> {
        let changes = self.pending.take();
        barrier();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        for (shard, change) in changes {
            match change {
                Change::Save(stored) => {
                    sessions.insert(shard, stored);
                }
                Change::Forget => {
                    sessions.remove(&shard);
                }
            }
        }
        Ok(())
    }
}
