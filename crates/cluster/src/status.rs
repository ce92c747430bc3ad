//! The cell a shard publishes its snapshot and session into, one way: the shard writes,
//! the supervisor (to rebuild a crashed actor), the handle and the metrics read.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use shardkeeper_session::ResumeInfo;

use crate::snapshot::ShardSnapshot;

/// What a shard published last: its snapshot and the session to rebuild it with.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) snapshot: ShardSnapshot,
    pub(crate) resume: Option<ResumeInfo>,
}

/// A shard's status cell, shared by the shard (writer) and everyone else (readers).
#[derive(Debug, Clone)]
pub(crate) struct StatusCell(Arc<Mutex<Published>>);

impl StatusCell {
    pub(crate) fn new(id: u32, resume: Option<ResumeInfo>) -> Self {
        Self(Arc::new(Mutex::new(Published {
            snapshot: ShardSnapshot::idle(id),
            resume,
        })))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Published> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
