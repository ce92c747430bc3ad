//! Operating many shards over the admin API: rolling restarts as jobs, the audit log
//! and the history behind the dashboard's charts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardkeeper_cluster::StateKind;
use shardkeeper_sim::guild_ids;

use crate::admin::{ADMIN_TOKEN, Api};
use crate::harness::{Env, sim_config};

/// Starts a rolling restart through the API; the job's route from `Location`.
async fn start_job(api: &Api) -> String {
    let (status, location, body) = api
        .exchange("POST", "/api/v1/shards/restart", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let location = location.expect("a Location header");
    let id = body["job"].as_str().expect("the job id");
    assert_eq!(location, format!("/api/v1/jobs/{id}"));
    location
}

/// Polls the job until `done(job)`, checking on the way that progress never goes back.
async fn follow(api: &Api, location: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_done = 0;
    loop {
        let (status, job) = api.get(location).await;
        assert_eq!(status, 200, "{job}");
        let now_done = job["done"].as_u64().expect("done");
        assert!(now_done >= last_done, "progress went back: {job}");
        last_done = now_done;
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "the job is stuck: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix::test]
async fn a_rolling_restart_of_64_shards_runs_to_completion_as_a_job() {
    let env = Env::start(sim_config(64, 16)).await;
    env.all_ready(Duration::from_secs(20)).await;
    let (server, api) = Api::start(&env);
    // An operator stopped shard 5: the rolling restart leaves it stopped.
    let (status, _) = api.post("/api/v1/shards/5/stop", None).await;
    assert_eq!(status, 202);
    env.shard_state(5, StateKind::Stopped, Duration::from_secs(5))
        .await;
    let location = start_job(&api).await;
    let (status, body) = api.post("/api/v1/shards/restart", None).await;
    assert_eq!(status, 409, "one rolling restart at a time: {body}");
    let running = follow(&api, &location, |job| {
        job["state"] == "running" && job["done"] != 0
    })
    .await;
    assert_eq!(running["total"], 64, "{running}");
    assert!(
        running["current"].is_u64(),
        "a step is in flight: {running}"
    );
    let ended = follow(&api, &location, |job| job["state"] != "running").await;
    assert_eq!(ended["state"], "completed", "{ended}");
    assert_eq!(ended["done"], 64);
    assert_eq!(ended["errors"], json!([]));
    assert!(
        ended["current"].is_null() && ended["finished_at_ms"].is_u64(),
        "{ended}"
    );
    let shards = env.cluster.shards();
    assert!(
        shards
            .iter()
            .filter(|s| s.id != 5)
            .all(|s| s.resumes == 1 && s.state == StateKind::Ready),
        "every other shard resumed once"
    );
    assert_eq!(
        shards
            .iter()
            .find(|s| s.id == 5)
            .map(|s| (s.state, s.resumes)),
        Some((StateKind::Stopped, 0))
    );
    assert_eq!(env.sim.stats().identifies, 64, "no shard identified again");
    let (_, jobs) = api.get("/api/v1/jobs").await;
    assert_eq!(jobs["jobs"][0]["id"], ended["id"], "{jobs}");
    server.stop().await;
    env.assert_clean().await;
    env.stop().await;
}

#[actix::test]
async fn a_cancelled_rolling_restart_stops_after_its_step() {
    // Eight buckets: eight shards per step, eight steps to stop in the middle of.
    let env = Env::start(sim_config(64, 8)).await;
    env.all_ready(Duration::from_secs(30)).await;
    let (server, api) = Api::start(&env);
    let location = start_job(&api).await;
    follow(&api, &location, |job| job["done"].as_u64() >= Some(16)).await;
    let (status, cancelling) = api.post(&format!("{location}/cancel"), None).await;
    assert_eq!(status, 202, "{cancelling}");
    let ended = follow(&api, &location, |job| job["state"] != "running").await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    let done = ended["done"].as_u64().expect("done");
    assert!((16..64).contains(&done), "stopped halfway: {ended}");
    env.all_ready(Duration::from_secs(5)).await;
    let restarted = env
        .cluster
        .shards()
        .iter()
        .filter(|s| s.resumes == 1)
        .count() as u64;
    assert_eq!(
        restarted, done,
        "only the shards of the steps done restarted"
    );
    let (status, again) = api.post(&format!("{location}/cancel"), None).await;
    assert_eq!(
        (status, &again["state"]),
        (202, &json!("cancelled")),
        "an ended job stays as it ended"
    );
    let (status, body) = api.post("/api/v1/jobs/nope/cancel", None).await;
    assert_eq!(status, 404, "{body}");
    server.stop().await;
    env.stop().await;
}

#[actix::test]
async fn every_mutating_route_is_in_the_audit_log() {
    let env = Env::start(sim_config(2, 2)).await;
    env.all_ready(Duration::from_secs(10)).await;
    let (server, api) = Api::start(&env);
    let guild = guild_ids(0, 2, 1)[0];
    let presence = json!({"since": null, "activities": [], "status": "online", "afk": false});
    let voice = json!({"guild_id": guild.to_string(), "channel_id": null, "self_mute": false, "self_deaf": false});
    let members = format!("/api/v1/guilds/{guild}/members");
    let calls: [(&str, Option<Value>, &str); 8] = [
        (
            "/api/v1/shards/1/stop",
            None,
            "POST /api/v1/shards/{id}/stop",
        ),
        (
            "/api/v1/shards/1/start",
            None,
            "POST /api/v1/shards/{id}/start",
        ),
        (
            "/api/v1/shards/0/restart",
            None,
            "POST /api/v1/shards/{id}/restart",
        ),
        (
            "/api/v1/shards/7/restart",
            None,
            "POST /api/v1/shards/{id}/restart",
        ),
        ("/api/v1/presence", Some(presence), "POST /api/v1/presence"),
        (
            "/api/v1/voice-state",
            Some(voice),
            "POST /api/v1/voice-state",
        ),
        (
            &members,
            Some(json!({"query": "member-1", "limit": 1})),
            "POST /api/v1/guilds/{guild_id}/members",
        ),
        (
            "/api/v1/shards/restart",
            None,
            "POST /api/v1/shards/restart",
        ),
    ];
    let started = now_ms();
    for (path, body, _) in &calls {
        api.post(path, body.clone()).await;
    }
    let (_, job) = api.get("/api/v1/jobs").await;
    let job_id = job["jobs"][0]["id"].as_str().expect("a job").to_owned();
    api.post(&format!("/api/v1/jobs/{job_id}/cancel"), None)
        .await;

    let (status, audit) = api.get("/api/v1/audit").await;
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), calls.len() + 1, "{audit}");
    // Newest first.
    assert_eq!(entries[0]["action"], "POST /api/v1/jobs/{id}/cancel");
    assert_eq!(entries[0]["target"], job_id);
    for ((path, _, action), entry) in calls.iter().zip(entries.iter().skip(1).rev()) {
        assert_eq!(entry["action"], *action, "{path}: {entry}");
        assert_eq!(entry["actor"], "admin");
        assert!(
            entry["at_ms"].as_u64().is_some_and(|at| at >= started),
            "{entry}"
        );
    }
    let unknown_shard = entries
        .iter()
        .find(|e| e["target"] == "7")
        .expect("the refused restart");
    assert_ne!(
        unknown_shard["result"], "ok",
        "a failed call is recorded with its error"
    );
    assert_eq!(
        entries.iter().filter(|e| e["result"] == "ok").count(),
        calls.len()
    );

    let (status, newest) = api.get("/api/v1/audit?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(newest["entries"].as_array().map(Vec::len), Some(2));
    for bad in ["0", "10001", "-1", "many"] {
        let (status, body) = api.get(&format!("/api/v1/audit?limit={bad}")).await;
        assert_eq!(status, 400, "limit={bad}: {body}");
        assert!(body["error"].is_string());
    }
    let (status, body) = api.get("/api/v1/audit?since=1").await;
    assert_eq!(status, 400, "an unknown parameter: {body}");
    server.stop().await;
    env.stop().await;
}

#[actix::test]
async fn the_history_samples_the_bot_for_the_charts() {
    let env = Env::start(sim_config(4, 4)).await;
    env.all_ready(Duration::from_secs(10)).await;
    env.sim.set_events_per_sec(50.0);
    let (server, api) = Api::start(&env);
    env.cluster.stop(3).await.expect("stop");
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let (status, history) = api.get("/api/v1/history").await;
        assert_eq!(status, 200, "{history}");
        assert_eq!(history["interval_ms"], 2000);
        let samples = history["samples"].as_array().cloned().unwrap_or_default();
        if samples.len() >= 2 {
            break samples;
        }
        assert!(Instant::now() < deadline, "no second sample: {history}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    assert!(last["at_ms"].as_u64() > first["at_ms"].as_u64());
    assert_eq!(last["states"]["ready"], 3, "{last}");
    assert_eq!(last["states"]["stopped"], 1, "{last}");
    assert_eq!(last["states"]["failed"], 0, "every state is named: {last}");
    assert!(
        last["events"].as_u64() > first["events"].as_u64(),
        "events flow: {first} → {last}"
    );
    assert_eq!(last["identifies"], 4);
    assert!(last["latency_p50_ms"].is_u64() || last["latency_p50_ms"].is_null());
    assert_eq!(last["budget_total"], 1000, "{last}");
    let since = first["at_ms"].as_u64().expect("at_ms");
    let (status, newer) = api.get(&format!("/api/v1/history?since_ms={since}")).await;
    assert_eq!(status, 200, "{newer}");
    let newer = newer["samples"].as_array().cloned().unwrap_or_default();
    assert!(!newer.is_empty(), "the samples after the first");
    assert!(newer.iter().all(|s| s["at_ms"].as_u64() > Some(since)));
    assert_eq!(newer[0], samples[1], "from the one after, in order");
    let (status, body) = api.get("/api/v1/history?since_ms=soon").await;
    assert_eq!(status, 400, "{body}");
    let total_events: u64 = env.cluster.shards().iter().map(|s| s.events).sum();
    assert!(
        last["events"].as_u64().is_some_and(|n| n <= total_events),
        "{last} against {total_events}"
    );
    assert_eq!(
        env.cluster.shard(3).map(|s| s.state),
        Some(StateKind::Stopped)
    );
    server.stop().await;
    env.stop().await;
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}
