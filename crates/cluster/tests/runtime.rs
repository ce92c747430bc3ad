//! The actor layer against the simulator on 127.0.0.1: shards follow their placement
//! and hand over by RESUME, and a full sink holds a shard without its stored sequence
//! running ahead. Small and fast: a few shards, shrunk windows.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]
#![allow(
    clippy::disallowed_methods,
    reason = "tests time the cluster from outside, on the real clock"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Recorded, Recorder};
use shardkeeper_cluster::{
    Cluster, ClusterConfig, ClusterHandle, EventSink, MemoryStore, SessionStore, StateKind,
};
use shardkeeper_sim::{Sim, SimConfig, SimHandle};

const TOKEN: &str = "runtime-token";
const PATIENCE: Duration = Duration::from_secs(15);

fn sim_config(shards: u32, events_per_sec: f64) -> SimConfig {
    SimConfig {
        token: TOKEN.into(),
        shards,
        max_concurrency: shards,
        identify_window: Duration::from_millis(200),
        // Longer than the sink stays full below: reads stop meanwhile, so a heartbeat ACK
        // would wait for them and the shard would call the connection a zombie.
        heartbeat_interval: Duration::from_secs(5),
        guilds_per_shard: 1,
        events_per_sec,
        ..SimConfig::default()
    }
}

fn cluster_config(sim: &SimHandle) -> ClusterConfig {
    common::cluster_config(sim, TOKEN, Duration::from_millis(200))
}

/// Polls `check` until it holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ready(cluster: &ClusterHandle, ids: &[u32]) -> bool {
    ids.iter().all(|&id| {
        cluster
            .shard(id)
            .is_some_and(|s| s.state == StateKind::Ready)
    })
}

/// Every sequence the simulator sent on each shard's current session was seen.
fn covered(sim: &SimHandle, seen: &BTreeMap<u32, Vec<u64>>) -> bool {
    sim.stats().shards.iter().all(|(id, shard)| {
        let got: BTreeSet<u64> = seen.get(id).into_iter().flatten().copied().collect();
        (1..=shard.last_seq).all(|seq| got.contains(&seq))
    })
}

#[actix::test]
async fn shards_follow_their_placement_and_hand_over_by_resume() {
    let sim = Sim::start(sim_config(4, 20.0)).await.expect("sim");
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
    let sink = Arc::new(Recorder::default());
    let start = |placement: Arc<Recorded>| {
        Cluster::builder(cluster_config(&sim))
            .session_store(Arc::clone(&store))
            .sink(Arc::clone(&sink) as Arc<dyn EventSink>)
            .placement(placement)
            .start()
    };
    let first = Recorded::new(0..4);
    let a = start(Arc::clone(&first)).await.expect("first node");
    until("four shards ready", || ready(&a, &[0, 1, 2, 3])).await;
    // The second node starts while the store already holds the first's sessions: what
    // it resumes later must be what the first stored when it let go, not this.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Recorded::new([]);
    let b = start(Arc::clone(&second)).await.expect("second node");
    assert!(b.ids().is_empty(), "nothing assigned, nothing runs");

    first.inner.assign([0, 1]);
    until("shards 2 and 3 released", || {
        first.released().into_iter().collect::<BTreeSet<u32>>() == BTreeSet::from([2, 3])
    })
    .await;
    assert_eq!(a.ids(), [0, 1], "given-away shards leave the directory");
    second.inner.assign([2, 3]);
    until("shards 2 and 3 ready on the second node", || {
        ready(&b, &[2, 3])
    })
    .await;
    let moved: Vec<_> = [2, 3].map(|id| b.shard(id).expect("runs")).into();
    assert!(
        moved.iter().all(|s| s.resumes == 1 && s.identifies == 0),
        "{moved:?}"
    );

    second.inner.assign([3]);
    until("shard 2 released by the second node", || {
        second.released().contains(&2)
    })
    .await;
    first.inner.assign([0, 1, 2]);
    until("shard 2 back on the first node", || {
        ready(&a, &[0, 1, 2]) && b.ids() == [3]
    })
    .await;
    until("every event delivered", || covered(&sim, &sink.seen())).await;
    for (shard, seqs) in sink.seen() {
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seqs.len(),
            "shard {shard} delivered a seq twice across handovers"
        );
    }
    let stats = sim.stats();
    assert!(stats.violations.is_empty(), "{:#?}", stats.violations);
    assert_eq!(stats.identifies, 4, "only the first start identified");
    assert_eq!(stats.resumes_ok, 3);
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
    sim.shutdown().await;
}

#[actix::test]
async fn a_full_sink_holds_the_shard_and_its_stored_sequence() {
    let sim = Sim::start(sim_config(1, 200.0)).await.expect("sim");
    let store = Arc::new(MemoryStore::default());
    let sink = Arc::new(Recorder::default());
    let cluster = Cluster::builder(cluster_config(&sim))
        .session_store(Arc::clone(&store) as Arc<dyn SessionStore>)
        .sink(Arc::clone(&sink) as Arc<dyn EventSink>)
        .start()
        .await
        .expect("cluster");
    until("the shard is ready", || ready(&cluster, &[0])).await;
    until("events flow", || {
        sink.seen().get(&0).is_some_and(|s| s.len() > 20)
    })
    .await;

    sink.closed.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let delivered = sink.seen()[&0].last().copied().expect("some");
    let sent_then = sim.stats().events_sent;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stored = store.load_sessions().expect("load")[&0].seq;
    assert!(
        stored <= delivered,
        "stored {stored} beyond delivered {delivered}"
    );
    assert_eq!(
        sink.seen()[&0].last().copied(),
        Some(delivered),
        "nothing passed a full sink"
    );
    assert_eq!(
        cluster.shard(0).map(|s| s.state),
        Some(StateKind::Ready),
        "heartbeats went on: no zombie while the sink was full"
    );
    assert!(
        sim.stats().events_sent > sent_then,
        "the gateway kept sending"
    );

    sink.closed.store(false, Ordering::SeqCst);
    until("the backlog is delivered", || covered(&sim, &sink.seen())).await;
    let seen = &sink.seen()[&0];
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "delivered in order without gaps or repeats"
    );
    until("the newest sequence is stored", || {
        store.load_sessions().expect("load")[&0].seq > delivered
    })
    .await;
    let stats = sim.stats();
    assert!(stats.violations.is_empty(), "{:#?}", stats.violations);
    assert_eq!(stats.shards[&0].connections, 1, "one connection throughout");
    cluster.shutdown().await.expect("shutdown");
    sim.shutdown().await;
}
