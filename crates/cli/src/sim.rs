//! `shardkeeper sim`: the gateway simulator as a standalone process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use shardkeeper_sim::{ChaosConfig, Sim, SimConfig, TlsConfig};

/// Options of `shardkeeper sim`; defaults are Discord's.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The bot token the simulator accepts.
    #[arg(
        long,
        env = "SHARDKEEPER_SIM_TOKEN",
        default_value = "sim-token",
        hide_env_values = true
    )]
    token: String,
    /// Recommended shard count returned by /gateway/bot.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// IDENTIFYs with fewer shards get close 4011.
    #[arg(long, default_value_t = 1)]
    min_shards: u32,
    /// Identify buckets (max_concurrency).
    #[arg(long, default_value_t = 1)]
    max_concurrency: u32,
    /// One IDENTIFY per bucket per this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    identify_window_ms: u64,
    /// Heartbeat interval sent in HELLO, in milliseconds.
    #[arg(long, default_value_t = 41_250)]
    heartbeat_interval_ms: u64,
    /// MESSAGE_CREATE dispatches per second per Ready shard.
    #[arg(long, default_value_t = 0.0)]
    events_per_sec: f64,
    /// Approximate size of each generated dispatch body, in bytes.
    #[arg(long, default_value_t = 512)]
    event_bytes: usize,
    /// Guilds per shard.
    #[arg(long, default_value_t = 3)]
    guilds_per_shard: u32,
    /// Session starts per day.
    #[arg(long, default_value_t = 1000)]
    session_start_total: u32,
    /// Random faults per minute per shard (a mix of every recoverable fault); 0 for none.
    #[arg(long, default_value_t = 0.0)]
    chaos_per_minute: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Serve wss:// and https:// with a generated self-signed certificate, written here
    /// in PEM so clients can trust it.
    #[arg(long, value_name = "PATH")]
    tls_cert_out: Option<PathBuf>,
}

pub(crate) async fn run(args: SimArgs) -> anyhow::Result<()> {
    let shutdown = crate::Shutdown::install()?;
    let tls = match &args.tls_cert_out {
        Some(path) => {
            let tls = TlsConfig::self_signed().context("generating a certificate")?;
            std::fs::write(path, &tls.cert_pem)
                .with_context(|| format!("writing the certificate to {}", path.display()))?;
            Some(tls)
        }
        None => None,
    };
    let config = SimConfig {
        listen: args.listen,
        token: args.token,
        shards: args.shards,
        min_shards: args.min_shards,
        max_concurrency: args.max_concurrency.max(1),
        identify_window: Duration::from_millis(args.identify_window_ms),
        session_start_total: args.session_start_total,
        session_start_remaining: args.session_start_total,
        heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms.max(1)),
        guilds_per_shard: args.guilds_per_shard,
        events_per_sec: args.events_per_sec.max(0.0),
        event_body_bytes: args.event_bytes,
        seed: args.seed,
        chaos: (args.chaos_per_minute > 0.0).then(|| ChaosConfig::mixed(args.chaos_per_minute)),
        tls,
        ..SimConfig::default()
    };
    let sim = Sim::start(config).await.context("starting the simulator")?;
    println!("gateway  {}", sim.gateway_url());
    println!("api      {}", sim.api_base());
    println!(
        "stats    {}/sim/stats",
        sim.api_base().trim_end_matches("/api/v10")
    );
    tracing::info!(addr = %sim.addr(), "simulator running; Ctrl-C to stop");
    shutdown.wait().await;
    let stats = sim.stats();
    tracing::info!(
        identifies = stats.identifies,
        resumes = stats.resumes_ok,
        events = stats.events_sent,
        violations = stats.violations.len(),
        "simulator stopped"
    );
    sim.shutdown().await;
    Ok(())
}
