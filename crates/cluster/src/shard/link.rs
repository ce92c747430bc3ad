//! The shard's side of its connection: opening it, feeding what it reads to the
//! session, closing it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use actix::fut::ActorFuture;
use actix::prelude::*;
use futures_util::StreamExt as _;
use shardkeeper_session::Input;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Shard;
use crate::clock;
use crate::transport::socket::{Frames, Link, socket_config};
use crate::transport::upgrade;

/// Most frames handled in one turn of the reading before the actor's other work (its
/// mailbox, timers) gets a turn.
const READ_BATCH: usize = 64;

impl Shard {
    pub(super) fn connect(&mut self, ctx: &mut Context<Self>, url: String, resuming: bool) {
        self.drop_link(ctx);
        let epoch = self.epoch;
        let tls = Arc::clone(&self.shared.tls);
        let dialer = self.shared.dialer.clone();
        tracing::debug!(shard = self.id, %url, resuming, "connecting");
        let attempt =
            async move { upgrade::connect(&url, &tls, socket_config(), dialer.as_deref()).await };
        let handle = ctx.spawn(attempt.into_actor(self).map(move |result, act, ctx| {
            if act.epoch != epoch {
                return;
            }
            act.connecting = None;
            let now = clock::now();
            match result {
                Ok(ws) => {
                    let (link, frames) = Link::spawn(ws);
                    act.link = Some(link);
                    let epoch = act.epoch;
                    let reading = Reading {
                        frames,
                        epoch,
                        held: false,
                    };
                    act.reading = Some(ctx.spawn(reading));
                    act.session.handle(now, Input::Opened);
                }
                Err(err) => {
                    tracing::warn!(shard = act.id, %err, "cannot connect to the gateway");
                    act.session.handle(now, Input::Closed(None));
                }
            }
            act.after_input(ctx);
        }));
        self.connecting = Some(handle);
    }

    /// Ends the current connection: with a close frame if `code` is given, else by
    /// dropping it. Inputs of the old connection are ignored from now on.
    pub(super) fn close(&mut self, ctx: &mut Context<Self>, code: Option<u16>) {
        if let Some(link) = self.link.take() {
            // Frames still read until the close frame is out carry an old epoch and are
            // dropped by the handler.
            self.closing.retain(|task| !task.is_finished());
            self.closing.push(link.close(code));
        }
        self.drop_link(ctx);
    }

    /// Whether the fence is revoked (for good, for this actor): then nothing the
    /// session asks for is done — no frame written, no event delivered, no session
    /// stored — and the socket closes with 4000, so the session stays resumable by
    /// whichever node owns the shard now.
    pub(super) fn fenced_out(&mut self, ctx: &mut Context<Self>, now: Instant) -> bool {
        if !self.fenced && self.ticket.holds(now) {
            return false;
        }
        while self.session.poll_action().is_some() {}
        if !self.fenced {
            self.fenced = true;
            // Events a full sink has not taken yet were never stored: the node that
            // owns the shard now replays them from the stored sequence.
            self.backlog.clear();
            self.persist = None;
            tracing::warn!(
                shard = self.id,
                "fenced: closing the connection and waiting to be retired"
            );
            if let Some((_, handle)) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            if let Some(handle) = self.permit.take() {
                ctx.cancel_future(handle);
            }
            self.close(ctx, Some(4000));
        }
        true
    }

    pub(super) fn drop_link(&mut self, ctx: &mut Context<Self>) {
        for handle in [self.connecting.take(), self.reading.take()]
            .into_iter()
            .flatten()
        {
            ctx.cancel_future(handle);
        }
        if let Some(link) = self.link.take() {
            link.abort();
        }
        self.epoch += 1;
    }

    fn on_inbound(
        &mut self,
        ctx: &mut Context<Self>,
        now: Instant,
        item: Option<Result<Message, WsError>>,
    ) {
        match item {
            Some(Ok(Message::Text(text))) => self.session.handle(now, Input::Frame(text.into())),
            Some(Ok(Message::Binary(bytes))) => self.session.handle(now, Input::Frame(bytes)),
            Some(Ok(Message::Close(frame))) => {
                self.drop_link(ctx);
                self.session
                    .handle(now, Input::Closed(frame.map(|f| u16::from(f.code))));
            }
            Some(Ok(_)) => return,
            Some(Err(err)) => {
                tracing::debug!(shard = self.id, %err, "gateway connection failed");
                self.drop_link(ctx);
                self.session.handle(now, Input::Closed(None));
            }
            None => {
                self.drop_link(ctx);
                self.session.handle(now, Input::Closed(None));
            }
        }
        self.perform_actions(ctx);
    }
}

/// The reading half of connection `epoch`, polled in the shard's own task: frames are
/// handled as they are read, a batch of what is already buffered at a time, with one
/// clock reading and one [`Shard::settle`] per batch. A batch that leaves a sink full
/// holds the next until the backlog is delivered: reading stops, and TCP slows the
/// gateway down. Timers keep running in the actor, so heartbeats are still sent; their
/// ACKs wait unread behind the held batch, so a sink full for longer than a heartbeat
/// interval ends in a zombie reconnect and a RESUME (nothing is lost). The first batch
/// of a connection is never held, so a new connection reads its HELLO (and a resumed
/// one its replay up to RESUMED) even behind a full sink.
struct Reading {
    frames: Frames,
    epoch: u64,
    held: bool,
}

impl ActorFuture<Shard> for Reading {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Shard,
        ctx: &mut Context<Shard>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        if this.held && !act.backlog.is_empty() {
            act.paused = Some(task.waker().clone());
            return Poll::Pending;
        }
        this.held = false;
        let mut now = None;
        let mut handled = 0;
        while act.epoch == this.epoch && handled < READ_BATCH {
            let Poll::Ready(item) = this.frames.poll_next_unpin(task) else {
                break;
            };
            // The frames of a batch were read together: one clock reading serves them.
            let at = *now.get_or_insert_with(clock::now);
            if act.fenced_out(ctx, at) {
                return Poll::Ready(());
            }
            act.on_inbound(ctx, at, item);
            handled += 1;
        }
        if handled > 0 {
            act.settle(ctx);
        }
        if act.epoch != this.epoch {
            // The connection ended, or a frame ended it.
            return Poll::Ready(());
        }
        if handled > 0 && !act.backlog.is_empty() {
            // Woken once the backlog is delivered.
            this.held = true;
            act.paused = Some(task.waker().clone());
        } else if handled == READ_BATCH {
            task.waker().wake_by_ref();
        }
        Poll::Pending
    }
}
