//! `shardkeeper bench`: reproducible measurements against the simulator. The simulator
//! runs in this process; `shardkeeper run` runs as a child, so CPU and RSS figures are
//! the cluster's alone (read from `/proc`).

mod chaos;
mod compare;
mod failover;
mod floor;
mod harness;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Map, Value};

/// Options of `shardkeeper bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which scenario to run.
    #[arg(value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// The full sizes (64 shards startup at Discord's 5 s window, 1,000-shard restart…)
    /// instead of the reduced ones that finish in a few minutes.
    #[arg(long)]
    full: bool,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// Length of the chaos soak in seconds (default: 60, or 600 with `--full`).
    #[arg(long, value_name = "SECONDS")]
    soak_seconds: Option<u64>,
    /// The twilight reader of `bench compare` (bench/compare/build.sh): PATH-none,
    /// PATH-zlib-stream and PATH-zstd-stream are its three builds.
    #[arg(long, value_name = "PATH", default_value = compare::DEFAULT_READER)]
    twilight: PathBuf,
    /// Dispatches per second and shard the simulator sends in `bench compare` (16 shards);
    /// 0 sends as fast as each contestant reads.
    #[arg(long, value_name = "EVENTS", default_value_t = compare::DEFAULT_RATE)]
    rate: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Startup,
    Restart,
    Throughput,
    Memory,
    Latency,
    /// Not part of `all`: a soak under seeded chaos with two `kill -9` restarts.
    Chaos,
    /// Not part of `all`: three nodes on a Redis of the bench's own, one killed with
    /// `kill -9` (needs `redis-server`).
    Failover,
    /// Not part of `all`: CPU per event of `shardkeeper run` against a twilight-gateway
    /// reader, alternating on one simulator (build `bench/compare` first).
    Compare,
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let full = args.full;
    if args.scenario == Scenario::Compare {
        let sizes = compare::Compare {
            rounds: if full { 5 } else { 3 },
            seconds: if full { 10 } else { 4 },
            reader: args.twilight.clone(),
            rate: args.rate,
        };
        let mut results = Map::new();
        results.insert("compare".into(), compare::compare(&sizes)?);
        return write_results(&args.json, results);
    }
    let wants = |s: Scenario| args.scenario == Scenario::All || args.scenario == s;
    println!("| scenario | setup | result | | | |");
    println!("|---|---|---|---|---|---|");
    let mut results = Map::new();
    if wants(Scenario::Startup) {
        let value = if full {
            scenarios::startup(64, 16, Duration::from_secs(5))?
        } else {
            scenarios::startup(32, 8, Duration::from_secs(1))?
        };
        results.insert("startup".into(), value);
    }
    if wants(Scenario::Restart) {
        results.insert(
            "restart".into(),
            scenarios::restart(if full { 1000 } else { 200 })?,
        );
    }
    if wants(Scenario::Throughput) {
        results.insert(
            "throughput".into(),
            scenarios::throughput(if full { 10 } else { 4 }, if full { 3 } else { 1 })?,
        );
    }
    if wants(Scenario::Memory) {
        let value = if full {
            scenarios::memory(&[1, 100, 250, 500, 1000], 3, 256, 10)?
        } else {
            scenarios::memory(&[1, 50, 200], 1, 64, 4)?
        };
        results.insert("memory".into(), value);
    }
    if wants(Scenario::Latency) {
        results.insert(
            "latency".into(),
            scenarios::latency(if full { 10 } else { 5 })?,
        );
    }
    if args.scenario == Scenario::Failover {
        let shards = if full { 300 } else { 60 };
        results.insert("failover".into(), failover::failover(shards, 20.0)?);
        return write_results(&args.json, results);
    }
    if args.scenario == Scenario::Chaos {
        let (shards, seconds, faults_per_minute) =
            if full { (256, 600, 2.0) } else { (64, 60, 6.0) };
        let soak = chaos::Soak {
            shards,
            duration: Duration::from_secs(args.soak_seconds.unwrap_or(seconds)),
            faults_per_minute,
        };
        let value = chaos::soak(&soak)?;
        let failed = value["failed"].as_array().is_some_and(|f| !f.is_empty());
        results.insert("chaos".into(), value);
        write_results(&args.json, results)?;
        anyhow::ensure!(!failed, "the chaos soak failed its checks");
        return Ok(());
    }
    write_results(&args.json, results)
}

fn write_results(path: &std::path::Path, results: Map<String, Value>) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(&Value::Object(results))?)?;
    println!("\nresults written to {}", path.display());
    Ok(())
}
