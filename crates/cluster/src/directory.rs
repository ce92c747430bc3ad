//! The directory of the shards this process runs: id → actor address and the status
//! cell ([`StatusCell`]) the shard publishes into. The supervisor alone writes the directory; each shard
//! alone writes its cell; the handle and the metrics only read.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use actix::Addr;

use crate::shard::Shard;
use crate::snapshot::ShardSnapshot;
use crate::status::StatusCell;

/// A running shard.
struct Entry {
    addr: Addr<Shard>,
    status: StatusCell,
}

/// Every shard this process runs.
#[derive(Default)]
pub(crate) struct Directory {
    entries: RwLock<BTreeMap<u32, Entry>>,
}

impl Directory {
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<u32, Entry>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u32, Entry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a shard's (new) actor and its status cell.
    pub(crate) fn set(&self, id: u32, addr: Addr<Shard>, status: StatusCell) {
        self.write().insert(id, Entry { addr, status });
    }

    /// Forgets a shard this process no longer runs.
    pub(crate) fn remove(&self, id: u32) {
        self.write().remove(&id);
    }

    /// The shard's actor, in one lookup; `None` if this process does not run it.
    pub(crate) fn addr(&self, id: u32) -> Option<Addr<Shard>> {
        self.read().get(&id).map(|e| e.addr.clone())
    }

    /// The shard's status cell.
    pub(crate) fn status(&self, id: u32) -> Option<StatusCell> {
        self.read().get(&id).map(|e| e.status.clone())
    }

    /// Every shard's actor.
    pub(crate) fn addrs(&self) -> Vec<Addr<Shard>> {
        self.read().values().map(|e| e.addr.clone()).collect()
    }

    pub(crate) fn ids(&self) -> Vec<u32> {
        self.read().keys().copied().collect()
    }

    pub(crate) fn contains(&self, id: u32) -> bool {
        self.read().contains_key(&id)
    }

    pub(crate) fn snapshots(&self) -> Vec<ShardSnapshot> {
        self.read()
            .values()
            .map(|e| e.status.lock().snapshot.clone())
            .collect()
    }

    pub(crate) fn snapshot(&self, id: u32) -> Option<ShardSnapshot> {
        self.read()
            .get(&id)
            .map(|e| e.status.lock().snapshot.clone())
    }

    /// No shard is on its way up: each is Ready or parked (stopped, quarantined, failed).
    pub(crate) fn settled(&self) -> bool {
        self.read()
            .values()
            .all(|e| e.status.lock().snapshot.state.is_settled())
    }
}
