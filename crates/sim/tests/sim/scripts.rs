//! A well-behaved client records no violations, and gets everything it asks for.

use std::num::NonZeroU32;

use serde_json::json;
use shardkeeper_protocol::shard_for_guild;

use crate::client::{Client, assert_no_violations, config, gateway_bot, http, resume, sim};

#[tokio::test]
async fn well_behaved_session_identify_requests_and_resume() {
    let sim = sim(config()).await;
    let (code, bot) = gateway_bot(&sim).await;
    assert_eq!(code, 200);
    assert_eq!(bot["shards"], 4);
    assert_eq!(bot["session_start_limit"]["max_concurrency"], 4);
    assert_eq!(bot["session_start_limit"]["remaining"], 1000);
    let url = bot["url"].as_str().expect("url").to_owned();

    let mut client = Client::connect(&url).await;
    let (ready, mut seq) = client.login(2, 4).await;
    assert_eq!(ready["shard"], json!([2, 4]));
    let session_id = ready["session_id"].as_str().expect("session id").to_owned();
    let resume_url = ready["resume_gateway_url"]
        .as_str()
        .expect("resume url")
        .to_owned();
    assert_ne!(resume_url, url, "resume URL is distinct");
    let total = NonZeroU32::new(4).expect("non-zero");
    let guilds: Vec<u64> = ready["guilds"]
        .as_array()
        .expect("guilds")
        .iter()
        .map(|g| g["id"].as_str().expect("id").parse().expect("snowflake"))
        .collect();
    assert_eq!(guilds.len(), 3);
    assert!(guilds.iter().all(|&g| shard_for_guild(g, total) == 2));

    client.send(&json!({"op": 1, "d": seq})).await;
    assert_eq!(client.payload().await["op"], 11);

    client
        .send(&json!({"op": 3, "d": {"since": null, "activities": [{"name": "tests", "type": 0}], "status": "online", "afk": false}}))
        .await;
    client
        .send(&json!({"op": 4, "d": {"guild_id": guilds[0].to_string(), "channel_id": "5", "self_mute": false, "self_deaf": true}}))
        .await;
    let voice = client.until(0, Some("VOICE_STATE_UPDATE")).await;
    assert_eq!(voice["d"]["self_deaf"], true);

    client
        .send(&json!({"op": 8, "d": {"guild_id": guilds[1].to_string(), "query": "", "limit": 0, "nonce": "abc"}}))
        .await;
    let first = client.until(0, Some("GUILD_MEMBERS_CHUNK")).await;
    let second = client.until(0, Some("GUILD_MEMBERS_CHUNK")).await;
    assert_eq!(
        (
            first["d"]["chunk_count"].as_u64(),
            first["d"]["nonce"].as_str()
        ),
        (Some(2), Some("abc"))
    );
    assert_eq!(second["d"]["chunk_index"], 1);
    let members = first["d"]["members"].as_array().map_or(0, Vec::len)
        + second["d"]["members"].as_array().map_or(0, Vec::len);
    assert_eq!(members, 1500);
    client
        .send(&json!({"op": 8, "d": {"guild_id": guilds[1].to_string(), "query": "", "limit": 0, "nonce": "again"}}))
        .await;
    let limited = client.until(0, Some("RATE_LIMITED")).await;
    assert_eq!(limited["d"]["opcode"], 8);
    assert_eq!(limited["d"]["meta"]["nonce"], "again");
    assert!(limited["d"]["retry_after"].as_f64().expect("retry_after") > 29.0);
    seq = limited["s"].as_u64().expect("seq");

    client.close(4000).await;
    let mut resumed = Client::connect(&resume_url).await;
    resumed.hello().await;
    resumed.send(&resume(&session_id, seq - 2)).await;
    let replayed = resumed.payload().await;
    assert_eq!(
        replayed["s"].as_u64(),
        Some(seq - 1),
        "replay starts after the given seq"
    );
    assert_eq!(resumed.payload().await["s"].as_u64(), Some(seq));
    let done = resumed.payload().await;
    assert_eq!(
        (done["t"].as_str(), done["s"].as_u64()),
        (Some("RESUMED"), Some(seq + 1))
    );
    resumed.close(4000).await;

    let stats = sim.stats();
    assert_no_violations(&stats);
    assert_eq!((stats.identifies, stats.resumes_ok), (1, 1));
    assert_eq!(stats.session_start_remaining, 999);
    assert_eq!(stats.shards[&2].presence_updates, 1);
    assert_eq!(stats.client_close_codes.get(&4000), Some(&2));
    assert_eq!(stats.shards[&2].last_seq, seq + 1);
    let (_, bot) = gateway_bot(&sim).await;
    assert_eq!(bot["session_start_limit"]["remaining"], 999);
    sim.shutdown().await;
}

#[tokio::test]
async fn buckets_identify_together_and_in_successive_windows() {
    let sim = sim(config()).await;
    for shard in 0..4 {
        let mut client = Client::connect(&sim.gateway_url()).await;
        client.login(shard, 8).await;
    }
    tokio::time::sleep(config().identify_window).await;
    for shard in 4..8 {
        let mut client = Client::connect(&sim.gateway_url()).await;
        client.login(shard, 8).await;
    }
    let stats = sim.stats();
    assert_no_violations(&stats);
    assert_eq!(stats.identifies, 8);
    let window = u64::try_from(config().identify_window.as_millis()).expect("small");
    for bucket in &stats.buckets {
        assert!(
            bucket.identifies == 2 && bucket.max_per_window == 1,
            "{bucket:?}"
        );
        assert_eq!(bucket.min_gap_ms, bucket.max_gap_ms, "one gap: {bucket:?}");
        assert!(bucket.min_gap_ms >= Some(window), "{bucket:?}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn unauthorized_rest_calls_get_401() {
    let sim = sim(config()).await;
    let (status, body) = http(sim.addr(), "GET", "/api/v10/gateway/bot", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "401: Unauthorized");
    let (status, _) = http(
        sim.addr(),
        "GET",
        "/api/v10/gateway/bot",
        Some("Bot wrong"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = http(sim.addr(), "GET", "/api/v10/gateway", None, None).await;
    assert_eq!(
        (status, body["url"].as_str()),
        (200, Some(sim.gateway_url().as_str()))
    );
    let (status, _) = http(sim.addr(), "GET", "/nope", None, None).await;
    assert_eq!(status, 404);
    sim.shutdown().await;
}
