//! The shard session: a sans-IO state machine driven by inputs and instants.

mod inbound;
mod transition;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shardkeeper_protocol::payload::{PresenceUpdate, RequestGuildMembers};
use shardkeeper_protocol::{Outbound, ShardId};

use crate::limiter::SendClass;
use crate::quarantine::Quarantine;
use crate::state::{Pending, State, Target};
use crate::{Action, ClientPayload, Command, CommandError, ResumeInfo, SessionConfig, StateKind};

/// Counters and gauges of one shard, for the admin API and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// IDENTIFY payloads sent.
    pub identifies: u64,
    /// Successful resumes (RESUMED received).
    pub resumes: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Zombie connections detected.
    pub zombies: u64,
    /// Last close code received from the server.
    pub last_close_code: Option<u16>,
    /// Round trip of the last acknowledged heartbeat.
    pub latency: Option<Duration>,
    /// Guilds the shard currently holds.
    pub guilds: usize,
    /// Dispatches handed on to the sinks.
    pub events: u64,
}

/// The presence the next IDENTIFY carries.
#[derive(Debug)]
enum Presence {
    /// The configured one.
    Configured,
    /// The last presence update this shard sent, which replaces it.
    Sent(Box<PresenceUpdate>),
    /// None: with it, IDENTIFY would be too large.
    Dropped,
}

/// One shard's gateway session, without any I/O.
///
/// Push inputs with [`handle`](Self::handle) and requests with
/// [`command`](Self::command), then drain [`poll_action`](Self::poll_action) and arm one
/// timer at [`poll_timeout`](Self::poll_timeout). The shell must drop inputs of a
/// connection after it performed `Close` or a new `Connect` for it.
#[derive(Debug)]
pub struct ShardSession {
    shard: ShardId,
    config: Arc<SessionConfig>,
    presence: Presence,
    state: State,
    actions: VecDeque<Action>,
    /// Application payloads waiting for Ready and a send slot.
    outbox: VecDeque<Outbound>,
    rng: SmallRng,
    /// Consecutive failed connections since the last Ready.
    failures: u32,
    /// Connections ended before READY or RESUMED, for the quarantine policy.
    quarantine: Quarantine,
    /// The current connection reached READY or RESUMED.
    came_up: bool,
    connections: u64,
    reported: StateKind,
    stats: SessionStats,
    guilds: HashSet<u64>,
}

impl ShardSession {
    /// A session that is `Idle` until [`Command::Start`]; `resume` is a stored session to
    /// resume, and `seed` seeds every random choice (jitter, waits).
    #[must_use]
    pub fn new(
        shard: ShardId,
        config: Arc<SessionConfig>,
        resume: Option<ResumeInfo>,
        seed: u64,
    ) -> Self {
        Self {
            shard,
            config,
            presence: Presence::Configured,
            state: State::Idle { resume },
            actions: VecDeque::new(),
            outbox: VecDeque::new(),
            rng: SmallRng::seed_from_u64(seed),
            failures: 0,
            quarantine: Quarantine::default(),
            came_up: false,
            connections: 0,
            reported: StateKind::Idle,
            stats: SessionStats::default(),
            guilds: HashSet::new(),
        }
    }

    /// Feeds a network or timer input observed at `now`.
    pub fn handle(&mut self, now: Instant, input: crate::Input) {
        use crate::Input;
        match input {
            Input::Opened => self.on_opened(now),
            Input::Frame(bytes) => self.on_frame(now, bytes),
            Input::Closed(code) => self.on_closed(now, code),
            Input::Timeout => self.on_timeout(now),
            Input::PermitGranted => self.on_permit(now),
        }
        self.report_state();
    }

    /// Applies an operator or application request.
    pub fn command(&mut self, now: Instant, command: Command) -> Result<(), CommandError> {
        let result = match command {
            Command::Start => {
                self.start(now);
                Ok(())
            }
            Command::Stop => {
                self.stop();
                Ok(())
            }
            Command::Restart { fresh } => {
                self.restart(now, fresh);
                Ok(())
            }
            Command::Send(payload) => self.enqueue(now, &payload),
        };
        self.report_state();
        result
    }

