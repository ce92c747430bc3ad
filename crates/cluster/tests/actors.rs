//! The actor layer against the simulator in this process, at mid speed, the shards'
//! gateway connections in memory (a `Dialer`; only `/gateway/bot` goes over loopback
//! HTTP): the supervisor restarting a crashed shard actor, quarantine parking a shard that never comes up,
//! the coordinator's start-up gather window, and shards leaving and joining the
//! placement while the cluster runs. A few shards, shrunk windows, a few seconds each.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]
#![allow(
    clippy::disallowed_methods,
    reason = "tests time the cluster from outside, on the real clock"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{MARGIN, Recorded, Recorder};
use shardkeeper_cluster::{
    Cluster, ClusterBuilder, ClusterConfig, ClusterHandle, Delivery, Dialer, Event, EventSink,
    MemoryStore, Placement, QuarantinePolicy, SessionStore, ShardSnapshot, StateKind,
    StaticPlacement,
};
use shardkeeper_sim::{MemoryDialer, Sim, SimConfig, SimHandle, Stats, ViolationKind};

const TOKEN: &str = "actors-token";
/// How long any one wait of these tests may take.
const PATIENCE: Duration = Duration::from_secs(8);
/// The identify window of simulator and cluster alike.
const WINDOW: Duration = Duration::from_millis(100);
/// How long the first window waits at most for the start-up batch to ask (`GATHER` in
/// `permit/local.rs`).
const GATHER_LIMIT: Duration = Duration::from_secs(1);

/// The simulator's in-memory connections as the cluster's dialer.
struct InMemory(MemoryDialer);

impl Dialer for InMemory {
    fn dial(&self) -> tokio::io::DuplexStream {
        self.0.dial()
    }
}

/// A cluster builder whose shards reach `sim` without a socket.
fn builder(sim: &SimHandle, config: ClusterConfig) -> ClusterBuilder {
    Cluster::builder(config).dialer(Arc::new(InMemory(sim.dialer())))
}

fn sim_config(shards: u32, max_concurrency: u32) -> SimConfig {
    SimConfig {
        token: TOKEN.into(),
        shards,
        max_concurrency,
        identify_window: WINDOW,
        heartbeat_interval: Duration::from_secs(1),
        guilds_per_shard: 1,
        ..SimConfig::default()
    }
}

fn cluster_config(sim: &SimHandle) -> ClusterConfig {
    common::cluster_config(sim, TOKEN, WINDOW)
}

