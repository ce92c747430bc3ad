//! The per-connection send limiter: at most 120 payloads in any 60 s window, with a
//! reserve that heartbeats, IDENTIFY and RESUME draw on first.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::DrivenClock;

/// Discord's budget: payloads per connection per [`SEND_WINDOW`].
pub const SEND_BUDGET: u32 = 120;
/// Discord's send window.
pub const SEND_WINDOW: Duration = Duration::from_secs(60);

/// Reserve pool for heartbeats, IDENTIFY and RESUME: a burst of 6, one more every 5 s,
/// so at most 6 + 60/5 = 18 in any 60 s window.
const RESERVE_BURST: u32 = 6;
const RESERVE_PERIOD: Duration = Duration::from_secs(5);
/// General pool for operator and application payloads: a burst of 6, one more every
/// 625 ms, so at most 6 + 60/0.625 = 102 in any 60 s window. 18 + 102 = 120.
const GENERAL_BURST: u32 = 6;
const GENERAL_PERIOD: Duration = Duration::from_millis(625);

type Gcra = RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<Nanos>>;

/// Which pool a payload may draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendClass {
    /// Heartbeats, IDENTIFY, RESUME: the reserve first, then the general pool.
    Priority,
    /// Everything else: the general pool only.
    General,
}

/// Two GCRA pools sized so that no 60 s window can exceed [`SEND_BUDGET`] sends.
#[derive(Debug)]
pub struct SendLimiter {
    clock: DrivenClock,
    reserve: Gcra,
    general: Gcra,
}

impl SendLimiter {
    /// A fresh limiter for a connection opened at `now`.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        let clock = DrivenClock::new(now);
        Self {
            reserve: pool(&clock, RESERVE_BURST, RESERVE_PERIOD),
            general: pool(&clock, GENERAL_BURST, GENERAL_PERIOD),
            clock,
        }
    }

    /// Takes one slot for a payload of `class` at `now`, or says when to try again.
    pub fn try_acquire(&mut self, now: Instant, class: SendClass) -> Result<(), Instant> {
        self.clock.advance_to(now);
        let reserve = match class {
            SendClass::Priority => match self.reserve.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => Some(not_until.earliest_possible()),
            },
            SendClass::General => None,
        };
        match self.general.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let general = not_until.earliest_possible();
                let earliest = reserve.map_or(general, |r| r.min(general));
                Err(self.clock.instant(earliest))
            }
        }
    }
}

fn pool(clock: &DrivenClock, burst: u32, period: Duration) -> Gcra {
    // invariant: both constants are non-zero
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::direct_with_clock(quota, clock.governor_clock())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{SEND_BUDGET, SEND_WINDOW, SendClass, SendLimiter};

    /// Sends as fast as allowed for `span` and returns the instants of the sends.
    fn saturate(class: SendClass, span: Duration, step: Duration) -> Vec<Instant> {
        let start = Instant::now();
        let mut limiter = SendLimiter::new(start);
        let mut sent = Vec::new();
        let mut now = start;
        while now < start + span {
            match limiter.try_acquire(now, class) {
                Ok(()) => sent.push(now),
                Err(at) => {
                    assert!(at > now, "a refusal names a later instant");
                    now = at.min(now + step).max(now + Duration::from_millis(1));
                }
            }
        }
        sent
    }

    fn max_in_window(sent: &[Instant]) -> usize {
        sent.iter()
            .enumerate()
            .map(|(i, &t)| {
                sent[i..]
                    .iter()
                    .take_while(|&&u| u < t + SEND_WINDOW)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn no_window_exceeds_the_budget_even_with_both_pools_drained() {
        let start = Instant::now();
        let mut limiter = SendLimiter::new(start);
        let mut sent = Vec::new();
        let mut now = start;
        while now < start + Duration::from_secs(300) {
            for class in [SendClass::General, SendClass::Priority] {
                if limiter.try_acquire(now, class).is_ok() {
                    sent.push(now);
                }
            }
            now += Duration::from_millis(10);
        }
        assert!(max_in_window(&sent) <= SEND_BUDGET as usize);
        assert!(
            max_in_window(&sent) >= 115,
            "the budget is nearly fully usable"
        );
    }

    #[test]
    fn general_traffic_leaves_the_reserve_untouched() {
        let sent = saturate(
            SendClass::General,
            Duration::from_secs(120),
            Duration::from_millis(50),
        );
        assert!(max_in_window(&sent) <= 102);
        let start = Instant::now();
        let mut limiter = SendLimiter::new(start);
        let mut now = start;
        while limiter.try_acquire(now, SendClass::General).is_ok() {
            now += Duration::from_millis(1);
        }
        for _ in 0..6 {
            assert!(limiter.try_acquire(now, SendClass::Priority).is_ok());
        }
    }
}
