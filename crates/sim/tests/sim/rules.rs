//! Each rule: the gateway's answer and the recorded violation.

use std::time::Duration;

use serde_json::json;
use shardkeeper_sim::{SimConfig, ViolationKind};

use crate::client::{
    Client, TOKEN, assert_no_violations, assert_violation, config, identify, resume, sim,
};

/// Opens a connection, sends `payload` after HELLO and expects a close with `code`.
async fn rejected(config: SimConfig, payload: serde_json::Value, code: u16, kind: ViolationKind) {
    let sim = sim(config).await;
    let mut client = Client::connect(&sim.gateway_url()).await;
    client.hello().await;
    client.send(&payload).await;
    assert_eq!(client.closed().await, Some(code), "{kind:?}");
    assert_violation(&sim.stats(), kind);
    sim.shutdown().await;
}

#[tokio::test]
async fn identify_checks_close_with_discords_codes() {
    let cases = [
        (
            identify("wrong", 0, 4, 1),
            4004,
            ViolationKind::AuthenticationFailed,
        ),
        (identify(TOKEN, 4, 4, 1), 4010, ViolationKind::InvalidShard),
        (
            identify(TOKEN, 0, 4, 1 << 17),
            4013,
            ViolationKind::InvalidIntents,
        ),
        (
            json!({"op": 3, "d": {"since": null, "activities": [], "status": "online", "afk": false}}),
            4003,
            ViolationKind::PayloadBeforeIdentify,
        ),
        (
            json!({"op": 2, "d": {"token": TOKEN}}),
            4001,
            ViolationKind::InvalidPayload,
        ),
    ];
    for (payload, code, kind) in cases {
        rejected(config(), payload, code, kind).await;
    }
    let needs_more = SimConfig {
        min_shards: 8,
        ..config()
    };
    rejected(
        needs_more,
        identify(TOKEN, 0, 4, 1),
        4011,
        ViolationKind::ShardingRequired,
    )
    .await;
    let unprivileged = SimConfig {
        allow_privileged_intents: false,
        ..config()
    };
    rejected(
        unprivileged,
        identify(TOKEN, 0, 4, 1 << 1),
        4014,
        ViolationKind::DisallowedIntents,
    )
    .await;
}

#[tokio::test]
async fn bad_api_version_gets_4012() {
    let sim = sim(config()).await;
    let mut client =
        Client::connect_raw(&format!("{}/?v=6&encoding=json", sim.gateway_url())).await;
    client.hello().await;
    client.identify(0, 4).await;
    assert_eq!(client.closed().await, Some(4012));
    assert_violation(&sim.stats(), ViolationKind::InvalidApiVersion);
    sim.shutdown().await;
}

#[tokio::test]
async fn second_identify_gets_4005() {
    let sim = sim(config()).await;
    let mut client = Client::connect(&sim.gateway_url()).await;
    client.login(0, 4).await;
    client.identify(1, 4).await;
    assert_eq!(client.closed().await, Some(4005));
    assert_violation(&sim.stats(), ViolationKind::AlreadyAuthenticated);
    sim.shutdown().await;
}