/// Polls `check` until it holds; on timeout, fails with the shards and the simulator's
/// view.
async fn until(
    cluster: &ClusterHandle,
    sim: &SimHandle,
    what: &str,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nshards: {:#?}\nsim: {:#?}",
            cluster.shards(),
            sim.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks `check` every few milliseconds for `period`: it must hold throughout.
async fn holds(what: &str, period: Duration, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        assert!(check(), "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(check(), "{what} stopped holding");
}

fn ready(cluster: &ClusterHandle, ids: &[u32]) -> bool {
    ids.iter().all(|&id| {
        cluster
            .shard(id)
            .is_some_and(|s| s.state == StateKind::Ready)
    })
}

fn state(cluster: &ClusterHandle, id: u32) -> Option<StateKind> {
    cluster.shard(id).map(|s| s.state)
}

fn assert_clean(stats: &Stats) {
    assert!(stats.violations.is_empty(), "{:#?}", stats.violations);
}

/// What of a snapshot shows that a shard's connection and session were left alone
/// (latency and sequence move on by themselves).
fn identity(s: &ShardSnapshot) -> impl PartialEq + std::fmt::Debug {
    (
        s.state,
        s.session_id.clone(),
        s.identifies,
        s.resumes,
        s.reconnects,
        s.zombies,
        s.restarts,
    )
}

/// A sink whose `flush` blocks while the gate is shut: the store's flush path (and so a
/// shard's handover, which flushes before it releases the shard) waits for the test.
#[derive(Default)]
struct FlushGate {
    shut: Mutex<bool>,
    opened: Condvar,
}

impl FlushGate {
    fn set(&self, shut: bool) {
        *self.shut.lock().unwrap_or_else(PoisonError::into_inner) = shut;
        self.opened.notify_all();
    }
}

impl EventSink for FlushGate {
    fn name(&self) -> &'static str {
        "flush-gate"
    }

    fn deliver(&self, _: &Event) -> Delivery {
        Delivery::Accepted
    }

    fn flush(&self) {
        let shut = self.shut.lock().unwrap_or_else(PoisonError::into_inner);
        let _open = self
            .opened
            .wait_while(shut, |shut| *shut)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// A simulator of `shards` shards (one per bucket) sending `events_per_sec` to each,
/// and a cluster whose one sink records every event.
async fn recorded(shards: u32, events_per_sec: f64) -> (SimHandle, Arc<Recorder>, ClusterHandle) {
    let sim = Sim::start(SimConfig {
        events_per_sec,
        ..sim_config(shards, shards)
    })
    .await
    .expect("sim");
    let sink = Arc::new(Recorder::default());
    let cluster = builder(&sim, cluster_config(&sim))
        .sink(Arc::clone(&sink) as Arc<dyn EventSink>)
        .start()
        .await
        .expect("cluster");
    (sim, sink, cluster)
}

/// Whether `seqs` rise one by one: no gap, no repeat.
fn consecutive(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[1] == w[0] + 1)
}

#[actix::test]
async fn a_crashed_shard_actor_is_restarted_and_resumes_without_touching_the_others() {
    let (sim, sink, cluster) = recorded(3, 20.0).await;
    until(&cluster, &sim, "three shards ready", || {
        ready(&cluster, &[0, 1, 2])
    })
    .await;
    until(&cluster, &sim, "events on shard 1", || {
        sink.seen().get(&1).is_some_and(|s| s.len() >= 5)
    })
    .await;
    let before: BTreeMap<u32, ShardSnapshot> =
        cluster.shards().into_iter().map(|s| (s.id, s)).collect();
    assert!(
        before
            .values()
            .all(|s| s.restarts == 0 && s.identifies == 1)
    );
    let stats = sim.stats();
    assert_eq!((stats.identifies, stats.resumes_ok), (3, 0));

    cluster.crash_shard(1).expect("owned");
    until(&cluster, &sim, "shard 1 restarted and ready again", || {
        cluster
            .shard(1)
            .is_some_and(|s| s.restarts == 1 && s.state == StateKind::Ready && s.resumes == 1)
    })
    .await;
    let after = cluster.shard(1).expect("owned");
    assert_eq!(after.session_id, before[&1].session_id, "same session");
    assert_eq!(
        after.identifies, 1,
        "the crashed run's IDENTIFY is carried over"
    );
    let stats = sim.stats();
    assert_eq!(stats.resumes_ok, 1, "the restarted actor resumed");
    assert_eq!(stats.identifies, 3, "and did not identify");
    assert_eq!(stats.shards[&1].connections, 2);
    assert!(
        cluster
            .render_metrics()
            .lines()
            .any(|l| l == "shardkeeper_shard_restarts_total 1"),
        "the restart is counted"
    );

    // The neighbours kept their actor, connection and session.
    for id in [0, 2] {
        let now = cluster.shard(id).expect("owned");
        assert_eq!(identity(&now), identity(&before[&id]), "shard {id}");
        assert_eq!(stats.shards[&id].connections, 1, "shard {id}");
    }
    // Events from before and after the crash reach the sink once each, in order: the
    // new actor resumed from the sequence its predecessor had delivered.
    until(&cluster, &sim, "shard 1's events after the resume", || {
        sink.seen()[&1].last().copied() > after.seq.map(|s| s + 3)
    })
    .await;
    let seen = sink.seen();
    for (shard, seqs) in &seen {
        assert!(
            consecutive(seqs),
            "shard {shard}: gaps or repeats in {seqs:?}"
        );
    }
    assert_eq!(
        cluster.shard(1).map(|s| s.restarts),
        Some(1),
        "restarted once"
    );
    assert_clean(&sim.stats());
    cluster.shutdown().await.expect("shutdown");
    sim.shutdown().await;
}

#[actix::test]
async fn a_shard_crashing_behind_a_full_sink_resumes_from_what_the_sink_took() {
    let (sim, sink, cluster) = recorded(1, 50.0).await;
    until(&cluster, &sim, "events flowing", || {
        sink.seen().get(&0).is_some_and(|s| s.len() >= 5)
    })
    .await;
    // The sink fills up: the shard holds what it read and the sink refused.
    sink.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    until(
        &cluster,
        &sim,
        "an event received but not delivered",
        || {
            let delivered = sink.seen().get(&0).and_then(|s| s.last().copied());
            cluster.shard(0).and_then(|s| s.seq) > delivered
        },
    )
    .await;
    cluster.crash_shard(0).expect("owned");
    until(&cluster, &sim, "the shard restarted and resumed", || {
        cluster
            .shard(0)
            .is_some_and(|s| s.restarts == 1 && s.resumes == 1 && s.state == StateKind::Ready)
    })
    .await;
    let resumed_at = cluster.shard(0).and_then(|s| s.seq).expect("a seq");
    sink.closed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    until(&cluster, &sim, "events past the resume", || {
        sink.seen()[&0].last().copied() > Some(resumed_at + 3)
    })
    .await;
    let seqs = &sink.seen()[&0];
    assert!(
        consecutive(seqs),
        "what the full sink had not taken was replayed, once: {seqs:?}"
    );
    assert_eq!(sim.stats().identifies, 1, "resumed, not identified");
    assert_clean(&sim.stats());
    cluster.shutdown().await.expect("shutdown");
    sim.shutdown().await;
}

#[actix::test]
async fn a_shard_failing_before_ready_is_quarantined_until_started() {
    // The first three connections never get HELLO; shard 0 alone runs at first, so it
    // gets all three, and each ends in the hello timeout before READY.
    let sim = Sim::start(SimConfig {
        silent_connections: 3,
        ..sim_config(2, 2)
    })
    .await
    .expect("sim");
    let mut config = cluster_config(&sim);
    config.session.quarantine = QuarantinePolicy {
        failures: 3,
        window: Duration::from_secs(10),
    };
    config.session.timing.hello_timeout = Duration::from_millis(200);
    let placement = Arc::new(StaticPlacement::new([0]));
    let cluster = builder(&sim, config)
        .placement(Arc::clone(&placement) as Arc<dyn Placement>)
        .start()
        .await
        .expect("cluster");
    until(&cluster, &sim, "shard 0 quarantined", || {
        state(&cluster, 0) == Some(StateKind::Quarantined)
    })
    .await;
    let stats = sim.stats();
    assert_eq!(stats.connections, 3, "quarantined at the third failure");
    assert_eq!(stats.identifies, 0);
    let parked = cluster.shard(0).expect("owned");
    assert_eq!((parked.identifies, parked.failed_code), (0, None));

    // Parked: no reconnect over many backoff periods (backoff starts at 50 ms).
    holds("quarantine", Duration::from_secs(1), || {
        sim.stats().connections == 3 && state(&cluster, 0) == Some(StateKind::Quarantined)
    })
    .await;

    // A shard that joins now comes up as usual; the quarantined one stays down.
    placement.assign([0, 1]);
    until(&cluster, &sim, "shard 1 ready", || ready(&cluster, &[1])).await;
    assert_eq!(state(&cluster, 0), Some(StateKind::Quarantined));
    assert_eq!(sim.stats().connections, 4);

    // The fault is gone (no more silent connections): an operator start clears it.
    cluster.start(0).await.expect("operator start");
    until(&cluster, &sim, "shard 0 ready after start", || {
        ready(&cluster, &[0])
    })
    .await;
    let stats = sim.stats();
    assert_eq!(stats.connections, 5, "one connection after the start");
    assert_eq!(stats.shards[&0].identifies, 1);
    assert_eq!(cluster.shard(0).map(|s| s.identifies), Some(1));
    assert_clean(&stats);
    cluster.shutdown().await.expect("shutdown");
    sim.shutdown().await;
}

#[actix::test]
async fn the_start_up_batch_of_one_bucket_identifies_by_shard_id_one_per_window() {
    const SHARDS: u32 = 6;
    // One connection gets no HELLO: its shard asks for a permit late (after the hello
    // timeout and a backoff), and the gather window waits for it all the same.
    let sim = Sim::start(SimConfig {
        silent_connections: 1,
        ..sim_config(SHARDS, 1)
    })
    .await
    .expect("sim");
    let mut config = cluster_config(&sim);
    config.session.timing.hello_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let cluster = builder(&sim, config).start().await.expect("cluster");
    let ids: Vec<u32> = (0..SHARDS).collect();
    until(&cluster, &sim, "every shard ready", || {
        ready(&cluster, &ids)
    })
    .await;
    let took = started.elapsed();

    let stats = sim.stats();
    let late: Vec<u32> = cluster
        .shards()
        .iter()
        .filter(|s| s.reconnects > 0)
        .map(|s| s.id)
        .collect();
    assert_eq!(
        late.len(),
        1,
        "one shard had the silent connection: {late:?}"
    );
    assert_eq!(stats.identifies, u64::from(SHARDS));
    let mut sessions = stats.sessions.clone();
    sessions.sort_by_key(|s| s.index);
    let order: Vec<u32> = sessions.iter().map(|s| s.shard).collect();
    assert_eq!(order, ids, "identified by shard id (late shard: {late:?})");
    assert_eq!(stats.violations_of(ViolationKind::IdentifyWindow), 0);
    assert_clean(&stats);
    let bucket = &stats.buckets[0];
    assert_eq!(stats.buckets.len(), 1);
    assert_eq!(
        (bucket.identifies, bucket.max_per_window),
        (6, 1),
        "{bucket:?}"
    );
    let window_ms = u64::try_from(WINDOW.as_millis()).expect("small");
    assert!(bucket.min_gap_ms >= Some(window_ms), "{bucket:?}");
    // Five gaps of window + margin after the first grant. The gate opened as soon as
    // the late shard asked (~hello timeout + backoff, about 0.35 s in), not at the end of
    // the gather limit: that would make it at least the limit plus the five gaps.
    let gaps = (WINDOW + MARGIN) * (SHARDS - 1);
    assert!(took >= gaps, "too fast: {took:?}");
    assert!(
        took < GATHER_LIMIT + gaps,
        "the first window waited out the gather limit: {took:?}"
    );
    assert_eq!(cluster.identify_status().map(|s| s.granted), Some(6));
    cluster.shutdown().await.expect("shutdown");
    sim.shutdown().await;
}

#[actix::test]
async fn shards_leave_and_join_the_placement_and_one_assigned_back_mid_handover_runs_on() {
    let sim = Sim::start(sim_config(4, 4)).await.expect("sim");
    let store = Arc::new(MemoryStore::default());
    let gate = Arc::new(FlushGate::default());
    let placement = Recorded::new(0..3);
    let cluster = builder(&sim, cluster_config(&sim))
        .session_store(Arc::clone(&store) as Arc<dyn SessionStore>)
        .sink(Arc::clone(&gate) as Arc<dyn EventSink>)
        .placement(Arc::clone(&placement) as Arc<dyn Placement>)
        .start()
        .await
        .expect("cluster");
    until(&cluster, &sim, "shards 0-2 ready", || {
        ready(&cluster, &[0, 1, 2])
    })
    .await;
    assert_eq!(cluster.ids(), [0, 1, 2]);
    let leaving = cluster.shard(2).expect("owned");

    // Shard 2 leaves, shard 3 joins.
    placement.inner.assign([0, 1, 3]);
    until(&cluster, &sim, "shard 2 handed over, shard 3 ready", || {
        placement.released() == [2] && ready(&cluster, &[3]) && cluster.ids() == [0, 1, 3]
    })
    .await;
    until(
        &cluster,
        &sim,
        "shard 2's close 4000 at the simulator",
        || sim.stats().client_close_codes.get(&4000) == Some(&1),
    )
    .await;
    let stored = store.load_sessions().expect("load");
    let stored = stored
        .get(&2)
        .expect("shard 2's session stored at handover");
    let stats = sim.stats();
    assert_eq!(
        Some(&*stored.session_id),
        leaving.session_id.as_deref(),
        "the session shard 2 ran"
    );
    assert_eq!(Some(stored.seq), leaving.seq);
    assert_eq!(
        stored.seq, stats.shards[&2].last_seq,
        "as far as the gateway sent"
    );
    assert_eq!(stats.shards[&2].state, "disconnected");
    let joined = cluster.shard(3).expect("owned");
    assert_eq!(
        (joined.identifies, joined.resumes),
        (1, 0),
        "a new shard identifies"
    );
    for id in [0, 1] {
        assert_eq!(stats.shards[&id].connections, 1, "shard {id} untouched");
    }

    // Shard 3 leaves and is assigned back while its handover waits on the flush.
    gate.set(true);
    placement.inner.assign([0, 1]);
    until(
        &cluster,
        &sim,
        "shard 3 stopped, its handover under way",
        || {
            state(&cluster, 3) == Some(StateKind::Stopped)
                && sim.stats().client_close_codes.get(&4000) == Some(&2)
        },
    )
    .await;
    assert_eq!(cluster.ids(), [0, 1, 3], "a shard leaves once handed over");
    placement.inner.assign([0, 1, 3]);
    gate.set(false);
    until(&cluster, &sim, "shard 3 running again", || {
        ready(&cluster, &[3])
    })
    .await;
    assert_eq!(placement.released(), [2], "shard 3 was never released");
    let back = cluster.shard(3).expect("owned");
    assert_eq!(back.session_id, joined.session_id, "same session");
    assert_eq!(
        (back.identifies, back.resumes, back.restarts),
        (1, 1, 0),
        "resumed, with the counters of its first run (not rebuilt from the store)"
    );
    let stats = sim.stats();
    assert_eq!((stats.identifies, stats.resumes_ok), (4, 1));
    assert_eq!(stats.shards[&3].connections, 2);
    assert_clean(&stats);
    cluster.shutdown().await.expect("shutdown");
    sim.shutdown().await;
}

/// Grants at once; the first grant it hands out has already expired.
#[derive(Default)]
struct ExpiresFirst {
    asks: std::sync::atomic::AtomicU32,
    unused: std::sync::atomic::AtomicU32,
}

impl shardkeeper_cluster::PermitSource for ExpiresFirst {
    fn ask(&self, _shard: u32) -> tokio::sync::oneshot::Receiver<shardkeeper_cluster::Grant> {
        let first = self.asks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(shardkeeper_cluster::Grant {
            bucket: 0,
            valid_until: first.then(Instant::now),
        });
        rx
    }
    fn cancel(&self, _shard: u32) {}
    fn written(&self, _shard: u32, _at: Instant) {}
    fn unused(&self, _shard: u32) {
        self.unused
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn status(&self) -> Option<shardkeeper_cluster::IdentifyStatus> {
        None
    }
    fn halt(&self) {}
}

#[actix::test]
async fn a_permit_that_arrives_expired_is_given_back_and_asked_for_again() {
    let sim = Sim::start(sim_config(1, 1)).await.expect("sim");
    let permits = Arc::new(ExpiresFirst::default());
    let cluster = builder(&sim, cluster_config(&sim))
        .permits(Arc::clone(&permits) as Arc<dyn shardkeeper_cluster::PermitSource>)
        .start()
        .await
        .expect("cluster");
    until(&cluster, &sim, "the shard ready", || {
        cluster
            .shard(0)
            .is_some_and(|s| s.state == StateKind::Ready)
    })
    .await;
    assert_eq!(permits.unused.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(permits.asks.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        sim.stats().identifies,
        1,
        "no IDENTIFY under the expired grant"
    );
    cluster.shutdown().await.expect("shutdown");
    sim.shutdown().await;
}
