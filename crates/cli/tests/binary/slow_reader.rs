//! A slow stdout reader slows the shards down without costing a heartbeat or an event.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardkeeper_sim::{Sim, SimConfig, ViolationKind};

use crate::support::{ADMIN_TOKEN, SIM_TOKEN, binary, ready_shards, wait_for};

#[test]
fn a_reader_that_reads_in_bursts_loses_nothing_and_misses_no_heartbeat() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sim = runtime
        .block_on(Sim::start(SimConfig {
            token: SIM_TOKEN.into(),
            shards: 8,
            max_concurrency: 8,
            identify_window: Duration::from_millis(200),
            heartbeat_interval: Duration::from_secs(5),
            events_per_sec: 600.0,
            ..SimConfig::default()
        }))
        .expect("simulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command: Command = binary();
    command
        .arg("run")
        .env("DISCORD_TOKEN", SIM_TOKEN)
        .env("SHARDKEEPER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SHARDKEEPER_DISCORD__API_BASE", sim.api_base())
        .env("SHARDKEEPER_STORE__PATH", dir.path().join("store.sled"))
        .env("SHARDKEEPER_ADMIN__BIND", "127.0.0.1:0")
        .env("SHARDKEEPER_IDENTIFY__WINDOW_MS", "200")
        .env("SHARDKEEPER_EVENTS__SINKS", r#"["stdout"]"#)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("run.log")).expect("log file"));
    let mut child = command.spawn().expect("binary starts");
    let mut stdout = child.stdout.take().expect("stdout");
    wait_for("8 shards ready", Duration::from_secs(20), || {
        ready_shards(&sim.stats()) == 8
    });

    // Read for a moment, then stall for longer than the sink's queue lasts, four times.
    let mut text = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..4 {
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            let n = stdout.read(&mut buf).expect("read");
            text.extend_from_slice(&buf[..n]);
        }
        std::thread::sleep(Duration::from_millis(2500));
    }
    sim.set_events_per_sec(0.0);
    let expected: u64 = {
        std::thread::sleep(Duration::from_millis(200));
        sim.stats().sessions.iter().map(|s| s.last_seq).sum()
    };
    let seen = read_until(&mut stdout, text, expected);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    // Keep draining so the shutdown is not stuck on a full pipe.
    std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        while stdout.read(&mut sink).is_ok_and(|n| n > 0) {}
    });
    let _ = child.wait();
    let stats = sim.stats();
    assert_eq!(
        stats.violations_of(ViolationKind::MissedHeartbeat),
        0,
        "{:#?}",
        stats.violations
    );
    assert!(stats.violations.is_empty(), "{:#?}", stats.violations);
    for session in &stats.sessions {
        let got = seen.get(&u64::from(session.shard)).map_or(0, BTreeSet::len);
        assert_eq!(
            got as u64, session.last_seq,
            "shard {} lost events",
            session.shard
        );
    }
    assert_eq!(stats.identifies, 8, "no session was lost to a stall");
    println!(
        "slow reader: {expected} events over {} shards, {} resumes",
        stats.sessions.len(),
        stats.resumes_ok
    );
}

/// Keeps reading `stdout` until `expected` distinct (shard, seq) lines arrived.
fn read_until(
    stdout: &mut impl Read,
    mut text: Vec<u8>,
    expected: u64,
) -> BTreeMap<u64, BTreeSet<u64>> {
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut parsed = 0;
    loop {
        // Parse only the complete lines not parsed yet.
        if let Some(end) = text[parsed..].iter().rposition(|b| *b == b'\n') {
            for line in text[parsed..parsed + end]
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let value: serde_json::Value =
                    serde_json::from_slice(line).expect("whole event lines");
                seen.entry(value["shard"].as_u64().expect("shard"))
                    .or_default()
                    .insert(value["seq"].as_u64().expect("seq"));
            }
            parsed += end + 1;
        }
        let delivered: u64 = seen.values().map(|s| s.len() as u64).sum();
        if delivered >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of {expected} events reached stdout"
        );
        let n = stdout.read(&mut buf).expect("read");
        text.extend_from_slice(&buf[..n]);
    }
    seen
}
