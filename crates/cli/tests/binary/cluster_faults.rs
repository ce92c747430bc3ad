//! Cluster mode under faults, over real processes: a node stopped past its lease, a
//! node cut off from Redis or from the gateway by a proxy the test owns, Redis killed
//! and restarted (with its AOF, and empty), and a session that expired before its
//! takeover. Every test checks the simulator's rules (no violation at all, in
//! particular no two live connections of one shard and no session fought over), the
//! IDENTIFY count, and that no event is lost.

use std::time::{Duration, Instant};

use shardkeeper_sim::{SimConfig, SimHandle, Stats};

use crate::cluster::assert_clean;
use crate::nodes::{LEASE_MS, RedisServer, count_in_log, lost, node, sim};
use crate::proxy::{Cut, Proxy};
use crate::support::{Running, SIM_TOKEN, ready_shards, runtime, wait_for};

/// The namespace the nodes use (the default).
const NAMESPACE: &str = "shardkeeper";

/// The owner value (`"<node>:<epoch>"`) of every shard, as Redis holds it now.
fn owners(redis: &RedisServer, shards: u32) -> Vec<Option<String>> {
    // One line, "-" for a shard without an owner: redis-cli's plain output trims the
    // empty lines of missing keys.
    let script = "local r = {} for i, k in ipairs(KEYS) do r[i] = redis.call('GET', k) or '-' end \
                  return table.concat(r, ' ')";
    let keys: Vec<String> = (0..shards)
        .map(|s| format!("{NAMESPACE}:owner:{s}"))
        .collect();
    let count = shards.to_string();
    let mut args = vec!["EVAL", script, count.as_str()];
    args.extend(keys.iter().map(String::as_str));
    let answer = redis.cli(&args);
    let values: Vec<Option<String>> = answer
        .split(' ')
        .map(|v| Some(v.to_owned()).filter(|v| v != "-"))
        .collect();
    assert_eq!(values.len(), shards as usize, "owners: {answer:?}");
    values
}

/// The shards `id` owns in Redis.
fn owned_by(redis: &RedisServer, shards: u32, id: &str) -> Vec<u32> {
    owned_by_in(&owners(redis, shards), id)
}

fn owned_by_in(owners: &[Option<String>], id: &str) -> Vec<u32> {
    owners
        .iter()
        .zip(0..)
        .filter(|(owner, _)| {
            owner
                .as_deref()
                .and_then(|o| o.rsplit_once(':'))
                .is_some_and(|(node, _)| node == id)
        })
        .map(|(_, shard)| shard)
        .collect()
}

/// Every shard has an owner, and none is `id`.
fn taken_over(redis: &RedisServer, shards: u32, id: &str) -> bool {
    let owners = owners(redis, shards);
    owners.iter().all(Option::is_some) && owned_by_in(&owners, id).is_empty()
}

fn all_ready(sim: &SimHandle, shards: u32) -> bool {
    ready_shards(&sim.stats()) == shards as usize
}

/// Waits until every shard is ready and the owners stayed the same for a lease (the
/// handovers after a start or a fault are over); returns how long that took.
fn settle(sim: &SimHandle, redis: &RedisServer, shards: u32, patience: Duration) -> Duration {
    let start = Instant::now();
    let deadline = start + patience;
    let mut last = None;
    loop {
        wait_for(
            "every shard ready",
            deadline.saturating_duration_since(Instant::now()),
            || all_ready(sim, shards),
        );
        let now = owners(redis, shards);
        if now.iter().all(Option::is_some) && last.as_ref() == Some(&now) {
            return start.elapsed();
        }
        last = Some(now);
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle within {patience:?}: owners {last:?}"
        );
        std::thread::sleep(Duration::from_millis(LEASE_MS));
    }
}

