//! What cluster-mode tests run: a real `redis-server` on a free port, and nodes
//! (`shardkeeper run` in redis mode) against the simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardkeeper_sim::{Sim, SimConfig, SimHandle};

use crate::support::{ADMIN_TOKEN, Running, SIM_TOKEN, binary, missing};

/// Lease of the test nodes: short, so failovers finish in a few seconds.
pub(crate) const LEASE_MS: u64 = 2000;

/// A `redis-server` of the test's own, on a free port, with AOF on.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one in `dir` (its AOF lives there across restarts).
    pub(crate) fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("redis dir");
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                child: None,
                port,
                dir: dir.to_owned(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start (is the redis-server package installed?)");
    }

    fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.join(format!("redis-{}.log", self.port)))
            .expect("redis log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--daemonize", "no"])
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self
                .try_cli(&["PING"])
                .is_some_and(|answer| answer == "PONG")
            {
                return true;
            }
            if self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Runs a command through `redis-cli`; its answer.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `kill -9`: the server dies at once, with what its AOF holds on disk.
    pub(crate) fn kill9(&mut self) {
        let mut child = self.child.take().expect("redis-server is running");
        child.kill().expect("kill -9 redis-server");
        child.wait().expect("redis-server exits");
    }

    /// Deletes everything the (stopped) server persisted in its directory: the next
    /// start is empty.
    pub(crate) fn wipe(&self) {
        assert!(self.child.is_none(), "wipe a stopped server");
        for entry in std::fs::read_dir(&self.dir).expect("redis dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // redis-<port>[-<n>].log: the server's own logs stay.
            if name.starts_with("redis-") {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("remove the AOF directory");
            } else {
                std::fs::remove_file(&path).expect("remove a data file");
            }
        }
    }

    /// Starts the (stopped) server again on the same port and directory; the log of
    /// the run before is kept beside the new one.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a stopped server");
        let log = self.dir.join(format!("redis-{}.log", self.port));
        let kept = self
            .dir
            .join(format!("redis-{}-{}.log", self.port, unique()));
        let _ = std::fs::rename(&log, kept);
        for _ in 0..5 {
            if self.spawn() {
                return;
            }
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `shardkeeper run` as node `id` of the cluster in `redis`, against `sim`; events go
/// to `dir/events-<id>.ndjson`. `extra` adds or overrides environment variables.
pub(crate) fn node(
    sim: &SimHandle,
    redis_url: &str,
    dir: &Path,
    id: &str,
    extra: &[(&str, &str)],
) -> Running {
    let mut command = binary();
    command
        .arg("run")
        .env("DISCORD_TOKEN", SIM_TOKEN)
        .env("SHARDKEEPER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SHARDKEEPER_DISCORD__API_BASE", sim.api_base())
        .env("SHARDKEEPER_STORE__FLUSH_INTERVAL_MS", "50")
        .env("SHARDKEEPER_ADMIN__BIND", "127.0.0.1:0")
        .env("SHARDKEEPER_IDENTIFY__WINDOW_MS", "200")
        .env("SHARDKEEPER_CLUSTER__MODE", "redis")
        .env("SHARDKEEPER_CLUSTER__URL", redis_url)
        .env("SHARDKEEPER_CLUSTER__NODE_ID", id)
        .env("SHARDKEEPER_CLUSTER__LEASE_MS", LEASE_MS.to_string())
        .env(
            "SHARDKEEPER_EVENTS__SINKS",
            format!(
                r#"["file:{}"]"#,
                dir.join(format!("events-{id}.ndjson")).display()
            ),
        );
    for (key, value) in extra {
        command.env(key, value);
    }
    Running::spawn(command, &dir.join(format!("node-{id}-{}.log", unique())))
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Every (shard, seq) in the nodes' event files together.
pub(crate) fn delivered(dir: &Path) -> BTreeMap<u32, BTreeSet<u64>> {
    let mut seen: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("events-") && name.ends_with(".ndjson")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("torn or invalid line {line:?}: {err}"));
            let shard = u32::try_from(value["shard"].as_u64().expect("shard")).expect("small");
            seen.entry(shard)
                .or_default()
                .insert(value["seq"].as_u64().expect("seq"));
        }
    }
    seen
}

/// Events the simulator sent on each session that no node's file holds.
pub(crate) fn lost(sim: &SimHandle, dir: &Path) -> Vec<String> {
    missing(sim, &delivered(dir))
}

/// Lines of a node's log that mention `needle`.
pub(crate) fn count_in_log(node: &Running, needle: &str) -> usize {
    node.log().lines().filter(|l| l.contains(needle)).count()
}

/// A simulator of `shards` shards in `max_concurrency` buckets, sending `rate` events
/// per second per shard; `config` sets the rest.
pub(crate) fn sim(
    runtime: &tokio::runtime::Runtime,
    shards: u32,
    max_concurrency: u32,
    rate: f64,
    config: SimConfig,
) -> SimHandle {
    runtime
        .block_on(Sim::start(SimConfig {
            token: SIM_TOKEN.into(),
            shards,
            max_concurrency,
            identify_window: Duration::from_millis(200),
            events_per_sec: rate,
            ..config
        }))
        .expect("simulator starts")
}
