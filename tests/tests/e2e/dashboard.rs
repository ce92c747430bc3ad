//! The dashboard in headless Chromium (driven over WebDriver by chromedriver): tiles for
//! every shard, and a click on restart that the API then reports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use shardkeeper_admin::AdminConfig;
use shardkeeper_cluster::StateKind;
use shardkeeper_protocol::Token;

use crate::harness::{Env, sim_config};

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    process: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Driver {
    fn start(profile: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (./scripts/test installs chromium-driver)");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.get(format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut driver = Self {
            process,
            base,
            session: String::new(),
            agent,
        };
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,720",
        ];
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let created = driver.call("POST", "/session", Some(caps));
        created["sessionId"]
            .as_str()
            .expect("session id")
            .clone_into(&mut driver.session);
        driver
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        }
        .expect("webdriver request");
        let text = response.body_mut().read_to_string().expect("body");
        let value: Value = serde_json::from_str(&text).expect("json");
        value["value"].clone()
    }

    fn session(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn count(&self, css: &str) -> usize {
        let found = self.call(
            "POST",
            &self.session("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        );
        found.as_array().map_or(0, Vec::len)
    }

    fn wait_count(&self, css: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count(css) != count {
            assert!(Instant::now() < deadline, "never saw {count} × {css}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element; retries when the page re-rendered it in between.
    fn click(&self, css: &str) {
        for _ in 0..20 {
            let found = self.call(
                "POST",
                &self.session("/element"),
                Some(json!({"using": "css selector", "value": css})),
            );
            if let Some(id) = found[ELEMENT].as_str() {
                let clicked =
                    self.call("POST", &self.session(&format!("/element/{id}/click")), None);
                if clicked.is_null() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not click {css}");
    }

    fn screenshot(&self) -> Vec<u8> {
        let shot = self.call("GET", &self.session("/screenshot"), None);
        base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().expect("base64"))
            .expect("png")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[actix::test]
async fn dashboard_shows_tiles_and_restarts_a_shard() {
    let env = Env::start(sim_config(6, 3)).await;
    env.all_ready(Duration::from_secs(10)).await;
    let token = "dashboard-admin-token";
    let server = shardkeeper_admin::start(
        AdminConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            token: Token::new(token),
            read_token: None,
        },
        env.cluster.clone(),
        env.hub.clone(),
    )
    .expect("admin starts");
    let url = format!("http://{}/#token={token}", server.addr());
    let profile = tempfile::tempdir().expect("profile dir");
    let profile_path = profile.path().to_owned();
    let png = tokio::task::spawn_blocking(move || {
        let driver = Driver::start(&profile_path);
        driver.call("POST", &driver.session("/url"), Some(json!({"url": url})));
        driver.wait_count(".tile", 6);
        driver.wait_count(".tile.ready", 6);
        let png = driver.screenshot();
        driver.click(r#".tile[data-shard="4"] button.restart"#);
        png
    })
    .await
    .expect("browser session");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    // The screenshot in the docs is refreshed on request only: a test run leaves the
    // tree as it found it.
    if let Some(path) = std::env::var_os("SHARDKEEPER_DASHBOARD_PNG") {
        std::fs::write(PathBuf::from(path), &png).expect("screenshot saved");
    }
    env.wait_for(
        "the clicked shard to resume",
        Duration::from_secs(10),
        |env| {
            env.cluster
                .shard(4)
                .is_some_and(|s| s.resumes == 1 && s.state == StateKind::Ready)
        },
    )
    .await;
    assert!(
        env.cluster
            .shards()
            .iter()
            .filter(|s| s.id != 4)
            .all(|s| s.resumes == 0)
    );
    server.stop().await;
    env.stop().await;
}
