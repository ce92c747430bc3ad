//! Reconnect delays: exponential with jitter, capped.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

/// Delay before reconnect attempt number `failures` (consecutive failed connections
/// since the shard was last Ready).
///
/// - 0 failures (op 7, operator restart): no delay.
/// - 1 failure: uniform in `[0, base)`, which spreads a reconnect storm.
/// - n ≥ 2: `d = min(cap, base · 2^(n-1))`, uniform in `[d/2, d]`.
pub(crate) fn delay(failures: u32, base: Duration, cap: Duration, rng: &mut SmallRng) -> Duration {
    match failures {
        0 => Duration::ZERO,
        1 => base.mul_f64(rng.random::<f64>()),
        n => {
            let factor = 2u32.saturating_pow((n - 1).min(20));
            let full = base.saturating_mul(factor).min(cap);
            full.mul_f64(rng.random_range(0.5..=1.0))
        }
    }
}

/// A uniform duration in `[low, high]`.
pub(crate) fn uniform(low: Duration, high: Duration, rng: &mut SmallRng) -> Duration {
    if high <= low {
        return low;
    }
    low + high.saturating_sub(low).mul_f64(rng.random::<f64>())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::delay;

    #[test]
    fn grows_then_caps_at_sixty_seconds() {
        let mut rng = SmallRng::seed_from_u64(7);
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        assert_eq!(delay(0, base, cap, &mut rng), Duration::ZERO);
        assert!(delay(1, base, cap, &mut rng) < base);
        for n in 2..40 {
            let expected = base.saturating_mul(2u32.saturating_pow(n - 1)).min(cap);
            for _ in 0..50 {
                let d = delay(n, base, cap, &mut rng);
                assert!(d >= expected / 2 && d <= expected, "attempt {n}: {d:?}");
                assert!(d <= cap);
            }
        }
    }
}