/// No event the simulator sent is missing from every node's file, once the simulator
/// stops sending.
fn assert_nothing_lost(sim: &SimHandle, dir: &std::path::Path) {
    sim.set_events_per_sec(0.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lost = lost(sim, dir);
        if lost.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "events lost: {lost:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nothing in Redis holds the bot token either.
fn assert_no_token_in_redis(redis: &RedisServer) {
    let sessions = redis.cli(&["HGETALL", &format!("{NAMESPACE}:sessions")]);
    assert!(!sessions.contains(SIM_TOKEN), "the bot token in Redis");
}

fn summary(stats: &Stats) -> String {
    format!(
        "identifies {}, resumes {} ok / {} refused, close codes {:?}, violations {}",
        stats.identifies,
        stats.resumes_ok,
        stats.resumes_failed,
        stats.client_close_codes,
        stats.violations.len()
    )
}

/// SIGSTOP of one node for three leases: the others take its shards by RESUME while
/// it is frozen (its sockets still open), and once it runs again it finds its lease
/// lapsed and stops every shard (fenced) before touching a socket again: no payload on
/// the superseded connections, no IDENTIFY, nothing lost. Then it rejoins and takes
/// its share back by RESUME.
///
/// Events flow before the stop and after the frozen node closed its old sockets, not
/// while it is frozen (the next test keeps them flowing).
#[test]
fn a_node_stopped_past_its_lease_is_fenced_and_its_shards_move_by_resume() {
    stopped_node(false);
}

/// The same with events flowing all along: the session moves to the new owner's
/// connection while the frozen one is still open, and nothing sent on it is lost.
#[test]
fn a_node_stopped_past_its_lease_with_events_flowing_loses_nothing() {
    stopped_node(true);
}

fn stopped_node(events_while_frozen: bool) {
    let started = Instant::now();
    let shards = 9;
    let rate = 20.0;
    let runtime = runtime();
    let sim = sim(&runtime, shards, 3, rate, SimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let nodes: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|id| node(&sim, &redis.url(), dir.path(), id, &[]))
        .collect();
    settle(&sim, &redis, shards, Duration::from_secs(25));
    let frozen = &nodes[1];
    let moved = owned_by(&redis, shards, "b");
    assert!(
        !moved.is_empty(),
        "b runs nothing: {:?}",
        owners(&redis, shards)
    );
    let before = sim.stats();
    assert_eq!(before.identifies, u64::from(shards), "{}", summary(&before));
    let closes = |stats: &Stats| stats.client_close_codes.get(&4000).copied().unwrap_or(0);

    if !events_while_frozen {
        sim.set_events_per_sec(0.0);
    }
    frozen.signal("STOP");
    let stopped = Instant::now();
    wait_for(
        "the others to own and run b's shards",
        Duration::from_millis(3 * LEASE_MS),
        || {
            // b's sockets are still open: the simulator counts its shards ready until
            // they are resumed elsewhere.
            taken_over(&redis, shards, "b")
                && sim.stats().resumes_ok >= before.resumes_ok + moved.len() as u64
        },
    );
    let takeover = stopped.elapsed();
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS).saturating_sub(stopped.elapsed()));
    let frozen_closes = closes(&sim.stats());
    frozen.signal("CONT");
    wait_for("b to notice it was fenced", Duration::from_secs(5), || {
        count_in_log(frozen, "fenced") > 0
    });
    wait_for("b to close its old sockets", Duration::from_secs(5), || {
        closes(&sim.stats()) >= frozen_closes + moved.len() as u64
    });
    sim.set_events_per_sec(rate);
    wait_for("b to take a share again", Duration::from_secs(20), || {
        !owned_by(&redis, shards, "b").is_empty()
    });
    settle(&sim, &redis, shards, Duration::from_secs(20));
    assert_nothing_lost(&sim, dir.path());
    let after = sim.stats();
    eprintln!(
        "SIGSTOP of b ({} shards) for {} ms: taken over {} ms after the stop (lease {LEASE_MS} ms); {}",
        moved.len(),
        3 * LEASE_MS,
        takeover.as_millis(),
        summary(&after)
    );
    assert_eq!(
        after.identifies,
        u64::from(shards),
        "no IDENTIFY: {}",
        summary(&after)
    );
    assert!(all_ready(&sim, shards));
    assert_no_token_in_redis(&redis);
    assert_clean(&sim, &nodes.iter().collect::<Vec<_>>());
    eprintln!("took {} ms", started.elapsed().as_millis());
}

