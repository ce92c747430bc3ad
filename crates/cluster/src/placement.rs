//! The `Placement` seam: which shard ids this process should run now.

use std::collections::BTreeSet;

use tokio::sync::watch;

/// A set of shard ids.
pub type ShardSet = BTreeSet<u32>;

/// Decides which shards this process runs. The supervisor starts the shards that join
/// the set and retires those that leave it: a retired shard closes with 4000, its last
/// sequence reaches the store, and only then is it [`released`](Placement::released), so
/// whoever runs it next RESUMEs where it stopped.
pub trait Placement: Send + Sync + 'static {
    /// The set to run now; the receiver sees every later change.
    fn watch(&self) -> watch::Receiver<ShardSet>;
    /// This process stopped running `shard` and stored its session: another may take it.
    fn released(&self, shard: u32);
}

/// A set fixed by configuration (`[shards] ids`), which an embedding program may change
/// with [`assign`](Self::assign) to move shards by hand.
#[derive(Debug)]
pub struct StaticPlacement {
    assigned: watch::Sender<ShardSet>,
}

impl StaticPlacement {
    /// Runs `ids`.
    #[must_use]
    pub fn new(ids: impl IntoIterator<Item = u32>) -> Self {
        Self {
            assigned: watch::Sender::new(ids.into_iter().collect()),
        }
    }

    /// Runs `ids` from now on.
    pub fn assign(&self, ids: impl IntoIterator<Item = u32>) {
        let ids: ShardSet = ids.into_iter().collect();
        self.assigned.send_if_modified(|set| {
            let changed = *set != ids;
            *set = ids;
            changed
        });
    }
}

impl Placement for StaticPlacement {
    fn watch(&self) -> watch::Receiver<ShardSet> {
        self.assigned.subscribe()
    }

    fn released(&self, shard: u32) {
        tracing::debug!(shard, "shard released");
    }
}
