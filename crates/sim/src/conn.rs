//! One gateway connection as the server sees it: client frames, timers and faults in,
//! frames and closes out. No sockets here; `server.rs` moves the bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::json;
use shardkeeper_protocol::payload::{
    Identify, PresenceUpdate, RequestChannelInfo, RequestGuildMembers, RequestSoundboardSounds,
    Resume, VoiceStateUpdate,
};
use shardkeeper_protocol::{CloseCode, Envelope, OpCode};

use crate::events::{self, MemberQuery};
use crate::fault::Fault;
use crate::rules::{self, Reject, SendWindow, bare_token};
use crate::stats::ViolationKind;
use crate::world::{IdentifyRefusal, ResumeOutcome, SharedSession, World, lock};

/// Most dispatches generated in one timer tick, so a slow reader cannot make a tick
/// unbounded.
const MAX_EVENTS_PER_TICK: u64 = 256;

/// What the server does next on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    /// Send a JSON frame.
    Frame(Arc<str>),
    /// Send a close frame with this code, then wait for the client to end the stream.
    Close(u16),
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// Which URL the connection was opened at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Gateway,
    Resume,
}

struct Authed {
    session: SharedSession,
    shard: u32,
    total: u32,
}

/// Server-side state of one connection.
pub(crate) struct Conn {
    id: u64,
    world: Arc<World>,
    entry: Entry,
    version: Result<(), Reject>,
    last_heartbeat: Instant,
    window: SendWindow,
    auth: Option<Authed>,
    /// A newer connection took this one's shard or session (reported once).
    superseded: bool,
    /// The sequence a refused RESUME on this connection claimed: heartbeats the client
    /// sent before it read the op 9 carry it.
    refused_resume_seq: u64,
    zombie: bool,
    closed: bool,
    events_since: Instant,
    events_sent: u64,
    chaos: Option<(SmallRng, Instant)>,
}

