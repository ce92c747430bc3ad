//! Typed `d` bodies of the payloads a shard manager sends or inspects.
//!
//! Every type here serializes and deserializes, so the client side and the simulator
//! share one definition of the wire format; golden fixtures in `tests/fixtures` pin it
//! to Discord's documented examples.

use serde::{Deserialize, Serialize};

use crate::{Intents, ShardId, Snowflake, Token};

/// op 10: `{heartbeat_interval}` in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Milliseconds between heartbeats.
    pub heartbeat_interval: u64,
}

/// `properties` of IDENTIFY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifyProperties {
    /// Operating system.
    pub os: String,
    /// Library name.
    pub browser: String,
    /// Library name.
    pub device: String,
}

impl IdentifyProperties {
    /// The properties shardkeeper sends: this OS and the library name.
    #[must_use]
    pub fn shardkeeper() -> Self {
        Self {
            os: std::env::consts::OS.to_owned(),
            browser: "shardkeeper".to_owned(),
            device: "shardkeeper".to_owned(),
        }
    }
}

/// op 2: start a new session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identify {
    /// The bot token.
    pub token: Token,
    /// Connection properties.
    pub properties: IdentifyProperties,
    /// Per-message payload compression; shardkeeper uses transport compression instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compress: bool,
    /// Member count (50–250) above which a guild's offline members are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_threshold: Option<u16>,
    /// `[shard_id, num_shards]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardId>,
    /// The presence to start with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceUpdate>,
    /// Gateway intents.
    pub intents: Intents,
}

/// op 6: continue a dropped session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The bot token.
    pub token: Token,
    /// `session_id` from READY.
    pub session_id: String,
    /// The last sequence received.
    pub seq: u64,
}

/// A guild stub from READY or the fields of GUILD_CREATE/GUILD_DELETE a manager reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnavailableGuild {
    /// Guild id.
    pub id: Snowflake,
    /// Whether the guild is unavailable (absent means available).
    #[serde(default)]
    pub unavailable: bool,
}

/// The bot user in READY (only the fields the simulator fills in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyUser {
    /// User id.
    pub id: Snowflake,
    /// User name.
    pub username: String,
    /// Always true for bots.
    #[serde(default)]
    pub bot: bool,
}

/// The partial application in READY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyApplication {
    /// Application id.
    pub id: Snowflake,
    /// Application flags.
    #[serde(default)]
    pub flags: u64,
}

/// The READY dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// API version.
    pub v: u8,
    /// The bot user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ReadyUser>,
    /// Unavailable guild stubs.
    #[serde(default)]
    pub guilds: Vec<UnavailableGuild>,
    /// Needed to resume.
    pub session_id: String,
    /// Where to connect when resuming.
    pub resume_gateway_url: String,
    /// `[shard_id, num_shards]` as sent in IDENTIFY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardId>,
    /// Partial application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ReadyApplication>,
}

/// Online status for presence updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    /// Online.
    Online,
    /// Do not disturb.
    Dnd,
    /// Away.
    Idle,
    /// Shown as offline.
    Invisible,
    /// Offline.
    Offline,
}

/// An activity a bot may set: only `name`, `type`, `url` and `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Activity {
    /// Activity name.
    pub name: String,
    /// 0 playing, 1 streaming, 2 listening, 3 watching, 4 custom, 5 competing.
    #[serde(rename = "type")]
    pub kind: ActivityType,
    /// Stream URL (streaming only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Custom status text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Activity type, limited to the documented values 0–5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivityType(u8);

impl ActivityType {
    /// Playing.
    pub const PLAYING: Self = Self(0);
    /// Streaming.
    pub const STREAMING: Self = Self(1);
    /// Listening.
    pub const LISTENING: Self = Self(2);
    /// Watching.
    pub const WATCHING: Self = Self(3);
    /// Custom.
    pub const CUSTOM: Self = Self(4);
    /// Competing.
    pub const COMPETING: Self = Self(5);
}

impl TryFrom<u8> for ActivityType {
    type Error = String;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        if value <= 5 {
            Ok(Self(value))
        } else {
            Err(format!("activity type {value} is not one of 0-5"))
        }
    }
}

impl From<ActivityType> for u8 {
    fn from(value: ActivityType) -> Self {
        value.0
    }
}

/// op 3: `{since, activities, status, afk}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceUpdate {
    /// Unix ms since idle, or `null`.
    pub since: Option<u64>,
    /// Activities.
    pub activities: Vec<Activity>,
    /// Status.
    pub status: Status,
    /// Whether the client is AFK.
    pub afk: bool,
}

/// op 4: join, move or leave voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VoiceStateUpdate {
    /// Guild id.
    pub guild_id: Snowflake,
    /// Channel to join, or `null` to leave.
    pub channel_id: Option<Snowflake>,
    /// Muted.
    pub self_mute: bool,
    /// Deafened.
    pub self_deaf: bool,
}

