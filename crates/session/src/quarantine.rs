//! Crash-loop protection: a shard whose connections keep ending before READY or
//! RESUMED is parked instead of reconnecting again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a shard is parked as quarantined instead of reconnecting again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantinePolicy {
    /// Connections ended before READY or RESUMED within `window` that quarantine a
    /// shard; 0 disables quarantine.
    pub failures: u32,
    /// The window.
    pub window: Duration,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        Self {
            failures: 10,
            window: Duration::from_secs(300),
        }
    }
}

/// The failures a session counts towards its policy. A session that came up and was
/// later dropped, asked to reconnect or invalidated is the gateway's doing and does not
/// count.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    failures: VecDeque<Instant>,
}

impl Quarantine {
    /// Records a connection that ended before READY or RESUMED at `now`; returns whether
    /// the shard must be quarantined.
    pub(crate) fn failed(&mut self, now: Instant, policy: QuarantinePolicy) -> bool {
        if policy.failures == 0 {
            return false;
        }
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > policy.window)
        {
            self.failures.pop_front();
        }
        self.failures.len() >= policy.failures as usize
    }

    /// Failures counted in the window.
    pub(crate) fn len(&self) -> usize {
        self.failures.len()
    }

    /// Forgets every failure (an operator started or restarted the shard).
    pub(crate) fn clear(&mut self) {
        self.failures = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Quarantine, QuarantinePolicy};

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let policy = QuarantinePolicy {
            failures: 3,
            window: Duration::from_secs(10),
        };
        let start = Instant::now();
        let mut q = Quarantine::default();
        assert!(!q.failed(start, policy));
        assert!(!q.failed(start + Duration::from_secs(5), policy));
        assert!(
            !q.failed(start + Duration::from_secs(12), policy),
            "the first aged out"
        );
        assert!(q.failed(start + Duration::from_secs(13), policy));
        q.clear();
        assert!(!q.failed(start + Duration::from_secs(14), policy));
    }

    #[test]
    fn zero_disables_it() {
        let policy = QuarantinePolicy {
            failures: 0,
            window: Duration::from_secs(10),
        };
        let mut q = Quarantine::default();
        let now = Instant::now();
        assert!((0..100).all(|_| !q.failed(now, policy)));
        assert_eq!(q.len(), 0);
    }
}
