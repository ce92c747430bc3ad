//! Typed configuration of one shard session.

use std::time::Duration;

use shardkeeper_protocol::payload::PresenceUpdate;
use shardkeeper_protocol::{Compression, Intents, Token};

use crate::QuarantinePolicy;

/// Everything a [`crate::ShardSession`] needs to know besides its shard id, already
/// validated; the shards of a cluster share one.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The bot token.
    pub token: Token,
    /// Base gateway URL from `/gateway/bot`; used for every IDENTIFY. A cluster fills
    /// it in at start.
    pub gateway_url: String,
    /// Transport compression.
    pub compression: Compression,
    /// Intents sent in IDENTIFY.
    pub intents: Intents,
    /// `large_threshold` sent in IDENTIFY (50–250).
    pub large_threshold: Option<u16>,
    /// Presence sent in IDENTIFY, until a shard sends a presence update of its own.
    pub presence: Option<PresenceUpdate>,
    /// Timeouts and waits.
    pub timing: Timing,
    /// Application payloads held while the shard is not Ready; more are refused.
    pub outbox_capacity: usize,
    /// Crash-loop protection.
    pub quarantine: QuarantinePolicy,
}

impl SessionConfig {
    /// A configuration with Discord-appropriate timing and no presence.
    #[must_use]
    pub fn new(token: Token, gateway_url: impl Into<String>) -> Self {
        Self {
            token,
            gateway_url: gateway_url.into(),
            compression: Compression::ZlibStream,
            intents: Intents::GUILDS | Intents::GUILD_MESSAGES,
            large_threshold: Some(250),
            presence: None,
            timing: Timing::default(),
            outbox_capacity: 64,
            quarantine: QuarantinePolicy::default(),
        }
    }
}

/// Timeouts, backoff and waits of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// From `Connect` to `Opened`.
    pub connect_timeout: Duration,
    /// From `Opened` to HELLO.
    pub hello_timeout: Duration,
    /// First step of the reconnect backoff.
    pub backoff_base: Duration,
    /// Longest reconnect backoff.
    pub backoff_cap: Duration,
    /// Shortest wait after op 9.
    pub invalid_session_min: Duration,
    /// Longest wait after op 9.
    pub invalid_session_max: Duration,
    /// Failed connections to `resume_gateway_url` before the session is given up and
    /// the shard identifies at the gateway URL instead.
    pub resume_connect_attempts: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(20),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            invalid_session_min: Duration::from_secs(1),
            invalid_session_max: Duration::from_secs(5),
            resume_connect_attempts: 3,
        }
    }
}
