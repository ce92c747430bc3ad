//! Faults the simulator can inject, by hand or on a seeded chaos schedule.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

/// Something the gateway does to a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Close with this code (codes that end a session also invalidate it).
    Close {
        /// Close code.
        code: u16,
    },
    /// Send op 7.
    Reconnect,
    /// Send op 9 (`false` also invalidates the session).
    InvalidSession {
        /// op 9's `d`.
        resumable: bool,
    },
    /// Stop acknowledging heartbeats and sending dispatches.
    Zombie,
    /// Send a frame that is not JSON.
    Garbage,
    /// Send op 1, asking for an immediate heartbeat.
    HeartbeatRequest,
}

/// A failure of `/gateway/bot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RestFault {
    /// Answer with this HTTP status and a JSON error.
    Status {
        /// HTTP status code.
        code: u16,
    },
    /// 429 with `retry_after` in seconds.
    RateLimited {
        /// Seconds.
        retry_after: f64,
    },
    /// 200 with a body that is not JSON.
    Garbage,
}

/// Which connections a fault hits: the ones serving `shard`, or every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultTarget {
    /// A shard id, or `None` for all shards.
    pub shard: Option<u32>,
}

impl FaultTarget {
    /// Every connection.
    pub const ALL: Self = Self { shard: None };

    /// The connection of one shard.
    #[must_use]
    pub fn shard(shard: u32) -> Self {
        Self { shard: Some(shard) }
    }

    pub(crate) fn hits(self, shard: Option<u32>) -> bool {
        match (self.shard, shard) {
            (None, Some(_)) => true,
            (Some(target), Some(actual)) => target == actual,
            (_, None) => false,
        }
    }
}

/// Random faults: each entry fires as a Poisson process at `per_minute` per shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosConfig {
    /// Faults and their rates per minute per shard.
    pub faults: Vec<(Fault, f64)>,
}

impl ChaosConfig {
    /// A mix of every recoverable fault at a combined `per_minute` rate per shard.
    #[must_use]
    pub fn mixed(per_minute: f64) -> Self {
        let faults = [
            Fault::Drop,
            Fault::Reconnect,
            Fault::InvalidSession { resumable: true },
            Fault::InvalidSession { resumable: false },
            Fault::Zombie,
            Fault::Garbage,
            Fault::Close { code: 4000 },
            Fault::Close { code: 4009 },
            Fault::HeartbeatRequest,
        ];
        let each = per_minute / faults.len() as f64;
        Self {
            faults: faults.into_iter().map(|f| (f, each)).collect(),
        }
    }

    fn total_per_minute(&self) -> f64 {
        self.faults.iter().map(|(_, rate)| rate.max(0.0)).sum()
    }

    /// Time until the next fault of a shard, or `None` if no rate is positive.
    pub(crate) fn next_delay(&self, rng: &mut SmallRng) -> Option<Duration> {
        let rate = self.total_per_minute() / 60.0;
        if rate <= 0.0 {
            return None;
        }
        let uniform: f64 = rng.random_range(f64::EPSILON..1.0);
        Some(Duration::from_secs_f64(
            (-uniform.ln() / rate).min(86_400.0),
        ))
    }

    /// Picks a fault weighted by its rate.
    pub(crate) fn pick(&self, rng: &mut SmallRng) -> Option<Fault> {
        let mut point = rng.random_range(0.0..self.total_per_minute().max(f64::MIN_POSITIVE));
        for (fault, rate) in &self.faults {
            let rate = rate.max(0.0);
            if point < rate {
                return Some(fault.clone());
            }
            point -= rate;
        }
        self.faults.last().map(|(fault, _)| fault.clone())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::{ChaosConfig, Fault, FaultTarget};

    #[test]
    fn chaos_rate_is_close_to_the_configured_one() {
        let chaos = ChaosConfig::mixed(60.0);
        let mut rng = SmallRng::seed_from_u64(3);
        let total: f64 = (0..10_000)
            .map(|_| {
                chaos
                    .next_delay(&mut rng)
                    .expect("positive rate")
                    .as_secs_f64()
            })
            .sum();
        let mean = total / 10_000.0;
        assert!((mean - 1.0).abs() < 0.05, "mean gap {mean}");
        let zombies = (0..9_000)
            .filter(|_| chaos.pick(&mut rng) == Some(Fault::Zombie))
            .count();
        assert!((800..1200).contains(&zombies), "{zombies}");
    }

    #[test]
    fn no_rate_means_no_chaos() {
        let chaos = ChaosConfig { faults: vec![] };
        assert!(chaos.next_delay(&mut SmallRng::seed_from_u64(1)).is_none());
    }

    #[test]
    fn targets() {
        assert!(FaultTarget::ALL.hits(Some(3)));
        assert!(!FaultTarget::ALL.hits(None));
        assert!(FaultTarget::shard(3).hits(Some(3)));
        assert!(!FaultTarget::shard(3).hits(Some(4)));
    }
}
