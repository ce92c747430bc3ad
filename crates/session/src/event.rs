//! What goes into a session and what comes out of it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shardkeeper_protocol::payload::{
    PresenceUpdate, RequestChannelInfo, RequestGuildMembers, RequestSoundboardSounds,
    VoiceStateUpdate,
};
use shardkeeper_protocol::{EventName, OpCode, Outbound, OutboundError, RawJson};

use crate::StateKind;

/// Something that happened to the connection.
#[derive(Debug, Clone)]
pub enum Input {
    /// The WebSocket asked for by the last `Connect` is open.
    Opened,
    /// One WebSocket message (text or binary) as received, still compressed. A dispatch
    /// body read from an uncompressed message shares its memory.
    Frame(Bytes),
    /// The connection closed: the peer's close code, or `None` when it dropped, failed
    /// to open, or closed without a code.
    Closed(Option<u16>),
    /// The instant from [`crate::ShardSession::poll_timeout`] has passed.
    Timeout,
    /// The identify coordinator granted the permit asked for with `RequestPermit`.
    PermitGranted,
}

/// Something the shell must do, in the order returned.
#[derive(Debug)]
pub enum Action {
    /// Open a WebSocket to this URL (query parameters included), dropping any current one.
    Connect {
        /// Full URL.
        url: String,
        /// Whether this connection will RESUME (it goes to `resume_gateway_url`).
        resuming: bool,
    },
    /// Write this text frame.
    Send(Outbound),
    /// Write this IDENTIFY, the one the granted permit was for, and tell the permit
    /// source when it was written (or that it never was): the bucket's window counts
    /// from that moment.
    Identify(Outbound),
    /// Close the current connection (or abort the connect attempt) with this code.
    Close(u16),
    /// Ask the identify coordinator for a permit; answer with `Input::PermitGranted`.
    RequestPermit,
    /// Withdraw the pending permit request.
    CancelPermit,
    /// Hand this dispatch to every sink.
    Emit(Dispatch),
    /// Store this session so a restarted process can resume it. Always after the
    /// `Emit` of the sequence it covers.
    Persist(ResumeInfo),
    /// Delete the stored session.
    Forget,
    /// The state kind changed.
    Changed(StateKind),
    /// A notable event for logs and metrics.
    Notice(Notice),
}

/// A resumable session: what RESUME needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeInfo {
    /// `session_id` from READY.
    pub session_id: Arc<str>,
    /// `resume_gateway_url` from READY.
    pub resume_url: Arc<str>,
    /// The last sequence handed to the sinks.
    pub seq: u64,
}

/// One dispatch (op 0) with its body untouched.
pub struct Dispatch {
    /// Sequence number.
    pub seq: u64,
    /// Event name.
    pub t: EventName,
    /// Event data, byte-for-byte as received.
    pub d: RawJson,
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatch")
            .field("seq", &self.seq)
            .field("t", &self.t)
            .field("bytes", &self.d.get().len())
            .finish()
    }
}

/// Events worth a log line and a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// READY arrived: a new session.
    Identified {
        /// Guilds in READY.
        guilds: usize,
    },
    /// RESUMED arrived.
    Resumed {
        /// Dispatches replayed before RESUMED.
        replayed: u64,
    },
    /// A heartbeat was acknowledged.
    HeartbeatAck {
        /// Round trip.
        latency: Duration,
    },
    /// No ACK arrived between two heartbeats.
    ZombieDetected,
    /// The server sent op 7.
    ReconnectRequested,
    /// The server sent op 9.
    InvalidSession {
        /// Its `d`.
        resumable: bool,
    },
    /// The connection closed or failed.
    Disconnected {
        /// The close code, if any.
        code: Option<u16>,
        /// Whether the session is kept for a RESUME.
        resumable: bool,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// A fatal close code: the shard will not reconnect on its own.
    Fatal {
        /// The close code.
        code: u16,
    },
    /// The connection or HELLO took too long.
    TimedOut {
        /// What was awaited.
        waiting_for: &'static str,
    },
    /// The server sent something that is not a valid gateway payload.
    ProtocolError {
        /// What was wrong.
        detail: String,
    },
    /// The server sent an opcode a client never receives.
    UnexpectedOpcode {
        /// Its number.
        op: u8,
    },
    /// `resume_gateway_url` could not be reached; the session was given up.
    ResumeUrlUnreachable,
    /// Too many connections ended before READY or RESUMED: the shard is parked until a
    /// `Start` or `Restart`.
    Quarantined {
        /// Failures counted within the window.
        failures: usize,
        /// The policy's window.
        window: Duration,
    },
}

/// Operator and application requests.
#[derive(Debug, Clone)]
pub enum Command {
    /// Connect (resuming a known session) if idle, stopped or failed.
    Start,
    /// Close with 4000 and stay stopped; the session stays resumable.
    Stop,
    /// Reconnect now: RESUME, or with `fresh` drop the session and IDENTIFY.
    Restart {
        /// Drop the session first.
        fresh: bool,
    },
    /// Send a payload once the shard is Ready.
    Send(ClientPayload),
}

/// Payloads an application may send through a shard.
#[derive(Debug, Clone)]
pub enum ClientPayload {
    /// op 3.
    Presence(PresenceUpdate),
    /// op 4.
    VoiceState(VoiceStateUpdate),
    /// op 8.
    RequestMembers(RequestGuildMembers),
    /// op 31.
    SoundboardSounds(RequestSoundboardSounds),
    /// op 43.
    ChannelInfo(RequestChannelInfo),
}

impl ClientPayload {
    /// Serializes the payload, refusing frames over 4096 bytes.
    pub fn encode(&self) -> Result<Outbound, OutboundError> {
        match self {
            Self::Presence(d) => Outbound::new(OpCode::PresenceUpdate, d),
            Self::VoiceState(d) => Outbound::new(OpCode::VoiceStateUpdate, d),
            Self::RequestMembers(d) => Outbound::new(OpCode::RequestGuildMembers, d),
            Self::SoundboardSounds(d) => Outbound::new(OpCode::RequestSoundboardSounds, d),
            Self::ChannelInfo(d) => Outbound::new(OpCode::RequestChannelInfo, d),
        }
    }
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// The payload is too large or cannot be serialized.
    #[error(transparent)]
    Payload(#[from] OutboundError),
    /// The shard is not running, so nothing can be sent.
    #[error("shard is {state}, not running")]
    NotRunning {
        /// Its state.
        state: StateKind,
    },
    /// Too many payloads are waiting for the shard to be Ready.
    #[error("{capacity} payloads are already waiting for the shard")]
    OutboxFull {
        /// The outbox capacity.
        capacity: usize,
    },
}
