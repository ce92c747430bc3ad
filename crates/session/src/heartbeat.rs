//! Heartbeat timing and zombie detection for one connection.

use std::time::{Duration, Instant};

/// Heartbeat state of a connection that has received HELLO.
#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    interval: Duration,
    next_beat: Instant,
    /// When the oldest heartbeat without an ACK was sent.
    unacked_since: Option<Instant>,
    /// A heartbeat is queued behind the send limiter.
    queued: bool,
}

impl Heartbeat {
    /// Starts beating: the first beat is due after `interval × jitter`.
    pub(crate) fn new(now: Instant, interval: Duration, jitter: f64) -> Self {
        Self {
            interval,
            next_beat: now + interval.mul_f64(jitter.clamp(0.0, 1.0)),
            unacked_since: None,
            queued: false,
        }
    }

    pub(crate) fn next_beat(&self) -> Instant {
        self.next_beat
    }

    pub(crate) fn is_due(&self, now: Instant) -> bool {
        now >= self.next_beat
    }

    /// A beat is due while the previous one is still unacknowledged.
    pub(crate) fn is_zombie(&self) -> bool {
        self.unacked_since.is_some()
    }

    /// Queues a beat now and schedules the next one a full interval later. Returns
    /// whether a new beat has to be queued (false if one is already waiting).
    pub(crate) fn beat(&mut self, now: Instant) -> bool {
        self.next_beat = now + self.interval;
        !std::mem::replace(&mut self.queued, true)
    }

    /// The queued beat went out.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.queued = false;
        self.unacked_since.get_or_insert(now);
    }

    /// An ACK arrived; returns the round trip of the oldest unacknowledged beat.
    pub(crate) fn acked(&mut self, now: Instant) -> Option<Duration> {
        self.unacked_since
            .take()
            .map(|sent| now.saturating_duration_since(sent))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Heartbeat;

    #[test]
    fn beats_then_detects_a_missing_ack() {
        let start = Instant::now();
        let interval = Duration::from_secs(1);
        let mut hb = Heartbeat::new(start, interval, 0.25);
        assert_eq!(hb.next_beat(), start + Duration::from_millis(250));
        assert!(!hb.is_due(start));
        let t1 = hb.next_beat();
        assert!(hb.beat(t1));
        assert!(!hb.beat(t1), "a queued beat is not queued twice");
        hb.sent(t1);
        assert_eq!(
            hb.acked(t1 + Duration::from_millis(40)),
            Some(Duration::from_millis(40))
        );
        let t2 = hb.next_beat();
        assert_eq!(t2, t1 + interval);
        assert!(hb.beat(t2));
        hb.sent(t2);
        assert!(hb.is_zombie());
    }
}
