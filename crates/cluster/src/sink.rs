//! Where events go: the `EventSink` trait, the in-process channel sink and the NDJSON
//! line sinks.

mod lines;

pub use lines::{LineSink, sink_path};

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::Event;

/// Whether a sink took an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The sink has the event.
    Accepted,
    /// The sink's queue is full; offer the same event again later. The shard stops
    /// reading its socket meanwhile (heartbeats go on), which slows the gateway down.
    Full,
}

/// A destination for dispatch events.
///
/// `deliver` is called on the shard's thread, in sequence order per shard, and must not
/// block: a sink hands the event to its own queue or writer, or answers `Full`. An event
/// counts as delivered — and its sequence may be persisted — once every sink accepted it.
pub trait EventSink: Send + Sync + 'static {
    /// A short name for logs and metrics (`stdout`, `file:/path`, `channel`).
    fn name(&self) -> &str;

    /// Offers one event.
    fn deliver(&self, event: &Event) -> Delivery;

    /// Returns once every event delivered so far is written out (to the file, the pipe,
    /// the socket). Called from the store's flush thread, never from a shard.
    fn flush(&self) {}
}

/// Sends every event to an async channel, for programs that embed the cluster.
#[derive(Debug)]
pub struct ChannelSink {
    tx: mpsc::UnboundedSender<Event>,
}

impl ChannelSink {
    /// A sink and the receiving end of its channel. An event is cheap to clone: its
    /// body shares the memory of the frame it came in.
    #[must_use]
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

impl EventSink for ChannelSink {
    fn name(&self) -> &'static str {
        "channel"
    }

    fn deliver(&self, event: &Event) -> Delivery {
        // A dropped receiver means nobody listens any more; the event has nowhere to go.
        let _ = self.tx.send(event.clone());
        Delivery::Accepted
    }
}

/// Every configured sink.
#[derive(Clone, Default)]
pub struct Sinks {
    sinks: Vec<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.sinks.iter().map(|s| s.name()))
            .finish()
    }
}

impl Sinks {
    /// Adds a sink.
    pub fn push(&mut self, sink: Arc<dyn EventSink>) {
        self.sinks.push(sink);
    }

    /// A mask with one bit per sink (at most 64 sinks).
    pub(crate) fn all(&self) -> u64 {
        match self.sinks.len() {
            0 => 0,
            n if n >= 64 => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }

    /// Offers an event to the sinks whose bit is set in `pending`; returns the bits of
    /// the sinks that are still full.
    pub(crate) fn deliver(&self, event: &Event, pending: u64) -> u64 {
        let mut still = 0;
        for (index, sink) in self.sinks.iter().enumerate().take(64) {
            let bit = 1u64 << index;
            if pending & bit != 0 && sink.deliver(event) == Delivery::Full {
                still |= bit;
            }
        }
        still
    }

    /// Waits until every sink wrote out what it was handed.
    pub fn flush(&self) {
        for sink in &self.sinks {
            sink.flush();
        }
    }
}
