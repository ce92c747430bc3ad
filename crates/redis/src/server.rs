//! A `redis-server` of the program's own on a free port, with AOF on: what
//! `shardkeeper demo --nodes` and `shardkeeper bench failover` run the cluster on, and
//! what tests start.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// `redis-server` on 127.0.0.1, its files in a directory of its own; stopped when
/// dropped.
#[derive(Debug)]
pub struct RedisServer {
    _child: Reaped,
    port: u16,
}

impl RedisServer {
    /// Starts one with its files in `dir`; a clear error when it is not installed.
    pub fn start(dir: &Path) -> Result<Self, ServerError> {
        std::fs::create_dir_all(dir).map_err(ServerError::Io)?;
        let port = free_port().map_err(ServerError::Io)?;
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
                return Err(ServerError::Missing);
            }
            Err(err) => return Err(ServerError::Io(err)),
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
        Err(ServerError::Silent(port))
    }

    /// `redis://127.0.0.1:<port>/0`.
    #[must_use]
    pub fn url(&self) -> String {
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

/// Why `redis-server` could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The program is not installed.
    #[error("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")]
    Missing,
    /// It started but did not answer.
    #[error("redis-server did not answer on 127.0.0.1:{0}")]
    Silent(u16),
    /// Starting it failed.
    #[error("cannot start redis-server: {0}")]
    Io(std::io::Error),
}
