//! Leaving a connection: closes, timeouts, reconnects and operator commands.

use std::time::Instant;

use shardkeeper_protocol::CloseCode;

use super::{Presence, ShardSession};
use crate::backoff;
use crate::state::{Pending, Permit, State, StopReason, Target};
use crate::{Action, ClientPayload, CommandError, Notice, ResumeInfo, StateKind};

/// Close code for connections shardkeeper closes while keeping the session resumable.
pub(crate) const CLOSE_RESUMABLE: u16 = 4000;
/// Close code that ends the session on Discord's side (operator's fresh restart).
pub(crate) const CLOSE_END_SESSION: u16 = 1000;

impl ShardSession {
    pub(super) fn on_closed(&mut self, now: Instant, code: Option<u16>) {
        if !self.state.has_socket() {
            return;
        }
        if code.is_some() {
            self.stats.last_close_code = code;
        }
        match code.map(CloseCode) {
            Some(close) if close.is_fatal() => self.fail(close.0),
            Some(close) if !close.can_resume() => {
                self.drop_session();
                self.connection_lost(now, None, code);
            }
            _ => self.connection_lost(now, None, code),
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Connecting { deadline, .. } if now >= *deadline => {
                self.timed_out(now, "connection");
            }
            State::AwaitingHello { deadline, .. } if now >= *deadline => {
                self.timed_out(now, "hello");
            }
            State::Reconnecting { until, .. } if now >= *until => {
                if let State::Reconnecting { target, .. } = std::mem::take(&mut self.state) {
                    self.connect(now, target);
                }
            }
            State::Identifying { link, .. }
            | State::Resuming { link, .. }
            | State::Ready { link, .. } => {
                if link.heartbeat.is_due(now) {
                    if link.heartbeat.is_zombie() {
                        self.stats.zombies += 1;
                        self.push(Action::Notice(Notice::ZombieDetected));
                        self.connection_lost(now, Some(CLOSE_RESUMABLE), None);
                        return;
                    }
                    if link.heartbeat.beat(now) {
                        link.priority.push_back(Pending::Heartbeat);
                    }
                }
                self.flush(now);
            }
            _ => {}
        }
    }

    fn timed_out(&mut self, now: Instant, waiting_for: &'static str) {
        self.push(Action::Notice(Notice::TimedOut { waiting_for }));
        self.connection_lost(now, Some(CLOSE_RESUMABLE), None);
    }

    /// The connection failed or has to be abandoned: close it if asked, then wait with
    /// backoff and reconnect, resuming if the session survives. Repeated failures to
    /// reach `resume_gateway_url` give the session up.
    pub(super) fn connection_lost(&mut self, now: Instant, close: Option<u16>, code: Option<u16>) {
        let old = std::mem::take(&mut self.state);
        self.cancel_permit_of(&old);
        if let Some(close) = close {
            self.push(Action::Close(close));
        }
        let never_ready = matches!(old, State::Connecting { .. } | State::AwaitingHello { .. });
        let mut target = match old {
            State::Connecting { target, .. } | State::AwaitingHello { target, .. } => target,
            other => Target::new(other.into_resume()),
        };
        if let Target::Resume {
            failed_connects, ..
        } = &mut target
        {
            if never_ready {
                *failed_connects += 1;
            }
            if *failed_connects >= self.config.timing.resume_connect_attempts {
                self.push(Action::Notice(Notice::ResumeUrlUnreachable));
                self.push(Action::Forget);
                target = Target::Identify;
            }
        }
        self.failures = self.failures.saturating_add(1);
        let timing = &self.config.timing;
        let delay = backoff::delay(
            self.failures,
            timing.backoff_base,
            timing.backoff_cap,
            &mut self.rng,
        );
        self.push(Action::Notice(Notice::Disconnected {
            code,
            resumable: matches!(target, Target::Resume { .. }),
            retry_in: delay,
        }));
        let policy = self.config.quarantine;
        if !std::mem::take(&mut self.came_up) && self.quarantine.failed(now, policy) {
            self.push(Action::Notice(Notice::Quarantined {
                failures: self.quarantine.len(),
                window: policy.window,
            }));
            self.park(target.into_resume(), StopReason::Quarantined);
            return;
        }
        self.state = State::Reconnecting {
            until: now + delay,
            target,
        };
    }

    /// op 7: close and reconnect at once, resuming if there is a session.
    pub(super) fn reconnect_now(&mut self, now: Instant) {
        if !self.state.has_socket() {
            return;
        }
        let old = std::mem::take(&mut self.state);
        self.cancel_permit_of(&old);
        self.push(Action::Close(CLOSE_RESUMABLE));
        self.connect(now, Target::new(old.into_resume()));
    }

