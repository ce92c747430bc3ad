//! The flush path: the one place that decides when a session may reach the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use shardkeeper_session::ResumeInfo;

use super::{Change, SessionBatch, SessionStore, StoreError, StoredSession};
use crate::clock;

/// Buffers the session changes shards make and writes them through a backend, each
/// batch only after a barrier: [`SessionLedger::flush`] takes the buffer, runs the
/// barrier (which makes every sink write out what it was handed), and only then writes.
/// A change buffered during the barrier waits for the next flush, so a stored sequence
/// never runs ahead of what the sinks delivered.
pub struct SessionLedger {
    pending: Mutex<SessionBatch>,
    /// Held for a whole flush: two flushes at once could write an older batch last.
    flushing: Mutex<()>,
    store: Arc<dyn SessionStore>,
}

impl std::fmt::Debug for SessionLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLedger")
            .field("pending", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl SessionLedger {
    /// A ledger writing through `store`.
    #[must_use]
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            flushing: Mutex::new(()),
            store,
        }
    }

    fn lock(&self) -> MutexGuard<'_, SessionBatch> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Buffers a shard's session (of a bot running `total` shards) for the next flush.
    /// Call it only once the events up to `info.seq` were handed to every sink.
    pub fn save(&self, shard: u32, total: u32, info: &ResumeInfo) {
        let mut changes = self.lock();
        let now = clock::wall_ms();
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

    /// The stored sessions of `shards` that can still be resumed: same shard count,
    /// updated within `max_age`. Those of `shards` that cannot are forgotten at the next
    /// flush; the records of other shards (another process may run them) are left alone.
    pub fn resumable(
        &self,
        shards: &dyn Fn(u32) -> bool,
        total: u32,
        max_age: Duration,
    ) -> Result<HashMap<u32, ResumeInfo>, StoreError> {
        let mut usable = HashMap::new();
        for (shard, stored) in self.store.load_sessions()? {
            if shards(shard)
                && let Some(info) = self.usable(shard, &stored, total, max_age)
            {
                usable.insert(shard, info);
            }
        }
        Ok(usable)
    }

    /// The stored session of one shard if it can still be resumed (else it is
    /// forgotten at the next flush), reading only that shard's record.
    pub fn resumable_shard(
        &self,
        shard: u32,
        total: u32,
        max_age: Duration,
    ) -> Result<Option<ResumeInfo>, StoreError> {
        Ok(self
            .store
            .load_session(shard)?
            .and_then(|stored| self.usable(shard, &stored, total, max_age)))
    }

    /// The newest session of one shard whose events reached every sink: the buffered
    /// change if there is one, else the stored record (as [`resumable_shard`]). A shard
    /// restarted after a crash resumes from here, not from what it had received, so
    /// events a full sink had not taken yet are replayed.
    ///
    /// [`resumable_shard`]: Self::resumable_shard
    pub fn delivered_shard(
        &self,
        shard: u32,
        total: u32,
        max_age: Duration,
    ) -> Result<Option<ResumeInfo>, StoreError> {
        let buffered = self.lock().get(&shard).cloned();
        match buffered {
            Some(Change::Save(stored)) => Ok(self.usable(shard, &stored, total, max_age)),
            Some(Change::Forget) => Ok(None),
            None => self.resumable_shard(shard, total, max_age),
        }
    }

    /// What RESUME needs from `stored`, if it is of this shard count and young enough.
    fn usable(
        &self,
        shard: u32,
        stored: &StoredSession,
        total: u32,
        max_age: Duration,
    ) -> Option<ResumeInfo> {
        let age = clock::wall_ms().saturating_sub(stored.updated);
        let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        if stored.total != total {
            tracing::info!(
                shard,
                stored_total = stored.total,
                total,
                "shard count changed; discarding the stored session"
            );
        } else if age > max_age_ms {
            tracing::info!(
                shard,
                age_s = age / 1000,
                "stored session too old to resume; discarding it"
            );
        } else {
            return Some(stored.resume_info());
        }
        self.forget(shard);
        None
    }

    /// Buffers the deletion of a shard's session.
    pub fn forget(&self, shard: u32) {
        self.lock().insert(shard, Change::Forget);
    }

    /// Takes the buffered changes, runs `barrier`, then writes them. Changes a failed
    /// write could not store go back into the buffer unless newer ones arrived.
    pub fn flush(&self, barrier: &mut dyn FnMut()) -> Result<(), StoreError> {
        let _flushing = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = std::mem::take(&mut *self.lock());
        barrier();
        if changes.is_empty() {
            return Ok(());
        }
        let result = self.store.write_sessions(&changes);
        if result.is_err() {
            let mut pending = self.lock();
            for (shard, change) in changes {
                pending.entry(shard).or_insert(change);
            }
        }
        result
    }
}
