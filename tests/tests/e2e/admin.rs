//! The admin API over real HTTP, against a cluster and the simulator.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use shardkeeper_admin::{AdminConfig, AdminServer};
use shardkeeper_cluster::StateKind;
use shardkeeper_protocol::Token;
use shardkeeper_sim::{SimConfig, guild_ids};

use crate::harness::{CLOSE_READ, Env, sim_config};

pub(crate) const ADMIN_TOKEN: &str = "admin-secret-token";

pub(crate) struct Api {
    base: String,
}

impl Api {
    pub(crate) fn start(env: &Env) -> (AdminServer, Self) {
        Self::start_with(env, None)
    }

    /// The admin API with a read-only token besides the admin token.
    pub(crate) fn start_with(env: &Env, read_token: Option<&str>) -> (AdminServer, Self) {
        let config = AdminConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            token: Token::new(ADMIN_TOKEN),
            read_token: read_token.map(Token::new),
        };
        let server = shardkeeper_admin::start(config, env.cluster.clone(), env.hub.clone())
            .expect("admin starts");
        let base = format!("http://{}", server.addr());
        (server, Self { base })
    }

    /// Sends a request with `token` (None: no Authorization header) and returns the
    /// status and JSON body.
    pub(crate) async fn call(
        &self,
        method: &'static str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let (status, _, body) = self.exchange(method, path, token, body).await;
        (status, body)
    }

    /// Like [`call`](Self::call), with the `Location` header of the answer.
    pub(crate) async fn exchange(
        &self,
        method: &'static str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (u16, Option<String>, Value) {
        let url = format!("{}{path}", self.base);
        let token = token.map(|t| format!("Bearer {t}"));
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut response = match (method, body) {
                ("GET", _) => {
                    let request = agent.get(&url);
                    let request = match &token {
                        Some(t) => request.header("Authorization", t),
                        None => request,
                    };
                    request.call()
                }
                (_, body) => {
                    let request = agent.post(&url).header("Content-Type", "application/json");
                    let request = match &token {
                        Some(t) => request.header("Authorization", t),
                        None => request,
                    };
                    request.send(body.unwrap_or_default())
                }
            }
            .expect("http round trip");
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("Location")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let text = response.body_mut().read_to_string().unwrap_or_default();
            (
                status,
                location,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
        .await
        .expect("request task")
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, Some(ADMIN_TOKEN), None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call("POST", path, Some(ADMIN_TOKEN), body.map(|b| b.to_string()))
            .await
    }
}

pub(crate) const PROTECTED: [(&str, &str); 18] = [
    ("GET", "/api/v1/shards"),
    ("GET", "/api/v1/shards/0"),
    ("POST", "/api/v1/shards/0/restart"),
    ("POST", "/api/v1/shards/0/stop"),
    ("POST", "/api/v1/shards/0/start"),
    ("POST", "/api/v1/shards/restart"),
    ("POST", "/api/v1/presence"),
    ("POST", "/api/v1/voice-state"),
    ("POST", "/api/v1/guilds/1/members"),
    ("GET", "/api/v1/identify"),
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/0123456789abcdef"),
    ("POST", "/api/v1/jobs/0123456789abcdef/cancel"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/history"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/events"),
];

#[actix::test]
async fn every_protected_route_needs_the_token() {
    let env = Env::start(sim_config(2, 2)).await;
    let (server, api) = Api::start(&env);
    for (method, path) in PROTECTED
        .into_iter()
        .filter(|(_, p)| *p != "/api/v1/openapi.json")
    {
        for token in [None, Some("wrong-token"), Some("")] {
            let (status, body) = api
                .call(
                    if method == "GET" { "GET" } else { "POST" },
                    path,
                    token,
                    Some("{}".into()),
                )
                .await;
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            assert_eq!(body["error"], "missing or invalid admin token");
        }
    }
    for path in ["/healthz", "/metrics", "/", "/api/v1/openapi.json"] {
        assert_eq!(
            api.call("GET", path, None, None).await.0,
            200,
            "{path} is open"
        );
    }
    server.stop().await;
    env.stop().await;
}

