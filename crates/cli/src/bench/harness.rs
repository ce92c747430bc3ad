//! What every scenario needs: a simulator in this process, `shardkeeper run` in a child
//! process, and CPU/RSS readings of that child from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shardkeeper_protocol::Compression;
use shardkeeper_sim::{Sim, SimConfig, SimHandle, Stats};

pub(crate) const TOKEN: &str = "bench-token";

/// A simulator on its own runtime, so it does not compete with the bench's bookkeeping.
pub(crate) struct BenchSim {
    pub(crate) handle: SimHandle,
    _runtime: tokio::runtime::Runtime,
}

impl BenchSim {
    pub(crate) fn start(config: SimConfig) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let handle = runtime.block_on(Sim::start(SimConfig {
            token: TOKEN.into(),
            ..config
        }))?;
        Ok(Self {
            handle,
            _runtime: runtime,
        })
    }

    pub(crate) fn stats(&self) -> Stats {
        self.handle.stats()
    }

    pub(crate) fn ready(&self) -> usize {
        self.stats()
            .shards
            .values()
            .filter(|s| s.state == "ready")
            .count()
    }
}

/// How the child is configured.
pub(crate) struct RunSpec<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) window: Duration,
    pub(crate) compression: Compression,
    pub(crate) sinks: String,
    pub(crate) stdout: Stdio,
    /// The admin API's port on 127.0.0.1; 0 lets the system choose.
    pub(crate) admin_port: u16,
}

/// `shardkeeper run` against the simulator.
pub(crate) struct Shardkeeper {
    pub(crate) child: Child,
}

impl Shardkeeper {
    pub(crate) fn spawn(sim: &BenchSim, spec: RunSpec<'_>) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.dir.join("shardkeeper.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("run")
            .env("RUST_LOG", "warn")
            .env("DISCORD_TOKEN", TOKEN)
            .env("SHARDKEEPER_ADMIN_TOKEN", "bench-admin")
            .env("SHARDKEEPER_DISCORD__API_BASE", sim.handle.api_base())
            .env("SHARDKEEPER_DISCORD__COMPRESSION", spec.compression.name())
            .env("SHARDKEEPER_STORE__PATH", spec.dir.join("store.sled"))
            .env(
                "SHARDKEEPER_ADMIN__BIND",
                format!("127.0.0.1:{}", spec.admin_port),
            )
            .env(
                "SHARDKEEPER_IDENTIFY__WINDOW_MS",
                spec.window.as_millis().to_string(),
            )
            .env("SHARDKEEPER_EVENTS__SINKS", &spec.sinks)
            .stdout(spec.stdout)
            .stderr(log)
            .spawn()
            .context("starting shardkeeper run")?;
        Ok(Self { child })
    }

    pub(crate) fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Sends `signal` and waits for the process to end.
    pub(crate) fn stop(mut self, signal: &str) -> anyhow::Result<()> {
        self.signal(signal);
        self.child.wait()?;
        Ok(())
    }

    /// User + system CPU seconds so far.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(Path::new(&format!("/proc/{}/stat", self.child.id())))
    }

    /// User + system CPU seconds so far of the threads whose name starts with `prefix`.
    pub(crate) fn threads_cpu_seconds(&self, prefix: &str) -> f64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()));
        tasks
            .into_iter()
            .flatten()
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|name| name.starts_with(prefix))
            })
            .map(|task| cpu_seconds(&task.path().join("stat")))
            .sum()
    }

    /// Resident memory in KiB (`VmRSS`).
    pub(crate) fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident memory in KiB (`VmHWM`).
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// A KiB figure of `/proc/PID/status`, 0 if unreadable.
    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Shardkeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of the calling thread so far.
pub(crate) fn thread_cpu_seconds() -> f64 {
    cpu_seconds(Path::new("/proc/thread-self/stat"))
}

/// User + system CPU seconds from a `/proc/…/stat` file.
fn cpu_seconds(path: &Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Polls `check` every 20 ms; fails after `timeout`.
pub(crate) fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(started.elapsed())
}

/// A fresh scratch directory under the system temp dir, removed when dropped (event
/// files of a full run take gigabytes) unless [`keep`](Scratch::keep) was called.
pub(crate) struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub(crate) fn new(name: &str) -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("shardkeeper-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self { path, keep: false })
    }

    /// Leaves the directory in place for inspection and says where it is.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
        eprintln!("kept {} for inspection", self.path.display());
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use super::{Shardkeeper, wait_until};

    #[test]
    fn cpu_is_read_for_the_process_and_for_its_threads_by_name() {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh starts");
        let busy = Shardkeeper { child };
        // However loaded the machine, the loop gets its fifth of a second in time.
        wait_until("the loop to use CPU", Duration::from_secs(30), || {
            busy.cpu_seconds() >= 0.2
        })
        .expect("the loop runs");
        let (process, named, unnamed) = (
            busy.cpu_seconds(),
            busy.threads_cpu_seconds("sh"),
            busy.threads_cpu_seconds("no-such-thread"),
        );
        assert!((named - process).abs() <= 0.05, "its one thread: {named} s");
        assert!(unnamed.abs() < f64::EPSILON, "{unnamed}");
    }
}
