//! The `Shard` actor: a thin shell that owns one socket, one timer and one
//! `ShardSession`, and performs the session's actions in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use shardkeeper_protocol::payload::RequestGuildMembers;
use shardkeeper_protocol::{CloseCode, EventName, OpCode};
use shardkeeper_session::{
    Action, ClientPayload, Command, CommandError, Input, Notice, ResumeInfo, ShardSession,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::cluster::{ShardGone, ShardParams};
use crate::coordinator::{CancelPermit, PermitGranted, PermitReport, RequestPermit};
use crate::members::{MemberRequests, MembersResult};
use crate::registry::{ShardSnapshot, ShardState};
use crate::{Event, clock};

use self::delivery::Deferred;
use self::socket::Link;

mod delivery;
mod socket;
mod upgrade;

/// How long a closing connection may take to send its close frame at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// A frame (or the end) of connection number `epoch`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inbound {
    epoch: u64,
    /// Frames in arrival order; `None` marks the end of the connection.
    items: Vec<Option<Result<Message, WsError>>>,
}

/// An operator or application command.
#[derive(Message)]
#[rtype(result = "Result<(), CommandError>")]
pub(crate) struct ShardCommand(pub(crate) Command);

/// A member request whose chunks come back through `reply`.
#[derive(Message)]
#[rtype(result = "Result<(), CommandError>")]
pub(crate) struct RequestMembers {
    pub(crate) request: RequestGuildMembers,
    pub(crate) reply: oneshot::Sender<MembersResult>,
}

/// Close with 4000 (the session stays resumable) and stop the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Retire;

/// Test-only: make the handler panic, to exercise the supervisor.
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Crash;

/// One shard.
pub(crate) struct Shard {
    params: Arc<ShardParams>,
    session: ShardSession,
    /// Number of the current connection; inputs of older ones are dropped.
    epoch: u64,
    link: Option<Link>,
    connecting: Option<SpawnHandle>,
    timer: Option<(Instant, SpawnHandle)>,
    ticket: u64,
    members: MemberRequests,
    /// Connection attempts that ended before READY or RESUMED, within the policy window.
    failures: VecDeque<Instant>,
    /// The current connection reached READY or RESUMED.
    came_up: bool,
    quarantined: bool,
    /// Writer tasks finishing a close handshake.
    closing: Vec<JoinHandle<()>>,
    /// Stopped on purpose: dropping it is not a crash.
    retired: bool,
    /// Session counters already added to the metrics.
    published: shardkeeper_session::SessionStats,
    /// Events a full sink has not taken yet, and the store writes that wait for them.
    backlog: VecDeque<Deferred>,
    /// The newest session position, written to the store at the end of the batch.
    persist: Option<ResumeInfo>,
    /// Dispatches of one name in a row not yet added to the metrics: every shard thread
    /// counts into the same counters, so a batch adds once instead of once per event.
    counted: Option<(EventName, u64)>,
}

impl Shard {
    pub(crate) fn new(params: Arc<ShardParams>, session: ShardSession) -> Self {
        Self {
            params,
            session,
            epoch: 0,
            link: None,
            connecting: None,
            timer: None,
            ticket: 0,
            members: MemberRequests::default(),
            failures: VecDeque::new(),
            came_up: false,
            quarantined: false,
            closing: Vec::new(),
            retired: false,
            published: shardkeeper_session::SessionStats::default(),
            backlog: VecDeque::new(),
            persist: None,
            counted: None,
        }
    }

    fn id(&self) -> u32 {
        self.params.id
    }

    /// Performs the session's actions, publishes the snapshot and re-arms the timer.
    fn after_input(&mut self, ctx: &mut Context<Self>) {
        self.perform_actions(ctx);
        self.settle(ctx);
    }

    fn perform_actions(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.session.poll_action() {
            self.perform(ctx, action);
        }
    }