/// The read-only token reads (lists, one shard, identify, events) and gets 403 on
/// every route that changes something; nothing changes.
#[actix::test]
async fn the_read_only_token_reads_and_changes_nothing() {
    const READER: &str = "reader-secret-token";
    let env = Env::start(sim_config(2, 2)).await;
    let (server, api) = Api::start_with(&env, Some(READER));
    env.all_ready(Duration::from_secs(20)).await;
    let identifies = env.sim.stats().identifies;
    for (method, path) in PROTECTED {
        let (status, body) = api
            .call(
                if method == "GET" { "GET" } else { "POST" },
                path,
                Some(READER),
                Some("{}".into()),
            )
            .await;
        match (method, path) {
            // A WebSocket route answers a plain GET with 400 once the token passed.
            ("GET", "/api/v1/events") => assert_eq!(status, 400, "{path}: {body}"),
            // Single mode has no cluster view; no job has this id.
            ("GET", "/api/v1/nodes" | "/api/v1/jobs/0123456789abcdef") => {
                assert_eq!(status, 404, "{path}: {body}");
            }
            ("GET", _) => assert_eq!(status, 200, "GET {path}: {body}"),
            _ => {
                assert_eq!(status, 403, "{method} {path}: {body}");
                assert_eq!(body["error"], "the read-only token may not change anything");
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.sim.stats().identifies, identifies, "nothing restarted");
    assert!(
        env.cluster
            .shards()
            .iter()
            .all(|s| s.state == StateKind::Ready),
        "nothing stopped"
    );
    // Every refusal is in the audit log, with the route it was aimed at.
    let (status, audit) = api.get("/api/v1/audit?limit=100").await;
    assert_eq!(status, 200, "{audit}");
    let refused: Vec<&Value> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["actor"] == "read-only")
        .collect();
    let posts = PROTECTED.iter().filter(|(m, _)| *m == "POST").count();
    assert_eq!(refused.len(), posts, "{audit}");
    for entry in refused {
        assert_eq!(
            entry["result"],
            "the read-only token may not change anything"
        );
        assert_eq!(entry["from"], "127.0.0.1");
    }
    let (status, _) = api.post("/api/v1/shards/0/restart", None).await;
    assert_eq!(status, 202, "the admin token still may");
    server.stop().await;
    env.stop().await;
}

#[actix::test]
async fn shard_routes_and_their_errors() {
    let env = Env::start(sim_config(2, 2)).await;
    env.all_ready(Duration::from_secs(5)).await;
    let (server, api) = Api::start(&env);

    let (status, body) = api.get("/api/v1/shards").await;
    assert_eq!(status, 200);
    let shards = body["shards"].as_array().expect("list");
    assert_eq!(shards.len(), 2);
    for key in [
        "id",
        "state",
        "latency_ms",
        "seq",
        "session_id",
        "resumable",
        "identifies",
        "resumes",
        "reconnects",
        "last_close_code",
        "guilds",
    ] {
        assert!(shards[0].get(key).is_some(), "{key}");
    }
    assert_eq!(shards[0]["state"], "ready");
    assert_eq!(api.get("/api/v1/shards/1").await.1["id"], 1);
    let (status, body) = api.get("/api/v1/shards/9").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("shard 9 is not run by this process"))
    );
    for bad in [
        "/api/v1/shards/abc",
        "/api/v1/shards/-1",
        "/api/v1/shards/99999999999",
    ] {
        let (status, body) = api.get(bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("shard id"))
        );
    }
    assert_eq!(api.post("/api/v1/shards/7/restart", None).await.0, 404);
    assert_eq!(api.post("/api/v1/shards/x/stop", None).await.0, 400);
    assert_eq!(
        api.post("/api/v1/shards/0/restart?fresh=maybe", None)
            .await
            .0,
        400
    );
    assert_eq!(api.get("/api/v1/nope").await.0, 404);

    let (status, body) = api.post("/api/v1/shards/0/restart", None).await;
    assert_eq!((status, body["shards"].clone()), (202, json!([0])));
    env.wait_for("resume", Duration::from_secs(5), |env| {
        env.cluster
            .shard(0)
            .is_some_and(|s| s.resumes == 1 && s.state == StateKind::Ready)
    })
    .await;
    assert_eq!(env.sim.stats().identifies, 2, "a restart resumes");

    assert_eq!(
        api.post("/api/v1/shards/0/restart?fresh=true", None)
            .await
            .0,
        202
    );
    env.wait_for("identify", Duration::from_secs(5), |env| {
        env.sim.stats().identifies == 3 && env.cluster.all_ready()
    })
    .await;

    assert_eq!(api.post("/api/v1/shards/1/stop", None).await.0, 202);
    env.shard_state(1, StateKind::Stopped, Duration::from_secs(2))
        .await;
    let (status, body) = api.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (status, body["not_ready"][0]["id"].as_u64()),
        (503, Some(1))
    );
    env.wait_for("close 4000", CLOSE_READ, |env| {
        env.sim.stats().client_close_codes.get(&4000) >= Some(&2)
    })
    .await;
    let (status, _) = api
        .post(
            "/api/v1/presence?shard=1",
            Some(json!({"since": null, "activities": [], "status": "online", "afk": false})),
        )
        .await;
    assert_eq!(status, 409, "a stopped shard cannot send");
    assert_eq!(api.post("/api/v1/shards/1/start", None).await.0, 202);
    env.wait_for("resume after start", Duration::from_secs(5), |env| {
        env.cluster
            .shard(1)
            .is_some_and(|s| s.resumes == 1 && s.state == StateKind::Ready)
    })
    .await;
    assert_eq!(env.sim.stats().identifies, 3);
    assert_eq!(api.call("GET", "/readyz", None, None).await.0, 200);

    assert_eq!(api.post("/api/v1/shards/restart", None).await.0, 202);
    env.wait_for("rolling restart", Duration::from_secs(5), |env| {
        env.cluster.shards().iter().all(|s| s.resumes >= 2) && env.cluster.all_ready()
    })
    .await;
    assert_eq!(env.sim.stats().identifies, 3);
    env.assert_clean().await;
    server.stop().await;
    env.stop().await;
}

