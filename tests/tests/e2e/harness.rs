//! Starts a simulator and a cluster against it, and records every event delivered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardkeeper_admin::EventHub;
use shardkeeper_cluster::{
    Auto, ChannelSink, Cluster, ClusterConfig, ClusterHandle, SledStore, StateKind,
};
use shardkeeper_protocol::{Compression, Token};
use shardkeeper_session::Timing;
use shardkeeper_sim::{Sim, SimConfig, SimHandle, Stats};

pub(crate) const TOKEN: &str = "e2e-token";

/// What the cluster adds to each identify window. The simulator stamps an IDENTIFY when
/// its task gets to it, so on a loaded machine two stamps may be closer than the writes.
pub(crate) const IDENTIFY_MARGIN_MS: u64 = 50;

/// How long the simulator may take to read close frames the cluster has written.
pub(crate) const CLOSE_READ: Duration = Duration::from_secs(5);

/// How long events already sent may take to reach the sinks.
const CATCH_UP: Duration = Duration::from_secs(10);

/// One delivered event, as the sink saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) seq: u64,
    pub(crate) t: String,
}

pub(crate) struct Env {
    pub(crate) sim: SimHandle,
    pub(crate) cluster: ClusterHandle,
    pub(crate) events: Arc<Mutex<BTreeMap<u32, Vec<Seen>>>>,
    /// The sled directory, when the cluster persists sessions.
    pub(crate) store: Option<PathBuf>,
    /// The WebSocket fan-out sink, for the admin API.
    pub(crate) hub: EventHub,
    window: Duration,
}

pub(crate) fn sim_config(shards: u32, max_concurrency: u32) -> SimConfig {
    SimConfig {
        token: TOKEN.into(),
        shards,
        max_concurrency,
        identify_window: Duration::from_millis(200),
        heartbeat_interval: Duration::from_secs(1),
        guilds_per_shard: 2,
        ..SimConfig::default()
    }
}

pub(crate) fn cluster_config(sim: &SimHandle, window: Duration) -> ClusterConfig {
    let mut config = ClusterConfig::new(Token::new(TOKEN));
    config.api_base = sim.api_base();
    config.session.compression = Compression::ZlibStream;
    config.total = Auto::Auto;
    config.max_concurrency = Auto::Auto;
    config.identify_window = window;
    config.identify_margin = Duration::from_millis(IDENTIFY_MARGIN_MS);
    config.threads = 2;
    config.session.timing = Timing {
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_secs(1),
        invalid_session_min: Duration::from_millis(100),
        invalid_session_max: Duration::from_millis(300),
        ..Timing::default()
    };
    config
}

impl Env {
    pub(crate) async fn start(sim: SimConfig) -> Self {
        let window = sim.identify_window;
        Self::start_with(sim, |_| {}, window).await
    }

    pub(crate) async fn start_with(
        sim: SimConfig,
        tweak: impl FnOnce(&mut ClusterConfig),
        window: Duration,
    ) -> Self {
        Self::start_stored(sim, tweak, window, None).await
    }

    /// Like `start_with`, with sessions persisted in a sled database at `store`.
    pub(crate) async fn start_stored(
        sim: SimConfig,
        tweak: impl FnOnce(&mut ClusterConfig),
        window: Duration,
        store: Option<PathBuf>,
    ) -> Self {
        let sim = Sim::start(sim).await.expect("simulator starts");
        let events: Arc<Mutex<BTreeMap<u32, Vec<Seen>>>> = Arc::default();
        let hub = EventHub::new();
        let cluster = launch(&sim, tweak, window, store.as_deref(), &events, &hub).await;
        Self {
            sim,
            cluster,
            events,
            store,
            hub,
            window,
        }
    }

    /// Shuts the cluster down gracefully and starts a new one against the same
    /// simulator, store and event log.
    pub(crate) async fn restart_cluster(&mut self, tweak: impl FnOnce(&mut ClusterConfig)) {
        self.cluster.shutdown().await.expect("clean shutdown");
        self.cluster = launch(
            &self.sim,
            tweak,
            self.window,
            self.store.as_deref(),
            &self.events,
            &self.hub,
        )
        .await;
    }

