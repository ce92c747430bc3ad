//! Typed configuration of a cluster (the `cli` crate builds it from TOML and env).

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use shardkeeper_protocol::Token;
use shardkeeper_session::{ScheduleConfig, SessionConfig};

/// Discord's REST base.
pub const DISCORD_API_BASE: &str = "https://discord.com/api/v10";

/// A number from configuration, or "ask `/gateway/bot`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auto {
    /// Use Discord's recommendation.
    Auto,
    /// Use this value.
    Fixed(u32),
}

/// Which shard ids this process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardIds {
    /// `0..total`.
    All,
    /// A half-open range.
    Range(Range<u32>),
}

/// Everything a cluster needs. Every default is written once, here or in the
/// session's and the schedule's own configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// What every shard's session uses: the token, intents, compression,
    /// `large_threshold`, presence, timing, crash-loop protection. `gateway_url` is
    /// filled in from `/gateway/bot` at start.
    pub session: SessionConfig,
    /// REST base for `/gateway/bot`.
    pub api_base: String,
    /// Extra PEM root for `wss://`/`https://`.
    pub ca_file: Option<PathBuf>,
    /// Shard count.
    pub total: Auto,
    /// Shards run by this process.
    pub ids: ShardIds,
    /// Identify buckets.
    pub max_concurrency: Auto,
    /// One IDENTIFY per bucket per window.
    pub identify_window: Duration,
    /// Added to the window for safety.
    pub identify_margin: Duration,
    /// Stored sessions older than this are not resumed.
    pub session_max_age: Duration,
    /// Threads running shard actors; 0 means one per core.
    pub threads: usize,
    /// How often buffered sessions are written to the store.
    pub flush_interval: Duration,
    /// Attempts at `/gateway/bot` before giving up.
    pub rest_attempts: u32,
    /// First retry delay of `/gateway/bot` (doubles per attempt; 429 uses `retry_after`).
    pub rest_backoff: Duration,
}

impl ClusterConfig {
    /// Discord's defaults for everything but the token.
    #[must_use]
    pub fn new(token: Token) -> Self {
        Self {
            session: SessionConfig::new(token, ""),
            api_base: DISCORD_API_BASE.to_owned(),
            ca_file: None,
            total: Auto::Auto,
            ids: ShardIds::All,
            max_concurrency: Auto::Auto,
            identify_window: ScheduleConfig::DEFAULT_WINDOW,
            identify_margin: ScheduleConfig::DEFAULT_MARGIN,
            session_max_age: Duration::from_secs(300),
            threads: 0,
            flush_interval: Duration::from_millis(200),
            rest_attempts: 6,
            rest_backoff: Duration::from_secs(1),
        }
    }
}
