//! `shardkeeper demo`: an embedded simulator, a cluster against it and the admin API;
//! with `--nodes N`, N node processes sharing the bot through a Redis of the demo's own.

mod nodes;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use shardkeeper_admin::AdminConfig;
use shardkeeper_cluster::{Auto, Cluster, ClusterHandle, SledStore, StateKind};
use shardkeeper_protocol::Token;
use shardkeeper_sim::{Sim, SimConfig};

use crate::config::Config;

const DEMO_CONFIG: &str = include_str!("../../../config/demo.toml");
/// Buckets the demo's simulator reports, so start-up shows the identify pacing.
const DEMO_MAX_CONCURRENCY: u32 = 4;

/// Options of `shardkeeper demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Number of shards (default from config/demo.toml: 16).
    #[arg(long)]
    shards: Option<u32>,
    /// Address of the admin API and dashboard (node i of `--nodes` uses port + i).
    #[arg(long, default_value = "127.0.0.1:7878")]
    admin: SocketAddr,
    /// Run the shards on this many node processes sharing one bot through Redis
    /// (starts its own `redis-server` on a free port). 1 = one process, no Redis.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    nodes: u16,
}

fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let shutdown = crate::Shutdown::install()?;
    let config = Config::parse(DEMO_CONFIG, "config/demo.toml", std::env::vars())?;
    let total = args.shards.or(match config.total() {
        Auto::Fixed(n) => Some(n),
        Auto::Auto => None,
    });
    let total = total.unwrap_or(16).max(1);
    let sim_token = random_token();
    let sim = Sim::start(SimConfig {
        token: sim_token.clone(),
        shards: total,
        max_concurrency: DEMO_MAX_CONCURRENCY,
        identify_window: config.identify_window(),
        guilds_per_shard: 3,
        events_per_sec: 2.0,
        ..SimConfig::default()
    })
    .await
    .context("starting the simulator")?;
    if args.nodes > 1 {
        let plan = nodes::Plan {
            sim: &sim,
            sim_token: &sim_token,
            admin_token: &random_token(),
            total,
            window_ms: u64::try_from(config.identify_window().as_millis()).unwrap_or(u64::MAX),
            admin: args.admin,
            nodes: args.nodes,
        };
        let result = nodes::run(plan, shutdown).await;
        sim.shutdown().await;
        return result;
    }
    let store_dir = std::env::temp_dir().join(format!("shardkeeper-demo-{}", std::process::id()));
    let store = SledStore::open(&store_dir.join("store.sled"))?;
    let mut cluster_config = config.cluster(Token::new(&sim_token));
    cluster_config.api_base = sim.api_base();
    cluster_config.total = Auto::Fixed(total);
    let builder = Cluster::builder(cluster_config).store(Arc::new(store));
    let (builder, hub) = crate::run::with_sinks(builder, &config)?;
    let started = Instant::now();
    let cluster = builder.start().await.context("starting the cluster")?;
    let admin_token = random_token();
    let admin = shardkeeper_admin::start(
        AdminConfig {
            bind: args.admin,
            token: Token::new(&admin_token),
            read_token: None,
        },
        cluster.clone(),
        hub,
    )?;
    let addr = admin.addr();
    println!(
        "shardkeeper demo: {total} shards against an embedded Discord gateway simulator ({})",
        sim.gateway_url()
    );
    println!();
    println!("  dashboard   http://{addr}/#token={admin_token}");
    println!(
        "  admin API   curl -H 'Authorization: Bearer {admin_token}' http://{addr}/api/v1/shards"
    );
    println!("  metrics     http://{addr}/metrics");
    println!();
    show_progress(&cluster, total, config.identify_window(), started).await;
    println!("Ctrl-C to stop.");
    shutdown.wait().await;
    println!("stopping: every shard closes with 4000, sessions stay resumable");
    admin.stop().await;
    cluster.shutdown().await?;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&store_dir);
    Ok(())
}

/// One line of progress until every shard is Ready, then the time against the floor.
async fn show_progress(cluster: &ClusterHandle, total: u32, window: Duration, started: Instant) {
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let shards = cluster.shards();
        let ready = shards
            .iter()
            .filter(|s| s.state == StateKind::Ready)
            .count();
        let identified = shards
            .iter()
            .filter(|s| s.identifies > 0 || s.resumes > 0)
            .count();
        let eta = cluster.identify_status().map_or(0, |status| {
            status
                .buckets
                .iter()
                .filter(|b| !b.queued.is_empty())
                .map(|b| b.next_grant_in_ms + (b.queued.len() as u64 - 1) * status.window_ms)
                .max()
                .unwrap_or(0)
        });
        let line = format!(
            "identified {identified}/{total} · ready {ready}/{total} · identify queue drains in {:.1} s",
            eta as f64 / 1000.0
        );
        if line != last {
            if tty {
                print!("\r{line}\x1b[K");
            } else {
                println!("{line}");
            }
            let _ = std::io::stdout().flush();
            last = line;
        }
        if ready == shards.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if tty {
        println!();
    }
    let floor = window.as_secs_f64() * f64::from(total.div_ceil(DEMO_MAX_CONCURRENCY) - 1);
    println!(
        "all shards ready: {total} shards ready in {:.1} s (the identify rules allow no less than {floor:.1} s at max_concurrency {DEMO_MAX_CONCURRENCY}, {} ms window)",
        started.elapsed().as_secs_f64(),
        window.as_millis()
    );
}
