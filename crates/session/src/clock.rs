//! A governor clock that the caller drives, so rate limiting stays a pure function of
//! the instants passed in.

use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use governor::nanos::Nanos;

/// Maps caller-supplied `Instant`s onto governor's relative fake clock. Time only moves
/// forward: an instant earlier than one already seen leaves the clock where it is.
#[derive(Debug, Clone)]
pub(crate) struct DrivenClock {
    origin: Instant,
    clock: FakeRelativeClock,
    elapsed: Duration,
}

impl DrivenClock {
    pub(crate) fn new(origin: Instant) -> Self {
        Self {
            origin,
            clock: FakeRelativeClock::default(),
            elapsed: Duration::ZERO,
        }
    }

    /// The clock to hand to `RateLimiter::direct_with_clock`.
    pub(crate) fn governor_clock(&self) -> FakeRelativeClock {
        self.clock.clone()
    }

    /// Moves the clock to `now`.
    pub(crate) fn advance_to(&mut self, now: Instant) {
        let target = now.saturating_duration_since(self.origin);
        if target > self.elapsed {
            self.clock.advance(target.saturating_sub(self.elapsed));
            self.elapsed = target;
        }
    }

    /// Converts a governor instant back into a caller instant.
    pub(crate) fn instant(&self, at: Nanos) -> Instant {
        self.origin + Duration::from(at)
    }
}
