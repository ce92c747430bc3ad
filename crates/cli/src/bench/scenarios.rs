//! The benchmark scenarios. Each returns a JSON value and prints a table row.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardkeeper_cluster::LineSink;
use shardkeeper_protocol::Compression;
use shardkeeper_sim::SimConfig;

use super::floor;
use super::harness::{BenchSim, RunSpec, Scratch, Shardkeeper, wait_until};

const COMPRESSIONS: [Compression; 3] = [
    Compression::None,
    Compression::ZlibStream,
    Compression::ZstdStream,
];

fn spec<'a>(
    dir: &'a std::path::Path,
    window: Duration,
    compression: Compression,
    sinks: &str,
) -> RunSpec<'a> {
    RunSpec {
        dir,
        window,
        compression,
        sinks: sinks.to_owned(),
        stdout: Stdio::null(),
        admin_port: 0,
    }
}

/// N shards in K buckets with window W: time until all Ready against ⌈N/K⌉·W.
pub(crate) fn startup(n: u32, k: u32, window: Duration) -> anyhow::Result<Value> {
    let sim = BenchSim::start(SimConfig {
        shards: n,
        max_concurrency: k,
        identify_window: window,
        ..SimConfig::default()
    })?;
    let dir = Scratch::new("startup")?;
    let started = Instant::now();
    let run = Shardkeeper::spawn(&sim, spec(&dir, window, Compression::ZlibStream, "[]"))?;
    let mut progress = Vec::new();
    let mut last = usize::MAX;
    wait_until("every shard ready", Duration::from_secs(600), || {
        let ready = sim.ready();
        if ready != last {
            progress.push(json!([started.elapsed().as_secs_f64(), ready]));
            last = ready;
        }
        ready == n as usize
    })?;
    let took = started.elapsed().as_secs_f64();
    let floor = f64::from(n.div_ceil(k)) * window.as_secs_f64();
    let violations = sim.stats().violations.len();
    run.stop("TERM")?;
    println!(
        "| startup | {n} shards, K={k}, W={} ms | all ready {took:.2} s | floor {floor:.2} s | ratio {:.2} | {violations} violations |",
        window.as_millis(),
        took / floor
    );
    Ok(
        json!({"n": n, "k": k, "window_s": window.as_secs_f64(), "seconds": took, "floor_s": floor, "ratio": took / floor, "violations": violations, "progress": progress}),
    )
}

/// N resumable shards: stop (SIGTERM or SIGKILL), start again, time until all resumed.
pub(crate) fn restart(n: u32) -> anyhow::Result<Value> {
    let window = Duration::from_millis(100);
    let sim = BenchSim::start(SimConfig {
        shards: n,
        max_concurrency: n,
        identify_window: window,
        events_per_sec: 1.0,
        ..SimConfig::default()
    })?;
    let dir = Scratch::new("restart")?;
    let mut run = Shardkeeper::spawn(&sim, spec(&dir, window, Compression::ZlibStream, "[]"))?;
    wait_until("first start", Duration::from_secs(600), || {
        sim.ready() == n as usize
    })?;
    let mut results = Vec::new();
    for signal in ["TERM", "KILL"] {
        // Let the store flush the latest sequences.
        std::thread::sleep(Duration::from_millis(500));
        let before = sim.stats();
        run.stop(signal)?;
        let started = Instant::now();
        run = Shardkeeper::spawn(&sim, spec(&dir, window, Compression::ZlibStream, "[]"))?;
        wait_until("every shard resumed", Duration::from_secs(600), || {
            let stats = sim.stats();
            stats.resumes_ok >= before.resumes_ok + u64::from(n)
                && stats.shards.values().filter(|s| s.state == "ready").count() == n as usize
        })?;
        let took = started.elapsed().as_secs_f64();
        let identifies = sim.stats().identifies - before.identifies;
        println!(
            "| restart ({}) | {n} shards | all resumed {took:.2} s | identifies spent {identifies} | |",
            if signal == "TERM" {
                "SIGTERM"
            } else {
                "kill -9"
            }
        );
        results.push(json!({"signal": signal, "n": n, "seconds": took, "identifies": identifies}));
    }
    run.stop("TERM")?;
    Ok(Value::Array(results))
}

/// Counts newline bytes appended to `file` since `offset`.
#[allow(
    clippy::naive_bytecount,
    reason = "runs once per second of a benchmark, off the measured process"
)]
fn lines_since(file: &mut std::fs::File, offset: &mut u64) -> u64 {
    let mut count = 0;
    if file.seek(SeekFrom::Start(*offset)).is_ok() {
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            count += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
            *offset += n as u64;
        }
    }
    count
}

/// The middle value (the upper one of an even count); `values` must not be empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Shards of the throughput scenario.
pub(crate) const FLOOD_SHARDS: u32 = 16;