    /// op 9: close, wait 1–5 s, then RESUME (`true`) or IDENTIFY (`false`).
    pub(super) fn on_invalid_session(&mut self, now: Instant, resumable: bool) {
        if !self.state.has_socket() {
            return;
        }
        self.push(Action::Notice(Notice::InvalidSession { resumable }));
        if !resumable {
            self.drop_session();
        }
        let old = std::mem::take(&mut self.state);
        self.cancel_permit_of(&old);
        self.push(Action::Close(CLOSE_RESUMABLE));
        let timing = &self.config.timing;
        let wait = backoff::uniform(
            timing.invalid_session_min,
            timing.invalid_session_max,
            &mut self.rng,
        );
        self.state = State::Reconnecting {
            until: now + wait,
            target: Target::new(old.into_resume()),
        };
    }

    /// A fatal close code: stop for good and forget the session.
    fn fail(&mut self, code: u16) {
        let old = std::mem::take(&mut self.state);
        self.cancel_permit_of(&old);
        if old.resume().is_some() {
            self.push(Action::Forget);
        }
        self.push(Action::Notice(Notice::Fatal { code }));
        self.state = State::Failed { code };
    }

    /// Forgets the current session in memory and in the store, keeping the state kind.
    fn drop_session(&mut self) {
        let had_session = self.state.resume().is_some();
        match std::mem::take(&mut self.state) {
            State::Resuming { link, .. } | State::Ready { link, .. } => {
                self.state = State::Identifying {
                    link,
                    permit: Permit::Used,
                    seq: None,
                };
            }
            State::Connecting { deadline, .. } => {
                self.state = State::Connecting {
                    target: Target::Identify,
                    deadline,
                };
            }
            State::AwaitingHello { deadline, conn, .. } => {
                self.state = State::AwaitingHello {
                    target: Target::Identify,
                    deadline,
                    conn,
                };
            }
            State::Reconnecting { until, .. } => {
                self.state = State::Reconnecting {
                    until,
                    target: Target::Identify,
                };
            }
            State::Idle { .. } => self.state = State::Idle { resume: None },
            State::Stopped { reason, .. } => {
                self.state = State::Stopped {
                    resume: None,
                    reason,
                };
            }
            other => self.state = other,
        }
        if had_session {
            self.push(Action::Forget);
        }
    }

    fn cancel_permit_of(&mut self, old: &State) {
        if let State::Identifying {
            permit: Permit::Waiting,
            ..
        } = old
        {
            self.push(Action::CancelPermit);
        }
    }

    pub(super) fn start(&mut self, now: Instant) {
        self.quarantine.clear();
        match std::mem::take(&mut self.state) {
            State::Idle { resume } | State::Stopped { resume, .. } => {
                self.failures = 0;
                self.connect(now, Target::new(resume));
            }
            State::Failed { .. } => {
                self.failures = 0;
                self.connect(now, Target::Identify);
            }
            other => self.state = other,
        }
    }

    pub(super) fn stop(&mut self) {
        let old = std::mem::take(&mut self.state);
        self.cancel_permit_of(&old);
        if old.has_socket() {
            self.push(Action::Close(CLOSE_RESUMABLE));
        }
        self.park(old.into_resume(), StopReason::Operator);
    }

    /// Stops for `reason`, keeping `resume`; payloads waiting for Ready are dropped.
    fn park(&mut self, resume: Option<ResumeInfo>, reason: StopReason) {
        self.outbox.clear();
        self.state = State::Stopped { resume, reason };
    }

    pub(super) fn restart(&mut self, now: Instant, fresh: bool) {
        if fresh {
            self.drop_session();
        }
        let old = std::mem::take(&mut self.state);
        self.cancel_permit_of(&old);
        if old.has_socket() {
            let code = if fresh {
                CLOSE_END_SESSION
            } else {
                CLOSE_RESUMABLE
            };
            self.push(Action::Close(code));
        }
        self.failures = 0;
        self.quarantine.clear();
        self.connect(now, Target::new(old.into_resume()));
    }

    pub(super) fn enqueue(
        &mut self,
        now: Instant,
        payload: &ClientPayload,
    ) -> Result<(), CommandError> {
        let state = self.state.kind();
        if state == StateKind::Idle || state.is_parked() {
            return Err(CommandError::NotRunning { state });
        }
        let frame = payload.encode()?;
        let capacity = self.config.outbox_capacity;
        if self.outbox.len() >= capacity {
            return Err(CommandError::OutboxFull { capacity });
        }
        if let ClientPayload::Presence(presence) = payload {
            self.presence = Presence::Sent(Box::new(presence.clone()));
        }
        self.outbox.push_back(frame);
        self.flush(now);
        Ok(())
    }
}
