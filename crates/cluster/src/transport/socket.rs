//! A gateway WebSocket split in two: the frames read, which the shard's actor polls in its
//! own task (no hand-over between tasks per frame), and a writer task that writes what
//! the actor queues.

use futures_channel::mpsc;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::upgrade::Ws;

/// Initial read buffer of a gateway connection, and the most tungstenite takes per read
/// (from memory: socket reads go through [`super::upgrade::OnDemand`]).
const READ_BUFFER: usize = 512;

/// The frames a connection reads, in order; the end of the stream is the end of the
/// connection.
pub(crate) type Frames = SplitStream<Ws>;

/// Called once the frame it travels with was handed to the socket (or its write failed
/// part-way, so it may have arrived). Dropped unwritten, it is never called.
pub(crate) type OnWritten = Box<dyn FnOnce() + Send>;

/// A frame for the writer task, with what to call once it is written.
type Outgoing = (Message, Option<OnWritten>);

/// The open connection's writing half: the writer channel and the writer task. The
/// channel allocates per frame rather than up front: a thousand idle connections send a
/// heartbeat now and then, and a preallocated block of slots each would cost more than
/// their frames.
pub(crate) struct Link {
    writer: mpsc::UnboundedSender<Outgoing>,
    task: JoinHandle<()>,
}

impl Link {
    /// Starts the writer task of `ws` and returns the frames to read. The writer ends
    /// once a close frame is written, a write fails, or the link is dropped and what was
    /// queued is written.
    pub(crate) fn spawn(ws: Ws) -> (Self, Frames) {
        let (sink, frames) = ws.split();
        let (writer, rx) = mpsc::unbounded::<Outgoing>();
        let task = actix::spawn(write_frames(sink, rx));
        (Self { writer, task }, frames)
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

/// Writes queued frames in order until the channel closes, a close frame is written or a
/// write fails (the reading half then reports why the connection ended).
async fn write_frames(mut sink: SplitSink<Ws, Message>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some((message, on_written)) = rx.next().await {
        let closing = matches!(message, Message::Close(_));
        // From here on the frame counts as written, even if the task is aborted before
        // the send returns: part of it may have reached the peer.
        let written = Written(on_written);
        // Boxed: frames go out now and then, the task cell is there all the time.
        let sent = Box::pin(sink.send(message)).await;
        drop(written);
        if sent.is_err() || closing {
            return;
        }
    }
}