#[tokio::test]
async fn identify_inside_the_bucket_window_gets_op9() {
    let sim = sim(config()).await;
    let mut first = Client::connect(&sim.gateway_url()).await;
    first.login(1, 8).await;
    let mut second = Client::connect(&sim.gateway_url()).await;
    second.hello().await;
    second.identify(5, 8).await;
    assert_eq!(second.payload().await, json!({"op": 9, "d": false}));
    let stats = sim.stats();
    assert_violation(&stats, ViolationKind::IdentifyWindow);
    assert_eq!(stats.buckets[1].max_per_window, 2);
    assert_eq!(
        stats.buckets[1].min_gap_ms, None,
        "a refused IDENTIFY leaves no gap"
    );
    assert_eq!(stats.identifies, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn exhausted_budget_gets_4004() {
    let sim = sim(SimConfig {
        session_start_remaining: 1,
        ..config()
    })
    .await;
    let mut first = Client::connect(&sim.gateway_url()).await;
    first.login(0, 4).await;
    let mut second = Client::connect(&sim.gateway_url()).await;
    second.hello().await;
    second.identify(1, 4).await;
    assert_eq!(second.closed().await, Some(4004));
    assert_violation(&sim.stats(), ViolationKind::BudgetExhausted);
    sim.shutdown().await;
}

#[tokio::test]
async fn resume_failures() {
    let sim = sim(config()).await;
    let mut client = Client::connect(&sim.gateway_url()).await;
    let (ready, seq) = client.login(0, 4).await;
    let session = ready["session_id"].as_str().expect("id").to_owned();
    let resume_url = ready["resume_gateway_url"]
        .as_str()
        .expect("url")
        .to_owned();
    client.close(4000).await;

    let mut unknown = Client::connect(&resume_url).await;
    unknown.hello().await;
    unknown.send(&resume("no-such-session", 1)).await;
    assert_eq!(unknown.payload().await, json!({"op": 9, "d": false}));

    let mut wrong_token = Client::connect(&resume_url).await;
    wrong_token.hello().await;
    wrong_token
        .send(&json!({"op": 6, "d": {"token": "x", "session_id": session, "seq": seq}}))
        .await;
    assert_eq!(wrong_token.payload().await, json!({"op": 9, "d": false}));
    assert_no_violations(&sim.stats());

    let mut ahead = Client::connect(&resume_url).await;
    ahead.hello().await;
    ahead.send(&resume(&session, seq + 10)).await;
    assert_eq!(ahead.closed().await, Some(4007));
    assert_violation(&sim.stats(), ViolationKind::ResumeSeqAhead);

    let mut wrong_url = Client::connect(&sim.gateway_url()).await;
    wrong_url.hello().await;
    wrong_url.send(&resume(&session, seq)).await;
    assert_eq!(
        wrong_url.until(0, Some("RESUMED")).await["s"].as_u64(),
        Some(seq + 1)
    );
    assert_violation(&sim.stats(), ViolationKind::ResumeWrongUrl);
    assert_eq!(sim.stats().resumes_failed, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn identify_on_the_resume_url_is_recorded() {
    let sim = sim(config()).await;
    let mut client = Client::connect(&format!("{}/resume", sim.gateway_url())).await;
    client.login(0, 4).await;
    assert_violation(&sim.stats(), ViolationKind::IdentifyOnResumeUrl);
    sim.shutdown().await;
}

#[tokio::test]
async fn missed_heartbeat_closes_4009_and_ends_the_session() {
    let sim = sim(SimConfig {
        heartbeat_interval: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut client = Client::connect(&sim.gateway_url()).await;
    let (ready, seq) = client.login(0, 4).await;
    assert_eq!(client.closed().await, Some(4009));
    assert_violation(&sim.stats(), ViolationKind::MissedHeartbeat);
    let mut again = Client::connect(&format!("{}/resume", sim.gateway_url())).await;
    again.hello().await;
    again
        .send(&resume(ready["session_id"].as_str().expect("id"), seq))
        .await;
    assert_eq!(again.payload().await, json!({"op": 9, "d": false}));
    sim.shutdown().await;
}

#[tokio::test]
async fn heartbeat_ahead_of_the_sequence_is_recorded() {
    let sim = sim(config()).await;
    let mut client = Client::connect(&sim.gateway_url()).await;
    let (_, seq) = client.login(0, 4).await;
    client.send(&json!({"op": 1, "d": seq + 5})).await;
    assert_eq!(client.payload().await["op"], 11);
    assert_violation(&sim.stats(), ViolationKind::HeartbeatSeqAhead);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_heartbeat_crossing_a_refused_resume_may_carry_its_seq() {
    let sim = sim(config()).await;
    let mut client = Client::connect(&format!("{}/resume", sim.gateway_url())).await;
    client.hello().await;
    client.send(&resume("no-such-session", 7)).await;
    // Sent before the client has read the op 9 on its way.
    client.send(&json!({"op": 1, "d": 7})).await;
    assert_eq!(client.payload().await, json!({"op": 9, "d": false}));
    assert_eq!(client.payload().await["op"], 11);
    assert_no_violations(&sim.stats());
    client.send(&json!({"op": 1, "d": 8})).await;
    assert_eq!(client.payload().await["op"], 11);
    assert_violation(&sim.stats(), ViolationKind::HeartbeatSeqAhead);
    sim.shutdown().await;
}

#[tokio::test]
async fn more_than_120_payloads_a_minute_gets_4008() {
    let sim = sim(config()).await;
    let mut client = Client::connect(&sim.gateway_url()).await;
    client.hello().await;
    for _ in 0..121 {
        client.send(&json!({"op": 1, "d": null})).await;
    }
    assert_eq!(client.closed().await, Some(4008));
    let stats = sim.stats();
    assert_violation(&stats, ViolationKind::SendRateExceeded);
    assert_eq!(stats.heartbeats, 120);
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_payloads() {
    let big = json!({"op": 1, "d": "x".repeat(4100)}).to_string();
    let cases: [(&str, u16, ViolationKind); 5] = [
        (&big, 4002, ViolationKind::PayloadTooLarge),
        ("{not json", 4002, ViolationKind::InvalidJson),
        (r#"{"op":99,"d":null}"#, 4001, ViolationKind::UnknownOpcode),
        (r#"{"op":11,"d":null}"#, 4001, ViolationKind::UnknownOpcode),
        (r#"{"op":5,"d":null}"#, 4001, ViolationKind::Opcode5),
    ];
    for (text, code, kind) in cases {
        let sim = sim(config()).await;
        let mut client = Client::connect(&sim.gateway_url()).await;
        client.hello().await;
        client.send_text(text).await;
        assert_eq!(client.closed().await, Some(code), "{kind:?}");
        assert_violation(&sim.stats(), kind);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn invalid_request_bodies_get_4001() {
    let cases = [
        json!({"op": 3, "d": {"since": null, "activities": [{"name": "x", "type": 9}], "status": "online", "afk": false}}),
        json!({"op": 3, "d": {"status": "online"}}),
        json!({"op": 8, "d": {"guild_id": "1", "query": "a"}}),
        json!({"op": 4, "d": {"guild_id": "nope"}}),
    ];
    for payload in cases {
        let sim = sim(config()).await;
        let mut client = Client::connect(&sim.gateway_url()).await;
        client.login(0, 4).await;
        client.send(&payload).await;
        assert_eq!(client.closed().await, Some(4001), "{payload}");
        assert_violation(&sim.stats(), ViolationKind::InvalidPayload);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn requests_for_another_shards_guild_are_recorded() {
    let sim = sim(config()).await;
    let mut client = Client::connect(&sim.gateway_url()).await;
    client.login(0, 4).await;
    let foreign = shardkeeper_sim::guild_ids(1, 4, 1)[0];
    client
        .send(&json!({"op": 8, "d": {"guild_id": foreign.to_string(), "user_ids": ["1"]}}))
        .await;
    client.send(&json!({"op": 1, "d": null})).await;
    assert_eq!(
        client.payload().await["op"],
        11,
        "no member chunk comes back"
    );
    assert_violation(&sim.stats(), ViolationKind::GuildNotOnShard);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_old_connection_talking_after_a_newer_one_took_over_is_recorded() {
    let sim = sim(config()).await;
    // Session taken over: shard 0 resumed on another connection while the first is open.
    let mut first = Client::connect(&sim.gateway_url()).await;
    let (ready, seq) = first.login(0, 4).await;
    let session = ready["session_id"].as_str().expect("id").to_owned();
    let resume_url = ready["resume_gateway_url"]
        .as_str()
        .expect("url")
        .to_owned();
    let mut second = Client::connect(&resume_url).await;
    second.hello().await;
    second.send(&resume(&session, seq)).await;
    assert_eq!(second.until(0, Some("RESUMED")).await["t"], "RESUMED");
    assert_no_violations(&sim.stats());
    first.send(&json!({"op": 1, "d": seq})).await;
    second.send(&json!({"op": 1, "d": seq})).await;
    assert_eq!(
        second.payload().await["op"],
        11,
        "the new connection goes on"
    );
    assert_violation(&sim.stats(), ViolationKind::SessionFoughtOver);

    // Shard identified anew on another connection while the first still runs it.
    let mut old = Client::connect(&sim.gateway_url()).await;
    old.login(1, 4).await;
    // Past the bucket's window: the second IDENTIFY is allowed as such.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut new = Client::connect(&sim.gateway_url()).await;
    new.login(1, 4).await;
    old.send(&json!({"op": 1, "d": null})).await;
    new.send(&json!({"op": 1, "d": null})).await;
    assert_eq!(new.payload().await["op"], 11);
    assert_violation(&sim.stats(), ViolationKind::TwoLiveConnections);
    sim.shutdown().await;
}
