//! Session states.

use std::fmt;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use shardkeeper_protocol::Decoder;

use crate::ResumeInfo;
use crate::heartbeat::Heartbeat;
use crate::limiter::SendLimiter;
use shardkeeper_protocol::Outbound;

/// A copyable snapshot of the state, for the admin API and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// Not started.
    Idle,
    /// Opening the WebSocket.
    Connecting,
    /// Connected, waiting for HELLO.
    AwaitingHello,
    /// Waiting for an identify permit or for READY.
    Identifying,
    /// RESUME sent, waiting for RESUMED.
    Resuming,
    /// Receiving events.
    Ready,
    /// Waiting before the next connection attempt.
    Reconnecting,
    /// Stopped by the operator.
    Stopped,
    /// Parked after failing too often before READY or RESUMED; `Start` or `Restart`
    /// brings it back.
    Quarantined,
    /// Closed with a fatal code; not retried.
    Failed,
}

impl StateKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [Self; 10] = [
        Self::Idle,
        Self::Connecting,
        Self::AwaitingHello,
        Self::Identifying,
        Self::Resuming,
        Self::Ready,
        Self::Reconnecting,
        Self::Stopped,
        Self::Quarantined,
        Self::Failed,
    ];

    /// The name used by the admin API and metrics (`awaiting_hello` reports as
    /// `connecting`).
    #[must_use]
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting | Self::AwaitingHello => "connecting",
            Self::Identifying => "identifying",
            Self::Resuming => "resuming",
            Self::Ready => "ready",
            Self::Reconnecting => "reconnecting",
            Self::Stopped => "stopped",
            Self::Quarantined => "quarantined",
            Self::Failed => "failed",
        }
    }

    /// The distinct API names, in lifecycle order (`awaiting_hello` has none of its own).
    #[must_use]
    pub fn api_names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Self::ALL.iter().map(|s| s.api_name()).collect();
        names.dedup();
        names
    }

    /// Whether the shard is parked: stopped, quarantined or failed, waiting for a command.
    #[must_use]
    pub fn is_parked(self) -> bool {
        matches!(self, Self::Stopped | Self::Quarantined | Self::Failed)
    }

    /// Whether no shard in this state is on its way up: Ready or parked.
    #[must_use]
    pub fn is_settled(self) -> bool {
        self == Self::Ready || self.is_parked()
    }
}

/// Why a session is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// `Command::Stop`.
    Operator,
    /// The quarantine policy parked it.
    Quarantined,
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

/// Where the next connection goes and what it sends after HELLO.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The gateway URL, IDENTIFY with a permit.
    Identify,
    /// `resume_gateway_url`, RESUME.
    Resume {
        resume: ResumeInfo,
        failed_connects: u32,
    },
}

impl Target {
    pub(crate) fn new(resume: Option<ResumeInfo>) -> Self {
        resume.map_or(Self::Identify, |resume| Self::Resume {
            resume,
            failed_connects: 0,
        })
    }

    pub(crate) fn into_resume(self) -> Option<ResumeInfo> {
        match self {
            Self::Identify => None,
            Self::Resume { resume, .. } => Some(resume),
        }
    }
}

/// An open WebSocket before HELLO.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) decoder: Decoder,
    pub(crate) limiter: SendLimiter,
}

/// A frame waiting for a send slot: heartbeats are built when they leave, so they carry
/// the sequence of that moment.
#[derive(Debug)]
pub(crate) enum Pending {
    Heartbeat,
    Frame(Outbound),
    /// The IDENTIFY a permit was granted for: its write is reported to the permit source.
    Identify(Outbound),
}

/// An open WebSocket after HELLO.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) conn: Conn,
    pub(crate) heartbeat: Heartbeat,
    /// Heartbeats, IDENTIFY and RESUME waiting for the limiter.
    pub(crate) priority: std::collections::VecDeque<Pending>,
    /// When the limiter has a slot for what is still queued.
    pub(crate) blocked_until: Option<Instant>,
}

/// Where an IDENTIFY stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    Waiting,
    Used,
}

#[derive(Debug, Default)]
pub(crate) enum State {
    #[default]
    Poisoned,
    Idle {
        resume: Option<ResumeInfo>,
    },
    Connecting {
        target: Target,
        deadline: Instant,
    },
    AwaitingHello {
        target: Target,
        deadline: Instant,
        conn: Conn,
    },
    Identifying {
        link: Link,
        permit: Permit,
        seq: Option<u64>,
    },
    Resuming {
        link: Link,
        resume: ResumeInfo,
        replayed: u64,
    },
    Ready {
        link: Link,
        resume: ResumeInfo,
    },
    Reconnecting {
        until: Instant,
        target: Target,
    },
    Stopped {
        resume: Option<ResumeInfo>,
        reason: StopReason,
    },
    Failed {
        code: u16,
    },
}

