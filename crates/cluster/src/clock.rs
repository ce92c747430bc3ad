//! The one place the cluster reads the clocks.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic now, for the session and the identify schedule.
#[allow(clippy::disallowed_methods, reason = "this is the one place")]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Wall-clock milliseconds since the Unix epoch, for persisted timestamps.
#[allow(clippy::disallowed_methods, reason = "this is the one place")]
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
