//! `bench compare`: CPU per event of `shardkeeper run` against a minimal reader built on
//! twilight-gateway 0.18 (`bench/compare`, a package outside the workspace, so twilight is
//! never part of the product's or CI's build).
//!
//! One flood simulator serves every run. Per compression, each of `rounds` rounds runs
//! `shardkeeper run` (a file sink on `/dev/null`), `twilight-reader --mode raw` and
//! `--mode typed`, one at a time, each measured for `seconds` after all its shards are
//! Ready and a one-second warm-up: dispatches counted by the contestant itself
//! (shardkeeper's `shardkeeper_events_total`; the reader's `events` lines), CPU and RSS
//! from `/proc` of that child alone.

mod count;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};
use shardkeeper_cluster::LineSink;
use shardkeeper_protocol::Compression;
use shardkeeper_sim::SimConfig;

use shardkeeper_redis::server::free_port;

use super::harness::{BenchSim, RunSpec, Scratch, Shardkeeper, TOKEN, wait_until};
use super::scenarios::{FLOOD_SHARDS, flood_config, median};
use count::{Counter, read_counts};

/// Where `bench/compare/build.sh` puts the reader, `-<compression>` appended.
pub(crate) const DEFAULT_READER: &str = "bench/compare/target/release/twilight-reader";

/// After every shard is Ready, before the measured window.
const WARM_UP: Duration = Duration::from_secs(1);

/// How long a contestant may take to have every shard Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The load of the comparison: 16 shards × 20,000 dispatches per second, 320,000 in all.
pub(crate) const DEFAULT_RATE: u32 = 20_000;

/// Sizes of a comparison.
pub(crate) struct Compare {
    pub(crate) rounds: usize,
    pub(crate) seconds: u64,
    /// Dispatches per second and shard; 0 floods.
    pub(crate) rate: u32,
    /// The reader's path without its `-<compression>` suffix.
    pub(crate) reader: PathBuf,
}

/// Runs the comparison, prints its table and returns the JSON of every run.
pub(crate) fn compare(sizes: &Compare) -> anyhow::Result<Value> {
    let compressions = [
        Compression::None,
        Compression::ZlibStream,
        Compression::ZstdStream,
    ];
    for compression in compressions {
        reader_binary(&sizes.reader, compression)?;
    }
    // The flood's rate is more than any contestant reads, so the socket buffers stay full.
    let flood = flood_config();
    let sim = BenchSim::start(SimConfig {
        // Every run identifies anew (shardkeeper gets a fresh store): 16 sessions per run.
        session_start_total: 100_000,
        session_start_remaining: 100_000,
        // Sessions are never resumed here, and the simulator keeps every one it started.
        replay_capacity: 256,
        events_per_sec: match sizes.rate {
            0 => flood.events_per_sec,
            rate => f64::from(rate),
        },
        ..flood
    })?;
    println!(
        "| compression | contestant | events/s | CPU s per million events | RSS peak / at the end | runs (events/s, CPU s per million) |"
    );
    println!("|---|---|---|---|---|---|");
    let mut results = Vec::new();
    for compression in compressions {
        let mut runs: [Vec<Run>; 3] = Default::default();
        for _ in 0..sizes.rounds.max(1) {
            for (slot, who) in runs.iter_mut().zip(Contestant::ALL) {
                slot.push(run_once(&sim, who, compression, sizes)?);
            }
        }
        results.push(report(compression, &runs));
    }
    let violations = sim.stats().violations.len();
    println!("\nsimulator: {violations} violations");
    Ok(json!({
        "shards": FLOOD_SHARDS,
        "rounds": sizes.rounds.max(1),
        "seconds": sizes.seconds,
        "events_per_sec_per_shard": sizes.rate,
        "violations": violations,
        "compressions": results,
    }))
}

/// Who is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contestant {
    Shardkeeper,
    TwilightRaw,
    TwilightTyped,
}

impl Contestant {
    const ALL: [Self; 3] = [Self::Shardkeeper, Self::TwilightRaw, Self::TwilightTyped];

    fn name(self) -> &'static str {
        match self {
            Self::Shardkeeper => "shardkeeper run (file sink on /dev/null)",
            Self::TwilightRaw => "twilight-gateway, raw Message::Text",
            Self::TwilightTyped => "twilight-gateway, typed Event",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Shardkeeper => "shardkeeper",
            Self::TwilightRaw => "twilight_raw",
            Self::TwilightTyped => "twilight_typed",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Copy, Serialize)]
