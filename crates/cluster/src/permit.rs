//! The `PermitSource` seam: who may IDENTIFY when.
//!
//! A shard whose session needs a new session asks for a permit and sends its IDENTIFY
//! only once granted; it then reports when the IDENTIFY was written (the bucket's window
//! counts from that moment) or that it never was. The schedule itself — buckets,
//! windows, the daily budget — is pure code in `shardkeeper-session`; a source decides
//! only where that schedule lives: [`LocalPermits`] keeps it in this process (with its
//! grants written to the store before a shard hears of them).

mod local;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

pub use self::local::LocalPermits;
use crate::clock;
use crate::snapshot::IdentifyStatus;

/// A permit: the shard may IDENTIFY now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The bucket it was granted in.
    pub bucket: u32,
    /// The IDENTIFY must be sent before this instant, if the source says so (a shared
    /// schedule spaces its grants by how long each stays valid). A shard that gets the
    /// grant later reports it unused and asks again.
    pub valid_until: Option<Instant>,
}

/// Identify permits for the shards of this process.
///
/// Every method returns at once; a source that must ask elsewhere does so in the
/// background. When a source cannot tell whether a grant would keep Discord's rules, it
/// does not grant (fail closed): the shard waits, visibly, in `identifying`.
pub trait PermitSource: Send + Sync + 'static {
    /// Queues `shard` for a permit; the receiver resolves when it may IDENTIFY. Asking
    /// again for the same shard replaces the earlier request.
    fn ask(&self, shard: u32) -> oneshot::Receiver<Grant>;
    /// The shard no longer needs the permit it asked for.
    fn cancel(&self, shard: u32);
    /// The IDENTIFY of the shard's granted permit was written at `at`.
    fn written(&self, shard: u32, at: Instant);
    /// The shard's granted permit was never used (its connection went first).
    fn unused(&self, shard: u32);
    /// Buckets, queues, next grant times and the session start budget, once known.
    fn status(&self) -> Option<IdentifyStatus>;
    /// Stops granting: the cluster is shutting down.
    fn halt(&self);
}

/// Reports what became of a permit exactly once: [`written`](Self::written) when the
/// IDENTIFY was handed to the socket, or — if it is dropped before that — unused.
pub(crate) struct PermitReport {
    shard: u32,
    source: Option<Arc<dyn PermitSource>>,
}

impl PermitReport {
    pub(crate) fn new(shard: u32, source: Arc<dyn PermitSource>) -> Self {
        Self {
            shard,
            source: Some(source),
        }
    }

    /// The IDENTIFY went out (or its write failed part-way: it may have arrived).
    pub(crate) fn written(mut self) {
        if let Some(source) = self.source.take() {
            source.written(self.shard, clock::now());
        }
    }
}

impl Drop for PermitReport {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            source.unused(self.shard);
        }
    }
}
