//! The `shardkeeper` command-line program.
//!
//! - `run [--config PATH]`: the cluster, store, sinks and admin API
//! - `demo`: an embedded simulator + cluster + admin API, printing the dashboard URL
//! - `sim`: the gateway simulator on its own
//! - `shards list|restart|stop|start`: operator commands over the admin API
//! - `bench`: start-up, restart, throughput, memory and latency measurements
//!
//! Logs go to stderr (`--log-format text|json`, filter with `RUST_LOG`); stdout carries
//! event lines. Exit codes: 0 on clean shutdown, 2 on bad configuration, 1 otherwise.
//!
//! Layout: `config.rs` (TOML + env overrides), `run.rs`, `demo.rs`, `sim.rs`, `shards.rs`,
//! `bench.rs` (+ `bench/`).

mod bench;
mod config;
mod demo;
mod node_process;
mod run;
mod shards;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Cluster manager for Discord gateway shards.
#[derive(Debug, Parser)]
#[command(name = "shardkeeper", version, about = "Cluster manager for Discord gateway shards", long_about = None)]
struct Cli {
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the shards of a bot with the admin API (config: TOML file + SHARDKEEPER_* env).
    Run {
        /// Configuration file; built-in defaults (config/default.toml) when absent.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Try it out: embedded gateway simulator, a cluster and the admin API with dashboard.
    Demo(demo::DemoArgs),
    /// Run the Discord gateway simulator (strict rules, fault injection, stats over HTTP).
    Sim(sim::SimArgs),
    /// Operate on shards through a running admin API.
    Shards(shards::ShardsArgs),
    /// Measure start-up, restarts, throughput, memory and latency against the simulator.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo talks to a person on the terminal; only warnings interrupt it.
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    init_logging(cli.log_format, default_level);
    let result = match cli.command {
        Command::Run { config } => {
            match config::Config::load(config.as_deref(), std::env::vars()) {
                Ok(config) => actix::System::new().block_on(run::run(config)),
                Err(err) => Err(err.into()),
            }
        }
        Command::Demo(args) => actix::System::new().block_on(demo::run(args)),
        Command::Sim(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(sim::run(args))),
        Command::Shards(args) => shards::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// SIGINT and SIGTERM, caught from the moment of `install` (a signal that arrives
/// while the cluster is still starting must not kill the process without a clean
/// shutdown).
pub(crate) struct Shutdown {
    #[cfg(unix)]
    signals: (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
}

impl Shutdown {
    pub(crate) fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                signals: (
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ),
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves on SIGINT or SIGTERM.
    pub(crate) async fn wait(mut self) {
        #[cfg(unix)]
        {
            let (interrupt, terminate) = &mut self.signals;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