struct Run {
    events_per_s: f64,
    cpu_s_per_million: f64,
    /// shardkeeper's file writer thread alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    writer_cpu_s_per_million: Option<f64>,
    /// What the simulator dispatched over the same window: a check of the count, which
    /// it exceeds while a reader slower than the simulator lets its socket buffers fill
    /// (16 connections hold about a million small zlib-stream messages).
    sim_sent_per_s: f64,
    /// Messages twilight could not deserialize (typed mode), inside the window.
    failed: u64,
    /// `VmHWM`, and `VmRSS` at the end of the measured window.
    peak_rss_kib: u64,
    end_rss_kib: u64,
}

/// One contestant, started against the simulator, with its scratch directory.
struct Running {
    process: Shardkeeper,
    counter: Counter,
    dir: Scratch,
}

impl Running {
    fn start(
        sim: &BenchSim,
        who: Contestant,
        compression: Compression,
        reader: &Path,
    ) -> anyhow::Result<Self> {
        let dir = Scratch::new("compare")?;
        if who == Contestant::Shardkeeper {
            let admin_port = free_port()?;
            let spec = RunSpec {
                dir: &dir,
                window: Duration::from_millis(100),
                compression,
                // Every line is formatted and written, as to any file; the kernel then
                // drops it, as twilight's reader drops what it counted.
                sinks: r#"["file:/dev/null"]"#.to_owned(),
                stdout: Stdio::null(),
                admin_port,
            };
            let process = Shardkeeper::spawn(sim, spec)?;
            return Ok(Self {
                process,
                counter: Counter::metrics(format!("http://127.0.0.1:{admin_port}/metrics")),
                dir,
            });
        }
        let mode = if who == Contestant::TwilightRaw {
            "raw"
        } else {
            "typed"
        };
        let mut child = Command::new(reader_binary(reader, compression)?)
            .args(["--gateway", &sim.handle.gateway_url(), "--token", TOKEN])
            .args(["--shards", &FLOOD_SHARDS.to_string(), "--mode", mode])
            .args(["--compression", compression.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("twilight-reader.log"))?)
            .spawn()
            .context("starting twilight-reader")?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let process = Shardkeeper { child };
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            anyhow::bail!("twilight-reader started without pipes");
        };
        Ok(Self {
            process,
            counter: Counter::Reader {
                stdin,
                lines: read_counts(stdout),
            },
            dir,
        })
    }

    /// Waits for every shard to be Ready at the simulator; fails if the process ends first.
    fn wait_ready(&mut self, sim: &BenchSim, who: Contestant) -> anyhow::Result<()> {
        let mut exited = None;
        let waited = wait_until("every shard ready", READY_TIMEOUT, || {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                exited = Some(status);
                return true;
            }
            sim.ready() == FLOOD_SHARDS as usize
        });
        if waited.is_err() || exited.is_some() {
            self.dir.keep();
        }
        if let Some(status) = exited {
            anyhow::bail!(
                "{} ended ({status}) before its shards were ready",
                who.name()
            );
        }
        waited.map(|_| ())
    }
}

/// One contestant for `sizes.seconds` after warm-up, stopped and gone from the simulator
/// before this returns.
fn run_once(
    sim: &BenchSim,
    who: Contestant,
    compression: Compression,
    sizes: &Compare,
) -> anyhow::Result<Run> {
    let mut running = Running::start(sim, who, compression, &sizes.reader)?;
    running.wait_ready(sim, who)?;
    std::thread::sleep(WARM_UP);
    let writer = |p: &Shardkeeper| p.threads_cpu_seconds(LineSink::FILE_WRITER_THREAD);
    let start = running.counter.mark()?;
    let (cpu0, writer0, sent0, t0) = (
        running.process.cpu_seconds(),
        writer(&running.process),
        sim.stats().events_sent,
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(sizes.seconds));
    let end = running.counter.mark()?;
    let (cpu, writer_cpu, sent, elapsed) = (
        running.process.cpu_seconds() - cpu0,
        writer(&running.process) - writer0,
        sim.stats().events_sent - sent0,
        t0.elapsed().as_secs_f64(),
    );
    let end_rss_kib = running.process.rss_kib();
    let peak_rss_kib = running.process.peak_rss_kib();
    let Running {
        process,
        counter,
        dir,
    } = running;
    process.stop("TERM")?;
    wait_until(
        "the contestant's connections to close",
        READY_TIMEOUT,
        || sim.stats().open_connections == 0,
    )?;
    let (events, failed) = end.since(start);
    drop((counter, dir));
    // A typed reader that rejects a message still read and half-parsed it.
    let handled = (events + failed).max(1) as f64;
    Ok(Run {
        events_per_s: (events + failed) as f64 / elapsed,
        cpu_s_per_million: cpu / (handled / 1e6),
        writer_cpu_s_per_million: (who == Contestant::Shardkeeper)
            .then(|| writer_cpu / (handled / 1e6)),
        sim_sent_per_s: sent as f64 / elapsed,
        failed,
        peak_rss_kib,
        end_rss_kib,
    })
}

