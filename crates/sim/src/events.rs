//! Dispatch bodies the simulator generates, and the per-session replay buffer.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

/// High bits of generated snowflakes, so ids look like Discord's (~1e17).
const SNOWFLAKE_BASE: u64 = 24_000_000_000;
/// Members are numbered from this user id.
const FIRST_MEMBER_ID: u64 = 900_000_000_000_000_000;
/// Padding of MESSAGE_CREATE bodies, appended a run at a time.
const RUN: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
/// Discord's chunk size for GUILD_MEMBERS_CHUNK.
const MEMBERS_PER_CHUNK: usize = 1000;

/// `count` guild ids that Discord's formula routes to `shard` of `total`.
#[must_use]
pub fn guild_ids(shard: u32, total: u32, count: u32) -> Vec<u64> {
    let total = u64::from(total.max(1));
    let base = SNOWFLAKE_BASE / total * total;
    (0..u64::from(count))
        .map(|j| ((base + j * total + u64::from(shard)) << 22) | (j + 1))
        .collect()
}

/// A session's sequence counter and the dispatches kept for RESUME.
#[derive(Debug)]
pub(crate) struct SessionRecord {
    pub(crate) id: String,
    /// Order of creation.
    pub(crate) index: u64,
    pub(crate) shard: u32,
    pub(crate) total: u32,
    pub(crate) guilds: Vec<u64>,
    pub(crate) token: String,
    seq: u64,
    buffer: VecDeque<(u64, Arc<str>)>,
    capacity: usize,
    /// The connection serving the session.
    pub(crate) owner: Option<u64>,
    /// When the last owner went away.
    pub(crate) detached_at: Option<Instant>,
    /// Ended by op 9 false, a session-ending close or a missed heartbeat.
    pub(crate) invalidated: bool,
}

impl SessionRecord {
    pub(crate) fn new(
        id: String,
        (shard, total): (u32, u32),
        token: String,
        capacity: usize,
        guilds_per_shard: u32,
    ) -> Self {
        Self {
            id,
            index: 0,
            shard,
            total,
            guilds: guild_ids(shard, total, guilds_per_shard),
            token,
            seq: 0,
            buffer: VecDeque::new(),
            capacity: capacity.max(1),
            owner: None,
            detached_at: None,
            invalidated: false,
        }
    }

