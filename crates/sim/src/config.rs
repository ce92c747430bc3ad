//! Simulator settings. Defaults are Discord's.

use std::net::SocketAddr;
use std::time::Duration;

use crate::fault::{ChaosConfig, RestFault};

/// How the simulated gateway behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The only bot token accepted.
    pub token: String,
    /// Recommended shard count returned by `/gateway/bot`.
    pub shards: u32,
    /// Fewer shards than this in IDENTIFY get close 4011.
    pub min_shards: u32,
    /// `max_concurrency`: identify buckets.
    pub max_concurrency: u32,
    /// One IDENTIFY per bucket per window.
    pub identify_window: Duration,
    /// Session starts per budget period.
    pub session_start_total: u32,
    /// Session starts left at start-up.
    pub session_start_remaining: u32,
    /// Budget period.
    pub session_start_reset: Duration,
    /// HELLO's heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Guilds each shard holds.
    pub guilds_per_shard: u32,
    /// Members each guild has (for op 8).
    pub members_per_guild: u32,
    /// MESSAGE_CREATE dispatches per second per Ready shard; 0 for none.
    pub events_per_sec: f64,
    /// Approximate size of each generated dispatch body.
    pub event_body_bytes: usize,
    /// Dispatches kept per session for RESUME.
    pub replay_capacity: usize,
    /// How long a disconnected session can still be resumed.
    pub session_ttl: Duration,
    /// Cooldown of full member-list requests per guild.
    pub member_request_cooldown: Duration,
    /// Whether privileged intents are enabled for the simulated app.
    pub allow_privileged_intents: bool,
    /// Seed of every random choice (session ids, jitter of chaos).
    pub seed: u64,
    /// Random faults, if any.
    pub chaos: Option<ChaosConfig>,
    /// Answers for the next `/gateway/bot` calls, in order, before normal service.
    pub rest_faults: Vec<RestFault>,
    /// The first this many gateway connections never receive HELLO.
    pub silent_connections: u32,
    /// The gateway URL `/gateway/bot` returns instead of the simulator's own (to send
    /// clients to an unreachable address).
    pub gateway_url: Option<String>,
    /// Serve `wss://` and `https://` with this certificate.
    pub tls: Option<crate::TlsConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: "sim-token".to_owned(),
            shards: 1,
            min_shards: 1,
            max_concurrency: 1,
            identify_window: Duration::from_secs(5),
            session_start_total: 1000,
            session_start_remaining: 1000,
            session_start_reset: Duration::from_secs(24 * 60 * 60),
            heartbeat_interval: Duration::from_millis(41_250),
            guilds_per_shard: 3,
            members_per_guild: 1500,
            events_per_sec: 0.0,
            event_body_bytes: 512,
            replay_capacity: 20_000,
            session_ttl: Duration::from_secs(180),
            member_request_cooldown: Duration::from_secs(30),
            allow_privileged_intents: true,
            seed: 1,
            chaos: None,
            rest_faults: Vec::new(),
            silent_connections: 0,
            gateway_url: None,
            tls: None,
        }
    }
}
