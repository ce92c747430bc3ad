//! The shard's WebSocket: connecting, the reader task that hands frames to the actor in
//! batches, the writer task, and closing.

use std::sync::Arc;

use actix::prelude::*;
use futures_channel::mpsc;
use futures_util::stream::SplitSink;
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

/// The open connection: writer channel and task, reader task. The channel allocates per
/// frame rather than up front: a thousand idle connections send a heartbeat now and then,
/// and a preallocated block of slots each would cost more than their frames.
pub(super) struct Link {
    writer: mpsc::UnboundedSender<Outgoing>,
    task: JoinHandle<()>,
    reader: JoinHandle<()>,
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
        let epoch = self.epoch;
        let (sink, mut stream) = ws.split();
        let addr = ctx.address();
        // Frames go to the actor in batches of what is already buffered, and each batch
        // waits for its handler: while a sink is full the handler does not finish, this
        // task stops reading, and TCP slows the gateway down. Timers keep running in the
        // actor, so heartbeats go on.
        let reader = actix::spawn(async move {
            while let Some(first) = stream.next().await {
                let mut items = vec![Some(first)];
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
                if addr.send(Inbound { epoch, items }).await.is_err() || ended {
                    return;
                }
            }
            let _ = addr
                .send(Inbound {
                    epoch,
                    items: vec![None],
                })
                .await;
        });
        let (writer, task) = spawn_writer(sink);
        self.link = Some(Link {
            writer,
            task,
            reader,
        });
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
            link.reader.abort();
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
            link.reader.abort();
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
            Some(Ok(Message::Text(text))) => {
                self.session.handle(now, Input::Frame(text.as_bytes()));
            }
            Some(Ok(Message::Binary(bytes))) => self.session.handle(now, Input::Frame(&bytes)),
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

fn spawn_writer(
    mut sink: SplitSink<Ws, Message>,
) -> (mpsc::UnboundedSender<Outgoing>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded::<Outgoing>();
    let task = actix::spawn(async move {
        while let Some((message, report)) = rx.next().await {
            let closing = matches!(message, Message::Close(_));
            let sent = sink.send(message).await;
            if let Some(report) = report {
                report.written();
            }
            if sent.is_err() || closing {
                break;
            }
        }
    });
    (tx, task)
}