/// Longest nonce Discord accepts on op 8, in bytes.
pub const MAX_NONCE_BYTES: usize = 32;
/// Most user ids one op 8 may name.
pub const MAX_MEMBER_USER_IDS: usize = 100;

/// op 8: request member chunks of one guild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestGuildMembers {
    /// Guild id (one guild per request).
    pub guild_id: Snowflake,
    /// Username prefix; `""` with `limit: 0` asks for everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Maximum members to return; required with `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Whether to include presences.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presences: bool,
    /// Specific members (at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<Snowflake>>,
    /// Echoed in every chunk (at most 32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

impl RequestGuildMembers {
    /// Checks the documented limits: `query` xor `user_ids`, `limit` with `query`,
    /// at most 100 ids, nonce at most 32 bytes.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.query, &self.user_ids) {
            (Some(_), Some(_)) => return Err("use either query or user_ids, not both".into()),
            (None, None) => return Err("one of query or user_ids is required".into()),
            (Some(_), None) if self.limit.is_none() => {
                return Err("limit is required with query".into());
            }
            _ => {}
        }
        if self
            .user_ids
            .as_ref()
            .is_some_and(|ids| ids.len() > MAX_MEMBER_USER_IDS)
        {
            return Err(format!(
                "user_ids holds more than {MAX_MEMBER_USER_IDS} ids"
            ));
        }
        if self
            .nonce
            .as_ref()
            .is_some_and(|n| n.len() > MAX_NONCE_BYTES)
        {
            return Err(format!("nonce is longer than {MAX_NONCE_BYTES} bytes"));
        }
        Ok(())
    }

    /// Whether this asks for the full member list (`query: ""`, `limit: 0`), which Discord
    /// limits to once per guild per 30 s.
    #[must_use]
    pub fn is_full_list(&self) -> bool {
        self.query.as_deref() == Some("") && self.limit == Some(0)
    }
}

/// op 31: soundboard sounds of some guilds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSoundboardSounds {
    /// Guild ids.
    pub guild_ids: Vec<Snowflake>,
}

/// op 43: channel status information of a guild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestChannelInfo {
    /// Guild id.
    pub guild_id: Snowflake,
    /// Fields to return: `status`, `voice_start_time`.
    pub fields: Vec<String>,
}

/// The header fields of a GUILD_MEMBERS_CHUNK dispatch a manager needs to collect chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuildMembersChunkHeader {
    /// Guild id.
    pub guild_id: Snowflake,
    /// Index of this chunk.
    pub chunk_index: u32,
    /// Number of chunks.
    pub chunk_count: u32,
    /// The request's nonce, if it had a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// `meta` of a RATE_LIMITED dispatch for op 8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitedMeta {
    /// Guild id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guild_id: Option<Snowflake>,
    /// The request's nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// The RATE_LIMITED dispatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimited {
    /// The opcode that was limited.
    pub opcode: u8,
    /// Seconds to wait.
    pub retry_after: f64,
    /// Request details.
    pub meta: RateLimitedMeta,
}

/// `session_start_limit` of `/gateway/bot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStartLimit {
    /// Session starts allowed per window.
    pub total: u32,
    /// Session starts left.
    pub remaining: u32,
    /// Milliseconds until the window resets.
    pub reset_after: u64,
    /// IDENTIFY requests allowed per 5 s.
    pub max_concurrency: u32,
}

/// `GET /gateway/bot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayBot {
    /// Gateway URL.
    pub url: String,
    /// Recommended shard count.
    pub shards: u32,
    /// Identify limits.
    pub session_start_limit: SessionStartLimit,
}

/// `GET /gateway`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    /// Gateway URL.
    pub url: String,
}

#[cfg(test)]
mod tests {
    use super::{RequestGuildMembers, Snowflake};

    fn request(query: Option<&str>, limit: Option<u32>, ids: Option<usize>) -> RequestGuildMembers {
        RequestGuildMembers {
            guild_id: Snowflake(1),
            query: query.map(str::to_owned),
            limit,
            presences: false,
            user_ids: ids.map(|n| (0..n as u64).map(Snowflake).collect()),
            nonce: None,
        }
    }

    #[test]
    fn member_request_rules() {
        assert!(request(Some(""), Some(0), None).validate().is_ok());
        assert!(request(Some(""), Some(0), None).is_full_list());
        assert!(!request(Some("a"), Some(0), None).is_full_list());
        assert!(request(Some("a"), None, None).validate().is_err());
        assert!(request(None, None, None).validate().is_err());
        assert!(request(Some("a"), Some(1), Some(1)).validate().is_err());
        assert!(request(None, None, Some(100)).validate().is_ok());
        assert!(request(None, None, Some(101)).validate().is_err());
        let mut long_nonce = request(None, None, Some(1));
        long_nonce.nonce = Some("n".repeat(33));
        assert!(long_nonce.validate().is_err());
    }
}
