//! The shard's WebSocket: connecting, the connection task that hands frames to the actor
//! in batches and writes what the actor queues, and closing.

use std::pin::Pin;
use std::sync::Arc;

use actix::prelude::*;
use futures_channel::mpsc;
use futures_util::future::{self, Either};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use shardkeeper_session::Input;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::delivery::wait_for_sinks;
use super::upgrade::{self, Ws};
use super::{Inbound, Shard};
use crate::clock;
use crate::coordinator::PermitReport;

/// Most frames handed to the actor in one message.
const READ_BATCH: usize = 64;

/// Initial read buffer of a gateway connection, and the most tungstenite takes per read
/// (from memory: socket reads go through [`upgrade::OnDemand`]).
const READ_BUFFER: usize = 512;

/// A frame for the writer task, with the report an IDENTIFY owes the coordinator.
type Outgoing = (Message, Option<PermitReport>);

/// The open connection: the writer channel and the connection's task. The channel
/// allocates per frame rather than up front: a thousand idle connections send a heartbeat
/// now and then, and a preallocated block of slots each would cost more than their frames.
pub(super) struct Link {
    writer: mpsc::UnboundedSender<Outgoing>,
    task: JoinHandle<()>,
}

impl Link {
    /// Queues a frame for the writer task; `report` is told once the frame is written.
    pub(super) fn send(&self, message: Message, report: Option<PermitReport>) {
        let _ = self.writer.unbounded_send((message, report));
    }
}

impl Shard {
    pub(super) fn connect(&mut self, ctx: &mut Context<Self>, url: String, resuming: bool) {
        self.drop_link(ctx);
        let epoch = self.epoch;
        let tls = Arc::clone(&self.params.tls);
        tracing::debug!(shard = self.id(), %url, resuming, "connecting");
        let attempt = async move { upgrade::connect(&url, &tls, socket_config()).await };
        let handle = ctx.spawn(attempt.into_actor(self).map(move |result, act, ctx| {
            if act.epoch != epoch {
                return;
            }
            act.connecting = None;
            let now = clock::now();
            match result {
                Ok(ws) => {
                    act.attach(ctx, ws);
                    act.session.handle(now, Input::Opened);
                }
                Err(err) => {
                    tracing::warn!(shard = act.id(), %err, "cannot connect to the gateway");
                    act.session.handle(now, Input::Closed(None));
                }
            }
            act.after_input(ctx);
        }));
        self.connecting = Some(handle);
    }

    fn attach(&mut self, ctx: &mut Context<Self>, ws: Ws) {
        let (sink, stream) = ws.split();
        let (writer, rx) = mpsc::unbounded::<Outgoing>();
        let reading = read_frames(stream, ctx.address(), self.epoch);
        // One task per connection, reading and writing side by side (a task costs a
        // 512-byte cell; a thousand idle shards notice).
        let task = actix::spawn(async move {
            let writing = write_frames(sink, rx);
            futures_util::pin_mut!(reading, writing);
            match future::select(reading, writing).await {
                // The connection ended; what is queued can still go out until the actor
                // drops the link.
                Either::Left(((), writing)) => {
                    writing.await;
                }
                // The writer failed: reading goes on until the connection reports why.
                Either::Right((false, reading)) => reading.await,
                // The close frame is written: nothing more to read.
                Either::Right((true, _)) => {}
            }
        });
        self.link = Some(Link { writer, task });
    }

    /// Ends the current connection: with a close frame if `code` is given, else by
    /// dropping it. Inputs of the old connection are ignored from now on.
    pub(super) fn close(&mut self, ctx: &mut Context<Self>, code: Option<u16>) {
        if let Some(link) = self.link.take() {
            if let Some(code) = code {
                let frame = CloseFrame {
                    code: code.into(),
                    reason: "".into(),
                };
                link.send(Message::Close(Some(frame)), None);
            }
            // Frames still read until the close frame is out carry an old epoch and are
            // dropped by the handler.
            self.closing.retain(|task| !task.is_finished());
            self.closing.push(link.task);
        }
        self.drop_link(ctx);
    }

    pub(super) fn drop_link(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.connecting.take() {
            ctx.cancel_future(handle);
        }
        if let Some(link) = self.link.take() {
            link.task.abort();
        }
        self.epoch += 1;
    }

    fn on_inbound(
        &mut self,
        ctx: &mut Context<Self>,
        now: std::time::Instant,
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
                tracing::debug!(shard = self.id(), %err, "gateway connection failed");
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

/// Per-connection buffers sized for a thousand idle shards, not one busy client: reads
/// grow the buffer on demand, so a small initial size only costs idle memory.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
}

/// Hands frames to the actor in batches of what is already buffered, each batch waiting
/// for its handler: while a sink is full the handler does not finish, reading stops, and
/// TCP slows the gateway down. Timers keep running in the actor, so heartbeats go on.
async fn read_frames(mut stream: SplitStream<Ws>, addr: Addr<Shard>, epoch: u64) {
    while let Some(first) = stream.next().await {
        let mut items = Vec::with_capacity(READ_BATCH);
        items.push(Some(first));
        while items.len() < READ_BATCH {
            match stream.next().now_or_never() {
                Some(Some(item)) => items.push(Some(item)),
                Some(None) => items.push(None),
                None => break,
            }
            if items.last().is_some_and(Option::is_none) {
                break;
            }
        }
        let ended = items.last().is_some_and(Option::is_none);
        if hand_over(&addr, Inbound { epoch, items }).await.is_err() || ended {
            return;
        }
    }
    let _ = hand_over(
        &addr,
        Inbound {
            epoch,
            items: vec![None],
        },
    )
    .await;
}

/// Hands a batch to the actor; the request resolves once it is handled. Boxed, and not
/// an `async fn`: actix's request future (with its optional timeout timer) would
/// otherwise take a few hundred bytes of every connection's task cell, idle or not, for
/// the moment a batch is with the actor.
fn hand_over(
    addr: &Addr<Shard>,
    inbound: Inbound,
) -> Pin<Box<actix::dev::Request<Shard, Inbound>>> {
    Box::pin(addr.send(inbound))
}

/// Writes queued frames in order until the channel closes; true once a close frame is
/// written, false if writing failed.
async fn write_frames(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) -> bool {
    while let Some((message, report)) = rx.next().await {
        let closing = matches!(message, Message::Close(_));
        // Boxed for the same reason as the actor request in `hand_over`: frames go out
        // now and then, the task cell is there all the time.
        let sent = Box::pin(sink.send(message)).await;
        if let Some(report) = report {
            report.written();
        }
        if sent.is_err() {
            return false;
        }
        if closing {
            return true;
        }
    }
    true
}