    /// Sends a guild member request once the shard is Ready; returns its nonce, which
    /// every GUILD_MEMBERS_CHUNK of the answer carries. A request without a nonce gets
    /// one from the session's generator.
    pub fn request_members(
        &mut self,
        now: Instant,
        mut request: RequestGuildMembers,
    ) -> Result<String, CommandError> {
        let nonce = if let Some(nonce) = &request.nonce {
            nonce.clone()
        } else {
            let nonce = format!("sk{:016x}", self.rng.random::<u64>());
            request.nonce = Some(nonce.clone());
            nonce
        };
        self.command(now, Command::Send(ClientPayload::RequestMembers(request)))
            .map(|()| nonce)
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to deliver the next `Input::Timeout`, if anything is pending.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Connecting { deadline, .. } | State::AwaitingHello { deadline, .. } => {
                Some(*deadline)
            }
            State::Reconnecting { until, .. } => Some(*until),
            State::Identifying { link, .. }
            | State::Resuming { link, .. }
            | State::Ready { link, .. } => {
                let beat = link.heartbeat.next_beat();
                Some(link.blocked_until.map_or(beat, |at| at.min(beat)))
            }
            State::Poisoned | State::Idle { .. } | State::Stopped { .. } | State::Failed { .. } => {
                None
            }
        }
    }

    /// The current state kind.
    #[must_use]
    pub fn state(&self) -> StateKind {
        self.state.kind()
    }

    /// The fatal close code, when the state is `Failed`.
    #[must_use]
    pub fn failure_code(&self) -> Option<u16> {
        match self.state {
            State::Failed { code } => Some(code),
            _ => None,
        }
    }

    /// The session a RESUME would use, if any.
    #[must_use]
    pub fn resume_info(&self) -> Option<&ResumeInfo> {
        self.state.resume()
    }

    /// The last sequence received on the current session.
    #[must_use]
    pub fn seq(&self) -> Option<u64> {
        self.state
            .heartbeat_seq()
            .or_else(|| self.state.resume().map(|r| r.seq))
    }

    /// Counters and gauges.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            guilds: self.guilds.len(),
            ..self.stats.clone()
        }
    }

    /// Which shard this is.
    #[must_use]
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    fn push(&mut self, action: Action) {
        if matches!(action, Action::Emit(_)) {
            self.stats.events += 1;
        }
        self.actions.push_back(action);
    }

    fn report_state(&mut self) {
        let kind = self.state.kind();
        if kind != self.reported {
            self.reported = kind;
            self.push(Action::Changed(kind));
        }
    }

    /// Opens a connection towards `target` now.
    fn connect(&mut self, now: Instant, target: Target) {
        let (base, resuming) = match &target {
            Target::Identify => (self.config.gateway_url.as_str(), false),
            Target::Resume { resume, .. } => (&*resume.resume_url, true),
        };
        let url = shardkeeper_protocol::gateway_connect_url(base, self.config.compression);
        if self.connections > 0 {
            self.stats.reconnects += 1;
        }
        self.came_up = false;
        self.connections += 1;
        self.push(Action::Connect { url, resuming });
        self.state = State::Connecting {
            target,
            deadline: now + self.config.timing.connect_timeout,
        };
    }

    /// Sends what the limiter allows: heartbeats, IDENTIFY and RESUME first, then (when
    /// Ready) application payloads. Records when to try again if something is left.
    fn flush(&mut self, now: Instant) {
        let seq = self.state.heartbeat_seq();
        let ready = matches!(self.state, State::Ready { .. });
        let Self {
            state,
            actions,
            outbox,
            ..
        } = self;
        let Some(link) = state.link_mut() else {
            return;
        };
        link.blocked_until = None;
        while !link.priority.is_empty() {
            if let Err(at) = link.conn.limiter.try_acquire(now, SendClass::Priority) {
                link.blocked_until = Some(at);
                return;
            }
            let action = match link.priority.pop_front() {
                Some(Pending::Heartbeat) => {
                    link.heartbeat.sent(now);
                    Action::Send(Outbound::heartbeat(seq))
                }
                Some(Pending::Frame(frame)) => Action::Send(frame),
                Some(Pending::Identify(frame)) => Action::Identify(frame),
                None => break,
            };
            actions.push_back(action);
        }
        while ready && !outbox.is_empty() {
            if let Err(at) = link.conn.limiter.try_acquire(now, SendClass::General) {
                link.blocked_until = Some(at);
                return;
            }
            if let Some(frame) = outbox.pop_front() {
                actions.push_back(Action::Send(frame));
            }
        }
    }
}
