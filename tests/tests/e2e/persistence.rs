//! Sessions survive a restart of the cluster: every shard resumes, none identifies.

use std::time::Duration;

use shardkeeper_cluster::{Auto, StateKind};
use shardkeeper_sim::SimConfig;

use crate::harness::{CLOSE_READ, Env, sim_config};

fn store_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[actix::test]
async fn graceful_restart_resumes_every_shard_without_identifying() {
    let dir = store_dir();
    let sim = SimConfig {
        events_per_sec: 50.0,
        ..sim_config(8, 4)
    };
    let mut env = Env::start_stored(
        sim,
        |_| {},
        Duration::from_millis(200),
        Some(dir.path().join("s.sled")),
    )
    .await;
    env.all_ready(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.restart_cluster(|_| {}).await;
    env.all_ready(Duration::from_secs(5)).await;
    // The old connections wrote their close frames before the cluster stopped; the
    // simulator may read some of them only after the new connections resumed.
    env.wait_for("close 4000 from every old connection", CLOSE_READ, |env| {
        env.sim.stats().client_close_codes.get(&4000) == Some(&8)
    })
    .await;
    let stats = env.sim.stats();
    assert_eq!(stats.identifies, 8, "no identify after the restart");
    assert_eq!(stats.resumes_ok, 8);
    assert_eq!(stats.client_close_codes.get(&1000), None);
    assert!(
        env.cluster
            .shards()
            .iter()
            .all(|s| s.resumes == 1 && s.identifies == 0)
    );
    env.assert_clean().await;
    env.stop().await;
}

#[actix::test]
async fn a_changed_shard_count_discards_stored_sessions() {
    let dir = store_dir();
    let mut env = Env::start_stored(
        sim_config(4, 4),
        |config| config.total = Auto::Fixed(4),
        Duration::from_millis(200),
        Some(dir.path().join("s.sled")),
    )
    .await;
    env.all_ready(Duration::from_secs(5)).await;
    env.restart_cluster(|config| config.total = Auto::Fixed(8))
        .await;
    env.all_ready(Duration::from_secs(5)).await;
    let stats = env.sim.stats();
    assert!(stats.violations.is_empty(), "{:#?}", stats.violations);
    assert_eq!(stats.identifies, 4 + 8);
    assert_eq!(stats.resumes_ok, 0);
    assert_eq!(env.cluster.total(), 8);
    let shards = env.cluster.shards();
    assert!(
        shards
            .iter()
            .all(|s| s.state == StateKind::Ready && s.identifies == 1),
        "{shards:#?}"
    );
    env.stop().await;
}

#[actix::test]
async fn restart_keeps_the_identify_window_of_the_previous_run() {
    let dir = store_dir();
    let window = Duration::from_millis(1_500);
    let sim = SimConfig {
        identify_window: window,
        ..sim_config(2, 1)
    };
    let mut env = Env::start_stored(sim, |_| {}, window, Some(dir.path().join("s.sled"))).await;
    env.wait_for("first shard", Duration::from_secs(5), |env| {
        env.cluster
            .shard(0)
            .is_some_and(|s| s.state == StateKind::Ready)
    })
    .await;
    // Restart while shard 1 still waits for the next window; the new run must not
    // identify it before the window the old run opened has passed.
    env.restart_cluster(|_| {}).await;
    env.all_ready(Duration::from_secs(8)).await;
    let stats = env.sim.stats();
    assert!(stats.violations.is_empty(), "{:#?}", stats.violations);
    assert!(stats.buckets.iter().all(|b| b.max_per_window == 1));
    env.stop().await;
}
