//! The connection task of a gateway WebSocket: it hands frames to the actor in batches
//! and writes what the actor queues, one task per connection.

use std::pin::Pin;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use futures_channel::mpsc;
use futures_util::future::{self, Either};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::upgrade::Ws;

/// Most frames handed to the actor in one message.
const READ_BATCH: usize = 64;

/// Initial read buffer of a gateway connection, and the most tungstenite takes per read
/// (from memory: socket reads go through [`super::upgrade::OnDemand`]).
const READ_BUFFER: usize = 512;

/// Frames (or the end) of connection number `epoch`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inbound {
    pub(crate) epoch: u64,
    /// Frames in arrival order; `None` marks the end of the connection.
    pub(crate) items: Vec<Option<Result<Message, WsError>>>,
}

/// Called once the frame it travels with was handed to the socket (or its write failed
/// part-way, so it may have arrived). Dropped unwritten, it is never called.
pub(crate) type OnWritten = Box<dyn FnOnce() + Send>;

/// A frame for the writer task, with what to call once it is written.
type Outgoing = (Message, Option<OnWritten>);

/// The open connection: the writer channel and the connection's task. The channel
/// allocates per frame rather than up front: a thousand idle connections send a heartbeat
/// now and then, and a preallocated block of slots each would cost more than their frames.
pub(crate) struct Link {
    writer: mpsc::UnboundedSender<Outgoing>,
    task: JoinHandle<()>,
}

impl Link {
    /// Starts the connection task of `ws`: frames go to `actor` tagged with `epoch`.
    pub(crate) fn spawn<A>(ws: Ws, actor: Addr<A>, epoch: u64) -> Self
    where
        A: Actor + Handler<Inbound>,
        A::Context: ToEnvelope<A, Inbound>,
    {
        let (sink, stream) = ws.split();
        let (writer, rx) = mpsc::unbounded::<Outgoing>();
        let reading = read_frames(stream, actor, epoch);
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
        Self { writer, task }
    }

    /// Queues a frame for the writer task; `on_written` is called once it is written.
    pub(crate) fn send(&self, message: Message, on_written: Option<OnWritten>) {
        let _ = self.writer.unbounded_send((message, on_written));
    }

    /// Lets the connection end: after a close frame with `code` if given, else once
    /// what is queued is written. Returns the task, which ends then.
    pub(crate) fn close(self, code: Option<u16>) -> JoinHandle<()> {
        if let Some(code) = code {
            let frame = CloseFrame {
                code: code.into(),
                reason: "".into(),
            };
            self.send(Message::Close(Some(frame)), None);
        }
        self.task
    }

    /// Drops the connection at once.
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

/// Per-connection buffers sized for a thousand idle shards, not one busy client: reads
/// grow the buffer on demand, so a small initial size only costs idle memory.
pub(crate) fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
}

/// Hands frames to the actor in batches of what is already buffered, each batch waiting
/// for its handler: while a sink is full the handler does not finish, reading stops, and
/// TCP slows the gateway down. Timers keep running in the actor, so heartbeats are still
/// sent; their ACKs wait behind the held batch, so a sink full for longer than a
/// heartbeat interval ends in a zombie reconnect and a RESUME (nothing is lost).
async fn read_frames<A>(mut stream: SplitStream<Ws>, addr: Addr<A>, epoch: u64)
where
    A: Actor + Handler<Inbound>,
    A::Context: ToEnvelope<A, Inbound>,
{
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
fn hand_over<A>(addr: &Addr<A>, inbound: Inbound) -> Pin<Box<actix::dev::Request<A, Inbound>>>
where
    A: Actor + Handler<Inbound>,
    A::Context: ToEnvelope<A, Inbound>,
{
    Box::pin(addr.send(inbound))
}

/// Reports a frame written when dropped: after its send began, whether it ended or
/// the connection task was aborted meanwhile.
struct Written(Option<OnWritten>);

impl Drop for Written {
    fn drop(&mut self) {
        if let Some(on_written) = self.0.take() {
            on_written();
        }
    }
}

/// Writes queued frames in order until the channel closes; true once a close frame is
/// written, false if writing failed.
async fn write_frames(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) -> bool {
    while let Some((message, on_written)) = rx.next().await {
        let closing = matches!(message, Message::Close(_));
        // From here on the frame counts as written, even if the task is aborted before
        // the send returns: part of it may have reached the peer.
        let written = Written(on_written);
        // Boxed for the same reason as the actor request in `hand_over`: frames go out
        // now and then, the task cell is there all the time.
        let sent = Box::pin(sink.send(message)).await;
        drop(written);
        if sent.is_err() {
            return false;
        }
        if closing {
            return true;
        }
    }
    true
}
