//! `bench chaos`: a soak under a seeded chaos schedule with two `kill -9` restarts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardkeeper_protocol::Compression;
use shardkeeper_sim::{ChaosConfig, SimConfig, Stats};

use super::harness::{BenchSim, RunSpec, Scratch, Shardkeeper, wait_until};

/// Sizes of a soak.
pub(crate) struct Soak {
    pub(crate) shards: u32,
    pub(crate) duration: Duration,
    pub(crate) faults_per_minute: f64,
}

/// Lost and duplicated deliveries: every sequence the simulator sent on every session
/// must be in the event file. Sessions of a shard follow each other and begin with READY.
fn coverage(stats: &Stats, path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut segments: BTreeMap<u64, Vec<Vec<u64>>> = BTreeMap::new();
    for value in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let (Some(shard), Some(seq)) = (value["shard"].as_u64(), value["seq"].as_u64()) else {
            continue;
        };
        let list = segments.entry(shard).or_default();
        if value["t"] == "READY" || list.is_empty() {
            list.push(Vec::new());
        }
        if let Some(segment) = list.last_mut() {
            segment.push(seq);
        }
    }
    let mut by_shard: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for session in &stats.sessions {
        by_shard
            .entry(u64::from(session.shard))
            .or_default()
            .push(session.last_seq);
    }
    let (mut lost, mut duplicates) = (0, 0);
    for (shard, lasts) in by_shard {
        let empty = Vec::new();
        let segs = segments.get(&shard).unwrap_or(&empty);
        for (index, last) in lasts.iter().enumerate() {
            let mut seen: Vec<u64> = segs.get(index).cloned().unwrap_or_default();
            let total = seen.len() as u64;
            seen.sort_unstable();
            seen.dedup();
            duplicates += total - seen.len() as u64;
            lost += (1..=*last)
                .filter(|s| seen.binary_search(s).is_err())
                .count() as u64;
        }
    }
    (lost, duplicates)
}

pub(crate) fn soak(soak: &Soak) -> anyhow::Result<Value> {
    let n = soak.shards;
    let sim = BenchSim::start(SimConfig {
        shards: n,
        max_concurrency: 16,
        identify_window: Duration::from_millis(500),
        heartbeat_interval: Duration::from_secs(5),
        events_per_sec: 20.0,
        chaos: Some(ChaosConfig::mixed(soak.faults_per_minute)),
        // A third of the faults end sessions: the full soak needs a few thousand session
        // starts, more than the default daily budget of 1,000 (an exhausted budget makes
        // shards wait for its reset, as Discord would, which is not what this measures).
        session_start_total: 100_000,
        session_start_remaining: 100_000,
        seed: 42,
        ..SimConfig::default()
    })?;
    let mut dir = Scratch::new("chaos")?;
    let events = dir.join("events.ndjson");
    let sinks = format!(r#"["file:{}"]"#, events.display());
    let spec = || RunSpec {
        dir: &dir,
        window: Duration::from_millis(500),
        compression: Compression::ZlibStream,
        sinks: sinks.clone(),
        stdout: std::process::Stdio::null(),
        admin_port: 0,
    };
    let started = Instant::now();
    let mut run = Shardkeeper::spawn(&sim, spec())?;
    for kill in 1..=2u32 {
        std::thread::sleep(soak.duration / 3);
        run.stop("KILL")?;
        println!(
            "| chaos | kill -9 #{kill} at {:.0} s | | | |",
            started.elapsed().as_secs_f64()
        );
        run = Shardkeeper::spawn(&sim, spec())?;
    }
    // RSS of the last run, sampled every few seconds after a warm-up of a sixth.
    std::thread::sleep(soak.duration / 6);
    let rss = sample_rss(&run, soak.duration / 6);
    sim.handle.pause_chaos(true);
    if let Err(err) = wait_until(
        "every shard ready after the chaos",
        Duration::from_secs(120),
        || sim.ready() == n as usize,
    ) {
        dir.keep();
        let stats = sim.stats();
        anyhow::bail!(
            "{err}: {} of {n} ready, {} identifies, {} violations",
            sim.ready(),
            stats.identifies,
            stats.violations.len()
        );
    }
    sim.handle.set_events_per_sec(0.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut lost, mut duplicates) = coverage(&sim.stats(), &events);
    while lost > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        (lost, duplicates) = coverage(&sim.stats(), &events);
    }
    run.stop("TERM")?;
    let stats = sim.stats();
    let faults: u64 = stats.faults.values().sum();
    let log = std::fs::read_to_string(dir.join("shardkeeper.log")).unwrap_or_default();
    let panics = log.matches("panicked").count();
    let warm_rss = rss.first().copied().unwrap_or(0);
    let end_rss = rss.last().copied().unwrap_or(0);
    let peak_rss = rss.iter().copied().max().unwrap_or(0);
    let failed = verdict(&stats, lost, panics, (warm_rss, end_rss));
    println!(
        "| chaos | {n} shards, {:.0} s, {} faults/min/shard | {faults} faults, {} resumes, {} identifies | {} violations, {lost} lost, {duplicates} duplicates | RSS {:.1} → {:.1} MiB (peak {:.1}), {panics} panics | {} |",
        soak.duration.as_secs_f64(),
        soak.faults_per_minute,
        stats.resumes_ok,
        stats.identifies,
        stats.violations.len(),
        warm_rss as f64 / 1024.0,
        end_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        if failed.is_empty() {
            "pass".to_owned()
        } else {
            failed.join("; ")
        },
    );
    for violation in &stats.violations {
        println!("violation: {violation:?}");
    }
    if !failed.is_empty() {
        dir.keep();
    }
    Ok(json!({
        "shards": n, "seconds": soak.duration.as_secs_f64(), "faults": faults, "faults_by_kind": stats.faults,
        "resumes": stats.resumes_ok, "identifies": stats.identifies, "violations": stats.violations.len(),
        "lost": lost, "duplicates": duplicates, "rss_warm_kib": warm_rss, "rss_end_kib": end_rss,
        "rss_peak_kib": peak_rss, "rss_samples_kib": rss, "panics": panics, "failed": failed,
    }))
}

/// What the soak got wrong, if anything.
fn verdict(stats: &Stats, lost: u64, panics: usize, (warm, end): (u64, u64)) -> Vec<String> {
    let mut failed = Vec::new();
    if !stats.violations.is_empty() {
        failed.push(format!("{} simulator violations", stats.violations.len()));
    }
    if lost > 0 {
        failed.push(format!("{lost} events lost"));
    }
    if panics > 0 {
        failed.push(format!("{panics} panics in the log"));
    }
    // Flat: the end of the run within 10 % (and 2 MiB of allocator slack) of the warm RSS.
    if end > warm + warm / 10 + 2048 {
        failed.push(format!("RSS grew from {warm} to {end} KiB"));
    }
    failed
}

/// RSS of a run every 5 s (at least two samples) over `span`.
fn sample_rss(run: &Shardkeeper, span: Duration) -> Vec<u64> {
    const EVERY: Duration = Duration::from_secs(5);
    let started = Instant::now();
    let mut samples = vec![run.rss_kib()];
    loop {
        let left = span.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(EVERY));
        samples.push(run.rss_kib());
    }
    samples
}
