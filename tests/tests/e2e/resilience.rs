//! Discord-side failure modes and a seeded chaos run.

use std::time::Duration;

use shardkeeper_cluster::StateKind;
use shardkeeper_session::Timing;
use shardkeeper_sim::{ChaosConfig, SimConfig};

use crate::harness::{Env, sim_config};

#[actix::test]
async fn a_gateway_that_never_sends_hello_is_abandoned_and_retried() {
    let sim = SimConfig {
        silent_connections: 1,
        ..sim_config(1, 1)
    };
    let env = Env::start_with(
        sim,
        |config| {
            config.session.timing.hello_timeout = Duration::from_millis(300);
        },
        Duration::from_millis(200),
    )
    .await;
    env.all_ready(Duration::from_secs(5)).await;
    let stats = env.sim.stats();
    assert_eq!(stats.connections, 2, "the silent connection was given up");
    assert_eq!(stats.identifies, 1);
    assert!(stats.violations.is_empty(), "{:#?}", stats.violations);
    env.stop().await;
}

#[actix::test]
async fn an_unreachable_gateway_is_retried_with_backoff_not_a_busy_loop() {
    let sim = SimConfig {
        gateway_url: Some("ws://127.0.0.1:1".into()),
        ..sim_config(2, 2)
    };
    let env = Env::start_with(
        sim,
        |config| config.session.timing = Timing::default(),
        Duration::from_millis(200),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for shard in env.cluster.shards() {
        assert!(
            matches!(
                shard.state,
                StateKind::Reconnecting | StateKind::Connecting | StateKind::AwaitingHello
            ),
            "{shard:?}"
        );
        // 1 s base, doubling, with jitter: at most a handful of attempts in 4 s.
        assert!(
            (1..=5).contains(&shard.reconnects),
            "shard {} retried {} times in 4 s",
            shard.id,
            shard.reconnects
        );
    }
    env.stop().await;
}

#[actix::test]
async fn seeded_chaos_ends_with_every_shard_ready_and_nothing_lost() {
    let sim = SimConfig {
        chaos: Some(ChaosConfig::mixed(60.0)),
        events_per_sec: 50.0,
        seed: 7,
        ..sim_config(16, 16)
    };
    // The default crash-loop policy stays on: faults after READY must not trip it.
    let env = Env::start(sim).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    env.sim.pause_chaos(true);
    env.all_ready(Duration::from_secs(20)).await;
    env.sim.set_events_per_sec(0.0);
    env.assert_clean().await;
    let stats = env.sim.stats();
    let faults: u64 = stats.faults.values().sum();
    assert!(faults >= 50, "chaos injected {faults} faults");
    println!(
        "chaos: {faults} faults {:?}, {} identifies, {} resumes",
        stats.faults, stats.identifies, stats.resumes_ok
    );
    env.stop().await;
}
