//! The `Placement` seam: which shard ids this process should run now.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
    /// Until when this process may act for its shards at all. A placement that leases
    /// shards (cluster mode) revokes it the moment a lease may lapse: every shard then
    /// stops at once — no frame written, no event delivered, its socket closed with
    /// 4000 — before the set even changes. The default never expires.
    fn fence(&self) -> Fence {
        Fence::never()
    }
}

/// Until when a process may act for the shards it was given (see [`Placement::fence`]).
/// Cloning shares it.
#[derive(Debug, Clone)]
pub struct Fence(Option<Arc<FenceState>>);

#[derive(Debug)]
pub(crate) struct FenceState {
    base: Instant,
    /// Nanoseconds after `base` at which the fence expires.
    until: AtomicU64,
    /// Bumped by every revocation: a shard started before one stays fenced even if
    /// the fence is extended again later.
    generation: AtomicU64,
}

impl Fence {
    /// A fence that never expires (single mode).
    #[must_use]
    pub fn never() -> Self {
        Self(None)
    }

    /// A fence that holds until [`extend`](Self::extend)ed; `base` is any instant
    /// before every deadline it will be given.
    #[must_use]
    pub fn expired(base: Instant) -> Self {
        Self(Some(Arc::new(FenceState {
            base,
            until: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        })))
    }

    /// Holds until `until` (a renewal succeeded).
    pub fn extend(&self, until: Instant) {
        if let Some(state) = &self.0 {
            let nanos = until.saturating_duration_since(state.base).as_nanos();
            state
                .until
                .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
        }
    }

    /// Expires now, and for good for every shard that holds a ticket of it.
    pub fn revoke(&self) {
        if let Some(state) = &self.0 {
            state.generation.fetch_add(1, Ordering::AcqRel);
            state.until.store(0, Ordering::Release);
        }
    }

    /// A ticket for a shard starting now.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket {
            fence: self.clone(),
            generation: self
                .0
                .as_ref()
                .map_or(0, |state| state.generation.load(Ordering::Acquire)),
        }
    }
}

/// A shard's hold on the fence as of its start.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    fence: Fence,
    generation: u64,
}

impl Ticket {
    /// Whether the shard may still act at `now`.
    pub(crate) fn holds(&self, now: Instant) -> bool {
        let Some(state) = &self.fence.0 else {
            return true;
        };
        let elapsed = now.saturating_duration_since(state.base).as_nanos();
        state.generation.load(Ordering::Acquire) == self.generation
            && u64::try_from(elapsed).unwrap_or(u64::MAX) < state.until.load(Ordering::Acquire)
    }
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
