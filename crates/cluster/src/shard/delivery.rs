//! Handing events to the sinks in order, and the store writes that wait behind them.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::Shard;
use crate::Event;

/// How often events are re-offered to a full sink.
const SINK_RETRY: Duration = Duration::from_millis(5);

/// Work that must happen in order after a full sink takes an event.
pub(super) enum Deferred {
    /// The event and the bits of the sinks that still have to take it.
    Emit(Arc<Event>, u64),
    Persist(shardkeeper_session::ResumeInfo),
    Forget,
}

/// Re-offers backlogged events every few milliseconds until every sink took them.
pub(super) fn wait_for_sinks() -> ResponseActFuture<Shard, ()> {
    Box::pin(
        actix::fut::wrap_future::<_, Shard>(tokio::time::sleep(SINK_RETRY)).then(|(), act, _| {
            act.drain_backlog();
            if act.backlog.is_empty() {
                Box::pin(actix::fut::ready(())) as ResponseActFuture<Shard, ()>
            } else {
                wait_for_sinks()
            }
        }),
    )
}

impl Shard {
    /// Delivers what the sinks accept now, in order; persists once its events are in.
    pub(super) fn drain_backlog(&mut self) {
        while let Some(front) = self.backlog.front_mut() {
            match front {
                Deferred::Emit(event, pending) => {
                    *pending = self.params.sinks.deliver(event, *pending);
                    if *pending != 0 {
                        return;
                    }
                }
                Deferred::Persist(info) => {
                    self.params
                        .store
                        .save_session(self.params.id, self.params.total, info);
                }
                Deferred::Forget => self.params.store.forget_session(self.params.id),
            }
            self.backlog.pop_front();
        }
    }
}
