//! Where sessions and the identify schedule are kept between runs.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use shardkeeper_session::{ResumeInfo, ScheduleSnapshot};

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

/// Persistence of sessions and identify state. Writes may be batched; `flush` makes
/// everything written so far durable.
pub trait SessionStore: Send + Sync + 'static {
    /// Every stored session, by shard id.
    fn load_sessions(&self) -> Result<HashMap<u32, StoredSession>, StoreError>;
    /// Records a shard's session (of a bot running `total` shards). Called for every
    /// dispatch; implementations batch the writes.
    fn save_session(&self, shard: u32, total: u32, info: &ResumeInfo) -> Result<(), StoreError>;
    /// Deletes a shard's session.
    fn forget_session(&self, shard: u32) -> Result<(), StoreError>;
    /// The last identify schedule snapshot.
    fn load_schedule(&self) -> Result<Option<ScheduleSnapshot>, StoreError>;
    /// Records the identify schedule.
    fn save_schedule(&self, snapshot: &ScheduleSnapshot) -> Result<(), StoreError>;
    /// Makes every write durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// A store that keeps everything in memory (tests, and the fallback when disk fails).
#[derive(Debug, Default)]
pub struct MemoryStore {
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

    fn save_session(&self, shard: u32, total: u32, info: &ResumeInfo) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get_mut(&shard) {
            Some(stored) if *stored.session_id == *info.session_id && stored.total == total => {
                stored.seq = info.seq;
                stored.updated = crate::clock::wall_ms();
            }
            _ => {
                sessions.insert(
                    shard,
                    StoredSession::new(info, total, crate::clock::wall_ms()),
                );
            }
        }
        Ok(())
    }

    fn forget_session(&self, shard: u32) -> Result<(), StoreError> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&shard);
        Ok(())
    }

    fn load_schedule(&self) -> Result<Option<ScheduleSnapshot>, StoreError> {
        Ok(self
            .schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn save_schedule(&self, snapshot: &ScheduleSnapshot) -> Result<(), StoreError> {
        *self.schedule.lock().unwrap_or_else(PoisonError::into_inner) = Some(snapshot.clone());
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
