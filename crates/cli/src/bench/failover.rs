//! `bench failover`: three node processes share the shards through a `redis-server` of
//! the bench's own; one is killed with `kill -9`, and each of its shards is timed from
//! the kill to its lease lapsing (detection), to a survivor's claim (claim) and to its
//! RESUME at the simulator (resume). Also: identifies spent, events lost and
//! duplicated across the nodes' files, rule violations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use shardkeeper_sim::SimConfig;

use super::harness::{BenchSim, Scratch, TOKEN, wait_until};
use shardkeeper_redis::server::{Reaped, RedisServer, free_port};

use crate::node_process::NodeSpec;

/// The lease the issue's target is set against.
const LEASE_MS: u64 = 3000;
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// When one shard of the dead node passed each step, in ms after the kill.
#[derive(Debug, Default, Clone, Copy)]
struct Steps {
    detected: Option<u64>,
    claimed: Option<u64>,
    resumed: Option<u64>,
}

/// Kill one of three nodes running `shards` shards at `rate` events/s each.
pub(crate) fn failover(shards: u32, rate: f64) -> anyhow::Result<Value> {
    let window = Duration::from_millis(100);
    let sim = BenchSim::start(SimConfig {
        shards,
        max_concurrency: 16,
        identify_window: window,
        events_per_sec: rate,
        guilds_per_shard: 1,
        ..SimConfig::default()
    })?;
    let dir = Scratch::new("failover")?;
    let redis = RedisServer::start(&dir.join("redis"))
        .context("bench failover runs a redis-server of its own")?;
    let mut nodes = start_nodes(&sim, &redis, &dir, shards)?;
    let mut conn = redis::Client::open(redis.url())?.get_connection()?;
    wait_until("every shard ready", Duration::from_secs(300), || {
        sim.ready() == shards as usize
    })?;
    let settled = settle(&mut conn, shards)?;
    wait_until("every shard ready", Duration::from_secs(60), || {
        sim.ready() == shards as usize
    })?;
    let victim = NODES[1];
    let victims: BTreeSet<u32> = (0..shards)
        .filter(|&s| owner_node(settled.get(s as usize)) == Some(victim))
        .collect();
    let before = sim.stats();
    let killed = Instant::now();
    let _ = nodes[1].0.kill();
    let _ = nodes[1].0.wait();
    let steps = time_steps(&sim, &mut conn, shards, &victims, killed)?;
    let identifies = sim.stats().identifies - before.identifies;
    sim.handle.set_events_per_sec(0.0);
    std::thread::sleep(Duration::from_millis(1500));
    let (missing, duplicated) = coverage(&sim, &dir);
    let violations = sim.stats().violations.len();
    drop(nodes);
    let column = |f: fn(&Steps) -> Option<u64>| {
        let mut values: Vec<u64> = steps.values().filter_map(f).collect();
        values.sort_unstable();
        values
    };
    let (detection, claim, resume) = (
        column(|s| s.detected),
        column(|s| s.claimed),
        column(|s| s.resumed),
    );
    let unresumed = victims.len() - resume.len();
    println!(
        "| failover | {} nodes × ~{} shards, {rate} ev/s each, lease {LEASE_MS} ms, kill -9 of one ({} shards) | last shard resumed {} ms (p50 {} / p95 {}) | detection p50/p95/max {} / {} / {} ms, claim {} / {} / {} ms | identifies {identifies}, lost {missing}, duplicated {duplicated}, unresumed {unresumed} | {violations} violations |",
        NODES.len(),
        shards / 3,
        victims.len(),
        pct(&resume, 100),
        pct(&resume, 50),
        pct(&resume, 95),
        pct(&detection, 50),
        pct(&detection, 95),
        pct(&detection, 100),
        pct(&claim, 50),
        pct(&claim, 95),
        pct(&claim, 100),
    );
    let summary = |values: &[u64]| json!({"p50": pct(values, 50), "p95": pct(values, 95), "max": pct(values, 100)});
    Ok(json!({
        "nodes": NODES.len(), "shards": shards, "events_per_sec_per_shard": rate, "lease_ms": LEASE_MS,
        "moved": victims.len(), "detection_ms": summary(&detection), "claim_ms": summary(&claim),
        "resume_ms": summary(&resume), "unresumed": unresumed, "identifies": identifies,
        "lost": missing, "duplicated": duplicated, "violations": violations,
    }))
}