/// One node reaches Redis through a proxy that stops forwarding for three leases (a
/// partition: renewals time out, nothing is refused). The node fences itself before
/// its leases lapse, the others resume its shards, and after the heal it rejoins and
/// the cluster converges without an IDENTIFY.
#[test]
fn a_node_cut_off_from_redis_fences_itself_and_rejoins_after_the_heal() {
    let started = Instant::now();
    let shards = 8;
    let runtime = runtime();
    let sim = sim(&runtime, shards, 4, 20.0, SimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let proxy = Proxy::start(&runtime, redis.addr());
    let through_proxy = format!("redis://{}/0", proxy.addr());
    let nodes = [
        node(&sim, &redis.url(), dir.path(), "a", &[]),
        node(&sim, &redis.url(), dir.path(), "b", &[]),
        node(
            &sim,
            &redis.url(),
            dir.path(),
            "c",
            &[("SHARDKEEPER_CLUSTER__URL", &through_proxy)],
        ),
    ];
    settle(&sim, &redis, shards, Duration::from_secs(25));
    let cut_off = &nodes[2];
    let moved = owned_by(&redis, shards, "c");
    assert!(
        !moved.is_empty(),
        "c runs nothing: {:?}",
        owners(&redis, shards)
    );
    let before = sim.stats();
    let closes = before.client_close_codes.get(&4000).copied().unwrap_or(0);

    proxy.cut(Cut::Hang);
    let cut = Instant::now();
    wait_for(
        "c to fence itself",
        Duration::from_millis(LEASE_MS + 2000),
        || count_in_log(cut_off, "fenced") > 0,
    );
    let fenced = cut.elapsed();
    wait_for(
        "c's shards to close with 4000",
        Duration::from_secs(3),
        || {
            sim.stats()
                .client_close_codes
                .get(&4000)
                .copied()
                .unwrap_or(0)
                >= closes + moved.len() as u64
        },
    );
    wait_for(
        "the others to own and run c's shards",
        Duration::from_millis(3 * LEASE_MS),
        || taken_over(&redis, shards, "c") && all_ready(&sim, shards),
    );
    let takeover = cut.elapsed();
    let during = sim.stats();
    assert!(
        during.resumes_ok >= before.resumes_ok + moved.len() as u64,
        "c's shards moved by RESUME: {}",
        summary(&during)
    );
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS).saturating_sub(cut.elapsed()));
    proxy.heal();
    wait_for("c to take a share again", Duration::from_secs(20), || {
        !owned_by(&redis, shards, "c").is_empty()
    });
    settle(&sim, &redis, shards, Duration::from_secs(20));
    assert_nothing_lost(&sim, dir.path());
    let after = sim.stats();
    eprintln!(
        "Redis cut off from c ({} shards): fenced after {} ms, taken over after {} ms; {}",
        moved.len(),
        fenced.as_millis(),
        takeover.as_millis(),
        summary(&after)
    );
    assert!(
        fenced < Duration::from_millis(LEASE_MS),
        "c fenced itself within its lease ({fenced:?})"
    );
    assert_eq!(
        after.identifies,
        before.identifies,
        "no IDENTIFY: {}",
        summary(&after)
    );
    assert_no_token_in_redis(&redis);
    assert_clean(&sim, &nodes.iter().collect::<Vec<_>>());
    eprintln!("took {} ms", started.elapsed().as_millis());
}

