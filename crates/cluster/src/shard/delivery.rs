//! Handing events to the sinks in order, and the store writes that wait behind them.

use std::time::Duration;

use actix::prelude::*;

use shardkeeper_protocol::EventName;

use super::Shard;
use crate::Event;

/// How often events are re-offered to a full sink.
const SINK_RETRY: Duration = Duration::from_millis(5);

/// Work that must happen in order after a full sink takes an event.
pub(super) enum Deferred {
    /// The event and the bits of the sinks that still have to take it.
    Emit(Event, u64),
    Persist(shardkeeper_session::ResumeInfo),
    Forget,
}

impl Shard {
    /// Counts a dispatch towards the metrics at the end of the batch.
    pub(super) fn count(&mut self, t: &EventName) {
        match &mut self.counted {
            Some((name, n)) if name == t => *n += 1,
            counted => {
                if let Some((name, n)) = counted.replace((t.clone(), 1)) {
                    self.shared.metrics.events(&name, n);
                }
            }
        }
    }

    /// Starts re-offering the backlog every few milliseconds, unless that is already
    /// going on; once every sink took it, the paused reading goes on.
    pub(super) fn drain_later(&mut self, ctx: &mut Context<Self>) {
        if self.backlog.is_empty() || self.draining.is_some() {
            return;
        }
        let retry = ctx.run_interval(SINK_RETRY, |act, ctx| {
            act.drain_backlog();
            if act.backlog.is_empty() {
                if let Some(handle) = act.draining.take() {
                    ctx.cancel_future(handle);
                }
                if let Some(reading) = act.paused.take() {
                    reading.wake();
                }
            }
        });
        self.draining = Some(retry);
    }

    /// Does `work` now if nothing waits before it, else queues it behind the backlog.
    /// The common case — every sink takes the event at once — allocates nothing.
    pub(super) fn in_order(&mut self, work: Deferred) {
        if self.backlog.is_empty() {
            if let Some(rest) = self.run(work) {
                self.backlog.push_back(rest);
            }
        } else {
            self.backlog.push_back(work);
        }
    }

    /// Delivers what the sinks accept now, in order; persists once its events are in.
    pub(super) fn drain_backlog(&mut self) {
        while let Some(front) = self.backlog.pop_front() {
            if let Some(rest) = self.run(front) {
                self.backlog.push_front(rest);
                return;
            }
        }
    }

    /// Does `work`; returns what is left of it: an event some full sink has not taken.
    fn run(&mut self, work: Deferred) -> Option<Deferred> {
        match work {
            Deferred::Emit(event, pending) => {
                let pending = self.shared.sinks.deliver(&event, pending);
                (pending != 0).then_some(Deferred::Emit(event, pending))
            }
            Deferred::Persist(info) => {
                self.shared.ledger.save(self.id, self.shared.total, &info);
                None
            }
            Deferred::Forget => {
                self.shared.ledger.forget(self.id);
                None
            }
        }
    }
}
