//! Cluster mode over real processes: nodes share one bot through a real `redis-server`
//! the test starts on a free port, against the simulator on 127.0.0.1.

use std::time::{Duration, Instant};

use shardkeeper_sim::{SimConfig, SimHandle};

use crate::http::{admin_addr, get_json, request, strip_ansi};
use crate::nodes::{LEASE_MS, RedisServer, count_in_log, lost, node, sim};
use crate::support::{Running, SIM_TOKEN, ready_shards, runtime, wait_for};

pub(crate) fn assert_clean(sim: &SimHandle, nodes: &[&Running]) {
    let stats = sim.stats();
    assert!(stats.violations.is_empty(), "{:#?}", stats.violations);
    assert_eq!(stats.client_close_codes.get(&1000), None, "never 1000");
    assert_eq!(stats.client_close_codes.get(&1001), None, "never 1001");
    for node in nodes {
        let log = node.log();
        assert!(!log.contains("panicked"), "{log}");
        assert!(!log.contains(SIM_TOKEN), "the bot token in a log");
    }
}

/// Three nodes start together: every shard identifies once, within the identify
/// window of its bucket across all nodes, and each node runs a share.
fn cold_start(max_concurrency: u32, shards: u32) {
    let runtime = runtime();
    let sim = sim(&runtime, shards, max_concurrency, 0.0, SimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let nodes: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|id| node(&sim, &redis.url(), dir.path(), id, &[]))
        .collect();
    let patience = Duration::from_secs(10 + u64::from(shards.div_ceil(max_concurrency)));
    wait_for("every shard ready", patience, || {
        ready_shards(&sim.stats()) == shards as usize
    });
    // Handovers after the first node took everything may still be settling.
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    wait_for("every shard ready again", patience, || {
        ready_shards(&sim.stats()) == shards as usize
    });
    let stats = sim.stats();
    assert_eq!(
        stats.identifies,
        u64::from(shards),
        "one IDENTIFY per shard"
    );
    for node in &nodes {
        assert!(
            count_in_log(node, "shard claimed") > 0,
            "a node ran nothing:\n{}",
            node.log()
        );
    }
    assert_clean(&sim, &nodes.iter().collect::<Vec<_>>());
}

#[test]
fn three_nodes_cold_start_at_max_concurrency_1() {
    cold_start(1, 6);
}

#[test]
fn three_nodes_cold_start_at_max_concurrency_16() {
    cold_start(16, 32);
}

/// Waits until every shard is ready and returns how long that took.
fn until_all_ready(sim: &SimHandle, shards: usize, since: Instant) -> Duration {
    wait_for("every shard ready", Duration::from_secs(30), || {
        ready_shards(&sim.stats()) == shards
    });
    since.elapsed()
}