    /// What is done once per batch of inputs rather than per input: the coalesced store
    /// write, the registry snapshot and metrics, the timer.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        if let Some((t, n)) = self.counted.take() {
            self.params.metrics.events(&t, n);
        }
        if let Some(info) = self.persist.take() {
            self.params
                .store
                .save_session(self.params.id, self.params.total, &info);
        }
        self.publish();
        self.rearm(ctx);
    }

    /// Counts a dispatch towards the metrics at the end of the batch.
    fn count(&mut self, t: &EventName) {
        match &mut self.counted {
            Some((name, n)) if name == t => *n += 1,
            counted => {
                if let Some((name, n)) = counted.replace((t.clone(), 1)) {
                    self.params.metrics.events(&name, n);
                }
            }
        }
    }

    fn perform(&mut self, ctx: &mut Context<Self>, action: Action) {
        let id = self.id();
        match action {
            Action::Connect { url, resuming } => {
                self.came_up = false;
                self.connect(ctx, url, resuming);
            }
            Action::Send(frame) => {
                // The coordinator paces the bucket from the moment the IDENTIFY is written.
                let report = (frame.op() == OpCode::Identify)
                    .then(|| PermitReport::new(id, self.params.coordinator.clone()));
                if let Some(link) = &self.link {
                    link.send(Message::text(frame.into_string()), report);
                }
            }
            Action::Close(code) => self.close(ctx, Some(code)),
            Action::RequestPermit => {
                self.ticket += 1;
                self.params.coordinator.do_send(RequestPermit {
                    shard: id,
                    ticket: self.ticket,
                    reply: ctx.address().recipient(),
                });
            }
            Action::CancelPermit => self.params.coordinator.do_send(CancelPermit {
                shard: id,
                ticket: self.ticket,
            }),
            Action::Emit(dispatch) => {
                let event = Event::new(id, dispatch);
                if !self.members.is_empty() {
                    self.members.observe(&event);
                }
                self.count(&event.t);
                let all = self.params.sinks.all();
                self.in_order(Deferred::Emit(event, all));
            }
            // With nothing backlogged every event so far is with the sinks, so the newest
            // position can wait for the end of the batch: one store write per batch.
            Action::Persist(info) if self.backlog.is_empty() => self.persist = Some(info),
            Action::Persist(info) => self.backlog.push_back(Deferred::Persist(info)),
            Action::Forget => {
                self.members.interrupt();
                self.persist = None;
                self.in_order(Deferred::Forget);
            }
            Action::Changed(state) => tracing::debug!(shard = id, %state, "shard state changed"),
            Action::Notice(notice) => self.on_notice(notice),
        }
    }

    fn on_notice(&mut self, notice: Notice) {
        let id = self.id();
        match notice {
            Notice::Identified { guilds } => {
                self.came_up = true;
                tracing::info!(shard = id, guilds, "shard identified");
            }
            Notice::Resumed { replayed } => {
                self.came_up = true;
                tracing::info!(shard = id, replayed, "shard resumed");
            }
            Notice::HeartbeatAck { latency } => self.params.metrics.heartbeat(latency),
            Notice::ZombieDetected => {
                tracing::warn!(
                    shard = id,
                    "no heartbeat ack: zombie connection, reconnecting"
                );
            }
            Notice::ReconnectRequested => tracing::info!(shard = id, "gateway asked to reconnect"),
            Notice::InvalidSession { resumable } => {
                tracing::warn!(shard = id, resumable, "gateway invalidated the session");
            }
            Notice::Disconnected {
                code,
                resumable,
                retry_in,
            } => {
                if let Some(code) = code {
                    self.params.metrics.close_code(code);
                }
                let reason = code.map(|c| CloseCode(c).description());
                tracing::warn!(
                    shard = id,
                    ?code,
                    ?reason,
                    resumable,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "shard disconnected"
                );
                if !std::mem::take(&mut self.came_up) {
                    self.count_failure();
                }
            }
            Notice::Fatal { code } => {
                self.params.metrics.close_code(code);
                tracing::error!(
                    shard = id,
                    code,
                    reason = CloseCode(code).description(),
                    "fatal close code; the shard stays failed until an operator restarts it"
                );
            }
            Notice::TimedOut { waiting_for } => {
                tracing::warn!(shard = id, waiting_for, "gateway timed out");
            }
            Notice::ProtocolError { detail } => {
                tracing::warn!(shard = id, %detail, "invalid payload from the gateway");
            }
            Notice::UnexpectedOpcode { op } => {
                tracing::debug!(shard = id, op, "ignored unexpected opcode");
            }
            Notice::ResumeUrlUnreachable => {
                tracing::warn!(
                    shard = id,
                    "resume URL unreachable; identifying a new session"
                );
            }
        }
    }

    /// Parks the shard when its connections keep failing before READY or RESUMED. A
    /// session that came up and was later dropped, asked to reconnect or invalidated is
    /// the gateway's doing and does not count.
    fn count_failure(&mut self) {
        let now = clock::now();
        let policy = self.params.quarantine;
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > policy.window)
        {
            self.failures.pop_front();
        }
        if policy.failures > 0
            && self.failures.len() >= policy.failures as usize
            && !self.quarantined
        {
            tracing::error!(
                shard = self.id(),
                failures = self.failures.len(),
                window_s = policy.window.as_secs(),
                "shard quarantined after repeated failures"
            );
            self.quarantined = true;
            let _ = self.session.command(clock::now(), Command::Stop);
        }
    }

    fn rearm(&mut self, ctx: &mut Context<Self>) {
        let next = self.session.poll_timeout();
        if self.timer.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = next {
            let delay = at.saturating_duration_since(clock::now());
            let handle = ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                act.session.handle(clock::now(), Input::Timeout);
                act.after_input(ctx);
            });
            self.timer = Some((at, handle));
        }
    }

    fn publish(&mut self) {
        let stats = self.session.stats();
        self.params
            .metrics
            .session_progress(&self.published, &stats);
        self.published.clone_from(&stats);
        let Some(mut entry) = self.params.registry.entry(self.id()) else {
            return;
        };
        let carried = entry.carried.clone();
        let resume = self.session.resume_info();
        let session_id = match (&entry.snapshot.session_id, resume) {
            (Some(old), Some(info)) if **old == *info.session_id => Some(Arc::clone(old)),
            (_, info) => info.map(|i| Arc::clone(&i.session_id)),
        };
        entry.snapshot = ShardSnapshot {
            id: self.id(),
            state: ShardState::from_session(self.session.state(), self.quarantined),
            latency_ms: stats
                .latency
                .map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
            seq: self.session.seq(),
            session_id,
            resumable: resume.is_some(),
            identifies: carried.identifies + stats.identifies,
            resumes: carried.resumes + stats.resumes,
            reconnects: carried.reconnects + stats.reconnects,
            last_close_code: stats.last_close_code.or(carried.last_close_code),
            guilds: stats.guilds,
            zombies: carried.zombies + stats.zombies,
            failed_code: self.session.failure_code(),
            restarts: entry.snapshot.restarts,
        };
        entry.resume = resume.cloned();
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(mut entry) = self.params.registry.entry(self.id()) {
            entry.addr = Some(ctx.address());
        }
        let _ = self.session.command(clock::now(), Command::Start);
        self.after_input(ctx);
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if !self.retired {
            self.params
                .supervisor
                .do_send(ShardGone { id: self.params.id });
        }
    }
}

