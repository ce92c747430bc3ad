//! The `Shard` actor: a thin shell that owns one socket, one timer and one
//! `ShardSession`, and performs the session's actions in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use actix::prelude::*;
use shardkeeper_protocol::EventName;
use shardkeeper_protocol::payload::RequestGuildMembers;
use shardkeeper_session::{
    Action, Command, CommandError, Input, ResumeInfo, SessionConfig, SessionStats, ShardSession,
    StateKind,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::members::{MemberRequests, MembersResult};
use crate::metrics::Metrics;
use crate::permit::{PermitReport, PermitSource};
use crate::placement::{Fence, Ticket};
use crate::sink::Sinks;
use crate::snapshot::ShardSnapshot;
use crate::status::StatusCell;
use crate::store::SessionLedger;
use crate::transport::net::Dialer;
use crate::transport::socket::Link;
use crate::{Event, clock};

use self::delivery::Deferred;

mod delivery;
mod link;
mod notice;

/// How long a closing connection may take to send its close frame at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// What every shard of the process shares.
pub(crate) struct Shared {
    pub(crate) total: u32,
    pub(crate) session: Arc<SessionConfig>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// Opens gateway connections without a socket, when set (tests).
    pub(crate) dialer: Option<Arc<dyn Dialer>>,
    pub(crate) permits: Arc<dyn PermitSource>,
    pub(crate) sinks: Sinks,
    pub(crate) ledger: Arc<SessionLedger>,
    pub(crate) metrics: Arc<Metrics>,
    /// Revoked when this process may no longer act for its shards (cluster mode).
    pub(crate) fence: Fence,
    pub(crate) supervisor: Recipient<ShardGone>,
}

/// One run of a shard's actor: what the supervisor hands it.
pub(crate) struct Incarnation {
    pub(crate) id: u32,
    /// Which run of the shard's actor this is.
    pub(crate) generation: u64,
    /// Where it publishes its snapshot and session.
    pub(crate) status: StatusCell,
    /// The session to resume.
    pub(crate) resume: Option<ResumeInfo>,
    /// Counters of earlier runs, added to the live session's.
    pub(crate) carried: SessionStats,
    /// Earlier runs that crashed.
    pub(crate) restarts: u64,
}

/// A shard actor stopped without being retired: it crashed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ShardGone {
    pub(crate) id: u32,
    pub(crate) generation: u64,
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

/// Close with 4000 (the session stays resumable) and stop the actor. What the sinks
/// took is in the ledger; what a full sink did not take was never stored, so whoever
/// resumes the session next receives it again.
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
    shared: Arc<Shared>,
    id: u32,
    generation: u64,
    status: StatusCell,
    carried: SessionStats,
    restarts: u64,
    session: ShardSession,
    /// Number of the current connection; inputs of older ones are dropped.
    epoch: u64,
    link: Option<Link>,
    connecting: Option<SpawnHandle>,
    /// The reading of the current connection, polled in this actor.
    reading: Option<SpawnHandle>,
    /// The reading, waiting for a full sink to take the backlog.
    paused: Option<Waker>,
    /// The retries that deliver the backlog.
    draining: Option<SpawnHandle>,
    timer: Option<(Instant, SpawnHandle)>,
    /// The permit being waited for.
    permit: Option<SpawnHandle>,
    members: MemberRequests,
    /// Writer tasks finishing a close handshake.
    closing: Vec<JoinHandle<()>>,
    /// Stopped on purpose: dropping it is not a crash.
    retired: bool,
    /// This actor's hold on the placement's fence.
    ticket: Ticket,
    /// The fence was found revoked: the actor does nothing more until retired.
    fenced: bool,
    /// Session counters already added to the metrics.
    published: SessionStats,
    /// Events a full sink has not taken yet, and the store writes that wait for them.
    backlog: VecDeque<Deferred>,
    /// The newest session position, written to the ledger at the end of the batch.
    persist: Option<ResumeInfo>,
    /// Dispatches of one name in a row not yet added to the metrics: every shard thread
    /// counts into the same counters, so a batch adds once instead of once per event.
    counted: Option<(EventName, u64)>,
}

impl Shard {
    pub(crate) fn new(shared: Arc<Shared>, run: Incarnation, seed: u64) -> Self {
        let shard_id = shardkeeper_protocol::ShardId::new(run.id, shared.total)
            // invariant: the supervisor starts only ids below the shard count (≥ 1)
            .unwrap_or_else(|| unreachable!("shard {} of {}", run.id, shared.total));
        let session = ShardSession::new(shard_id, Arc::clone(&shared.session), run.resume, seed);
        let ticket = shared.fence.ticket();
        Self {
            ticket,
            fenced: false,
            shared,
            id: run.id,
            generation: run.generation,
            status: run.status,
            carried: run.carried,
            restarts: run.restarts,
            session,
            epoch: 0,
            link: None,
            connecting: None,
            reading: None,
            paused: None,
            draining: None,
            timer: None,
            permit: None,
            members: MemberRequests::default(),
            closing: Vec::new(),
            retired: false,
            published: SessionStats::default(),
            backlog: VecDeque::new(),
            persist: None,
            counted: None,
        }
    }

    /// Performs the session's actions, publishes the snapshot and re-arms the timer.
    fn after_input(&mut self, ctx: &mut Context<Self>) {
        if self.fenced_out(ctx, clock::now()) {
            return;
        }
        self.perform_actions(ctx);
        self.settle(ctx);
    }

    fn perform_actions(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.session.poll_action() {
            self.perform(ctx, action);
        }
    }