#[test]
fn kill_9_of_one_node_then_of_two_fails_over_by_resume_and_loses_nothing() {
    let shards = 12;
    let runtime = runtime();
    let sim = sim(&runtime, shards, 4, 20.0, SimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let mut a = node(&sim, &redis.url(), dir.path(), "a", &[]);
    let mut b = node(&sim, &redis.url(), dir.path(), "b", &[]);
    let c = node(&sim, &redis.url(), dir.path(), "c", &[]);
    until_all_ready(&sim, shards as usize, Instant::now());
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    until_all_ready(&sim, shards as usize, Instant::now());
    let identifies = sim.stats().identifies;

    for (victim, survivors) in [(&mut a, 2), (&mut b, 1)] {
        let resumes = sim.stats().resumes_ok;
        let killed = Instant::now();
        victim.signal("KILL");
        victim.wait(Duration::from_secs(5));
        // The dead node's connections end with it; its shards wait for the lease.
        wait_for(
            "the dead node's shards to drop",
            Duration::from_secs(5),
            || ready_shards(&sim.stats()) < shards as usize,
        );
        let failover = until_all_ready(&sim, shards as usize, killed);
        eprintln!(
            "failover to {survivors} node(s): every shard ready {} ms after kill -9 (lease {LEASE_MS} ms), {} resumes",
            failover.as_millis(),
            sim.stats().resumes_ok - resumes
        );
        assert!(
            failover < Duration::from_millis(LEASE_MS + 4000),
            "failover took {failover:?}"
        );
        assert!(sim.stats().resumes_ok > resumes, "shards moved by RESUME");
        assert_eq!(
            sim.stats().identifies,
            identifies,
            "no IDENTIFY on failover"
        );
    }
    sim.set_events_per_sec(0.0);
    wait_for(
        "every event in some node's file",
        Duration::from_secs(10),
        || lost(&sim, dir.path()).is_empty(),
    );
    assert_eq!(count_in_log(&c, "panicked"), 0);
    assert_clean(&sim, &[&a, &b, &c]);
}

#[test]
fn a_rolling_deploy_hands_every_shard_over_by_resume() {
    let shards = 8;
    let runtime = runtime();
    let sim = sim(&runtime, shards, 4, 20.0, SimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let mut nodes: Vec<Running> = ["a", "b"]
        .iter()
        .map(|id| node(&sim, &redis.url(), dir.path(), id, &[]))
        .collect();
    until_all_ready(&sim, shards as usize, Instant::now());
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    until_all_ready(&sim, shards as usize, Instant::now());
    let identifies = sim.stats().identifies;
    let mut stopped = Vec::new();
    // Each old node is replaced: a new one joins (and takes its share by RESUME), then
    // the old one is sent SIGTERM (and hands the rest over).
    for (generation, new_id) in ["c", "d"].iter().enumerate() {
        let resumes = sim.stats().resumes_ok;
        nodes.push(node(&sim, &redis.url(), dir.path(), new_id, &[]));
        wait_for(
            "the new node to take shards",
            Duration::from_secs(15),
            || count_in_log(nodes.last().expect("new"), "shard claimed") > 0,
        );
        let mut old = nodes.remove(0);
        old.signal("TERM");
        assert_eq!(
            old.wait(Duration::from_secs(20)).code(),
            Some(0),
            "{}",
            old.log()
        );
        until_all_ready(&sim, shards as usize, Instant::now());
        assert!(
            sim.stats().resumes_ok > resumes,
            "round {generation}: shards moved by RESUME"
        );
        stopped.push(old);
    }
    assert_eq!(
        sim.stats().identifies,
        identifies,
        "no IDENTIFY in a rolling deploy"
    );
    sim.set_events_per_sec(0.0);
    wait_for(
        "every event in some node's file",
        Duration::from_secs(10),
        || lost(&sim, dir.path()).is_empty(),
    );
    let all: Vec<&Running> = stopped.iter().chain(nodes.iter()).collect();
    assert_clean(&sim, &all);
}

/// A node id, its extra environment, and the key its exit message must name.
type Conflict = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn conflicts_with_the_cluster_exit_2_naming_the_key() {
    let runtime = runtime();
    let sim = sim(&runtime, 4, 4, 0.0, SimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let first = node(&sim, &redis.url(), dir.path(), "a", &[]);
    wait_for("the first node runs", Duration::from_secs(15), || {
        ready_shards(&sim.stats()) == 4
    });
    let cases: [Conflict; 2] = [
        ("a", &[], "cluster.node_id"),
        ("b", &[("SHARDKEEPER_SHARDS__TOTAL", "8")], "shards.total"),
    ];
    for (id, extra, key) in cases {
        let mut other = node(&sim, &redis.url(), dir.path(), id, extra);
        let status = other.wait(Duration::from_millis(LEASE_MS + 10_000));
        assert_eq!(status.code(), Some(2), "{}", other.log());
        assert!(other.log().contains(key), "{}", other.log());
    }
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let mut evicting = node(&sim, &redis.url(), dir.path(), "c", &[]);
    assert_eq!(
        evicting.wait(Duration::from_secs(10)).code(),
        Some(2),
        "{}",
        evicting.log()
    );
    assert!(evicting.log().contains("noeviction"), "{}", evicting.log());
    assert_clean(&sim, &[&first]);
}

/// A command that names an epoch the owner (node b) no longer holds is answered
/// "moved", not carried out (the sender then asks the new owner).
fn a_stale_command_is_answered_moved(redis: &RedisServer, owner: &str, target: u64) {
    let target_id = target.to_string();
    redis.cli(&[
        "XADD",
        "shardkeeper:commands:b",
        "*",
        "id",
        "stale",
        "shard",
        &target_id,
        "epoch",
        "999999",
        "command",
        r#"{"action":"stop"}"#,
    ]);
    wait_for(
        "the stale command answered",
        Duration::from_secs(10),
        || {
            redis
                .cli(&["GET", "shardkeeper:reply:stale"])
                .contains("moved")
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        get_json(owner, &format!("/api/v1/shards/{target}"))["state"],
        "ready",
        "a stale command is not carried out"
    );
}

#[test]
fn every_node_answers_for_the_whole_cluster_and_carries_commands_to_the_owner() {
    let shards = 6;
    let runtime = runtime();
    let sim = sim(&runtime, shards, 2, 5.0, SimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let nodes: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|id| node(&sim, &redis.url(), dir.path(), id, &[]))
        .collect();
    until_all_ready(&sim, shards as usize, Instant::now());
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    until_all_ready(&sim, shards as usize, Instant::now());
    let addrs: Vec<String> = nodes.iter().map(admin_addr).collect();

    let listed = get_json(&addrs[0], "/api/v1/shards");
    let listed = listed["shards"].as_array().expect("shards");
    assert_eq!(listed.len(), shards as usize, "{listed:?}");
    for shard in listed {
        assert_eq!(shard["state"], "ready", "{shard}");
        assert!(
            ["a", "b", "c"].contains(&shard["node"].as_str().unwrap_or("")),
            "{shard}"
        );
    }
    let nodes_view = get_json(&addrs[0], "/api/v1/nodes");
    let listed_nodes = nodes_view["nodes"].as_array().expect("nodes");
    assert_eq!(listed_nodes.len(), 3, "{nodes_view}");
    let owned: u64 = listed_nodes
        .iter()
        .map(|n| n["shards"].as_u64().expect("count"))
        .sum();
    assert_eq!(owned, u64::from(shards));
    assert!(
        listed_nodes
            .iter()
            .any(|n| n["id"] == "a" && n["self"] == true)
    );

    // A shard node b runs, stopped through node a and started through node c.
    let target = listed
        .iter()
        .find(|s| s["node"] == "b")
        .and_then(|s| s["id"].as_u64())
        .expect("node b runs a shard");
    let (status, body) = request(&addrs[0], "POST", &format!("/api/v1/shards/{target}/stop"));
    assert_eq!(status, 202, "{body}");
    wait_for(
        "the shard stopped on its owner",
        Duration::from_secs(10),
        || get_json(&addrs[1], &format!("/api/v1/shards/{target}"))["state"] == "stopped",
    );
    let (status, body) = request(&addrs[2], "POST", &format!("/api/v1/shards/{target}/start"));
    assert_eq!(status, 202, "{body}");
    wait_for("the shard ready again", Duration::from_secs(10), || {
        get_json(&addrs[0], &format!("/api/v1/shards/{target}"))["state"] == "ready"
    });
    a_stale_command_is_answered_moved(&redis, &addrs[1], target);
    let (status, _) = request(&addrs[0], "POST", &format!("/api/v1/shards/{shards}/stop"));
    assert_eq!(status, 404, "a shard id beyond the count");

    let audit = redis.cli(&["XRANGE", "shardkeeper:audit", "-", "+"]);
    assert!(audit.contains("POST /api/v1/shards/{id}/stop"), "{audit}");
    assert!(audit.contains("POST /api/v1/shards/{id}/start"), "{audit}");
    let (_, metrics) = request(&addrs[0], "GET", "/metrics");
    assert!(
        metrics.contains("shardkeeper_cluster_owned_shards"),
        "{metrics}"
    );
    assert!(metrics.contains("shardkeeper_events_total"), "{metrics}");
    let identify = get_json(&addrs[2], "/api/v1/identify");
    assert_eq!(
        identify["remaining"].as_u64(),
        Some(u64::from(sim.stats().session_start_remaining)),
        "one shared budget, as Discord counts it: {identify}"
    );
    assert_eq!(sim.stats().identifies, u64::from(shards));
    assert_clean(&sim, &nodes.iter().collect::<Vec<_>>());
}

#[test]
fn a_budget_at_its_reserve_parks_shards_visibly_and_refuses_costly_restarts() {
    let shards = 6;
    let runtime = runtime();
    // 14 session starts left of 100 a day: the reserve keeps 10, so 4 shards identify.
    let sim = sim(
        &runtime,
        shards,
        6,
        0.0,
        SimConfig {
            session_start_total: 100,
            session_start_remaining: 14,
            ..SimConfig::default()
        },
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let nodes: Vec<Running> = ["a", "b"]
        .iter()
        .map(|id| node(&sim, &redis.url(), dir.path(), id, &[]))
        .collect();
    wait_for("4 shards ready", Duration::from_secs(20), || {
        ready_shards(&sim.stats()) == 4
    });
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    assert_eq!(sim.stats().identifies, 4, "nothing below the reserve");
    let addrs: Vec<String> = nodes.iter().map(admin_addr).collect();
    let listed = get_json(&addrs[0], "/api/v1/shards");
    let waiting: Vec<u64> = listed["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter(|s| s["state"] == "identifying")
        .filter_map(|s| s["id"].as_u64())
        .collect();
    assert_eq!(
        waiting.len(),
        2,
        "parked shards show as identifying: {listed}"
    );
    let identify = get_json(&addrs[1], "/api/v1/identify");
    // A budget refresh that raced a grant charges it twice (the shared count only ever
    // reads at or below Discord's): 10, or one less.
    let remaining = identify["remaining"].as_u64().expect("remaining");
    assert!((9..=10).contains(&remaining), "{identify}");
    assert_eq!(identify["reserve"], 10, "{identify}");
    let mut expected = waiting.clone();
    expected.sort_unstable();
    let parked_logged = || {
        let mut named: Vec<u64> = nodes
            .iter()
            .flat_map(|n| {
                n.log()
                    .lines()
                    .filter(|l| l.contains("shard parked until it resets"))
                    .filter_map(|l| {
                        let plain = strip_ansi(l);
                        let at = plain.find("shard=")? + "shard=".len();
                        plain[at..]
                            .split(|c: char| !c.is_ascii_digit())
                            .next()?
                            .parse()
                            .ok()
                    })
                    .collect::<Vec<u64>>()
            })
            .collect();
        named.sort_unstable();
        named.dedup();
        named
    };
    wait_for(
        "the parked shards named in the logs",
        Duration::from_secs(5),
        || parked_logged() == expected,
    );
    let ready = listed["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .find(|s| s["state"] == "ready")
        .and_then(|s| s["id"].as_u64())
        .expect("a ready shard");
    let (status, body) = request(
        &addrs[0],
        "POST",
        &format!("/api/v1/shards/{ready}/restart?fresh=true"),
    );
    assert_eq!(status, 409, "{body}");
    let refusal: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(refusal["cost"], 1, "{refusal}");
    assert_eq!(refusal["remaining"].as_u64(), Some(remaining), "{refusal}");
    assert_eq!(refusal["reserve"], 10, "{refusal}");
    assert_eq!(sim.stats().identifies, 4);
    assert_clean(&sim, &nodes.iter().collect::<Vec<_>>());
}
