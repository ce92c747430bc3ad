//! Every gateway fault ends with the shard Ready again, resuming where allowed.

use std::time::Duration;

use shardkeeper_cluster::StateKind;
use shardkeeper_sim::{Fault, FaultTarget, SimConfig};

use crate::harness::{Env, sim_config};

/// Injects `fault` into shard 1 and waits until it is Ready again; returns the
/// identifies the simulator counted for the recovery.
async fn recover(env: &Env, fault: Fault) -> u64 {
    let before = env.sim.stats();
    let shard_before = env.cluster.shard(1).expect("owned");
    env.sim.inject(FaultTarget::shard(1), fault.clone());
    env.wait_for(
        &format!("recovery from {fault:?}"),
        Duration::from_secs(10),
        |env| {
            let now = env.cluster.shard(1).expect("owned");
            now.state == StateKind::Ready
                && (now.resumes > shard_before.resumes || now.identifies > shard_before.identifies)
        },
    )
    .await;
    env.sim.stats().identifies - before.identifies
}

fn events_config() -> SimConfig {
    SimConfig {
        events_per_sec: 100.0,
        ..sim_config(2, 2)
    }
}

#[actix::test]
async fn resumable_faults_resume_without_an_identify() {
    let env = Env::start(events_config()).await;
    env.all_ready(Duration::from_secs(5)).await;
    for fault in [
        Fault::Drop,
        Fault::Zombie,
        Fault::Reconnect,
        Fault::InvalidSession { resumable: true },
        Fault::Garbage,
        Fault::Close { code: 4000 },
    ] {
        assert_eq!(
            recover(&env, fault.clone()).await,
            0,
            "{fault:?} spent an identify"
        );
    }
    env.assert_clean().await;
    assert_eq!(env.cluster.shard(1).map(|s| s.resumes), Some(6));
    env.stop().await;
}

#[actix::test]
async fn session_ending_faults_identify_through_the_coordinator() {
    let env = Env::start(events_config()).await;
    env.all_ready(Duration::from_secs(5)).await;
    for fault in [
        Fault::InvalidSession { resumable: false },
        Fault::Close { code: 4007 },
        Fault::Close { code: 4009 },
    ] {
        assert_eq!(recover(&env, fault.clone()).await, 1, "{fault:?}");
    }
    env.assert_clean().await;
    env.stop().await;
}

#[actix::test]
async fn server_heartbeat_request_is_answered() {
    let env = Env::start(events_config()).await;
    env.all_ready(Duration::from_secs(5)).await;
    let before = env.sim.stats().heartbeats;
    env.sim
        .inject(FaultTarget::shard(0), Fault::HeartbeatRequest);
    env.wait_for("heartbeat", Duration::from_secs(2), |env| {
        env.sim.stats().heartbeats > before
    })
    .await;
    env.assert_clean().await;
    assert_eq!(
        env.cluster.shard(0).map(|s| s.state),
        Some(StateKind::Ready)
    );
    env.stop().await;
}

#[actix::test]
async fn fatal_close_codes_fail_the_shard_without_retrying() {
    for code in [4004u16, 4010, 4011, 4012, 4013, 4014] {
        let env = Env::start(sim_config(2, 2)).await;
        env.all_ready(Duration::from_secs(5)).await;
        let connections = env.sim.stats().connections;
        env.sim.inject(FaultTarget::shard(0), Fault::Close { code });
        env.shard_state(0, StateKind::Failed, Duration::from_secs(5))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let shard = env.cluster.shard(0).expect("owned");
        assert_eq!(
            (shard.state, shard.failed_code, shard.last_close_code),
            (StateKind::Failed, Some(code), Some(code))
        );
        assert_eq!(
            env.sim.stats().connections,
            connections,
            "{code}: no reconnect"
        );
        env.stop().await;
    }
}
