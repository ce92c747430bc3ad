//! Plain data the cluster reports: one shard, the identify schedule. The admin API
//! owns how they look on the wire.

use std::sync::Arc;

use shardkeeper_session::StateKind;

/// One shard, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// Shard id.
    pub id: u32,
    /// State.
    pub state: StateKind,
    /// Last heartbeat round trip in milliseconds.
    pub latency_ms: Option<u64>,
    /// Last sequence received.
    pub seq: Option<u64>,
    /// Current session.
    pub session_id: Option<Arc<str>>,
    /// Whether a RESUME is possible.
    pub resumable: bool,
    /// IDENTIFYs sent.
    pub identifies: u64,
    /// Successful resumes.
    pub resumes: u64,
    /// Connections after the first.
    pub reconnects: u64,
    /// Last close code from the server.
    pub last_close_code: Option<u16>,
    /// Guilds held.
    pub guilds: usize,
    /// Zombie connections detected.
    pub zombies: u64,
    /// The fatal close code, when failed.
    pub failed_code: Option<u16>,
    /// Times the supervisor restarted the shard's actor after a crash.
    pub restarts: u64,
    /// Dispatches received and handed to the sinks.
    pub events: u64,
}

impl ShardSnapshot {
    /// A shard that has not started.
    #[must_use]
    pub fn idle(id: u32) -> Self {
        Self {
            id,
            state: StateKind::Idle,
            latency_ms: None,
            seq: None,
            session_id: None,
            resumable: false,
            identifies: 0,
            resumes: 0,
            reconnects: 0,
            last_close_code: None,
            guilds: 0,
            zombies: 0,
            failed_code: None,
            restarts: 0,
            events: 0,
        }
    }
}

/// One identify bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketView {
    /// `shard_id % max_concurrency`.
    pub bucket: u32,
    /// Shards waiting, in grant order.
    pub queued: Vec<u32>,
    /// Milliseconds until the bucket may grant again (0: now).
    pub next_grant_in_ms: u64,
    /// Milliseconds since the last grant.
    pub last_grant_ago_ms: Option<u64>,
}

/// The identify schedule and the session start budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyStatus {
    /// Buckets.
    pub max_concurrency: u32,
    /// Window per bucket.
    pub window_ms: u64,
    /// Session starts per budget period.
    pub total: u32,
    /// Session starts left.
    pub remaining: u32,
    /// Session starts kept back: no permit is granted once `remaining` is down to it
    /// (0 for a single node, which may spend the budget to the last).
    pub reserve: u32,
    /// Milliseconds until the budget resets.
    pub reset_in_ms: u64,
    /// Shards waiting for a permit.
    pub queued: usize,
    /// Permits granted since start.
    pub granted: u64,
    /// Per bucket.
    pub buckets: Vec<BucketView>,
}
