//! Injected faults, by hand, over HTTP and from the chaos schedule.

use std::time::Duration;

use serde_json::json;
use shardkeeper_sim::{ChaosConfig, Fault, FaultTarget, SimConfig};

use crate::client::{Client, Event, assert_no_violations, config, http, resume, sim};

async fn logged_in(sim: &shardkeeper_sim::SimHandle, shard: u32) -> (Client, String, u64) {
    let mut client = Client::connect(&sim.gateway_url()).await;
    let (ready, seq) = client.login(shard, 4).await;
    (
        client,
        ready["session_id"].as_str().expect("id").to_owned(),
        seq,
    )
}

async fn try_resume(
    sim: &shardkeeper_sim::SimHandle,
    session: &str,
    seq: u64,
) -> serde_json::Value {
    let mut client = Client::connect(&format!("{}/resume", sim.gateway_url())).await;
    client.hello().await;
    client.send(&resume(session, seq)).await;
    client.payload().await
}

#[tokio::test]
async fn drop_ends_the_stream_without_a_close_frame_and_keeps_the_session() {
    let sim = sim(config()).await;
    let (mut client, session, seq) = logged_in(&sim, 1).await;
    sim.inject(FaultTarget::shard(1), Fault::Drop);
    assert!(matches!(client.next().await, Event::Ended));
    let answer = try_resume(&sim, &session, seq).await;
    assert_eq!(answer["t"], "RESUMED");
    assert_eq!(sim.stats().faults.get("drop"), Some(&1));
    sim.shutdown().await;
}

#[tokio::test]
async fn close_codes_that_end_the_session_invalidate_it() {
    for (code, resumable) in [(4000, true), (4009, false), (4007, false), (4008, true)] {
        let sim = sim(config()).await;
        let (mut client, session, seq) = logged_in(&sim, 0).await;
        sim.inject(FaultTarget::shard(0), Fault::Close { code });
        assert_eq!(client.closed().await, Some(code));
        let answer = try_resume(&sim, &session, seq).await;
        if resumable {
            assert_eq!(answer["t"], "RESUMED", "{code}");
        } else {
            assert_eq!(answer, json!({"op": 9, "d": false}), "{code}");
        }
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn reconnect_invalid_session_garbage_and_heartbeat_request() {
    let sim = sim(config()).await;
    let (mut client, session, seq) = logged_in(&sim, 2).await;
    sim.inject(FaultTarget::shard(2), Fault::Reconnect);
    assert_eq!(client.payload().await, json!({"op": 7, "d": null}));
    sim.inject(FaultTarget::shard(2), Fault::HeartbeatRequest);
    assert_eq!(client.payload().await, json!({"op": 1, "d": null}));
    sim.inject(FaultTarget::shard(2), Fault::Garbage);
    assert!(client.payload().await.get("garbage").is_some());
    sim.inject(
        FaultTarget::shard(2),
        Fault::InvalidSession { resumable: true },
    );
    assert_eq!(client.payload().await, json!({"op": 9, "d": true}));
    assert_eq!(try_resume(&sim, &session, seq).await["t"], "RESUMED");
    sim.inject(FaultTarget::ALL, Fault::InvalidSession { resumable: false });
    assert_eq!(client.payload().await, json!({"op": 9, "d": false}));
    assert_eq!(
        try_resume(&sim, &session, seq).await,
        json!({"op": 9, "d": false})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_invalidated_session_dispatches_nothing_more_and_identify_may_follow() {
    let sim = sim(SimConfig {
        events_per_sec: 200.0,
        ..config()
    })
    .await;
    let (mut client, _, _) = logged_in(&sim, 1).await;
    client.until(0, Some("MESSAGE_CREATE")).await;
    sim.inject(
        FaultTarget::shard(1),
        Fault::InvalidSession { resumable: false },
    );
    client.until(9, None).await;
    let late = client.within(Duration::from_millis(300), 0).await;
    assert_eq!(late, None, "dispatched after op 9");
    client.identify(1, 4).await;
    assert_eq!(client.until(0, Some("READY")).await["t"], "READY");
    let stats = sim.stats();
    assert_no_violations(&stats);
    assert_eq!(stats.identifies, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn zombie_stops_acks_and_dispatches() {
    let sim = sim(SimConfig {
        events_per_sec: 50.0,
        ..config()
    })
    .await;
    let (mut client, _, _) = logged_in(&sim, 3).await;
    client.until(0, Some("MESSAGE_CREATE")).await;
    sim.inject(FaultTarget::shard(3), Fault::Zombie);
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.send(&json!({"op": 1, "d": null})).await;
    let ack = client.within(Duration::from_millis(500), 11).await;
    assert_eq!(ack, None, "a zombie never acknowledges");
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_and_stats_over_http() {
    let sim = sim(config()).await;
    let (mut client, _, _) = logged_in(&sim, 0).await;
    let body = json!({"shard": 0, "fault": {"kind": "close", "code": 4000}}).to_string();
    let (status, _) = http(sim.addr(), "POST", "/sim/faults", None, Some(&body)).await;
    assert_eq!(status, 202);
    assert_eq!(client.closed().await, Some(4000));
    let (status, _) = http(
        sim.addr(),
        "POST",
        "/sim/faults",
        None,
        Some("{\"fault\":{\"kind\":\"meteor\"}}"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, counted) = http(sim.addr(), "GET", "/sim/stats", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(counted["identifies"], 1);
    assert_eq!(counted["faults"]["close_4000"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn seeded_chaos_injects_faults() {
    let config = SimConfig {
        chaos: Some(ChaosConfig {
            faults: vec![(Fault::HeartbeatRequest, 600.0)],
        }),
        ..config()
    };
    let sim = sim(config).await;
    let (mut client, _, _) = logged_in(&sim, 0).await;
    for _ in 0..3 {
        assert_eq!(client.until(1, None).await["op"], 1);
        client.send(&json!({"op": 1, "d": null})).await;
    }
    let stats = sim.stats();
    assert!(stats.faults.get("heartbeat_request").copied().unwrap_or(0) >= 3);
    assert_no_violations(&stats);
    sim.shutdown().await;
}