/// One node loses the gateway (REST and WebSocket) for three leases while Redis is
/// fine: every node reaches the simulator through one proxy that rewrites the
/// simulator's address to its own (so RESUMEs go through it too) and drops only that
/// node's connections, holding its new ones until the heal. The node keeps its leases
/// (nobody else may run its shards), and after the heal its shards RESUME.
#[test]
fn a_node_cut_off_from_the_gateway_keeps_its_leases_and_resumes_after_the_heal() {
    let started = Instant::now();
    let shards = 8;
    let runtime = runtime();
    let sim = sim(&runtime, shards, 4, 20.0, SimConfig::default());
    let gateway = Proxy::rewriting(&runtime, sim.addr());
    let api = format!("http://{}/api/v10", gateway.addr());
    let env = [
        ("SHARDKEEPER_DISCORD__API_BASE", api.as_str()),
        // The proxy rewrites URLs inside frames: they must not be compressed.
        ("SHARDKEEPER_DISCORD__COMPRESSION", "none"),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let nodes: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|id| node(&sim, &redis.url(), dir.path(), id, &env))
        .collect();
    settle(&sim, &redis, shards, Duration::from_secs(25));
    // Every stored resume URL leads through the proxy: the cut is a whole partition.
    let sessions = redis.cli(&["HGETALL", &format!("{NAMESPACE}:sessions")]);
    assert!(
        sessions.contains(&gateway.addr().to_string())
            && !sessions.contains(&sim.addr().to_string()),
        "resume URLs bypass the proxy: {sessions}"
    );
    let cut_off = &nodes[2];
    let kept = owned_by(&redis, shards, "c");
    assert!(
        !kept.is_empty(),
        "c runs nothing: {:?}",
        owners(&redis, shards)
    );
    let leases = owners(&redis, shards);
    let before = sim.stats();

    gateway.cut_process(cut_off.child.id(), Cut::Drop);
    let cut = Instant::now();
    let others = shards as usize - kept.len();
    wait_for("c's shards to drop", Duration::from_secs(5), || {
        ready_shards(&sim.stats()) == others
    });
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS).saturating_sub(cut.elapsed()));
    let during = sim.stats();
    assert_eq!(
        owners(&redis, shards),
        leases,
        "c kept every lease while cut off from the gateway"
    );
    assert_eq!(ready_shards(&during), others, "nobody else runs c's shards");
    gateway.heal();
    let healed = Instant::now();
    wait_for("c's shards to come back", Duration::from_secs(15), || {
        all_ready(&sim, shards)
    });
    let back = healed.elapsed();
    settle(&sim, &redis, shards, Duration::from_secs(15));
    assert_nothing_lost(&sim, dir.path());
    let after = sim.stats();
    eprintln!(
        "gateway cut off from c ({} shards) for {} ms: every shard ready {} ms after the heal; {}",
        kept.len(),
        healed.duration_since(cut).as_millis(),
        back.as_millis(),
        summary(&after)
    );
    assert_eq!(owners(&redis, shards), leases, "the leases never moved");
    assert_eq!(count_in_log(cut_off, "fenced"), 0, "{}", cut_off.log());
    assert_eq!(
        after.identifies,
        before.identifies,
        "no IDENTIFY: {}",
        summary(&after)
    );
    assert!(
        after.resumes_ok >= before.resumes_ok + kept.len() as u64,
        "c's shards came back by RESUME: {}",
        summary(&after)
    );
    assert_no_token_in_redis(&redis);
    assert_clean(&sim, &nodes.iter().collect::<Vec<_>>());
    eprintln!("took {} ms", started.elapsed().as_millis());
}

/// A cluster after a Redis restart, for more assertions and more faults.
struct Restarted {
    nodes: Vec<Running>,
    redis: RedisServer,
    sim: SimHandle,
    /// Holds the nodes' files until the end of the test.
    _dir: tempfile::TempDir,
    before: Stats,
    after: Stats,
    _runtime: tokio::runtime::Runtime,
}

/// How Redis goes down.
#[derive(Debug, Clone, Copy)]
struct Outage {
    /// From the kill to the restart.
    down: Duration,
    /// The AOF is deleted: Redis comes back empty.
    wipe: bool,
    /// The shards receive no events from just before the kill on.
    idle: bool,
}

/// Three nodes settle, then Redis is killed with `kill -9`, stays down, and starts
/// again on the same port and directory; the rules held, no live shard identified,
/// every shard is ready and nothing was lost.
fn redis_restart(shards: u32, outage: Outage) -> Restarted {
    let started = Instant::now();
    let runtime = runtime();
    let sim = sim(&runtime, shards, 4, 20.0, SimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut redis = RedisServer::start(&dir.path().join("redis"));
    let nodes: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|id| node(&sim, &redis.url(), dir.path(), id, &[]))
        .collect();
    settle(&sim, &redis, shards, Duration::from_secs(25));
    if outage.idle {
        assert_nothing_lost(&sim, dir.path());
    }
    let before = sim.stats();
    let leases = owners(&redis, shards);

    redis.kill9();
    let killed = Instant::now();
    if outage.wipe {
        redis.wipe();
    }
    std::thread::sleep(outage.down.saturating_sub(killed.elapsed()));
    redis.restart();
    let down = killed.elapsed();
    wait_for(
        "every node to see the restart",
        Duration::from_secs(10),
        || nodes.iter().all(|n| count_in_log(n, "Redis restarted") > 0),
    );
    let seen = killed.elapsed();
    wait_for("every shard owned again", Duration::from_secs(15), || {
        owners(&redis, shards).iter().all(Option::is_some)
    });
    settle(&sim, &redis, shards, Duration::from_secs(20));
    let recovered = killed.elapsed();
    assert_nothing_lost(&sim, dir.path());
    let after = sim.stats();
    let fenced: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .zip(&nodes)
        .filter(|(_, n)| count_in_log(n, "fenced") > 0)
        .map(|(id, _)| id)
        .collect();
    eprintln!(
        "Redis down {} ms{}: every node saw the restart after {} ms, settled after {} ms; \
         owners {}; fenced: {fenced:?}; {}",
        down.as_millis(),
        if outage.wipe { " and empty" } else { "" },
        seen.as_millis(),
        recovered.as_millis(),
        if owners(&redis, shards) == leases {
            "re-asserted unchanged"
        } else {
            "changed"
        },
        summary(&after)
    );
    assert!(all_ready(&sim, shards), "{}", summary(&after));
    assert_eq!(
        after.identifies,
        before.identifies,
        "no IDENTIFY of a live shard: {}",
        summary(&after)
    );
    assert_no_token_in_redis(&redis);
    assert_clean(&sim, &nodes.iter().collect::<Vec<_>>());
    eprintln!("took {} ms", started.elapsed().as_millis());
    Restarted {
        nodes,
        redis,
        sim,
        _dir: dir,
        before,
        after,
        _runtime: runtime,
    }
}

