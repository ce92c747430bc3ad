//! A `redis-server` of the program's own on a free port (for `demo --nodes` and
//! `bench failover`), and the environment of a node process against the simulator.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A child process ended when dropped.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("finding a free port")
}

/// `redis-server` on 127.0.0.1, its files in a directory of its own.
pub(crate) struct RedisServer {
    _child: Reaped,
    port: u16,
}

impl RedisServer {
    /// Starts one with its files in `dir`; a clear error when it is not installed.
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--appendonly", "yes", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => Reaped(child),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                bail!("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
            }
            Err(err) => return Err(err).context("starting redis-server"),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if ping(port) {
                return Ok(Self {
                    _child: child,
                    port,
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!("redis-server did not answer on 127.0.0.1:{port}")
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

/// How a node process runs against the simulator.
pub(crate) struct NodeSpec<'a> {
    pub(crate) api_base: String,
    pub(crate) token: &'a str,
    pub(crate) admin_token: &'a str,
    pub(crate) total: u32,
    pub(crate) window_ms: u64,
    pub(crate) redis_url: String,
    pub(crate) id: &'a str,
    pub(crate) lease_ms: u64,
    pub(crate) admin: SocketAddr,
    pub(crate) sinks: String,
}

impl NodeSpec<'_> {
    /// `exe run` in redis mode with this node's environment.
    pub(crate) fn command(&self, exe: &Path) -> Command {
        let mut command = Command::new(exe);
        command
            .arg("run")
            .env("DISCORD_TOKEN", self.token)
            .env("SHARDKEEPER_ADMIN_TOKEN", self.admin_token)
            .env("SHARDKEEPER_DISCORD__API_BASE", &self.api_base)
            .env("SHARDKEEPER_SHARDS__TOTAL", self.total.to_string())
            .env(
                "SHARDKEEPER_IDENTIFY__WINDOW_MS",
                self.window_ms.to_string(),
            )
            .env("SHARDKEEPER_ADMIN__BIND", self.admin.to_string())
            .env("SHARDKEEPER_EVENTS__SINKS", &self.sinks)
            .env("SHARDKEEPER_CLUSTER__MODE", "redis")
            .env("SHARDKEEPER_CLUSTER__URL", &self.redis_url)
            .env("SHARDKEEPER_CLUSTER__NODE_ID", self.id)
            .env("SHARDKEEPER_CLUSTER__LEASE_MS", self.lease_ms.to_string())
            .stdin(Stdio::null());
        command
    }
}