impl Conn {
    /// A new connection; returns it and its first frames (HELLO).
    pub(crate) fn open(
        world: Arc<World>,
        entry: Entry,
        version: Result<(), Reject>,
        now: Instant,
    ) -> (Self, Vec<Out>) {
        let id = world.next_conn_id();
        let interval =
            u64::try_from(world.config.heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
        let hello: Arc<str> =
            format!(r#"{{"op":10,"d":{{"heartbeat_interval":{interval}}},"s":null,"t":null}}"#)
                .into();
        let conn = Self {
            id,
            world,
            entry,
            version,
            last_heartbeat: now,
            window: SendWindow::default(),
            auth: None,
            superseded: false,
            refused_resume_seq: 0,
            zombie: false,
            closed: false,
            events_since: now,
            events_sent: 0,
            chaos: None,
        };
        let first = if conn.world.take_silent() {
            Vec::new()
        } else {
            vec![Out::Frame(hello)]
        };
        (conn, first)
    }

    fn shard(&self) -> Option<u32> {
        self.auth.as_ref().map(|a| a.shard)
    }

    /// When [`on_tick`](Self::on_tick) must run next.
    pub(crate) fn next_deadline(&self) -> Instant {
        let mut next =
            rules::heartbeat_deadline(self.last_heartbeat, self.world.config.heartbeat_interval);
        if let Some(at) = self.next_event_at() {
            next = next.min(at);
        }
        if let Some((_, at)) = &self.chaos {
            next = next.min(*at);
        }
        next
    }

    fn next_event_at(&self) -> Option<Instant> {
        let rate = self.world.events_per_sec();
        if self.auth.is_none() || self.zombie || self.closed || rate <= 0.0 {
            return None;
        }
        let due = Duration::from_secs_f64((self.events_sent + 1) as f64 / rate);
        Some(self.events_since + due)
    }

    fn reject(&mut self, reject: Reject) -> Vec<Out> {
        self.world
            .violation(reject.kind, self.shard(), reject.detail);
        match reject.close {
            Some(code) => self.close(code),
            None => vec![Out::Frame(r#"{"op":9,"d":false}"#.into())],
        }
    }

    fn close(&mut self, code: u16) -> Vec<Out> {
        self.closed = true;
        let code_ends_session = !CloseCode(code).can_resume();
        if let Some(auth) = &self.auth
            && code_ends_session
        {
            lock(&auth.session).invalidated = true;
        }
        vec![Out::Close(code)]
    }

    /// Handles one client frame.
    pub(crate) fn on_frame(&mut self, now: Instant, bytes: &[u8]) -> Vec<Out> {
        if self.closed {
            return Vec::new();
        }
        self.check_superseded();
        if let Err(reject) = rules::check_size(bytes.len()).and_then(|()| self.window.record(now)) {
            return self.reject(reject);
        }
        let env = match Envelope::parse(bytes) {
            Ok(env) => env,
            Err(err) => {
                return self.reject(Reject::close(
                    ViolationKind::InvalidJson,
                    4002,
                    err.to_string(),
                ));
            }
        };
        if let Err(reject) = rules::check_client_opcode(env.op) {
            return self.reject(reject);
        }
        match env.op {
            OpCode::Heartbeat => self.on_heartbeat(now, &env),
            OpCode::Identify => self.on_identify(now, &env),
            OpCode::Resume => self.on_resume(now, &env),
            _ if self.auth.is_none() => self.reject(Reject::close(
                ViolationKind::PayloadBeforeIdentify,
                4003,
                format!("op {} before IDENTIFY", env.op.code()),
            )),
            op => self.on_request(now, op, &env),
        }
    }

    fn on_heartbeat(&mut self, now: Instant, env: &Envelope<'_>) -> Vec<Out> {
        let seq = match env.body::<Option<u64>>() {
            Ok(seq) => seq,
            Err(err) => {
                return self.reject(Reject::close(
                    ViolationKind::InvalidPayload,
                    4001,
                    err.to_string(),
                ));
            }
        };
        self.world
            .heartbeats
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.last_heartbeat = now;
        let last = self
            .auth
            .as_ref()
            .map_or(self.refused_resume_seq, |a| lock(&a.session).last_seq());
        if let Some(seq) = seq.filter(|&s| s > last) {
            self.world.violation(
                ViolationKind::HeartbeatSeqAhead,
                self.shard(),
                format!("heartbeat d={seq}, last sequence sent {last}"),
            );
        }
        if self.zombie {
            return Vec::new();
        }
        vec![Out::Frame(r#"{"op":11,"d":null,"s":null,"t":null}"#.into())]
    }

    fn on_identify(&mut self, now: Instant, env: &Envelope<'_>) -> Vec<Out> {
        if self.auth.is_some() {
            return self.reject(Reject::close(
                ViolationKind::AlreadyAuthenticated,
                4005,
                "second IDENTIFY",
            ));
        }
        if let Err(reject) = self.version.clone() {
            return self.reject(reject);
        }
        let identify: Identify = match env.body() {
            Ok(identify) => identify,
            Err(err) if err.to_string().contains("shard id") => {
                return self.reject(rules::invalid_shard(err.to_string()));
            }
            Err(err) => {
                return self.reject(Reject::close(
                    ViolationKind::InvalidPayload,
                    4001,
                    err.to_string(),
                ));
            }
        };
        let (shard, total) = match rules::check_identify(&identify, &self.world.config) {
            Ok(shard) => shard,
            Err(reject) => return self.reject(reject),
        };
        if self.entry == Entry::Resume {
            self.world.violation(
                ViolationKind::IdentifyOnResumeUrl,
                Some(shard),
                "IDENTIFY sent to a resume URL".into(),
            );
        }
        let session = match self.world.identify(
            now,
            self.id,
            shard,
            total,
            bare_token(identify.token.expose()),
        ) {
            Ok(session) => session,
            Err(IdentifyRefusal::Window { detail }) => {
                return self.reject(Reject {
                    kind: ViolationKind::IdentifyWindow,
                    close: None,
                    detail,
                });
            }
            Err(IdentifyRefusal::Budget) => {
                return self.reject(Reject::close(
                    ViolationKind::BudgetExhausted,
                    4004,
                    "no session starts left",
                ));
            }
        };
        let mut out = Vec::new();
        {
            let mut record = lock(&session);
            let ready = events::ready(&record, &self.world.resume_url());
            out.push(Out::Frame(record.dispatch("READY", &ready)));
            for guild in record.guilds.clone() {
                let body = events::guild_create(guild, self.world.config.members_per_guild);
                out.push(Out::Frame(record.dispatch("GUILD_CREATE", &body)));
            }
        }
        self.authenticated(now, session, shard, total);
        self.count_events(&out);
        out
    }

    /// A payload from a connection whose shard or session a newer connection took means
    /// two processes ran the shard at once.
    fn check_superseded(&mut self) {
        let Some(auth) = &self.auth else {
            return;
        };
        if self.superseded {
            return;
        }
        if let Some(kind) = self.world.superseded(auth.shard, self.id, &auth.session) {
            self.superseded = true;
            self.world.violation(
                kind,
                Some(auth.shard),
                format!(
                    "connection {} still talking after a newer one took over",
                    self.id
                ),
            );
        }
    }

    fn authenticated(&mut self, now: Instant, session: SharedSession, shard: u32, total: u32) {
        self.world.serve(shard, self.id);
        self.auth = Some(Authed {
            session,
            shard,
            total,
        });
        self.events_since = now;
        self.events_sent = 0;
        if let Some(chaos) = &self.world.config.chaos {
            let mut rng = SmallRng::seed_from_u64(
                self.world.config.seed ^ self.id.rotate_left(17) ^ u64::from(shard),
            );
            if let Some(delay) = chaos.next_delay(&mut rng) {
                self.chaos = Some((rng, now + delay));
            }
        }
    }

    fn on_resume(&mut self, now: Instant, env: &Envelope<'_>) -> Vec<Out> {
        if self.auth.is_some() {
            return self.reject(Reject::close(
                ViolationKind::AlreadyAuthenticated,
                4005,
                "RESUME on an authenticated connection",
            ));
        }
        if let Err(reject) = self.version.clone() {
            return self.reject(reject);
        }
        let resume: Resume = match env.body() {
            Ok(resume) => resume,
            Err(err) => {
                return self.reject(Reject::close(
                    ViolationKind::InvalidPayload,
                    4001,
                    err.to_string(),
                ));
            }
        };
        if self.entry == Entry::Gateway {
            self.world.violation(
                ViolationKind::ResumeWrongUrl,
                None,
                format!(
                    "RESUME of {} not sent to resume_gateway_url",
                    resume.session_id
                ),
            );
        }
        match self.world.resume(
            now,
            self.id,
            &resume.session_id,
            bare_token(resume.token.expose()),
            resume.seq,
        ) {
            ResumeOutcome::Resumed { session, replay } => {
                let (shard, total) = {
                    let record = lock(&session);
                    (record.shard, record.total)
                };
                let mut out: Vec<Out> = replay.into_iter().map(Out::Frame).collect();
                out.push(Out::Frame(lock(&session).dispatch("RESUMED", "{}")));
                self.authenticated(now, session, shard, total);
                self.count_events(&out);
                out
            }
            ResumeOutcome::Invalid(detail) => {
                tracing::info!(conn = self.id, %detail, "resume refused");
                self.refused_resume_seq = resume.seq;
                vec![Out::Frame(r#"{"op":9,"d":false}"#.into())]
            }
            ResumeOutcome::SeqAhead { last, claimed } => self.reject(Reject::close(
                ViolationKind::ResumeSeqAhead,
                4007,
                format!("RESUME seq {claimed}, last sequence sent {last}"),
            )),
        }
    }

    fn count_events(&self, out: &[Out]) {
        let frames = out.iter().filter(|o| matches!(o, Out::Frame(_))).count();
        self.world
            .events_sent
            .fetch_add(frames as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn on_request(&mut self, now: Instant, op: OpCode, env: &Envelope<'_>) -> Vec<Out> {
        let result = match op {
            OpCode::PresenceUpdate => body::<PresenceUpdate>(env).map(|p| self.on_presence(&p)),
            OpCode::VoiceStateUpdate => body::<VoiceStateUpdate>(env).map(|v| self.on_voice(&v)),
            OpCode::RequestGuildMembers => body::<RequestGuildMembers>(env)
                .and_then(|r| r.validate().map(|()| r))
                .map(|r| self.on_members(now, &r)),
            OpCode::RequestSoundboardSounds => {
                body::<RequestSoundboardSounds>(env).map(|r| self.on_soundboard(&r))
            }
            OpCode::RequestChannelInfo => {
                body::<RequestChannelInfo>(env).map(|r| self.on_channel_info(&r))
            }
            _ => Ok(Vec::new()),
        };
        let out = result.unwrap_or_else(|err| {
            self.reject(Reject::close(
                ViolationKind::InvalidPayload,
                4001,
                format!("op {}: {err}", op.code()),
            ))
        });
        self.count_events(&out);
        out
    }

    /// A dispatch on the connection's session (requests only arrive once authenticated).
    fn dispatch(&self, t: &str, d: &str) -> Option<Out> {
        let auth = self.auth.as_ref()?;
        Some(Out::Frame(lock(&auth.session).dispatch(t, d)))
    }

    fn on_presence(&self, presence: &PresenceUpdate) -> Vec<Out> {
        if let Some(shard) = self.shard() {
            self.world
                .presence(shard, serde_json::to_value(presence).unwrap_or_default());
        }
        Vec::new()
    }

    fn owns_guild(&self, guild: u64, what: &str) -> bool {
        let Some(auth) = &self.auth else { return false };
        let owner = (guild >> 22) % u64::from(auth.total.max(1));
        if owner != u64::from(auth.shard) {
            self.world.violation(
                ViolationKind::GuildNotOnShard,
                Some(auth.shard),
                format!("{what} for guild {guild}, which shard {owner} owns"),
            );
            return false;
        }
        true
    }

    fn on_voice(&self, voice: &VoiceStateUpdate) -> Vec<Out> {
        if !self.owns_guild(voice.guild_id.0, "op 4") {
            return Vec::new();
        }
        let d = json!({
            "guild_id": voice.guild_id, "channel_id": voice.channel_id,
            "user_id": "800000000000000001", "session_id": "voice-session",
            "self_mute": voice.self_mute, "self_deaf": voice.self_deaf,
            "deaf": false, "mute": false, "self_video": false, "suppress": false,
            "request_to_speak_timestamp": null,
        });
        self.dispatch("VOICE_STATE_UPDATE", &d.to_string())
            .into_iter()
            .collect()
    }

    fn on_members(&self, now: Instant, request: &RequestGuildMembers) -> Vec<Out> {
        let guild = request.guild_id.0;
        if !self.owns_guild(guild, "op 8") {
            return Vec::new();
        }
        if request.is_full_list()
            && let Err(retry_after) = self.world.member_request(now, guild)
        {
            let d = json!({"opcode": 8, "retry_after": retry_after, "meta": {"guild_id": request.guild_id, "nonce": request.nonce}});
            return self
                .dispatch("RATE_LIMITED", &d.to_string())
                .into_iter()
                .collect();
        }
        let ids: Vec<u64> = request.user_ids.iter().flatten().map(|id| id.0).collect();
        let query = match &request.query {
            Some(query) => MemberQuery::Prefix {
                query,
                limit: request.limit.unwrap_or(0),
            },
            None => MemberQuery::Ids(&ids),
        };
        let nonce = request.nonce.as_deref().filter(|n| n.len() <= 32);
        events::member_chunks(guild, self.world.config.members_per_guild, &query, nonce)
            .iter()
            .filter_map(|d| self.dispatch("GUILD_MEMBERS_CHUNK", d))
            .collect()
    }

    fn on_soundboard(&self, request: &RequestSoundboardSounds) -> Vec<Out> {
        request
            .guild_ids
            .iter()
            .filter_map(|guild| {
                let d = json!({"guild_id": guild, "soundboard_sounds": []});
                self.dispatch("SOUNDBOARD_SOUNDS", &d.to_string())
            })
            .collect()
    }

    fn on_channel_info(&self, request: &RequestChannelInfo) -> Vec<Out> {
        let d = json!({"guild_id": request.guild_id, "channels": []});
        self.dispatch("CHANNEL_INFO", &d.to_string())
            .into_iter()
            .collect()
    }

    /// Heartbeat deadline, generated dispatches and chaos.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Vec<Out> {
        if self.closed {
            return Vec::new();
        }
        let interval = self.world.config.heartbeat_interval;
        if now >= rules::heartbeat_deadline(self.last_heartbeat, interval) {
            let silent = now.saturating_duration_since(self.last_heartbeat);
            return self.reject(Reject::close(
                ViolationKind::MissedHeartbeat,
                4009,
                format!("no heartbeat for {silent:?} (interval {interval:?})"),
            ));
        }
        let mut out = self.generate_events(now);
        if let Some((rng, at)) = &mut self.chaos
            && now >= *at
            && !self.world.chaos_paused()
        {
            let chaos = self.world.config.chaos.as_ref();
            let fault = chaos.and_then(|c| c.pick(rng));
            match chaos.and_then(|c| c.next_delay(rng)) {
                Some(delay) => *at = now + delay,
                None => self.chaos = None,
            }
            if let Some(fault) = fault {
                out.extend(self.on_fault(&fault));
            }
        }
        out
    }

    fn generate_events(&mut self, now: Instant) -> Vec<Out> {
        let rate = self.world.events_per_sec();
        let Some(auth) = self.auth.as_ref().filter(|_| !self.zombie && rate > 0.0) else {
            return Vec::new();
        };
        // invariant: elapsed time and rate are both positive
        let owed = (now
            .saturating_duration_since(self.events_since)
            .as_secs_f64()
            * rate)
            .max(0.0) as u64;
        let count = owed
            .saturating_sub(self.events_sent)
            .min(MAX_EVENTS_PER_TICK);
        if count == 0 {
            return Vec::new();
        }
        let mut record = lock(&auth.session);
        // The session was resumed on a newer connection: it dispatches there now.
        if record.owner != Some(self.id) {
            return Vec::new();
        }
        let guilds = record.guilds.clone();
        let body_bytes = self.world.config.event_body_bytes;
        let out: Vec<Out> = (0..count)
            .map(|i| {
                let n = self.events_sent + i;
                let guild = guilds
                    .get((n as usize) % guilds.len().max(1))
                    .copied()
                    .unwrap_or(0);
                Out::Frame(record.dispatch(
                    "MESSAGE_CREATE",
                    &events::message_create(guild, n, body_bytes),
                ))
            })
            .collect();
        drop(record);
        self.events_sent += count;
        if owed > self.events_sent + MAX_EVENTS_PER_TICK * 4 {
            // The reader is far behind; do not build an ever-growing backlog.
            self.events_sent = owed;
        }
        self.count_events(&out);
        out
    }

    /// Applies an injected fault.
    pub(crate) fn on_fault(&mut self, fault: &Fault) -> Vec<Out> {
        if self.closed {
            return Vec::new();
        }
        self.world.fault_applied(fault);
        match fault {
            Fault::Drop => {
                self.closed = true;
                vec![Out::Drop]
            }
            Fault::Close { code } => self.close(*code),
            Fault::Reconnect => vec![Out::Frame(r#"{"op":7,"d":null}"#.into())],
            Fault::InvalidSession { resumable } => {
                if !resumable && let Some(auth) = self.auth.take() {
                    // The session is over: nothing more is dispatched on it, and the
                    // client may IDENTIFY again on this connection.
                    lock(&auth.session).invalidated = true;
                    self.world.detach(Instant::now(), self.id, &auth.session);
                }
                vec![Out::Frame(format!(r#"{{"op":9,"d":{resumable}}}"#).into())]
            }
            Fault::Zombie => {
                self.zombie = true;
                Vec::new()
            }
            Fault::Garbage => vec![Out::Frame("\u{1}}not json{".into())],
            Fault::HeartbeatRequest => vec![Out::Frame(r#"{"op":1,"d":null}"#.into())],
        }
    }

    /// The shard this connection serves, once authenticated.
    pub(crate) fn served_shard(&self) -> Option<u32> {
        self.shard()
    }

    /// The connection is gone: release its session for a later RESUME.
    pub(crate) fn finish(&mut self, now: Instant) {
        self.closed = true;
        if let Some(auth) = &self.auth {
            self.world.detach(now, self.id, &auth.session);
        }
    }
}

fn body<'a, T: serde::Deserialize<'a>>(env: &Envelope<'a>) -> Result<T, String> {
    env.body().map_err(|err| err.to_string())
}