/// Redis dies (`kill -9`) and is back with its AOF well within the lease: the nodes see
/// the new run and pause grants for the grace period, and no shard identifies. (The
/// leases normally survive in the AOF and no node fences; the run prints what happened.)
#[test]
fn redis_kill_9_shorter_than_the_lease_costs_no_identify() {
    redis_restart(
        8,
        Outage {
            down: Duration::from_millis(300),
            wipe: false,
            idle: false,
        },
    );
}

/// Redis stays down for three leases: every node fences its shards before its leases
/// lapse (Redis's expiry of them runs on in the AOF), and once Redis is back the shards
/// are claimed after the grace period and RESUMEd from the sessions the AOF kept.
#[test]
fn redis_kill_9_longer_than_the_lease_resumes_every_shard() {
    let restarted = redis_restart(
        8,
        Outage {
            down: Duration::from_millis(3 * LEASE_MS),
            wipe: false,
            idle: false,
        },
    );
    for node in &restarted.nodes {
        assert!(count_in_log(node, "fenced") > 0, "{}", node.log());
    }
    assert!(
        restarted.after.resumes_ok >= restarted.before.resumes_ok + 8,
        "every shard resumed: {}",
        summary(&restarted.after)
    );
}

/// Redis comes back empty (AOF deleted) at once: the data loss is noticed and the
/// budget is fetched again; no live shard identifies (the IDENTIFY count does not rise,
/// so no grant was made while the budget was unknown), no rule breaks, every shard is
/// ready afterwards and nothing is lost.
#[test]
fn redis_restart_that_lost_its_data_costs_no_identify() {
    let restarted = redis_restart(
        8,
        Outage {
            down: Duration::ZERO,
            wipe: true,
            idle: false,
        },
    );
    assert!(
        restarted
            .nodes
            .iter()
            .any(|n| count_in_log(n, "lost the cluster's data") > 0),
        "nobody noticed the data loss"
    );
    let budget = restarted
        .redis
        .cli(&["HGET", &format!("{NAMESPACE}:budget"), "remaining"]);
    assert!(
        budget.parse::<u32>().is_ok(),
        "the budget is known again: {budget:?}"
    );
}

/// After Redis came back empty, every node knows it lost the data and joins again: each
/// says so, each is in the namespace's node list, and each runs a share once the
/// cluster settles.
#[test]
fn after_redis_lost_its_data_every_node_rejoins() {
    let restarted = redis_restart(
        8,
        Outage {
            down: Duration::ZERO,
            wipe: true,
            idle: false,
        },
    );
    let registered = restarted
        .redis
        .cli(&["HKEYS", &format!("{NAMESPACE}:nodes")]);
    for (id, node) in ["a", "b", "c"].into_iter().zip(&restarted.nodes) {
        assert!(
            count_in_log(node, "lost the cluster's data") > 0,
            "{id} did not notice the data loss:\n{}",
            node.log()
        );
        assert!(
            registered.lines().any(|l| l == id),
            "{id} is not in the node list: {registered:?}"
        );
        assert!(
            !owned_by(&restarted.redis, 8, id).is_empty(),
            "{id} runs nothing: {:?}",
            owners(&restarted.redis, 8)
        );
    }
}

