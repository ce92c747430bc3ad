//! Handling of what the server sends.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use rand::Rng;
use shardkeeper_protocol::payload::{
    Hello, Identify, IdentifyProperties, PresenceUpdate, Ready, Resume, UnavailableGuild,
};
use shardkeeper_protocol::{Envelope, EnvelopeError, JsonError, OpCode, Outbound, RawJson};

use super::{Presence, ShardSession};
use crate::heartbeat::Heartbeat;
use crate::state::{Link, Pending, Permit, State, Target};
use crate::{Action, Dispatch, Notice, ResumeInfo};

/// Shortest heartbeat interval accepted from HELLO, so a bad value cannot spin the timer.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// Largest decompression buffer a thread keeps between documents.
const DOCUMENT_KEEP: usize = 1024 * 1024;

/// Buffers shared by every session on a thread, instead of one set per connection.
#[derive(Default)]
struct Documents {
    /// Where a compressed message is decompressed; each document is taken out of it
    /// before the next is decoded.
    scratch: Vec<u8>,
    /// Where decompressed documents are kept while their dispatches live; the memory is
    /// reused once they are all dropped.
    arena: BytesMut,
}

thread_local! {
    static DOCUMENTS: RefCell<Documents> = RefCell::default();
}

/// A decoded server payload, owning what outlives the frame buffer.
enum Inbound {
    Dispatch(Dispatch),
    Hello(Hello),
    HeartbeatRequest,
    HeartbeatAck,
    Reconnect,
    InvalidSession(bool),
    Unexpected(u8),
    Garbage(String),
}

impl Inbound {
    fn parse(document: Bytes) -> Self {
        let text = match ByteString::try_from(document) {
            Ok(text) => text,
            Err(err) => {
                return Self::Garbage(EnvelopeError::from(JsonError::from(err)).to_string());
            }
        };
        let env = match Envelope::parse_str(&text) {
            Ok(env) => env,
            Err(err) => return Self::Garbage(err.to_string()),
        };
        match env.op {
            OpCode::Dispatch => match (env.s, env.t.as_deref()) {
                (Some(seq), Some(t)) => {
                    let d = env.d.map_or_else(RawJson::null, |d| d.share(&text));
                    Self::Dispatch(Dispatch {
                        seq,
                        t: t.into(),
                        d,
                    })
                }
                _ => Self::Garbage("dispatch without s or t".into()),
            },
            OpCode::Hello => env
                .body::<Hello>()
                .map_or_else(|err| Self::Garbage(err.to_string()), Self::Hello),
            OpCode::Heartbeat => Self::HeartbeatRequest,
            OpCode::HeartbeatAck => Self::HeartbeatAck,
            OpCode::Reconnect => Self::Reconnect,
            OpCode::InvalidSession => Self::InvalidSession(env.body::<bool>().unwrap_or(false)),
            other => Self::Unexpected(other.code()),
        }
    }
}

impl ShardSession {
    pub(super) fn on_opened(&mut self, now: Instant) {
        match std::mem::take(&mut self.state) {
            State::Connecting { target, .. } => {
                self.state = State::AwaitingHello {
                    target,
                    deadline: now + self.config.timing.hello_timeout,
                    conn: crate::state::Conn {
                        decoder: shardkeeper_protocol::Decoder::new(self.config.compression),
                        limiter: crate::limiter::SendLimiter::new(now),
                    },
                };
            }
            other => self.state = other,
        }
    }