    /// What is done once per batch of inputs rather than per input: the coalesced
    /// ledger write, the published snapshot and metrics, the timer.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        if let Some((t, n)) = self.counted.take() {
            self.shared.metrics.events(&t, n);
        }
        if let Some(info) = self.persist.take() {
            self.shared.ledger.save(self.id, self.shared.total, &info);
        }
        self.publish();
        self.rearm(ctx);
        self.drain_later(ctx);
    }

    fn perform(&mut self, ctx: &mut Context<Self>, action: Action) {
        match action {
            Action::Connect { url, resuming } => self.connect(ctx, url, resuming),
            Action::Send(frame) => {
                if let Some(link) = &self.link {
                    link.send(Message::text(frame.into_string()), None);
                }
            }
            Action::Identify(frame) => {
                // The permit source paces the bucket from the moment the IDENTIFY is
                // written; dropped unwritten, the report says the permit went unused.
                let report = PermitReport::new(self.id, Arc::clone(&self.shared.permits));
                if let Some(link) = &self.link {
                    let on_written = Box::new(move || report.written());
                    link.send(Message::text(frame.into_string()), Some(on_written));
                }
            }
            Action::Close(code) => self.close(ctx, Some(code)),
            Action::RequestPermit => self.ask_permit(ctx),
            Action::CancelPermit => {
                if let Some(handle) = self.permit.take() {
                    ctx.cancel_future(handle);
                }
                self.shared.permits.cancel(self.id);
            }
            Action::Emit(dispatch) => {
                let event = Event::new(self.id, dispatch);
                if !self.members.is_empty() {
                    self.members.observe(&event);
                }
                self.count(&event.t);
                let all = self.shared.sinks.all();
                self.in_order(Deferred::Emit(event, all));
            }
            // With nothing backlogged every event so far is with the sinks, so the newest
            // position can wait for the end of the batch: one ledger write per batch.
            Action::Persist(info) if self.backlog.is_empty() => self.persist = Some(info),
            Action::Persist(info) => self.backlog.push_back(Deferred::Persist(info)),
            Action::Forget => {
                self.members.interrupt();
                self.persist = None;
                self.in_order(Deferred::Forget);
            }
            Action::Changed(state) => {
                tracing::debug!(shard = self.id, %state, "shard state changed");
            }
            Action::Notice(notice) => self.on_notice(notice),
        }
    }

    fn ask_permit(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.permit.take() {
            ctx.cancel_future(handle);
        }
        let granted = self.shared.permits.ask(self.id);
        let handle = ctx.spawn(granted.into_actor(self).map(|grant, act, ctx| {
            act.permit = None;
            let now = clock::now();
            match grant {
                Ok(grant) if grant.valid_until.is_some_and(|until| now >= until) => {
                    // Too late to IDENTIFY under this grant: the bucket may be someone
                    // else's by now.
                    tracing::warn!(
                        shard = act.id,
                        "identify permit arrived expired; asking again"
                    );
                    act.shared.permits.unused(act.id);
                    act.ask_permit(ctx);
                }
                Ok(_) => {
                    act.session.handle(now, Input::PermitGranted);
                    act.after_input(ctx);
                }
                // A closed channel means the source replaced or dropped the request.
                Err(_) => {}
            }
        }));
        self.permit = Some(handle);
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

    /// A shard being handed over takes no more commands: a restart now would reconnect
    /// a shard that is about to run elsewhere.
    fn refuse_if_retired(&self) -> Result<(), CommandError> {
        if self.retired {
            return Err(CommandError::NotRunning {
                state: StateKind::Stopped,
            });
        }
        Ok(())
    }

    /// Writes the shard's snapshot and session where the supervisor, the handle and
    /// the metrics read them.
    fn publish(&mut self) {
        let stats = self.session.stats();
        self.shared
            .metrics
            .session_progress(&self.published, &stats);
        self.published.clone_from(&stats);
        let carried = &self.carried;
        let resume = self.session.resume_info();
        let mut cell = self.status.lock();
        let session_id = match (&cell.snapshot.session_id, resume) {
            (Some(old), Some(info)) if **old == *info.session_id => Some(Arc::clone(old)),
            (_, info) => info.map(|i| Arc::clone(&i.session_id)),
        };
        cell.snapshot = ShardSnapshot {
            id: self.id,
            state: self.session.state(),
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
            restarts: self.restarts,
            events: carried.events + stats.events,
        };
        cell.resume = resume.cloned();
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let _ = self.session.command(clock::now(), Command::Start);
        self.after_input(ctx);
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if !self.retired {
            self.shared.supervisor.do_send(ShardGone {
                id: self.id,
                generation: self.generation,
            });
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
        self.refuse_if_retired()?;
        let result = self.session.command(clock::now(), command);
        self.after_input(ctx);
        result
    }
}

impl Handler<RequestMembers> for Shard {
    type Result = Result<(), CommandError>;

    fn handle(&mut self, msg: RequestMembers, ctx: &mut Self::Context) -> Self::Result {
        self.refuse_if_retired()?;
        let result = self.session.request_members(clock::now(), msg.request);
        if let Ok(nonce) = &result {
            self.members.register(nonce.clone(), msg.reply);
        }
        self.after_input(ctx);
        result.map(drop)
    }
}

impl Handler<Retire> for Shard {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) -> Self::Result {
        self.retired = true;
        let _ = self.session.command(clock::now(), Command::Stop);
        // With nothing backlogged every event received is with the sinks: the session
        // is stored as of now, so its age counts from the handover, not from the last
        // dispatch of an idle shard.
        if self.backlog.is_empty()
            && let Some(info) = self.session.resume_info()
        {
            self.persist = Some(info.clone());
        }
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
        panic!("shard {}: injected handler panic", self.id);
    }
}