/// A simulator pushing 512-byte events to [`FLOOD_SHARDS`] shards as fast as it can.
fn flood_sim() -> anyhow::Result<BenchSim> {
    BenchSim::start(flood_config())
}

/// The settings of [`flood_sim`].
pub(crate) fn flood_config() -> SimConfig {
    SimConfig {
        shards: FLOOD_SHARDS,
        max_concurrency: FLOOD_SHARDS,
        identify_window: Duration::from_millis(100),
        events_per_sec: 100_000.0,
        event_body_bytes: 512,
        ..SimConfig::default()
    }
}

/// Events per second delivered to a file sink, and CPU seconds per million events, of
/// one cluster over `seconds` at the simulator's full rate (and of its file sink's
/// writer thread alone).
fn throughput_once(compression: Compression, seconds: u64) -> anyhow::Result<Measured> {
    let sim = flood_sim()?;
    let dir = Scratch::new("throughput")?;
    let events = dir.join("events.ndjson");
    let sinks = format!(r#"["file:{}"]"#, events.display());
    let run = Shardkeeper::spawn(
        &sim,
        spec(&dir, Duration::from_millis(100), compression, &sinks),
    )?;
    wait_until("every shard ready", Duration::from_secs(60), || {
        sim.ready() == FLOOD_SHARDS as usize
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let mut file = std::fs::File::open(&events)?;
    let mut offset = 0;
    lines_since(&mut file, &mut offset);
    let (cpu0, writer0, t0) = (
        run.cpu_seconds(),
        run.threads_cpu_seconds(LineSink::FILE_WRITER_THREAD),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(seconds));
    let delivered = lines_since(&mut file, &mut offset);
    let (cpu, writer, elapsed) = (
        run.cpu_seconds() - cpu0,
        run.threads_cpu_seconds(LineSink::FILE_WRITER_THREAD) - writer0,
        t0.elapsed().as_secs_f64(),
    );
    run.stop("TERM")?;
    let millions = delivered.max(1) as f64 / 1e6;
    Ok(Measured {
        rate: delivered as f64 / elapsed,
        cost: cpu / millions,
        writer: Some(writer / millions),
    })
}

/// The same load read by bare connections ([`floor::transport_once`]).
fn transport_floor_once(compression: Compression, seconds: u64) -> anyhow::Result<Measured> {
    let sim = flood_sim()?;
    let (rate, cost) = floor::transport_once(&sim, FLOOD_SHARDS, compression, seconds)?;
    Ok(Measured {
        rate,
        cost,
        writer: None,
    })
}

/// One run: events (or messages) per second, CPU seconds per million of what was
/// measured, and of its file sink's writer thread where it has one.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Measured {
    rate: f64,
    cost: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    writer: Option<f64>,
}

/// The medians of several runs, and the runs.
struct Medians {
    rate: f64,
    cost: f64,
    writer: Option<f64>,
    runs: Vec<Measured>,
}

impl Medians {
    fn of(
        runs: usize,
        mut measure: impl FnMut() -> anyhow::Result<Measured>,
    ) -> anyhow::Result<Self> {
        let runs = (0..runs.max(1))
            .map(|_| measure())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let rates: Vec<f64> = runs.iter().map(|m| m.rate).collect();
        let costs: Vec<f64> = runs.iter().map(|m| m.cost).collect();
        let writers: Option<Vec<f64>> = runs.iter().map(|m| m.writer).collect();
        Ok(Self {
            rate: median(&rates),
            cost: median(&costs),
            writer: writers.map(|w| median(&w)),
            runs,
        })
    }
}

/// [`FLOOD_SHARDS`] shards at the simulator's full rate per compression, `runs` times each: the
/// medians, and every run in the JSON (the simulator shares the cores, so runs vary).
/// Each compression also gets its transport floor: the same load read by bare
/// tokio-tungstenite connections that only decode.
pub(crate) fn throughput(seconds: u64, runs: usize) -> anyhow::Result<Value> {
    let mut results = Vec::new();
    for compression in COMPRESSIONS {
        let cluster = Medians::of(runs, || throughput_once(compression, seconds))?;
        println!(
            "| throughput | {FLOOD_SHARDS} shards, {compression} | {:.0} events/s to file | {:.2} CPU s per million events ({:.2} in the file writer thread) | median of {} |",
            cluster.rate,
            cluster.cost,
            cluster.writer.unwrap_or_default(),
            cluster.runs.len()
        );
        let floor = Medians::of(runs, || transport_floor_once(compression, seconds))?;
        println!(
            "| transport floor | {FLOOD_SHARDS} bare tokio-tungstenite readers, {compression}, decode only | {:.0} messages/s read | {:.2} CPU s per million messages | median of {} |",
            floor.rate,
            floor.cost,
            floor.runs.len()
        );
        results.push(json!({
            "compression": compression.name(),
            "events_per_s": cluster.rate,
            "cpu_s_per_million": cluster.cost,
            "file_writer_cpu_s_per_million": cluster.writer,
            "runs": cluster.runs,
            "transport_floor": {
                "messages_per_s": floor.rate,
                "cpu_s_per_million": floor.cost,
                "runs": floor.runs,
            },
        }));
    }
    Ok(Value::Array(results))
}

/// RSS of `shardkeeper run` with `n` Ready shards, `settle` after they all came up, at
/// `rate` events per second per shard.
fn settled_rss(
    n: u32,
    compression: Compression,
    rate: f64,
    settle: Duration,
) -> anyhow::Result<u64> {
    let window = Duration::from_millis(100);
    let sim = BenchSim::start(SimConfig {
        shards: n,
        max_concurrency: n,
        identify_window: window,
        events_per_sec: rate,
        ..SimConfig::default()
    })?;
    let dir = Scratch::new("memory")?;
    let run = Shardkeeper::spawn(&sim, spec(&dir, window, compression, "[]"))?;
    wait_until("every shard ready", Duration::from_secs(600), || {
        sim.ready() == n as usize
    })?;
    std::thread::sleep(settle);
    let rss = run.rss_kib();
    run.stop("TERM")?;
    Ok(rss)
}

fn memory_row(label: &str, n: u32, rss: u64, compression: Compression) -> Value {
    let per_shard = rss as f64 / f64::from(n);
    println!(
        "| memory ({label}) | {n} shards, {compression} | RSS {:.1} MiB | {per_shard:.1} KiB per shard | |",
        rss as f64 / 1024.0
    );
    json!({"shards": n, "rss_kib": rss, "kib_per_shard": per_shard, "compression": compression.name()})
}

/// RSS of idle shards at several counts (the median of `runs` starts each: where a
/// thousand connections land in the heap varies), and of loaded shards per compression.
pub(crate) fn memory(
    idle_counts: &[u32],
    runs: usize,
    loaded: u32,
    seconds: u64,
) -> anyhow::Result<Value> {
    let mut idle = Vec::new();
    for compression in [Compression::None, Compression::ZlibStream] {
        let mut measured = Vec::new();
        for &n in idle_counts {
            let samples = (0..runs.max(1))
                .map(|_| settled_rss(n, compression, 0.0, Duration::from_secs(2)).map(|r| r as f64))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let rss = median(&samples) as u64;
            idle.push(memory_row("idle", n, rss, compression));
            measured.push((n, rss));
        }
        if let (Some(&(n0, rss0)), Some(&(n, rss))) = (measured.first(), measured.last())
            && n > n0
        {
            let marginal = rss.saturating_sub(rss0) as f64 / f64::from(n - n0);
            println!(
                "| memory (idle) | {compression}: {n0} → {n} shards | {marginal:.1} KiB per added shard | | |"
            );
        }
    }
    let mut busy = Vec::new();
    for compression in COMPRESSIONS {
        let rss = settled_rss(loaded, compression, 100.0, Duration::from_secs(seconds))?;
        busy.push(memory_row("100 ev/s", loaded, rss, compression));
    }
    Ok(json!({"idle": idle, "loaded": busy}))
}

/// Time from the simulator writing an event to its line arriving on our end of stdout.
pub(crate) fn latency(seconds: u64) -> anyhow::Result<Value> {
    const SHARDS: u32 = 16;
    let sim = BenchSim::start(SimConfig {
        shards: SHARDS,
        max_concurrency: SHARDS,
        identify_window: Duration::from_millis(100),
        events_per_sec: 50.0,
        ..SimConfig::default()
    })?;
    let dir = Scratch::new("latency")?;
    let mut run = Shardkeeper::spawn(
        &sim,
        RunSpec {
            stdout: Stdio::piped(),
            ..spec(
                &dir,
                Duration::from_millis(100),
                Compression::ZlibStream,
                r#"["stdout"]"#,
            )
        },
    )?;
    let stdout = run
        .child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    wait_until("every shard ready", Duration::from_secs(60), || {
        sim.ready() == SHARDS as usize
    })?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut samples: Vec<f64> = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        if let Some(sent) = line
            .split(r#""nonce":""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|v| v.parse::<u128>().ok())
        {
            samples.push(now_us.saturating_sub(sent) as f64 / 1000.0);
        }
        if Instant::now() > deadline {
            break;
        }
    }
    run.stop("TERM")?;
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let (p50, p99) = (pick(0.50), pick(0.99));
    println!(
        "| latency | {SHARDS} shards × 50 events/s, zlib-stream, stdout | p50 {p50:.2} ms | p99 {p99:.2} ms | {} samples |",
        samples.len()
    );
    Ok(json!({"p50_ms": p50, "p99_ms": p99, "samples": samples.len()}))
}