impl State {
    pub(crate) fn kind(&self) -> StateKind {
        match self {
            Self::Poisoned | Self::Idle { .. } => StateKind::Idle,
            Self::Connecting { .. } => StateKind::Connecting,
            Self::AwaitingHello { .. } => StateKind::AwaitingHello,
            Self::Identifying { .. } => StateKind::Identifying,
            Self::Resuming { .. } => StateKind::Resuming,
            Self::Ready { .. } => StateKind::Ready,
            Self::Reconnecting { .. } => StateKind::Reconnecting,
            Self::Stopped {
                reason: StopReason::Operator,
                ..
            } => StateKind::Stopped,
            Self::Stopped {
                reason: StopReason::Quarantined,
                ..
            } => StateKind::Quarantined,
            Self::Failed { .. } => StateKind::Failed,
        }
    }

    /// The session this state holds, if any.
    pub(crate) fn resume(&self) -> Option<&ResumeInfo> {
        match self {
            Self::Idle { resume } | Self::Stopped { resume, .. } => resume.as_ref(),
            Self::Connecting { target, .. }
            | Self::AwaitingHello { target, .. }
            | Self::Reconnecting { target, .. } => match target {
                Target::Identify => None,
                Target::Resume { resume, .. } => Some(resume),
            },
            Self::Resuming { resume, .. } | Self::Ready { resume, .. } => Some(resume),
            Self::Poisoned | Self::Identifying { .. } | Self::Failed { .. } => None,
        }
    }

    /// Moves the session out of a state that is being left.
    pub(crate) fn into_resume(self) -> Option<ResumeInfo> {
        match self {
            Self::Idle { resume } | Self::Stopped { resume, .. } => resume,
            Self::Connecting { target, .. }
            | Self::AwaitingHello { target, .. }
            | Self::Reconnecting { target, .. } => target.into_resume(),
            Self::Resuming { resume, .. } | Self::Ready { resume, .. } => Some(resume),
            Self::Poisoned | Self::Identifying { .. } | Self::Failed { .. } => None,
        }
    }

    /// Whether a socket is open or being opened.
    pub(crate) fn has_socket(&self) -> bool {
        matches!(
            self,
            Self::Connecting { .. }
                | Self::AwaitingHello { .. }
                | Self::Identifying { .. }
                | Self::Resuming { .. }
                | Self::Ready { .. }
        )
    }

    pub(crate) fn link_mut(&mut self) -> Option<&mut Link> {
        match self {
            Self::Identifying { link, .. }
            | Self::Resuming { link, .. }
            | Self::Ready { link, .. } => Some(link),
            _ => None,
        }
    }

    pub(crate) fn decoder_mut(&mut self) -> Option<&mut Decoder> {
        match self {
            Self::AwaitingHello { conn, .. } => Some(&mut conn.decoder),
            other => other.link_mut().map(|link| &mut link.conn.decoder),
        }
    }

    /// The sequence a heartbeat carries now.
    pub(crate) fn heartbeat_seq(&self) -> Option<u64> {
        match self {
            Self::Identifying { seq, .. } => *seq,
            Self::Resuming { resume, .. } | Self::Ready { resume, .. } => Some(resume.seq),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StateKind;

    #[test]
    fn settled_means_ready_or_parked() {
        let settled: Vec<StateKind> = StateKind::ALL
            .into_iter()
            .filter(|s| s.is_settled())
            .collect();
        assert_eq!(
            settled,
            [
                StateKind::Ready,
                StateKind::Stopped,
                StateKind::Quarantined,
                StateKind::Failed
            ]
        );
        assert!(
            !StateKind::Idle.is_settled(),
            "idle shards have not started"
        );
        assert!(!StateKind::Resuming.is_settled());
        assert!(!StateKind::Reconnecting.is_settled());
    }

    #[test]
    fn every_api_name_once() {
        let names = StateKind::api_names();
        assert_eq!(names.len(), 9);
        assert_eq!(names.iter().filter(|n| **n == "connecting").count(), 1);
        assert!(names.contains(&"quarantined"));
    }
}
