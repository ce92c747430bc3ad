//! `shardkeeper demo --nodes N`: the embedded simulator, a `redis-server` of the demo's
//! own on a free port, and N node processes (this binary's `run` in redis mode), each
//! with its dashboard, so a person can kill one and watch its shards move.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shardkeeper_sim::SimHandle;

use shardkeeper_redis::server::{Reaped, RedisServer, free_port};

use crate::node_process::NodeSpec;

/// Lease of the demo's nodes: a killed node's shards move within a few seconds.
const DEMO_LEASE_MS: u64 = 3000;

/// What a node process needs to know.
pub(super) struct Plan<'a> {
    pub(super) sim: &'a SimHandle,
    pub(super) sim_token: &'a str,
    pub(super) admin_token: &'a str,
    pub(super) total: u32,
    pub(super) window_ms: u64,
    pub(super) admin: SocketAddr,
    pub(super) nodes: u16,
}

/// Runs the cluster until `shutdown` resolves.
pub(super) async fn run(plan: Plan<'_>, shutdown: crate::Shutdown) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("shardkeeper-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating the demo's directory")?;
    let result = run_in(&plan, shutdown, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(plan: &Plan<'_>, shutdown: crate::Shutdown, dir: &Path) -> anyhow::Result<()> {
    let redis = RedisServer::start(&dir.join("redis"))
        .context("demo --nodes runs a redis-server of its own")?;
    let exe = std::env::current_exe().context("finding this program to start the nodes")?;
    let mut nodes = Vec::new();
    for i in 0..plan.nodes {
        let id = format!("node-{}", i + 1);
        let admin = if plan.admin.port() == 0 {
            SocketAddr::new(plan.admin.ip(), free_port()?)
        } else {
            SocketAddr::new(plan.admin.ip(), plan.admin.port() + i)
        };
        let child = spawn_node(&exe, plan, &id, admin, &redis, dir)?;
        nodes.push((id, admin, child));
    }
    println!(
        "shardkeeper demo: {} shards on {} nodes sharing one bot through Redis ({}), against an embedded Discord gateway simulator ({})",
        plan.total,
        plan.nodes,
        redis.url(),
        plan.sim.gateway_url()
    );
    println!();
    for (id, admin, child) in &nodes {
        println!(
            "  {id}  pid {:<7} dashboard http://{admin}/#token={}",
            child.0.id(),
            plan.admin_token
        );
    }
    println!();
    println!(
        "  admin API   curl -H 'Authorization: Bearer {}' http://{}/api/v1/nodes",
        plan.admin_token, nodes[0].1
    );
    println!();
    wait_ready(plan.sim, plan.total, &mut nodes).await?;
    let (victim, _, child) = &nodes[nodes.len() / 2];
    println!(
        "Try: kill -9 {}   ({victim} dies; within {} s the other nodes RESUME its shards — no IDENTIFY, no event lost — and every dashboard shows them on their new node)",
        child.0.id(),
        DEMO_LEASE_MS / 1000 + 2
    );
    println!("Ctrl-C to stop: every node hands its shards over and exits.");
    shutdown.wait().await;
    println!("stopping the nodes");
    for (_, _, child) in &nodes {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.0.id().to_string())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for (_, _, child) in &mut nodes {
        while child.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(nodes);
    drop(redis);
    Ok(())
}

/// Waits until the simulator sees every shard Ready, printing progress.
async fn wait_ready(
    sim: &SimHandle,
    total: u32,
    nodes: &mut [(String, SocketAddr, Reaped)],
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = 0;
    loop {
        let ready = sim
            .stats()
            .shards
            .values()
            .filter(|s| s.state == "ready")
            .count();
        if ready != last {
            println!("ready {ready}/{total}");
            last = ready;
        }
        if ready == total as usize {
            println!(
                "all shards ready in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        for (id, _, child) in nodes.iter_mut() {
            if let Some(status) = child.0.try_wait().ok().flatten() {
                bail!("{id} exited ({status}) before the cluster was ready");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn spawn_node(
    exe: &Path,
    plan: &Plan<'_>,
    id: &str,
    admin: SocketAddr,
    redis: &RedisServer,
    dir: &Path,
) -> anyhow::Result<Reaped> {
    let spec = NodeSpec {
        api_base: plan.sim.api_base(),
        token: plan.sim_token,
        admin_token: plan.admin_token,
        total: plan.total,
        window_ms: plan.window_ms,
        redis_url: redis.url(),
        id,
        lease_ms: DEMO_LEASE_MS,
        admin,
        sinks: r#"["websocket"]"#.to_owned(),
    };
    let log = std::fs::File::create(dir.join(format!("{id}.log")))?;
    let child = spec
        .command(exe)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {id}"))?;
    Ok(Reaped(child))
}
