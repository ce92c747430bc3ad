//! Spawning the binary and watching it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shardkeeper_sim::{SimHandle, Stats};

pub(crate) const SIM_TOKEN: &str = "crash-test-token";
pub(crate) const ADMIN_TOKEN: &str = "crash-test-admin";

pub(crate) fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardkeeper"));
    command
        .env_remove("DISCORD_TOKEN")
        .env_remove("SHARDKEEPER_ADMIN_TOKEN")
        .env("RUST_LOG", "info");
    command
}

/// A running `shardkeeper` whose stdout lines arrive on a channel.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) lines: mpsc::Receiver<String>,
    pub(crate) stderr: PathBuf,
}

impl Running {
    pub(crate) fn spawn(mut command: Command, stderr: &Path) -> Self {
        let log = std::fs::File::create(stderr).expect("stderr file");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            stderr: stderr.to_owned(),
        }
    }

    /// Waits for a stdout line containing `needle`; returns it.
    pub(crate) fn line_with(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(err) => panic!(
                    "no line with {needle:?} within {timeout:?} ({err}); stderr:\n{}",
                    self.log()
                ),
            }
        }
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    pub(crate) fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {timeout:?}; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `shardkeeper run` against `sim`, storing sessions and events under `dir`.
pub(crate) fn run_against(sim: &SimHandle, dir: &Path, window_ms: u64, run: usize) -> Running {
    let mut command = binary();
    command.arg("run");
    single_mode_env(&mut command, sim, dir, window_ms).env(
        "SHARDKEEPER_EVENTS__SINKS",
        format!(r#"["file:{}"]"#, dir.join("events.ndjson").display()),
    );
    Running::spawn(command, &dir.join(format!("run-{run}.log")))
}

/// The environment of a single-mode `shardkeeper run` against `sim` with its store in
/// `dir`: tokens, API base, store, a free admin port and the identify window.
pub(crate) fn single_mode_env<'a>(
    command: &'a mut Command,
    sim: &SimHandle,
    dir: &Path,
    window_ms: u64,
) -> &'a mut Command {
    command
        .env("DISCORD_TOKEN", SIM_TOKEN)
        .env("SHARDKEEPER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SHARDKEEPER_DISCORD__API_BASE", sim.api_base())
        .env("SHARDKEEPER_STORE__PATH", dir.join("store.sled"))
        .env("SHARDKEEPER_STORE__FLUSH_INTERVAL_MS", "50")
        .env("SHARDKEEPER_ADMIN__BIND", "127.0.0.1:0")
        .env("SHARDKEEPER_IDENTIFY__WINDOW_MS", window_ms.to_string())
}

pub(crate) fn wait_for(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub(crate) fn ready_shards(stats: &Stats) -> usize {
    stats.shards.values().filter(|s| s.state == "ready").count()
}

/// A runtime for the simulator the test runs in its own process.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Per session the simulator started, how many of its events `seen` (shard → seqs)
/// lacks, for the sessions that lack any.
pub(crate) fn missing(
    sim: &SimHandle,
    seen: &std::collections::BTreeMap<u32, std::collections::BTreeSet<u64>>,
) -> Vec<String> {
    sim.stats()
        .sessions
        .iter()
        .filter_map(|session| {
            let got = seen.get(&session.shard);
            let missing = (1..=session.last_seq)
                .filter(|s| got.is_none_or(|g| !g.contains(s)))
                .count();
            (missing > 0).then(|| {
                format!(
                    "shard {} misses {missing} of {} events",
                    session.shard, session.last_seq
                )
            })
        })
        .collect()
}