    /// Assigns the next sequence to a dispatch, keeps it for replay and returns the frame.
    pub(crate) fn dispatch(&mut self, t: &str, d: &str) -> Arc<str> {
        self.seq += 1;
        let frame: Arc<str> = format!(r#"{{"op":0,"s":{},"t":"{t}","d":{d}}}"#, self.seq).into();
        if self.buffer.len() == self.capacity {
            self.buffer.pop_front();
        }
        self.buffer.push_back((self.seq, Arc::clone(&frame)));
        frame
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Every kept dispatch after `seq`, or `None` when some of them were already dropped.
    pub(crate) fn replay_after(&self, seq: u64) -> Option<Vec<Arc<str>>> {
        let oldest = self.buffer.front().map_or(self.seq + 1, |(s, _)| *s);
        if seq + 1 < oldest {
            return None;
        }
        Some(
            self.buffer
                .iter()
                .filter(|(s, _)| *s > seq)
                .map(|(_, frame)| Arc::clone(frame))
                .collect(),
        )
    }
}

/// READY's `d`.
pub(crate) fn ready(session: &SessionRecord, resume_url: &str) -> String {
    let guilds: Vec<_> = session
        .guilds
        .iter()
        .map(|id| json!({"id": id.to_string(), "unavailable": true}))
        .collect();
    json!({
        "v": 10,
        "user": {
            "id": "800000000000000001", "username": "shardkeeper-sim", "discriminator": "0",
            "global_name": null, "avatar": null, "bot": true, "verified": true,
            "mfa_enabled": false, "flags": 0,
        },
        "guilds": guilds,
        "session_id": session.id,
        "resume_gateway_url": resume_url,
        "shard": [session.shard, session.total],
        "application": {"id": "800000000000000001", "flags": 0},
    })
    .to_string()
}

/// GUILD_CREATE's `d` for a small guild, with every field Discord always sends (the
/// guild's settings, its `@everyone` role, empty emoji and sticker lists…).
pub(crate) fn guild_create(guild: u64, members: u32) -> String {
    json!({
        "id": guild.to_string(),
        "name": format!("guild {guild}"),
        "owner_id": FIRST_MEMBER_ID.to_string(),
        "afk_timeout": 300, "default_message_notifications": 1, "explicit_content_filter": 0,
        "mfa_level": 0, "nsfw_level": 0, "premium_tier": 0, "verification_level": 1,
        "premium_progress_bar_enabled": false, "system_channel_flags": 0,
        "preferred_locale": "en-US", "features": [], "emojis": [], "stickers": [],
        "roles": [{
            "id": guild.to_string(), "name": "@everyone", "permissions": "1071698660929",
            "position": 0, "color": 0,
            "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
            "hoist": false, "managed": false, "mentionable": false, "flags": 0,
        }],
        "unavailable": false,
        "large": members > 250,
        "member_count": members,
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "channels": [{"id": (guild + 1).to_string(), "type": 0, "name": "general"}],
        "members": [], "voice_states": [], "presences": [], "threads": [],
        "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
    })
    .to_string()
}

/// MESSAGE_CREATE's `d`, padded to about `body_bytes`: every field Discord always sends
/// for a guild message by a user (attachments, embeds, mentions, timestamps, the author's
/// discriminator…), so a client that deserializes the full message type accepts it.
pub(crate) fn message_create(guild: u64, n: u64, body_bytes: usize) -> String {
    let mut d = String::with_capacity(body_bytes + 64);
    let sent = unix_micros();
    let _ = write!(d, r#"{{"type":0,"tts":false,"timestamp":""#);
    write_timestamp(&mut d, sent);
    let _ = write!(
        d,
        r#"","pinned":false,"nonce":"{sent}","mentions":[],"mention_roles":[],"mention_everyone":false,"id":"{}","flags":0,"embeds":[],"edited_timestamp":null,"components":[],"channel_id":"{}","author":{{"username":"member-{}","public_flags":0,"id":"{}","global_name":null,"discriminator":"0","bot":false,"avatar":null}},"attachments":[],"guild_id":"{guild}","content":""#,
        (guild << 1) + n,
        guild + 1,
        n % 1000,
        FIRST_MEMBER_ID + n % 1000,
    );
    let pad = body_bytes.saturating_sub(d.len() + 2);
    // Whole runs at a time: the simulator writes hundreds of thousands of these a second.
    d.reserve(pad + 2);
    for _ in 0..pad / RUN.len() {
        d.push_str(RUN);
    }
    d.push_str(&RUN[..pad % RUN.len()]);
    d.push_str(r#""}"#);
    d
}

/// Appends `micros` after the Unix epoch as Discord writes timestamps (ISO 8601, UTC):
/// `2025-12-02T06:35:37.123456+00:00`.
fn write_timestamp(out: &mut String, micros: u128) {
    let seconds = micros / 1_000_000;
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let of_day = seconds % 86_400;
    // Civil date from days since 1970-01-01, in 400-year eras starting on March 1st.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60,
        micros % 1_000_000
    );
}

/// Wall-clock microseconds, carried in MESSAGE_CREATE's `nonce` so a reader can measure
/// how long a dispatch took to reach it.
fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

fn member(n: u64) -> serde_json::Value {
    json!({
        "user": {"id": (FIRST_MEMBER_ID + n).to_string(), "username": format!("member-{n}")},
        "roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false,
    })
}

/// What an op 8 asks for.
pub(crate) enum MemberQuery<'a> {
    Prefix { query: &'a str, limit: u32 },
    Ids(&'a [u64]),
}

/// The GUILD_MEMBERS_CHUNK bodies answering an op 8.
pub(crate) fn member_chunks(
    guild: u64,
    members: u32,
    query: &MemberQuery<'_>,
    nonce: Option<&str>,
) -> Vec<String> {
    let all = 0..u64::from(members);
    let (found, not_found): (Vec<u64>, Vec<u64>) = match query {
        MemberQuery::Prefix { query, limit } => {
            let cap = if *limit == 0 {
                usize::MAX
            } else {
                *limit as usize
            };
            let found = all
                .filter(|n| format!("member-{n}").starts_with(query))
                .take(cap)
                .collect();
            (found, Vec::new())
        }
        MemberQuery::Ids(ids) => ids
            .iter()
            .map(|id| id.wrapping_sub(FIRST_MEMBER_ID))
            .partition(|n| *n < u64::from(members)),
    };
    let chunks: Vec<&[u64]> = if found.is_empty() {
        vec![&[]]
    } else {
        found.chunks(MEMBERS_PER_CHUNK).collect()
    };
    let count = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, part)| {
            let mut d = json!({
                "guild_id": guild.to_string(),
                "members": part.iter().map(|&n| member(n)).collect::<Vec<_>>(),
                "chunk_index": index,
                "chunk_count": count,
            });
            if index == 0 && !not_found.is_empty() {
                d["not_found"] = json!(
                    not_found
                        .iter()
                        .map(|n| n.wrapping_add(FIRST_MEMBER_ID).to_string())
                        .collect::<Vec<_>>()
                );
            }
            if let Some(nonce) = nonce {
                d["nonce"] = json!(nonce);
            }
            d.to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use shardkeeper_protocol::shard_for_guild;

    use super::{
        MemberQuery, SessionRecord, guild_ids, member_chunks, message_create, write_timestamp,
    };

    #[test]
    fn generated_guilds_route_to_their_shard() {
        for total in [1u32, 3, 16, 1000] {
            for shard in [0, total / 2, total - 1] {
                for id in guild_ids(shard, total, 5) {
                    assert_eq!(
                        shard_for_guild(id, NonZeroU32::new(total).expect("non-zero")),
                        shard
                    );
                }
            }
        }
    }

    #[test]
    fn replay_buffer_keeps_the_tail() {
        let mut session = SessionRecord::new("s".into(), (0, 1), "t".into(), 3, 0);
        for _ in 0..5 {
            session.dispatch("X", "{}");
        }
        assert_eq!(session.last_seq(), 5);
        assert_eq!(session.replay_after(5).map(|v| v.len()), Some(0));
        assert_eq!(session.replay_after(2).map(|v| v.len()), Some(3));
        assert!(session.replay_after(1).is_none(), "seq 2 was dropped");
        assert!(session.replay_after(4).expect("kept")[0].contains(r#""s":5"#));
    }

    #[test]
    fn timestamps_are_iso_8601_in_utc() {
        for (micros, expected) in [
            (0, "1970-01-01T00:00:00.000000+00:00"),
            (951_782_400_000_001, "2000-02-29T00:00:00.000001+00:00"),
            (1_764_657_337_123_456, "2025-12-02T06:35:37.123456+00:00"),
            (4_107_542_399_999_999, "2100-02-28T23:59:59.999999+00:00"),
        ] {
            let mut out = String::new();
            write_timestamp(&mut out, micros);
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn message_bodies_have_the_requested_size_and_parse() {
        for size in [512, 2_000, 4_099] {
            let body = message_create(123 << 22, 7, size);
            assert!(
                (size - 12..=size + 18).contains(&body.len()),
                "{size}: {}",
                body.len()
            );
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert_eq!(v["guild_id"], (123u64 << 22).to_string());
            let content = v["content"].as_str().expect("content");
            assert!(content.bytes().all(|b| b == b'x'), "{content}");
            for field in [
                "attachments",
                "embeds",
                "mentions",
                "mention_roles",
                "mention_everyone",
                "pinned",
                "timestamp",
                "edited_timestamp",
                "tts",
                "type",
                "id",
                "channel_id",
            ] {
                assert!(v.get(field).is_some(), "{field} missing");
            }
            assert_eq!(v["author"]["discriminator"], "0");
        }
    }

    #[test]
    fn member_chunks_split_at_a_thousand_and_echo_the_nonce() {
        let chunks = member_chunks(
            1,
            1500,
            &MemberQuery::Prefix {
                query: "",
                limit: 0,
            },
            Some("n1"),
        );
        assert_eq!(chunks.len(), 2);
        let first: serde_json::Value = serde_json::from_str(&chunks[0]).expect("json");
        assert_eq!(first["members"].as_array().map(Vec::len), Some(1000));
        assert_eq!(
            (first["chunk_count"].as_u64(), first["nonce"].as_str()),
            (Some(2), Some("n1"))
        );
        let some = member_chunks(
            1,
            1500,
            &MemberQuery::Prefix {
                query: "member-149",
                limit: 5,
            },
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&some[0]).expect("json");
        assert_eq!(v["members"].as_array().map(Vec::len), Some(5));
    }
}