    pub(crate) async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Self) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                self.cluster.shards()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn all_ready(&self, timeout: Duration) {
        self.wait_for("every shard ready", timeout, |env| env.cluster.all_ready())
            .await;
    }

    pub(crate) async fn shard_state(&self, id: u32, state: StateKind, timeout: Duration) {
        self.wait_for(&format!("shard {id} {state:?}"), timeout, |env| {
            env.cluster.shard(id).is_some_and(|s| s.state == state)
        })
        .await;
    }

    /// Checks that the simulator saw no protocol violation and that the sinks delivered
    /// every dispatch it sent, waiting up to `CATCH_UP` for those still on their way.
    pub(crate) async fn assert_clean(&self) {
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let stats = self.sim.stats();
            assert!(
                stats.violations.is_empty(),
                "violations: {:#?}",
                stats.violations
            );
            let covered = coverage(&stats, &self.events.lock().expect("log"));
            match covered {
                Ok(()) => return,
                Err(gap) => assert!(
                    Instant::now() < deadline,
                    "sequence coverage after {CATCH_UP:?}: {gap}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn stop(self) {
        self.cluster.shutdown().await.expect("clean shutdown");
        self.sim.shutdown().await;
    }
}

async fn launch(
    sim: &SimHandle,
    tweak: impl FnOnce(&mut ClusterConfig),
    window: Duration,
    store: Option<&Path>,
    events: &Arc<Mutex<BTreeMap<u32, Vec<Seen>>>>,
    hub: &EventHub,
) -> ClusterHandle {
    let mut config = cluster_config(sim, window);
    tweak(&mut config);
    let (sink, mut rx) = ChannelSink::new();
    let log = Arc::clone(events);
    actix::spawn(async move {
        while let Some(event) = rx.recv().await {
            let seen = Seen {
                seq: event.seq,
                t: event.t.to_string(),
            };
            log.lock()
                .expect("log")
                .entry(event.shard)
                .or_default()
                .push(seen);
        }
    });
    let mut builder = Cluster::builder(config)
        .sink(Arc::new(sink))
        .sink(Arc::new(hub.clone()));
    if let Some(path) = store {
        builder = builder.store(Arc::new(SledStore::open(path).expect("store opens")));
    }
    builder.start().await.expect("cluster starts")
}

/// Checks that every dispatch the simulator sent on each session reached the sinks, in
/// order per shard. Sessions of a shard follow each other; each begins with READY.
pub(crate) fn coverage(stats: &Stats, seen: &BTreeMap<u32, Vec<Seen>>) -> Result<(), String> {
    let mut sessions: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for session in &stats.sessions {
        sessions
            .entry(session.shard)
            .or_default()
            .push(session.last_seq);
    }
    for (shard, lasts) in sessions {
        let events = seen.get(&shard).map_or(&[][..], Vec::as_slice);
        let mut segments: Vec<Vec<u64>> = Vec::new();
        for event in events {
            if event.t == "READY" {
                segments.push(Vec::new());
            }
            let Some(segment) = segments.last_mut() else {
                return Err(format!("shard {shard}: {} before READY", event.t));
            };
            if segment.last().is_some_and(|&last| event.seq < last) {
                return Err(format!(
                    "shard {shard}: seq {} after {:?}",
                    event.seq,
                    segment.last()
                ));
            }
            segment.push(event.seq);
        }
        if segments.len() != lasts.len() {
            return Err(format!(
                "shard {shard}: {} sessions started, {} READY delivered",
                lasts.len(),
                segments.len()
            ));
        }
        for (index, (segment, last)) in segments.iter().zip(&lasts).enumerate() {
            let mut missing = (1..=*last).filter(|seq| segment.binary_search(seq).is_err());
            if let Some(first) = missing.next() {
                return Err(format!(
                    "shard {shard} session {index}: seq {first} of 1..={last} never delivered"
                ));
            }
        }
    }
    Ok(())
}
