//! Giving free heap pages back to the system once a connect storm is over.
//!
//! glibc returns freed memory to the system only from the top of each arena; what a
//! thousand shards allocated and freed while connecting (handshakes, first frames,
//! queued messages) stays resident below the long-lived allocations made in between.
//! `malloc_trim` releases those free pages. It walks and locks every arena, so it runs
//! on the flush thread, once no shard has been on its way up for a second (the first
//! dispatches after READY are part of the storm), and at most once a minute.

use std::time::{Duration, Instant};

/// Least time between two trims.
const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// How long every shard must have been settled.
const QUIET: Duration = Duration::from_secs(1);

/// Decides when to trim: after shards came up, once they have all settled.
#[derive(Debug, Default)]
pub(crate) struct AfterStorm {
    /// Shards came up (or went down) since the last trim.
    pending: bool,
    /// Since when every shard is Ready or parked.
    settled_since: Option<Instant>,
    last: Option<Instant>,
}

impl AfterStorm {
    /// Takes whether every shard is Ready or parked now; true when it is time to trim.
    pub(crate) fn observe(&mut self, settled: bool, now: Instant) -> bool {
        if settled != self.settled_since.is_some() {
            self.pending = true;
            self.settled_since = settled.then_some(now);
        }
        let quiet = self
            .settled_since
            .is_some_and(|since| now.saturating_duration_since(since) >= QUIET);
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= MIN_INTERVAL);
        if self.pending && quiet && due {
            self.pending = false;
            self.last = Some(now);
            return true;
        }
        false
    }
}

/// Asks the allocator to return free pages to the system; true if it released any.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(
    unsafe_code,
    reason = "malloc_trim is a C function; it takes no pointers and locks each arena itself"
)]
pub(crate) fn release_free_memory() -> bool {
    // SAFETY: malloc_trim has no preconditions: it reads no memory of the caller and
    // serializes with every other allocator call through the arena locks.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators (musl, macOS) give pages back on their own or offer no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{AfterStorm, release_free_memory};

    #[test]
    fn trims_once_shards_settle_and_not_more_than_once_a_minute() {
        let start = crate::clock::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut storm = AfterStorm::default();
        assert!(!storm.observe(false, at(0)), "shards are still coming up");
        assert!(
            !storm.observe(true, at(1)),
            "all up, first dispatches arriving"
        );
        assert!(storm.observe(true, at(2)), "quiet for a second: trim");
        assert!(!storm.observe(true, at(3)), "nothing changed since");
        assert!(!storm.observe(false, at(10)), "a shard reconnects");
        assert!(!storm.observe(true, at(11)));
        assert!(
            !storm.observe(true, at(30)),
            "quiet again, within the minute"
        );
        assert!(
            storm.observe(true, at(62)),
            "the pending trim runs once allowed"
        );
        assert!(!storm.observe(true, at(200)));
        let mut flapping = AfterStorm::default();
        for s in 0..10 {
            assert!(!flapping.observe(s % 2 == 0, at(s)), "never quiet a second");
        }
    }

    #[test]
    fn releasing_free_memory_is_safe_to_call_any_time() {
        let garbage: Vec<Vec<u8>> = (0..1_000).map(|i| vec![1; 1_000 + i]).collect();
        drop(garbage);
        let _ = release_free_memory();
        let _ = release_free_memory();
    }
}
