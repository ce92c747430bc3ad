//! What several of this crate's integration tests share.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shardkeeper_cluster::{
    Auto, ClusterConfig, Delivery, Event, EventSink, Placement, ShardSet, StaticPlacement,
};
use shardkeeper_protocol::{Compression, Token};
use shardkeeper_session::Timing;
use shardkeeper_sim::SimHandle;
use tokio::sync::watch;

/// A static placement that remembers what was released.
pub(crate) struct Recorded {
    pub(crate) inner: StaticPlacement,
    released: Mutex<Vec<u32>>,
}

impl Recorded {
    pub(crate) fn new(ids: impl IntoIterator<Item = u32>) -> Arc<Self> {
        Arc::new(Self {
            inner: StaticPlacement::new(ids),
            released: Mutex::default(),
        })
    }

    /// Released shards, in order.
    pub(crate) fn released(&self) -> Vec<u32> {
        self.released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Placement for Recorded {
    fn watch(&self) -> watch::Receiver<ShardSet> {
        self.inner.watch()
    }

    fn released(&self, shard: u32) {
        self.released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(shard);
        self.inner.released(shard);
    }
}

/// Records every event's sequence per shard; answers `Full` while closed.
#[derive(Default)]
pub(crate) struct Recorder {
    seen: Mutex<BTreeMap<u32, Vec<u64>>>,
    /// While set, the sink is full.
    pub(crate) closed: AtomicBool,
}

impl Recorder {
    pub(crate) fn seen(&self) -> BTreeMap<u32, Vec<u64>> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl EventSink for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn deliver(&self, event: &Event) -> Delivery {
        if self.closed.load(Ordering::SeqCst) {
            return Delivery::Full;
        }
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(event.shard)
            .or_default()
            .push(event.seq);
        Delivery::Accepted
    }
}

/// What the clusters of these tests add to each identify window.
pub(crate) const MARGIN: Duration = Duration::from_millis(50);

/// A small, fast cluster against `sim`: zlib-stream, buckets and shard count from the
/// simulator, identify `window` plus [`MARGIN`], two threads, 50 ms flushes, a
/// short reconnect backoff.
pub(crate) fn cluster_config(sim: &SimHandle, token: &str, window: Duration) -> ClusterConfig {
    let mut config = ClusterConfig::new(Token::new(token));
    config.api_base = sim.api_base();
    config.session.compression = Compression::ZlibStream;
    config.total = Auto::Auto;
    config.max_concurrency = Auto::Auto;
    config.identify_window = window;
    config.identify_margin = MARGIN;
    config.threads = 2;
    config.flush_interval = Duration::from_millis(50);
    config.session.timing = Timing {
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_secs(1),
        ..Timing::default()
    };
    config
}
