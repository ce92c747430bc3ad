//! The `AuditLog` seam: who did what to the cluster, when, and how it ended.
//!
//! Every mutating admin call is recorded where the process keeps its state: the sled
//! store's `audit` tree for a single node, the cluster's audit stream in Redis for a
//! node of a cluster. Recording never blocks the caller on the network and never fails
//! the action it records; reading returns the newest entries first.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Entries a log keeps; older ones are dropped.
pub const AUDIT_KEPT: usize = 10_000;

/// One operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, in Unix milliseconds (filled in by [`AuditEntry::now`]).
    pub at_ms: u64,
    /// Who: the label of the credential used (`admin`, `read-only`).
    pub actor: String,
    /// The client's address, as the admin API saw it.
    pub from: String,
    /// What: method and route.
    pub action: String,
    /// On what (a shard id, `all`, a job id, …).
    pub target: String,
    /// `ok`, `accepted`, or the error.
    pub result: String,
    /// The node that took the request (cluster mode).
    pub node: Option<String>,
}

impl AuditEntry {
    /// An entry stamped with the current wall-clock time.
    #[must_use]
    pub fn now(actor: &str, from: &str, action: &str, target: &str, result: &str) -> Self {
        Self {
            at_ms: crate::clock::wall_ms(),
            actor: actor.to_owned(),
            from: from.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            result: result.to_owned(),
            node: None,
        }
    }
}

/// The log could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot read the audit log: {0}")]
pub struct AuditError(pub String);

/// What [`AuditLog::recent`] returns.
pub type AuditFuture = Pin<Box<dyn Future<Output = Result<Vec<AuditEntry>, AuditError>> + Send>>;

/// Where operator actions are recorded. Every implementation runs the `audit_log`
/// suite of the `contract` module (feature `contract`).
pub trait AuditLog: Send + Sync + 'static {
    /// Records `entry`; returns at once (a log that writes elsewhere does so in the
    /// background, and logs what it could not write).
    fn record(&self, entry: AuditEntry);
    /// The newest `limit` entries, newest first.
    fn recent(&self, limit: usize) -> AuditFuture;
}

/// An audit log in memory (tests, and embedding programs without a store).
#[derive(Debug, Default)]
pub struct MemoryAudit {
    entries: Mutex<VecDeque<AuditEntry>>,
}

impl AuditLog for MemoryAudit {
    fn record(&self, entry: AuditEntry) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() == AUDIT_KEPT {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    fn recent(&self, limit: usize) -> AuditFuture {
        let newest: Vec<AuditEntry> = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(newest)))
    }
}