    pub(super) fn on_frame(&mut self, now: Instant, bytes: Bytes) {
        let Some(decoder) = self.state.decoder_mut() else {
            return;
        };
        let inbound = DOCUMENTS.with_borrow_mut(|documents| {
            let Documents { scratch, arena } = documents;
            let inbound = match decoder.push_shared(bytes, scratch, arena) {
                Ok(None) => None,
                Ok(Some(document)) => Some(Inbound::parse(document)),
                Err(err) => Some(Inbound::Garbage(err.to_string())),
            };
            if scratch.capacity() > DOCUMENT_KEEP {
                *scratch = Vec::new();
            }
            if arena.capacity() > DOCUMENT_KEEP {
                *arena = BytesMut::new();
            }
            inbound
        });
        let Some(inbound) = inbound else { return };
        match inbound {
            Inbound::Dispatch(dispatch) => self.on_dispatch(now, dispatch),
            Inbound::Hello(hello) => self.on_hello(now, hello),
            Inbound::HeartbeatRequest => self.on_heartbeat_request(now),
            Inbound::HeartbeatAck => self.on_heartbeat_ack(now),
            Inbound::Reconnect => {
                self.push(Action::Notice(Notice::ReconnectRequested));
                self.reconnect_now(now);
            }
            Inbound::InvalidSession(resumable) => self.on_invalid_session(now, resumable),
            Inbound::Unexpected(op) => self.push(Action::Notice(Notice::UnexpectedOpcode { op })),
            Inbound::Garbage(detail) => {
                self.push(Action::Notice(Notice::ProtocolError { detail }));
                self.connection_lost(now, Some(4000), None);
            }
        }
    }

    fn on_hello(&mut self, now: Instant, hello: Hello) {
        let (target, conn) = match std::mem::take(&mut self.state) {
            State::AwaitingHello { target, conn, .. } => (target, conn),
            other => {
                self.state = other;
                return;
            }
        };
        let interval = Duration::from_millis(hello.heartbeat_interval).max(MIN_HEARTBEAT_INTERVAL);
        let link = Link {
            conn,
            heartbeat: Heartbeat::new(now, interval, self.rng.random::<f64>()),
            priority: std::collections::VecDeque::new(),
            blocked_until: None,
        };
        match target {
            Target::Identify => {
                self.state = State::Identifying {
                    link,
                    permit: Permit::Waiting,
                    seq: None,
                };
                self.push(Action::RequestPermit);
            }
            Target::Resume { resume, .. } => self.send_resume(now, link, resume),
        }
    }

    fn send_resume(&mut self, now: Instant, mut link: Link, resume: ResumeInfo) {
        let body = Resume {
            token: self.config.token.clone(),
            session_id: resume.session_id.to_string(),
            seq: resume.seq,
        };
        match Outbound::new(OpCode::Resume, &body) {
            Ok(frame) => {
                link.priority.push_back(Pending::Frame(frame));
                self.state = State::Resuming {
                    link,
                    resume,
                    replayed: 0,
                };
                self.flush(now);
            }
            Err(err) => {
                self.push(Action::Notice(Notice::ProtocolError {
                    detail: format!("stored session cannot be resumed: {err}"),
                }));
                self.push(Action::Forget);
                self.state = State::Identifying {
                    link,
                    permit: Permit::Waiting,
                    seq: None,
                };
                self.push(Action::RequestPermit);
            }
        }
    }

    pub(super) fn on_permit(&mut self, now: Instant) {
        let frame = self.identify_frame();
        let State::Identifying { link, permit, .. } = &mut self.state else {
            return;
        };
        if *permit != Permit::Waiting {
            return;
        }
        *permit = Permit::Used;
        link.priority.push_back(Pending::Identify(frame));
        self.stats.identifies += 1;
        self.guilds.clear();
        self.flush(now);
    }

    fn identify_frame(&mut self) -> Outbound {
        let mut body = Identify {
            token: self.config.token.clone(),
            properties: IdentifyProperties::shardkeeper(),
            compress: false,
            large_threshold: self.config.large_threshold,
            shard: Some(self.shard),
            presence: match &self.presence {
                Presence::Configured => self.config.presence.clone(),
                Presence::Sent(presence) => Some(PresenceUpdate::clone(presence)),
                Presence::Dropped => None,
            },
            intents: self.config.intents,
        };
        Outbound::new(OpCode::Identify, &body).unwrap_or_else(|err| {
            self.push(Action::Notice(Notice::ProtocolError {
                detail: format!("identify with presence is too large, sent without it: {err}"),
            }));
            body.presence = None;
            self.presence = Presence::Dropped;
            // invariant: an IDENTIFY without presence is far below 4096 bytes
            Outbound::new(OpCode::Identify, &body).unwrap_or_else(|_| Outbound::heartbeat(None))
        })
    }

