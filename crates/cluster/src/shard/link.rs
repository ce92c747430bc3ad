//! The shard's side of its connection: opening it, feeding what it reads to the
//! session, closing it.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use shardkeeper_session::Input;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Shard;
use super::delivery::wait_for_sinks;
use crate::clock;
use crate::transport::socket::{Inbound, Link, socket_config};
use crate::transport::upgrade;

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
                    act.link = Some(Link::spawn(ws, ctx.address(), act.epoch));
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
        if let Some(handle) = self.connecting.take() {
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

impl Handler<Inbound> for Shard {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, inbound: Inbound, ctx: &mut Self::Context) -> Self::Result {
        // The frames of a batch were read together: one clock reading serves them all.
        let now = clock::now();
        if self.fenced_out(ctx, now) {
            return Box::pin(actix::fut::ready(()));
        }
        for item in inbound.items {
            // A frame can end the connection; the rest of the batch is then stale.
            if inbound.epoch == self.epoch {
                self.on_inbound(ctx, now, item);
            }
        }
        self.settle(ctx);
        if self.backlog.is_empty() {
            return Box::pin(actix::fut::ready(()));
        }
        // A sink is full: finish this frame only when the backlog is delivered.
        wait_for_sinks()
    }
}
