//! Start-up pacing, TLS, supervision.

use std::time::{Duration, Instant};

use shardkeeper_cluster::{
    Cluster, ClusterError, QuarantinePolicy, RestError, StateKind, client_config,
};
use shardkeeper_protocol::Token;
use shardkeeper_sim::{Fault, FaultTarget, RestFault, Sim, SimConfig, TlsConfig};

use crate::harness::{CLOSE_READ, Env, IDENTIFY_MARGIN_MS, cluster_config, sim_config};

#[actix::test]
async fn thirty_two_shards_identify_in_four_windows_without_violations() {
    let started = Instant::now();
    let env = Env::start(sim_config(32, 8)).await;
    env.all_ready(Duration::from_secs(10)).await;
    let took = started.elapsed();
    // ⌈32/8⌉ = 4 windows: grants at 0, 1, 2 and 3 periods of window + margin.
    let period = 200 + IDENTIFY_MARGIN_MS;
    assert!(
        took < Duration::from_millis(3 * period + 700),
        "all ready after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(3 * period),
        "faster than the window allows: {took:?}"
    );
    let stats = env.sim.stats();
    assert_eq!(stats.identifies, 32);
    for bucket in &stats.buckets {
        assert!(
            bucket.max_per_window == 1 && bucket.identifies == 4,
            "{bucket:?}"
        );
        // Each grant waits for the previous IDENTIFY's write report, then one period:
        // a lost report would hold the bucket for two periods.
        assert!(
            bucket.min_gap_ms >= Some(200) && bucket.max_gap_ms < Some(2 * period),
            "{bucket:?}"
        );
    }
    assert_eq!(env.cluster.identify_status().map(|s| s.granted), Some(32));
    env.assert_clean().await;
    env.stop().await;
}

#[actix::test]
async fn tls_gateway_and_rest_with_a_ca_file() {
    let tls = TlsConfig::self_signed().expect("certificate");
    let dir = std::env::temp_dir().join(format!("sk-e2e-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &tls.cert_pem).expect("written");
    assert!(client_config(Some(&ca)).is_ok());
    let sim = SimConfig {
        tls: Some(tls),
        ..sim_config(2, 2)
    };
    let env = Env::start_with(
        sim,
        |config| {
            config.ca_file = Some(ca.clone());
            config.api_base = config.api_base.replace("127.0.0.1", "localhost");
        },
        Duration::from_millis(200),
    )
    .await;
    env.all_ready(Duration::from_secs(10)).await;
    assert!(env.sim.gateway_url().starts_with("wss://"));
    env.assert_clean().await;
    env.stop().await;
}

#[actix::test]
async fn a_crashed_shard_actor_is_restarted_with_its_session() {
    let env = Env::start(sim_config(2, 2)).await;
    env.all_ready(Duration::from_secs(5)).await;
    let before = env.cluster.shard(1).expect("owned");
    env.cluster.crash_shard(1).expect("owned");
    env.wait_for("restart", Duration::from_secs(5), |env| {
        env.cluster.shard(1).is_some_and(|s| {
            s.restarts == 1 && s.state == StateKind::Ready && s.resumes == before.resumes + 1
        })
    })
    .await;
    let after = env.cluster.shard(1).expect("owned");
    assert_eq!(after.session_id, before.session_id, "same session, resumed");
    assert_eq!(after.identifies, 1);
    assert_eq!(env.sim.stats().identifies, 2);
    env.assert_clean().await;
    env.stop().await;
}

#[actix::test]
async fn gateway_bot_failures_are_retried_and_401_is_final() {
    let faults = vec![
        RestFault::RateLimited { retry_after: 0.3 },
        RestFault::Status { code: 502 },
        RestFault::Garbage,
    ];
    let started = Instant::now();
    let env = Env::start_with(
        SimConfig {
            rest_faults: faults,
            ..sim_config(1, 1)
        },
        |config| {
            config.rest_backoff = Duration::from_millis(20);
        },
        Duration::from_millis(200),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "retry_after was honoured"
    );
    env.all_ready(Duration::from_secs(5)).await;
    env.stop().await;

    let sim = Sim::start(sim_config(1, 1)).await.expect("sim");
    let mut config = cluster_config(&sim, Duration::from_millis(200));
    config.session.token = Token::new("wrong");
    let started = Instant::now();
    let err = Cluster::builder(config)
        .start()
        .await
        .expect_err("bad token");
    assert!(
        matches!(err, ClusterError::Rest(RestError::Unauthorized(_))),
        "{err}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "the token never appears in errors"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no retries on 401"
    );
    sim.shutdown().await;
}

#[actix::test]
async fn a_crash_looping_shard_is_quarantined_until_an_operator_starts_it() {
    // The first three connections never get HELLO: three attempts that fail before READY.
    let sim = SimConfig {
        silent_connections: 3,
        ..sim_config(1, 1)
    };
    let env = Env::start_with(
        sim,
        |config| {
            config.session.quarantine = QuarantinePolicy {
                failures: 3,
                window: Duration::from_secs(60),
            };
            config.session.timing.hello_timeout = Duration::from_millis(200);
        },
        Duration::from_millis(200),
    )
    .await;
    env.shard_state(0, StateKind::Quarantined, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.sim.stats().connections,
        3,
        "a quarantined shard stays down"
    );
    env.cluster.start(0).await.expect("operator start");
    env.shard_state(0, StateKind::Ready, Duration::from_secs(5))
        .await;
    env.assert_clean().await;
    env.stop().await;
}

#[actix::test]
async fn sessions_the_gateway_drops_after_ready_are_not_a_crash_loop() {
    let env = Env::start_with(
        sim_config(2, 2),
        |config| {
            config.session.quarantine = QuarantinePolicy {
                failures: 3,
                window: Duration::from_secs(60),
            };
        },
        Duration::from_millis(200),
    )
    .await;
    env.all_ready(Duration::from_secs(5)).await;
    for round in 1..=4u64 {
        env.sim.inject(FaultTarget::shard(0), Fault::Drop);
        env.wait_for("resume", Duration::from_secs(5), |env| {
            env.cluster
                .shard(0)
                .is_some_and(|s| s.resumes == round && s.state == StateKind::Ready)
        })
        .await;
    }
    assert_eq!(
        env.cluster.shard(1).map(|s| s.state),
        Some(StateKind::Ready)
    );
    env.assert_clean().await;
    env.stop().await;
}

#[actix::test]
async fn graceful_shutdown_closes_every_socket_with_4000() {
    let env = Env::start(sim_config(4, 4)).await;
    env.all_ready(Duration::from_secs(5)).await;
    env.cluster.shutdown().await.expect("shutdown");
    env.wait_for("close 4000 from every connection", CLOSE_READ, |env| {
        env.sim.stats().client_close_codes.get(&4000) == Some(&4)
    })
    .await;
    let stats = env.sim.stats();
    assert_eq!(stats.client_close_codes.get(&1000), None);
    assert!(stats.shards.values().all(|s| s.state == "disconnected"));
}