/// Prints one compression's rows and returns its JSON.
fn report(compression: Compression, runs: &[Vec<Run>; 3]) -> Value {
    let pick = |runs: &[Run], f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let mut contestants = serde_json::Map::new();
    for (who, runs) in Contestant::ALL.into_iter().zip(runs) {
        let (rate, cost) = (
            pick(runs, |r| r.events_per_s),
            pick(runs, |r| r.cpu_s_per_million),
        );
        let writer = runs
            .iter()
            .map(|r| r.writer_cpu_s_per_million)
            .collect::<Option<Vec<_>>>()
            .map(|w| median(&w));
        let (peak, end) = (
            pick(runs, |r| r.peak_rss_kib as f64),
            pick(runs, |r| r.end_rss_kib as f64),
        );
        let failed: u64 = runs.iter().map(|r| r.failed).sum();
        let each: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}k/{:.2}", r.events_per_s / 1e3, r.cpu_s_per_million))
            .collect();
        let note = match (writer, failed) {
            (Some(w), _) => format!(" ({w:.2} of them the file writer thread)"),
            (None, 0) => String::new(),
            (None, n) => format!(" — {n} messages rejected by twilight-model: not a full parse"),
        };
        println!(
            "| {compression} | {} | {rate:.0} | {cost:.2}{note} | {:.1} / {:.1} MiB | {} |",
            who.name(),
            peak / 1024.0,
            end / 1024.0,
            each.join(", ")
        );
        contestants.insert(
            who.key().into(),
            json!({"events_per_s": rate, "cpu_s_per_million": cost, "writer_cpu_s_per_million": writer,
                   "peak_rss_kib": peak, "end_rss_kib": end, "failed": failed, "runs": runs}),
        );
    }
    let ratio = ratio_row(compression, &runs[0], &runs[1]);
    json!({"compression": compression.name(), "contestants": contestants, "ratio": ratio})
}

/// shardkeeper's CPU per event over twilight raw's: of the medians, and round by round.
fn ratio_row(compression: Compression, ours: &[Run], theirs: &[Run]) -> Value {
    let without_writer =
        |r: &Run| r.cpu_s_per_million - r.writer_cpu_s_per_million.unwrap_or_default();
    let cost =
        |runs: &[Run], f: &dyn Fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let twilight = cost(theirs, &|r| r.cpu_s_per_million);
    let total = cost(ours, &|r| r.cpu_s_per_million) / twilight;
    let shards = cost(ours, &without_writer) / twilight;
    let rounds: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .map(|(o, t)| o.cpu_s_per_million / t.cpu_s_per_million)
        .collect();
    let each: Vec<String> = rounds.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "| {compression} | **ratio** shardkeeper / twilight raw | | **{total:.2}** ({shards:.2} without the file writer thread) | | rounds: {} |",
        each.join(", ")
    );
    json!({"cpu_per_event": total, "cpu_per_event_without_writer": shards, "rounds": rounds})
}

/// The reader built for `compression`: `base` with `-<compression>` appended.
fn reader_binary(base: &Path, compression: Compression) -> anyhow::Result<PathBuf> {
    let mut name = base.as_os_str().to_owned();
    name.push(format!("-{}", compression.name()));
    let path = PathBuf::from(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build the twilight reader first with `bench/compare/build.sh` \
         (one `cargo build --release` per compression, in its own target directory \
         bench/compare/target), or pass --twilight PATH where PATH-none, PATH-zlib-stream \
         and PATH-zstd-stream are the three builds",
        path.display()
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use shardkeeper_protocol::Compression;

    use super::reader_binary;

    #[test]
    fn a_missing_reader_says_how_to_build_it() {
        let error = reader_binary(
            "/nonexistent/twilight-reader".as_ref(),
            Compression::ZlibStream,
        )
        .expect_err("missing");
        let message = error.to_string();
        assert!(message.contains("twilight-reader-zlib-stream"), "{message}");
        assert!(message.contains("bench/compare/build.sh"), "{message}");
    }
}
