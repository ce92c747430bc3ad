//! What the simulator saw: counters, per-shard state and the violation log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A rule of Discord's gateway a client broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// A payload other than heartbeat, IDENTIFY or RESUME before authenticating (4003).
    PayloadBeforeIdentify,
    /// A second IDENTIFY or RESUME on one connection (4005).
    AlreadyAuthenticated,
    /// A wrong token (4004).
    AuthenticationFailed,
    /// A shard id not below the shard count (4010).
    InvalidShard,
    /// Fewer shards than the bot needs (4011).
    ShardingRequired,
    /// A missing or unsupported `v` (4012).
    InvalidApiVersion,
    /// Undefined intent bits (4013).
    InvalidIntents,
    /// Privileged intents the app may not use (4014).
    DisallowedIntents,
    /// Two IDENTIFYs of one bucket inside one window (op 9).
    IdentifyWindow,
    /// IDENTIFY with no session starts left (4004).
    BudgetExhausted,
    /// RESUME on a connection not opened at `resume_gateway_url`.
    ResumeWrongUrl,
    /// IDENTIFY on a connection opened at a resume URL.
    IdentifyOnResumeUrl,
    /// RESUME with a sequence the server never sent (4007).
    ResumeSeqAhead,
    /// No heartbeat within 1.5 intervals (4009).
    MissedHeartbeat,
    /// A heartbeat `d` above the last sequence sent.
    HeartbeatSeqAhead,
    /// More than 120 payloads in 60 s (4008).
    SendRateExceeded,
    /// A payload over 4096 bytes (4002).
    PayloadTooLarge,
    /// A payload that is not JSON (4002).
    InvalidJson,
    /// An opcode a client may not send (4001).
    UnknownOpcode,
    /// The unassigned op 5 (4001).
    Opcode5,
    /// A known opcode with a bad `d` (4001).
    InvalidPayload,
    /// op 4 or op 8 for a guild that another shard owns.
    GuildNotOnShard,
    /// A payload on a connection of a shard after a newer connection of that shard
    /// identified: two processes were running the shard at once.
    TwoLiveConnections,
    /// A payload on a connection after its session was resumed on another connection:
    /// the session was fought over.
    SessionFoughtOver,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which rule.
    pub kind: ViolationKind,
    /// The shard, once known.
    pub shard: Option<u32>,
    /// Milliseconds since the simulator started.
    pub at_ms: u64,
    /// What exactly happened.
    pub detail: String,
}

/// Per-shard view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStats {
    /// `ready` while a connection serves the shard's session, else `disconnected`.
    pub state: String,
    /// Current or last session.
    pub session_id: Option<String>,
    /// Last sequence sent on that session.
    pub last_seq: u64,
    /// IDENTIFYs accepted.
    pub identifies: u64,
    /// RESUMEs accepted.
    pub resumes: u64,
    /// Connections that authenticated as this shard.
    pub connections: u64,
    /// Presence updates received.
    pub presence_updates: u64,
    /// Last presence received.
    pub presence: Option<serde_json::Value>,
}

/// Per-bucket identify figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketStats {
    /// IDENTIFYs accepted.
    pub identifies: u64,
    /// Most IDENTIFYs attempted inside one window (1 for a correct client).
    pub max_per_window: u32,
    /// Shortest time between two accepted IDENTIFYs, in milliseconds (the window plus
    /// the margin the client keeps).
    pub min_gap_ms: Option<u64>,
    /// Longest time between two accepted IDENTIFYs, in milliseconds.
    pub max_gap_ms: Option<u64>,
}

/// Every session the simulator started, with the last sequence it sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Order of creation across the simulator (0 first).
    pub index: u64,
    /// Session id.
    pub session_id: String,
    /// Shard.
    pub shard: u32,
    /// Last sequence sent (all of 1..=last_seq were sent).
    pub last_seq: u64,
}

/// A snapshot of everything the simulator counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// IDENTIFYs accepted.
    pub identifies: u64,
    /// RESUMEs accepted.
    pub resumes_ok: u64,
    /// RESUMEs answered with op 9.
    pub resumes_failed: u64,
    /// WebSocket connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// Dispatches sent, replays included.
    pub events_sent: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Session starts left.
    pub session_start_remaining: u32,
    /// Close codes clients closed with.
    pub client_close_codes: BTreeMap<u16, u64>,
    /// Faults injected (by hand or chaos), by kind.
    pub faults: BTreeMap<String, u64>,
    /// Per shard.
    pub shards: BTreeMap<u32, ShardStats>,
    /// Per bucket.
    pub buckets: Vec<BucketStats>,
    /// Every session.
    pub sessions: Vec<SessionSummary>,
    /// Every broken rule, in order.
    pub violations: Vec<Violation>,
}

impl Stats {
    /// Violations of one kind.
    #[must_use]
    pub fn violations_of(&self, kind: ViolationKind) -> usize {
        self.violations.iter().filter(|v| v.kind == kind).count()
    }
}