impl Handler<PermitGranted> for Shard {
    type Result = ();

    fn handle(&mut self, msg: PermitGranted, ctx: &mut Self::Context) {
        if msg.ticket == self.ticket {
            self.session.handle(clock::now(), Input::PermitGranted);
            self.after_input(ctx);
        }
    }
}

impl Handler<ShardCommand> for Shard {
    type Result = Result<(), CommandError>;

    fn handle(
        &mut self,
        ShardCommand(command): ShardCommand,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        if matches!(command, Command::Start | Command::Restart { .. }) {
            self.quarantined = false;
            self.failures.clear();
        }
        let result = self.session.command(clock::now(), command);
        self.after_input(ctx);
        result
    }
}

impl Handler<RequestMembers> for Shard {
    type Result = Result<(), CommandError>;

    fn handle(&mut self, msg: RequestMembers, ctx: &mut Self::Context) -> Self::Result {
        let mut request = msg.request;
        let nonce = request
            .nonce
            .get_or_insert_with(|| format!("sk{:016x}", rand::random::<u64>()))
            .clone();
        let result = self.session.command(
            clock::now(),
            Command::Send(ClientPayload::RequestMembers(request)),
        );
        if result.is_ok() {
            self.members.register(nonce, msg.reply);
        }
        self.after_input(ctx);
        result
    }
}

impl Handler<Retire> for Shard {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) -> Self::Result {
        self.retired = true;
        let _ = self.session.command(clock::now(), Command::Stop);
        self.after_input(ctx);
        let closing = std::mem::take(&mut self.closing);
        Box::pin(
            async move {
                let _ = tokio::time::timeout(CLOSE_GRACE, futures_util::future::join_all(closing))
                    .await;
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<Crash> for Shard {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("shard {}: injected handler panic", self.params.id);
    }
}
