//! Sessions survive restarts of the real binary: SIGTERM, `kill -9`, crash loops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use shardkeeper_sim::{Sim, SimConfig, SimHandle, ViolationKind};

use crate::support::{SIM_TOKEN, binary, missing, ready_shards, run_against, runtime, wait_for};

fn sim(runtime: &tokio::runtime::Runtime, config: SimConfig) -> SimHandle {
    runtime
        .block_on(Sim::start(SimConfig {
            token: SIM_TOKEN.into(),
            ..config
        }))
        .expect("simulator starts")
}

/// Every (shard, seq) line of the event file, and how many lines repeated one.
fn delivered(path: &Path) -> (BTreeMap<u32, BTreeSet<u64>>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut duplicates = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("torn or invalid line {line:?}: {err}"));
        let shard = u32::try_from(value["shard"].as_u64().expect("shard")).expect("small");
        if !seen
            .entry(shard)
            .or_default()
            .insert(value["seq"].as_u64().expect("seq"))
        {
            duplicates += 1;
        }
    }
    (seen, duplicates)
}

/// Every sequence the simulator sent on each shard's (single) session is in the file.
fn gaps(sim: &SimHandle, path: &Path) -> Vec<String> {
    missing(sim, &delivered(path).0)
}

#[test]
fn sigterm_then_restart_resumes_every_shard() {
    let runtime = runtime();
    let sim = sim(
        &runtime,
        SimConfig {
            shards: 8,
            max_concurrency: 4,
            identify_window: Duration::from_millis(200),
            events_per_sec: 20.0,
            ..SimConfig::default()
        },
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = run_against(&sim, dir.path(), 200, 1);
    wait_for("8 shards ready", Duration::from_secs(20), || {
        ready_shards(&sim.stats()) == 8
    });
    std::thread::sleep(Duration::from_millis(300));
    first.signal("TERM");
    assert_eq!(
        first.wait(Duration::from_secs(15)).code(),
        Some(0),
        "{}",
        first.log()
    );
    // The process wrote its close frames before it exited; the simulator reads them on
    // its own time.
    wait_for(
        "close 4000 from every connection",
        Duration::from_secs(5),
        || sim.stats().client_close_codes.get(&4000) == Some(&8),
    );
    assert_eq!(sim.stats().client_close_codes.get(&1000), None);

    let mut second = run_against(&sim, dir.path(), 200, 2);
    wait_for("8 resumes", Duration::from_secs(20), || {
        sim.stats().resumes_ok == 8 && ready_shards(&sim.stats()) == 8
    });
    assert_eq!(
        sim.stats().identifies,
        8,
        "no identify after a graceful restart"
    );
    sim.set_events_per_sec(0.0);
    wait_for("every event in the file", Duration::from_secs(10), || {
        gaps(&sim, &dir.path().join("events.ndjson")).is_empty()
    });
    second.signal("TERM");
    assert_eq!(second.wait(Duration::from_secs(15)).code(), Some(0));
    assert!(
        sim.stats().violations.is_empty(),
        "{:#?}",
        sim.stats().violations
    );
    for run in [&first, &second] {
        let log = run.log();
        assert!(!log.contains("panicked"), "{log}");
        assert!(
            !log.contains(SIM_TOKEN) && !log.contains(crate::support::ADMIN_TOKEN),
            "secrets in logs"
        );
    }
}

#[test]
fn kill_9_while_events_flow_loses_nothing() {
    let runtime = runtime();
    let sim = sim(
        &runtime,
        SimConfig {
            shards: 16,
            max_concurrency: 16,
            identify_window: Duration::from_millis(200),
            events_per_sec: 200.0,
            ..SimConfig::default()
        },
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let events = dir.path().join("events.ndjson");
    let first = run_against(&sim, dir.path(), 200, 1);
    wait_for("16 shards ready", Duration::from_secs(20), || {
        ready_shards(&sim.stats()) == 16
    });
    std::thread::sleep(Duration::from_millis(1500));
    first.signal("KILL");
    drop(first);

    let mut second = run_against(&sim, dir.path(), 200, 2);
    wait_for("16 resumes", Duration::from_secs(20), || {
        sim.stats().resumes_ok == 16 && ready_shards(&sim.stats()) == 16
    });
    std::thread::sleep(Duration::from_millis(500));
    sim.set_events_per_sec(0.0);
    wait_for("no gap in the event file", Duration::from_secs(15), || {
        gaps(&sim, &events).is_empty()
    });
    second.signal("TERM");
    assert_eq!(second.wait(Duration::from_secs(15)).code(), Some(0));
    let stats = sim.stats();
    assert_eq!(stats.identifies, 16, "kill -9 must not cost identifies");
    assert!(stats.violations.is_empty(), "{:#?}", stats.violations);
    let (seen, duplicates) = delivered(&events);
    let total: usize = seen.values().map(BTreeSet::len).sum();
    println!(
        "kill -9: {total} distinct events delivered, {duplicates} duplicates replayed after the crash"
    );
    assert!(total > 16 * 200, "events flowed: {total}");
}

#[test]
fn a_crash_loop_never_breaks_the_identify_window_or_budget() {
    let runtime = runtime();
    let window = Duration::from_secs(1);
    let sim = sim(
        &runtime,
        SimConfig {
            shards: 6,
            max_concurrency: 2,
            identify_window: window,
            session_start_remaining: 60,
            ..SimConfig::default()
        },
    );
    let dir = tempfile::tempdir().expect("temp dir");
    for run in 0..10u64 {
        let process = run_against(&sim, dir.path(), 1000, usize::try_from(run).expect("small"));
        std::thread::sleep(Duration::from_millis(700 + (run * 373) % 1500));
        process.signal("KILL");
    }
    // Ready shards of a killed run can linger in the simulator's view for a moment;
    // wait for six connections of the last run itself.
    let connections = sim.stats().connections;
    let mut last = run_against(&sim, dir.path(), 1000, 99);
    wait_for(
        "all ready after the crash loop",
        Duration::from_secs(30),
        || {
            let stats = sim.stats();
            stats.connections >= connections + 6 && ready_shards(&stats) == 6
        },
    );
    last.signal("TERM");
    assert_eq!(last.wait(Duration::from_secs(15)).code(), Some(0));
    let stats = sim.stats();
    assert_eq!(
        stats.violations_of(ViolationKind::IdentifyWindow),
        0,
        "{:#?}",
        stats.violations
    );
    assert_eq!(stats.violations_of(ViolationKind::BudgetExhausted), 0);
    assert!(
        stats.buckets.iter().all(|b| b.max_per_window <= 1),
        "{:?}",
        stats.buckets
    );
    println!(
        "crash loop: {} identifies, {} resumes over 11 runs",
        stats.identifies, stats.resumes_ok
    );
}

#[test]
fn an_unusable_store_path_is_a_clear_error() {
    let runtime = runtime();
    let sim = sim(&runtime, SimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("blocker"), "a file, not a directory").expect("written");
    let output = binary()
        .arg("run")
        .env("DISCORD_TOKEN", SIM_TOKEN)
        .env("SHARDKEEPER_ADMIN_TOKEN", "admin")
        .env("SHARDKEEPER_DISCORD__API_BASE", sim.api_base())
        .env(
            "SHARDKEEPER_STORE__PATH",
            dir.path().join("blocker/store.sled"),
        )
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open the session store") && stderr.contains("blocker"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