    fn on_dispatch(&mut self, now: Instant, dispatch: Dispatch) {
        self.track_guilds(&dispatch);
        match &mut self.state {
            State::Identifying { .. } if &*dispatch.t == "READY" => {
                match serde_json::from_str::<Ready>(dispatch.d.get()) {
                    Ok(ready) => self.on_ready(dispatch, &ready),
                    Err(err) => {
                        self.push(Action::Notice(Notice::ProtocolError {
                            detail: format!("invalid READY: {err}"),
                        }));
                        self.connection_lost(now, Some(4000), None);
                    }
                }
            }
            State::Identifying { seq, .. } => {
                *seq = Some(seq.map_or(dispatch.seq, |s| s.max(dispatch.seq)));
                self.push(Action::Emit(dispatch));
            }
            State::Resuming {
                resume, replayed, ..
            } => {
                resume.seq = resume.seq.max(dispatch.seq);
                let resumed = &*dispatch.t == "RESUMED";
                if !resumed {
                    *replayed += 1;
                }
                let (info, count) = (resume.clone(), *replayed);
                self.push(Action::Emit(dispatch));
                self.push(Action::Persist(info));
                if resumed {
                    self.on_resumed(count);
                    self.flush(now);
                }
            }
            State::Ready { resume, .. } => {
                resume.seq = resume.seq.max(dispatch.seq);
                let info = resume.clone();
                self.push(Action::Emit(dispatch));
                self.push(Action::Persist(info));
            }
            _ => {}
        }
    }

    fn on_ready(&mut self, dispatch: Dispatch, ready: &Ready) {
        let link = match std::mem::take(&mut self.state) {
            State::Identifying { link, .. } => link,
            other => {
                self.state = other;
                return;
            }
        };
        let resume = ResumeInfo {
            session_id: Arc::from(ready.session_id.as_str()),
            resume_url: Arc::from(ready.resume_gateway_url.as_str()),
            seq: dispatch.seq,
        };
        self.guilds = ready.guilds.iter().map(|g| g.id.0).collect();
        self.push(Action::Emit(dispatch));
        self.push(Action::Persist(resume.clone()));
        self.push(Action::Notice(Notice::Identified {
            guilds: ready.guilds.len(),
        }));
        self.failures = 0;
        self.came_up = true;
        self.state = State::Ready { link, resume };
    }

    fn on_resumed(&mut self, replayed: u64) {
        let (link, resume) = match std::mem::take(&mut self.state) {
            State::Resuming { link, resume, .. } => (link, resume),
            other => {
                self.state = other;
                return;
            }
        };
        self.stats.resumes += 1;
        self.failures = 0;
        self.came_up = true;
        self.push(Action::Notice(Notice::Resumed { replayed }));
        self.state = State::Ready { link, resume };
    }

    fn track_guilds(&mut self, dispatch: &Dispatch) {
        let create = match &*dispatch.t {
            "GUILD_CREATE" => true,
            "GUILD_DELETE" => false,
            _ => return,
        };
        if let Ok(guild) = serde_json::from_str::<UnavailableGuild>(dispatch.d.get()) {
            if create || guild.unavailable {
                self.guilds.insert(guild.id.0);
            } else {
                self.guilds.remove(&guild.id.0);
            }
        }
    }

    fn on_heartbeat_request(&mut self, now: Instant) {
        if let Some(link) = self.state.link_mut() {
            if link.heartbeat.beat(now) {
                link.priority.push_back(Pending::Heartbeat);
            }
            self.flush(now);
        }
    }

    fn on_heartbeat_ack(&mut self, now: Instant) {
        let latency = self
            .state
            .link_mut()
            .and_then(|link| link.heartbeat.acked(now));
        if let Some(latency) = latency {
            self.stats.latency = Some(latency);
            self.push(Action::Notice(Notice::HeartbeatAck { latency }));
        }
    }
}