fn start_nodes(
    sim: &BenchSim,
    redis: &RedisServer,
    dir: &Path,
    shards: u32,
) -> anyhow::Result<Vec<Reaped>> {
    let exe = std::env::current_exe()?;
    let mut nodes = Vec::new();
    for id in NODES {
        let spec = NodeSpec {
            api_base: sim.handle.api_base(),
            token: TOKEN,
            admin_token: "bench-admin",
            total: shards,
            window_ms: 100,
            redis_url: redis.url(),
            id,
            lease_ms: LEASE_MS,
            admin: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            sinks: format!(
                r#"["file:{}"]"#,
                dir.join(format!("events-{id}.ndjson")).display()
            ),
        };
        let log = std::fs::File::create(dir.join(format!("{id}.log")))?;
        let child = spec
            .command(&exe)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {id}"))?;
        nodes.push(Reaped(child));
    }
    Ok(nodes)
}

/// The owner value of every shard.
fn owners(conn: &mut redis::Connection, shards: u32) -> anyhow::Result<Vec<Option<String>>> {
    let keys: Vec<String> = (0..shards)
        .map(|s| format!("shardkeeper:owner:{s}"))
        .collect();
    Ok(redis::cmd("MGET").arg(keys).query(conn)?)
}

/// Placement settles once every node has joined: waits until no shard moved for two
/// leases, and returns the owners then.
fn settle(conn: &mut redis::Connection, shards: u32) -> anyhow::Result<Vec<Option<String>>> {
    let mut last = owners(conn, shards)?;
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_millis(2 * LEASE_MS) {
        std::thread::sleep(Duration::from_millis(200));
        let current = owners(conn, shards)?;
        if current != last {
            stable_since = Instant::now();
            last = current;
        }
    }
    Ok(last)
}

/// Polls Redis and the simulator every 10 ms until every shard of `victims` resumed
/// (or a minute passed).
fn time_steps(
    sim: &BenchSim,
    conn: &mut redis::Connection,
    shards: u32,
    victims: &BTreeSet<u32>,
    killed: Instant,
) -> anyhow::Result<BTreeMap<u32, Steps>> {
    let victim = NODES[1];
    let resumes_before: HashMap<u32, u64> = sim
        .stats()
        .shards
        .iter()
        .map(|(&id, s)| (id, s.resumes))
        .collect();
    let mut steps: BTreeMap<u32, Steps> = victims.iter().map(|&s| (s, Steps::default())).collect();
    let deadline = killed + Duration::from_secs(60);
    while steps.values().any(|s| s.resumed.is_none()) && Instant::now() < deadline {
        let at = u64::try_from(killed.elapsed().as_millis()).unwrap_or(u64::MAX);
        let current = owners(conn, shards)?;
        let stats = sim.stats();
        for (&shard, step) in &mut steps {
            let holder = owner_node(current.get(shard as usize));
            if step.detected.is_none() && holder != Some(victim) {
                step.detected = Some(at);
            }
            if step.claimed.is_none() && holder.is_some_and(|o| o != victim) {
                step.claimed = Some(at);
            }
            let resumed = stats.shards.get(&shard).is_some_and(|s| {
                s.state == "ready" && s.resumes > resumes_before.get(&shard).copied().unwrap_or(0)
            });
            if step.resumed.is_none() && resumed {
                step.resumed = Some(at);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(steps)
}

fn owner_node(value: Option<&Option<String>>) -> Option<&str> {
    value?.as_deref()?.rsplit_once(':').map(|(node, _)| node)
}

/// The `p`th percentile (100 = max) of sorted `values`, 0 when empty.
fn pct(values: &[u64], p: usize) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let index = (values.len() * p).div_ceil(100).saturating_sub(1);
    values[index.min(values.len() - 1)]
}

/// Events the simulator sent that no node's file holds, and lines that repeat one.
fn coverage(sim: &BenchSim, dir: &Path) -> (u64, u64) {
    let mut seen: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut duplicated = 0;
    for id in NODES {
        let text =
            std::fs::read_to_string(dir.join(format!("events-{id}.ndjson"))).unwrap_or_default();
        for line in text.lines() {
            let Ok(value) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let (Some(shard), Some(seq)) = (value["shard"].as_u64(), value["seq"].as_u64()) else {
                continue;
            };
            let shard = u32::try_from(shard).unwrap_or(u32::MAX);
            if !seen.entry(shard).or_default().insert(seq) {
                duplicated += 1;
            }
        }
    }
    let lost = sim
        .stats()
        .sessions
        .iter()
        .map(|session| {
            let got = seen.get(&session.shard);
            (1..=session.last_seq)
                .filter(|s| got.is_none_or(|g| !g.contains(s)))
                .count() as u64
        })
        .sum();
    (lost, duplicated)
}