/// After Redis came back empty, the sessions of the live shards are stored again, even
/// of shards that received no event since: a node killed afterwards is failed over by
/// RESUME, not by IDENTIFY.
#[test]
fn after_redis_lost_its_data_a_failover_still_resumes() {
    let shards = 8;
    let mut restarted = redis_restart(
        shards,
        Outage {
            down: Duration::ZERO,
            wipe: true,
            idle: true,
        },
    );
    let sim = &restarted.sim;
    let redis = &restarted.redis;
    // The node running the most shards dies.
    let (victim, moved) = ["a", "b", "c"]
        .into_iter()
        .enumerate()
        .map(|(i, id)| (i, owned_by(redis, shards, id)))
        .max_by_key(|(_, owned)| owned.len())
        .expect("three nodes");
    let stored = redis.cli(&["HKEYS", &format!("{NAMESPACE}:sessions")]);
    let before = sim.stats();
    restarted.nodes[victim].signal("KILL");
    restarted.nodes[victim].wait(Duration::from_secs(5));
    wait_for(
        "the survivors to run every shard",
        Duration::from_secs(15),
        || taken_over(redis, shards, ["a", "b", "c"][victim]) && all_ready(sim, shards),
    );
    let after = sim.stats();
    eprintln!(
        "kill -9 after the data loss: shards {moved:?} moved; sessions stored {:?}; {}",
        stored.lines().collect::<Vec<_>>(),
        summary(&after)
    );
    assert_eq!(
        after.identifies,
        before.identifies,
        "the failover resumed: {}",
        summary(&after)
    );
    assert!(after.violations.is_empty(), "{:#?}", after.violations);
}

/// A node dies (`kill -9`) and its sessions expire (session_ttl 1 s) before the lease
/// (2 s) lets a survivor take them: each taken-over shard is refused its RESUME (op 9)
/// and identifies exactly once, within its bucket's window.
#[test]
fn a_session_expired_at_takeover_identifies_exactly_once() {
    let started = Instant::now();
    let shards = 8;
    let runtime = runtime();
    let sim = sim(
        &runtime,
        shards,
        4,
        0.0,
        SimConfig {
            session_ttl: Duration::from_secs(1),
            ..SimConfig::default()
        },
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let survivor = node(&sim, &redis.url(), dir.path(), "a", &[]);
    let mut victim = node(&sim, &redis.url(), dir.path(), "b", &[]);
    settle(&sim, &redis, shards, Duration::from_secs(25));
    let moved = owned_by(&redis, shards, "b");
    assert!(
        !moved.is_empty(),
        "b runs nothing: {:?}",
        owners(&redis, shards)
    );
    let before = sim.stats();

    victim.signal("KILL");
    victim.wait(Duration::from_secs(5));
    let killed = Instant::now();
    wait_for("a to own every shard", Duration::from_secs(10), || {
        owned_by(&redis, shards, "a").len() == shards as usize
    });
    wait_for("every shard ready", Duration::from_secs(15), || {
        all_ready(&sim, shards)
    });
    let recovered = killed.elapsed();
    // Nothing more may happen: wait a little for a stray second IDENTIFY.
    std::thread::sleep(Duration::from_millis(LEASE_MS));
    let after = sim.stats();
    eprintln!(
        "kill -9 of b ({} shards, sessions expired): every shard ready after {} ms; {}",
        moved.len(),
        recovered.as_millis(),
        summary(&after)
    );
    let n = moved.len() as u64;
    assert_eq!(
        after.resumes_failed,
        before.resumes_failed + n,
        "each taken-over shard got op 9: {}",
        summary(&after)
    );
    assert_eq!(
        after.identifies,
        before.identifies + n,
        "each taken-over shard identified exactly once: {}",
        summary(&after)
    );
    for shard in &moved {
        let stats = &after.shards[shard];
        let was = &before.shards[shard];
        assert_eq!(
            stats.identifies,
            was.identifies + 1,
            "shard {shard}: {stats:?}"
        );
        assert_eq!(stats.state, "ready", "shard {shard}");
    }
    assert!(all_ready(&sim, shards));
    assert_no_token_in_redis(&redis);
    assert_clean(&sim, &[&survivor, &victim]);
    eprintln!("took {} ms", started.elapsed().as_millis());
}