#[actix::test]
async fn fresh_restarts_the_budget_cannot_afford_are_refused() {
    let env = Env::start(SimConfig {
        session_start_remaining: 3,
        ..sim_config(2, 2)
    })
    .await;
    env.all_ready(Duration::from_secs(5)).await;
    let (server, api) = Api::start(&env);
    assert_eq!(api.get("/api/v1/identify").await.1["remaining"], 1);
    let (status, body) = api.post("/api/v1/shards/restart?fresh=true", None).await;
    assert_eq!(status, 409);
    assert_eq!(
        (body["cost"].as_u64(), body["remaining"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("force=true"))
    );
    assert_eq!(
        api.post("/api/v1/shards/0/restart?fresh=true", None)
            .await
            .0,
        202
    );
    env.wait_for("identify", Duration::from_secs(5), |env| {
        env.sim.stats().identifies == 3 && env.cluster.all_ready()
    })
    .await;
    let (status, body) = api.post("/api/v1/shards/1/restart?fresh=true", None).await;
    assert_eq!((status, body["remaining"].as_u64()), (409, Some(0)));
    assert_eq!(
        api.post("/api/v1/shards/1/restart", None).await.0,
        202,
        "a resume costs nothing"
    );
    server.stop().await;
    env.stop().await;
}

#[actix::test]
async fn presence_voice_members_and_malformed_bodies() {
    let env = Env::start(sim_config(4, 4)).await;
    env.all_ready(Duration::from_secs(5)).await;
    let (server, api) = Api::start(&env);
    let presence = json!({"since": null, "activities": [{"name": "api", "type": 3}], "status": "idle", "afk": false});
    let (status, body) = api.post("/api/v1/presence", Some(presence.clone())).await;
    assert_eq!((status, body["shards"].clone()), (202, json!([0, 1, 2, 3])));
    assert_eq!(
        api.post("/api/v1/presence?shard=2", Some(presence)).await.0,
        202
    );
    env.wait_for("presence", Duration::from_secs(2), |env| {
        env.sim
            .stats()
            .shards
            .get(&2)
            .is_some_and(|s| s.presence_updates == 2)
    })
    .await;

    let guild = guild_ids(3, 4, 2)[0];
    let (status, body) = api.post("/api/v1/voice-state", Some(json!({"guild_id": guild.to_string(), "channel_id": null, "self_mute": false, "self_deaf": false}))).await;
    assert_eq!((status, body["shards"].clone()), (202, json!([3])));

    let (status, body) = api
        .post(
            &format!("/api/v1/guilds/{guild}/members"),
            Some(json!({"query": "member-1", "limit": 5})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["chunks"][0]["members"].as_array().map(Vec::len),
        Some(5)
    );
    let (status, body) = api
        .post(&format!("/api/v1/guilds/{guild}/members"), Some(json!({})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["chunks"].as_array().map(Vec::len), Some(2));
    let (status, body) = api
        .post(&format!("/api/v1/guilds/{guild}/members"), Some(json!({})))
        .await;
    assert_eq!(status, 429);
    assert!(body["retry_after"].as_f64().is_some_and(|r| r > 25.0));

    let malformed: [(&str, String); 9] = [
        ("/api/v1/presence", "{not json".into()),
        ("/api/v1/presence", json!({"status": "online"}).to_string()),
        ("/api/v1/presence", json!({"since": null, "activities": [{"name": "x", "type": 9}], "status": "online", "afk": false}).to_string()),
        ("/api/v1/presence", json!({"since": null, "activities": [{"name": "x".repeat(5000), "type": 0}], "status": "online", "afk": false}).to_string()),
        ("/api/v1/voice-state", json!({"guild_id": 12, "self_mute": "no"}).to_string()),
        ("/api/v1/guilds/abc/members", "{}".into()),
        ("/api/v1/guilds/5/members", json!({"user_ids": (0..101).map(|i| i.to_string()).collect::<Vec<_>>()}).to_string()),
        ("/api/v1/guilds/5/members", json!({"limit": "ten"}).to_string()),
        ("/api/v1/presence", "x".repeat(20_000)),
    ];
    for (path, body) in malformed {
        let (status, answer) = api
            .call("POST", path, Some(ADMIN_TOKEN), Some(body.clone()))
            .await;
        assert!((400..500).contains(&status), "{path} {body:.60}: {status}");
        assert!(answer["error"].is_string(), "{path}: {answer}");
    }
    env.assert_clean().await;
    server.stop().await;
    env.stop().await;
}

#[actix::test]
async fn openapi_metrics_identify_and_events() {
    let env = Env::start(SimConfig {
        events_per_sec: 50.0,
        ..sim_config(2, 2)
    })
    .await;
    env.all_ready(Duration::from_secs(5)).await;
    let (server, api) = Api::start(&env);

    let (status, doc) = api.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in PROTECTED {
        let templated = path
            .replace("/0123456789abcdef", "/{id}")
            .replace("/0", "/{id}")
            .replace("/guilds/1/", "/guilds/{guild_id}/");
        let entry = paths
            .get(&templated)
            .unwrap_or_else(|| panic!("{templated} missing from {:?}", paths.keys()));
        assert!(
            entry.get(method.to_lowercase()).is_some(),
            "{method} {templated}"
        );
    }
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert!(paths.contains_key(open), "{open}");
    }

    let (status, identify) = api.get("/api/v1/identify").await;
    assert_eq!(status, 200);
    assert_eq!(identify["max_concurrency"], 2);
    assert_eq!(identify["buckets"].as_array().map(Vec::len), Some(2));
    assert_eq!(identify["remaining"], 998);

    let url = format!(
        "{}/api/v1/events?t=MESSAGE_CREATE",
        api.base.replace("http", "ws")
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .expect("request");
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("events websocket");
    for _ in 0..5 {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("event in time")
            .expect("open")
            .expect("frame");
        let line: Value =
            serde_json::from_str(message.to_text().expect("text")).expect("event line");
        assert_eq!(line["t"], "MESSAGE_CREATE");
        assert!(line["shard"].is_u64() && line["seq"].is_u64() && line["d"].is_object());
    }

    let (status, text) = api.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = text.as_str().expect("text").to_owned();
    for name in [
        "shardkeeper_events_total{t=\"MESSAGE_CREATE\"}",
        "shardkeeper_shards{state=\"ready\"} 2",
        "shardkeeper_identifies_total 2",
        "shardkeeper_resumes_total 0",
        "shardkeeper_heartbeat_latency_seconds_bucket",
        "shardkeeper_identify_queue_depth 0",
        "shardkeeper_session_starts_remaining 998",
        "shardkeeper_event_subscribers 1",
    ] {
        assert!(text.contains(name), "{name} missing from metrics:\n{text}");
    }
    assert!(!text.contains(ADMIN_TOKEN) && !text.contains(crate::harness::TOKEN));
    let _ = ws.close(None).await;
    server.stop().await;
    env.stop().await;
}
