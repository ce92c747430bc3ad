//! The directory of the shards this process runs: id → actor address and the status
//! cell ([`StatusCell`]) the shard publishes into. The supervisor alone writes the directory; each shard
//! alone writes its cell; the handle and the metrics only read.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use actix::Addr;

use crate::shard::Shard;
use crate::snapshot::ShardSnapshot;
use crate::status::StatusCell;

/// A running (or restarting) shard.
struct Entry {
    /// `None` while the supervisor rebuilds a crashed actor.
    addr: Option<Addr<Shard>>,
    status: StatusCell,
}

/// Why a shard cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// This process does not run it.
    NotRunning,
    /// Its actor is being rebuilt.
    Restarting,
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

    /// Records a shard's actor (`None`: being rebuilt) and its status cell.
    pub(crate) fn set(&self, id: u32, addr: Option<Addr<Shard>>, status: StatusCell) {
        self.write().insert(id, Entry { addr, status });
    }

    /// Forgets a shard this process no longer runs.
    pub(crate) fn remove(&self, id: u32) {
        self.write().remove(&id);
    }

    /// The shard's actor, in one lookup.
    pub(crate) fn addr(&self, id: u32) -> Result<Addr<Shard>, Lookup> {
        match self.read().get(&id) {
            Some(Entry {
                addr: Some(addr), ..
            }) => Ok(addr.clone()),
            Some(_) => Err(Lookup::Restarting),
            None => Err(Lookup::NotRunning),
        }
    }

    /// The shard's status cell.
    pub(crate) fn status(&self, id: u32) -> Option<StatusCell> {
        self.read().get(&id).map(|e| e.status.clone())
    }

    /// Every shard's actor, in id order (shards being rebuilt are left out).
    pub(crate) fn addrs(&self) -> Vec<(u32, Addr<Shard>)> {
        self.read()
            .iter()
            .filter_map(|(&id, e)| e.addr.clone().map(|a| (id, a)))
            .collect()
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

#[cfg(test)]
mod tests {
    use shardkeeper_session::StateKind;

    use super::{Directory, Lookup};
    use crate::status::StatusCell;

    #[test]
    fn settled_once_no_shard_is_on_its_way_up() {
        let directory = Directory::default();
        let cells: Vec<StatusCell> = (0..3).map(|id| StatusCell::new(id, None)).collect();
        for (id, cell) in (0..).zip(&cells) {
            directory.set(id, None, cell.clone());
        }
        assert!(!directory.settled(), "idle shards have not started");
        let set = |id: usize, state: StateKind| cells[id].lock().snapshot.state = state;
        set(0, StateKind::Ready);
        set(1, StateKind::Quarantined);
        set(2, StateKind::Resuming);
        assert!(!directory.settled(), "shard 2 is still resuming");
        set(2, StateKind::Failed);
        assert!(directory.settled());
        set(0, StateKind::Reconnecting);
        assert!(!directory.settled());
        assert_eq!(directory.addr(1).err(), Some(Lookup::Restarting));
        assert_eq!(directory.addr(7).err(), Some(Lookup::NotRunning));
        directory.remove(1);
        assert_eq!(directory.ids(), [0, 2]);
    }
}
