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
    /// The shards the supervisor runs now (started, or still being retired), reported
    /// after every change it carried out. A placement must not take a shard out of the
    /// set to hand it over before it was reported here: a shard that left the set
    /// before the supervisor ever saw it is never retired, so never released. The
    /// default ignores it.
    fn running(&self, shards: &ShardSet) {
        let _ = shards;
    }
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
    /// The generation (high bits), bumped by every revocation, and the deadline in
    /// whole milliseconds after `base` (low bits), in one word so that a check reads
    /// both at once: a revocation followed by an extension between two separate reads
    /// would otherwise pass an old ticket.
    word: AtomicU64,
}

/// Bits of the deadline in milliseconds (about 557 years after `base`).
const DEADLINE_BITS: u32 = 44;
const DEADLINE_MASK: u64 = (1 << DEADLINE_BITS) - 1;

fn generation_of(word: u64) -> u64 {
    word >> DEADLINE_BITS
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
            word: AtomicU64::new(0),
        })))
    }

    /// Holds until `until` (a renewal succeeded), to the millisecond below.
    pub fn extend(&self, until: Instant) {
        if let Some(state) = &self.0 {
            let millis = until.saturating_duration_since(state.base).as_millis();
            let deadline = u64::try_from(millis).unwrap_or(u64::MAX).min(DEADLINE_MASK);
            let _ = state
                .word
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                    Some((word & !DEADLINE_MASK) | deadline)
                });
        }
    }

    /// Expires now, and for good for every shard that holds a ticket of it.
    pub fn revoke(&self) {
        if let Some(state) = &self.0 {
            let _ = state
                .word
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                    let next = (generation_of(word) + 1) & (u64::MAX >> DEADLINE_BITS);
                    Some(next << DEADLINE_BITS)
                });
        }
    }

    /// A ticket for a shard starting now.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket {
            fence: self.clone(),
            generation: self
                .0
                .as_ref()
                .map_or(0, |state| generation_of(state.word.load(Ordering::Acquire))),
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
        let word = state.word.load(Ordering::Acquire);
        let elapsed = now.saturating_duration_since(state.base).as_millis();
        generation_of(word) == self.generation
            && u64::try_from(elapsed).unwrap_or(u64::MAX) < word & DEADLINE_MASK
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_ticket_holds_until_the_deadline_and_never_again_after_a_revocation() {
        let base = crate::clock::now();
        let fence = Fence::expired(base);
        let old = fence.ticket();
        assert!(!old.holds(base), "expired until extended");
        fence.extend(base + Duration::from_millis(500));
        assert!(old.holds(base + Duration::from_millis(499)));
        assert!(
            !old.holds(base + Duration::from_millis(500)),
            "the deadline is out"
        );
        fence.revoke();
        assert!(!old.holds(base), "revoked at once");
        fence.extend(base + Duration::from_secs(10));
        assert!(
            !old.holds(base),
            "an extension after a revocation does not revive it"
        );
        let new = fence.ticket();
        assert!(new.holds(base + Duration::from_secs(9)));
        assert!(
            Fence::never()
                .ticket()
                .holds(base + Duration::from_secs(1 << 40))
        );
    }

    #[test]
    fn revocations_racing_extensions_never_pass_an_old_ticket() {
        let base = crate::clock::now();
        let fence = Fence::expired(base);
        fence.extend(base + Duration::from_secs(3600));
        let old = fence.ticket();
        let racer = {
            let fence = fence.clone();
            std::thread::spawn(move || {
                for n in 0..10_000 {
                    fence.revoke();
                    fence.extend(base + Duration::from_secs(3600 + n));
                }
            })
        };
        let mut passed_after_revocation = 0;
        let mut revoked = false;
        while !racer.is_finished() {
            let holds = old.holds(base);
            if revoked && holds {
                passed_after_revocation += 1;
            }
            revoked |= !holds;
        }
        racer.join().expect("racer");
        assert_eq!(passed_after_revocation, 0);
        assert!(!old.holds(base));
    }
}
