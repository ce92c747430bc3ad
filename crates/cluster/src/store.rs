//! Where sessions and the identify schedule are kept between runs.
//!
//! Session writes happen for every dispatch, so [`SessionLedger`] buffers them; its
//! flush takes the buffer, runs a barrier that makes every sink write out what it was
//! handed, and only then has the backend ([`SessionStore`]) write the batch. So a stored
//! sequence never runs ahead of what the sinks delivered, whatever moment the process
//! dies at.

mod ledger;
mod sled;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use shardkeeper_session::{ResumeInfo, ScheduleSnapshot};

pub use self::ledger::SessionLedger;
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

/// Where sessions are kept: a backend writes batches and reads them back. Buffering
/// and the order against the sinks are not its business — [`SessionLedger`] owns both —
/// so no backend can store a sequence before its event reached every sink. Every
/// backend runs the `session_store` suite of the `contract` module (feature `contract`).
pub trait SessionStore: Send + Sync + 'static {
    /// Every stored session, by shard id.
    fn load_sessions(&self) -> Result<HashMap<u32, StoredSession>, StoreError>;
    /// One shard's stored session (a shard assigned while running reads only its own).
    fn load_session(&self, shard: u32) -> Result<Option<StoredSession>, StoreError> {
        Ok(self.load_sessions()?.remove(&shard))
    }
    /// Writes a batch of session changes durably before returning, all or nothing (a
    /// backend that fences writes may refuse some shards' changes: those are not its
    /// shards any more).
    fn write_sessions(&self, batch: &SessionBatch) -> Result<(), StoreError>;
}

/// Where a single node's identify schedule is kept between runs (the local permit
/// source writes each grant there before a shard hears of it, so a crash loop cannot
/// break a window). Cluster mode keeps its schedule in Redis instead.
pub trait ScheduleStore: Send + Sync + 'static {
    /// The last identify schedule snapshot.
    fn load_schedule(&self) -> Result<Option<ScheduleSnapshot>, StoreError>;
    /// Writes the identify schedule durably before returning.
    fn save_schedule(&self, snapshot: &ScheduleSnapshot) -> Result<(), StoreError>;
}

/// A change to one shard's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Store this session.
    Save(StoredSession),
    /// Delete the stored session.
    Forget,
}

/// Changes to write together, newest per shard.
pub type SessionBatch = HashMap<u32, Change>;

/// A store that keeps everything in memory (tests, and embedding programs that need no
/// resume across restarts).
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

    fn write_sessions(&self, batch: &SessionBatch) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        for (&shard, change) in batch {
            match change {
                Change::Save(stored) => {
                    sessions.insert(shard, stored.clone());
                }
                Change::Forget => {
                    sessions.remove(&shard);
                }
            }
        }
        Ok(())
    }
}

impl ScheduleStore for MemoryStore {
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
}
