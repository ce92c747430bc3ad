//! The identify schedule: buckets, windows, ordering, budget and restore.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shardkeeper_session::{IdentifySchedule, ScheduleConfig};

const DAY: Duration = Duration::from_secs(86_400);

fn config(k: u32, window_ms: u64) -> ScheduleConfig {
    ScheduleConfig {
        max_concurrency: NonZeroU32::new(k).expect("non-zero"),
        window: Duration::from_millis(window_ms),
        margin: Duration::from_millis(window_ms / 100),
    }
}

/// Runs the schedule by its own timer until every queued shard is granted, each
/// IDENTIFY written the moment it is granted.
fn drain(schedule: &mut IdentifySchedule, mut now: Instant) -> Vec<(Instant, u32)> {
    let mut grants = Vec::new();
    while let Some(at) = schedule.poll_timeout() {
        now = now.max(at);
        while let Some(shard) = schedule.poll_grant(now) {
            assert!(schedule.written(shard, now));
            grants.push((now, shard));
        }
    }
    grants
}

#[test]
fn n_shards_in_k_buckets_take_ceil_n_over_k_windows() {
    for (n, k) in [(64u32, 16u32), (32, 8), (10, 3), (5, 8), (1, 1), (100, 1)] {
        let start = Instant::now();
        let config = config(k, 5_000);
        let mut schedule = IdentifySchedule::new(config, 1000, 1000, DAY, start);
        for shard in 0..n {
            schedule.request(shard);
        }
        let grants = drain(&mut schedule, start);
        assert_eq!(grants.len(), n as usize);
        let windows = n.div_ceil(k);
        let last = grants.iter().map(|&(t, _)| t).max().expect("granted");
        assert_eq!(last - start, config.period() * (windows - 1), "n={n} k={k}");
    }
}

#[test]
fn buckets_start_in_order_with_lower_ids_first() {
    let start = Instant::now();
    let mut schedule = IdentifySchedule::new(config(16, 5_000), 1000, 1000, DAY, start);
    for shard in (0..32).rev() {
        schedule.request(shard);
    }
    let grants = drain(&mut schedule, start);
    let first: Vec<u32> = grants
        .iter()
        .filter(|&&(t, _)| t == start)
        .map(|&(_, s)| s)
        .collect();
    assert_eq!(first, (0..16).collect::<Vec<_>>());
    assert!(grants[16..].iter().all(|&(t, s)| t > start && s >= 16));
}

#[test]
fn a_restart_waits_only_behind_its_own_bucket() {
    let start = Instant::now();
    let mut schedule = IdentifySchedule::new(config(4, 5_000), 1000, 1000, DAY, start);
    for shard in 0..40 {
        schedule.request(shard);
    }
    assert_eq!(schedule.poll_grant(start), Some(0));
    assert!(schedule.written(0, start));
    // Shard 0 is ready, then needs a new session while 39 others still queue.
    schedule.request(0);
    let grants = drain(&mut schedule, start);
    let zero = grants
        .iter()
        .find(|&&(_, s)| s == 0)
        .expect("granted again");
    let bucket_zero: Vec<u32> = grants
        .iter()
        .filter(|&&(_, s)| s % 4 == 0)
        .map(|&(_, s)| s)
        .collect();
    assert_eq!(
        bucket_zero.last(),
        Some(&0),
        "FIFO behind the start-up batch of its bucket"
    );
    assert!(zero.0 - start <= config(4, 5_000).period() * 10);
    let other_buckets_done = grants
        .iter()
        .filter(|&&(_, s)| s % 4 != 0)
        .map(|&(t, _)| t)
        .max();
    assert!(other_buckets_done <= Some(zero.0));
}

#[test]
fn cancelled_requests_are_not_granted() {
    let start = Instant::now();
    let mut schedule = IdentifySchedule::new(config(1, 5_000), 1000, 1000, DAY, start);
    schedule.request(0);
    schedule.request(1);
    assert!(schedule.cancel(0));
    assert!(!schedule.cancel(0));
    assert_eq!(schedule.poll_grant(start), Some(1));
    assert_eq!(schedule.queued(), 0);
}

#[test]
fn exhausted_budget_waits_for_the_reset() {
    let start = Instant::now();
    let reset_after = Duration::from_secs(60);
    let mut schedule = IdentifySchedule::new(config(4, 5_000), 1000, 2, reset_after, start);
    for shard in 0..4 {
        schedule.request(shard);
    }
    assert_eq!(schedule.poll_grant(start), Some(0));
    assert_eq!(schedule.poll_grant(start), Some(1));
    assert_eq!(schedule.poll_grant(start), None);
    assert_eq!(schedule.remaining(), 0);
    assert_eq!(schedule.poll_timeout(), Some(start + reset_after));
    assert_eq!(
        schedule.poll_grant(start + reset_after.saturating_sub(Duration::from_millis(1))),
        None
    );
    assert_eq!(schedule.poll_grant(start + reset_after), Some(2));
    assert_eq!(schedule.remaining(), 999);
}

#[test]
fn restored_snapshot_keeps_the_window_and_the_budget() {
    let start = Instant::now();
    let wall = 1_800_000_000_000u64;
    let config = config(2, 5_000);
    let mut before = IdentifySchedule::new(config, 1000, 10, DAY, start);
    before.request(0);
    before.request(1);
    assert_eq!(before.poll_grant(start), Some(0));
    assert_eq!(before.poll_grant(start), Some(1));
    let snapshot = before.snapshot(start, wall);
    assert_eq!(snapshot.remaining, 8);

    // The process dies and restarts 1.2 s later.
    let later = start + Duration::from_millis(1_200);
    let mut after = IdentifySchedule::restore(config, &snapshot, later, wall + 1_200);
    assert_eq!(after.remaining(), 8);
    after.request(0);
    after.request(1);
    assert_eq!(after.poll_grant(later), None, "the window is still held");
    let reopen = start + config.period();
    assert_eq!(after.poll_timeout(), Some(reopen));
    assert_eq!(
        after.poll_grant(start + config.period().saturating_sub(Duration::from_millis(1))),
        None
    );
    assert_eq!(after.poll_grant(reopen), Some(0));
    assert_eq!(after.poll_grant(reopen), Some(1));

    let json = serde_json::to_string(&snapshot).expect("serializes");
    assert_eq!(
        serde_json::from_str::<shardkeeper_session::ScheduleSnapshot>(&json).expect("parses"),
        snapshot
    );
}

#[test]
fn restore_with_a_different_bucket_count_holds_every_bucket() {
    let start = Instant::now();
    let wall = 1_800_000_000_000u64;
    let mut before = IdentifySchedule::new(config(2, 5_000), 1000, 10, DAY, start);
    before.request(1);
    assert_eq!(before.poll_grant(start), Some(1));
    let snapshot = before.snapshot(start, wall);
    let mut after = IdentifySchedule::restore(config(4, 5_000), &snapshot, start, wall);
    for shard in 0..4 {
        after.request(shard);
    }
    assert_eq!(after.poll_grant(start), None);
}

#[test]
fn a_bucket_waits_for_the_write_and_counts_its_window_from_it() {
    let start = Instant::now();
    let config = config(2, 5_000);
    let mut schedule = IdentifySchedule::new(config, 1000, 1000, DAY, start);
    for shard in [0, 2, 4] {
        schedule.request(shard);
    }
    assert_eq!(schedule.poll_grant(start), Some(0));
    let paced = start + config.period();
    assert_eq!(
        schedule.poll_grant(paced),
        None,
        "shard 0 has not written yet"
    );
    // The host was busy: the IDENTIFY left 1.5 s after the grant.
    let write = start + Duration::from_millis(1_500);
    assert!(schedule.written(0, write));
    assert!(!schedule.written(0, write), "reported once");
    assert_eq!(schedule.poll_timeout(), Some(write + config.period()));
    assert_eq!(schedule.poll_grant(paced), None);
    assert_eq!(schedule.poll_grant(write + config.period()), Some(2));
    let snapshot = schedule.snapshot(write + config.period(), 1_000_000);
    assert_eq!(snapshot.last_grants_ms[0], Some(1_000_000));
}

/// One bucket, shards 0 and 1 queued, shard 0 granted at `start`.
fn one_bucket_granted_to_zero(start: Instant) -> (ScheduleConfig, IdentifySchedule) {
    let config = config(1, 5_000);
    let mut schedule = IdentifySchedule::new(config, 1000, 1000, DAY, start);
    schedule.request(0);
    schedule.request(1);
    assert_eq!(schedule.poll_grant(start), Some(0));
    (config, schedule)
}

#[test]
fn an_unused_grant_frees_the_bucket_after_the_grants_window() {
    let start = Instant::now();
    let (config, mut schedule) = one_bucket_granted_to_zero(start);
    assert!(!schedule.unused(1), "shard 1 holds no grant");
    assert_eq!(schedule.remaining(), 999);
    assert!(schedule.unused(0));
    assert_eq!(
        schedule.remaining(),
        1000,
        "the unused session start went back"
    );
    assert!(!schedule.unused(0), "given back once");
    assert_eq!(schedule.remaining(), 1000);
    assert_eq!(schedule.poll_timeout(), Some(start + config.period()));
    assert_eq!(schedule.poll_grant(start + config.period()), Some(1));
}

#[test]
fn an_unused_grant_from_before_fresh_figures_stays_spent() {
    let start = Instant::now();
    let (_, mut schedule) = one_bucket_granted_to_zero(start);
    // Discord's figures, fetched after the grant, may already count it.
    schedule.set_budget(1000, 990, DAY, start + Duration::from_millis(10));
    assert!(schedule.unused(0));
    assert_eq!(schedule.remaining(), 990);
}

#[test]
fn a_lost_write_report_holds_the_bucket_for_two_periods_only() {
    let start = Instant::now();
    let (config, mut schedule) = one_bucket_granted_to_zero(start);
    let give_up = start + config.period() * 2;
    let just_before = start + (config.period() * 2).saturating_sub(Duration::from_millis(1));
    assert_eq!(schedule.poll_timeout(), Some(give_up));
    assert_eq!(schedule.poll_grant(just_before), None);
    assert_eq!(schedule.poll_grant(give_up), Some(1));
    assert!(!schedule.written(0, give_up), "the late report is stale");
}

proptest! {
    #[test]
    fn identifies_are_written_a_window_apart_however_late_the_writes(
        k in 1u32..5,
        shards in prop::collection::vec((0u32..20, 0u64..4_000, 0u8..10), 1..60),
    ) {
        let config = config(k, 1_000);
        let start = Instant::now();
        let mut schedule = IdentifySchedule::new(config, 1000, 1000, DAY, start);
        // Every request is granted in time; its IDENTIFY is written `delay` ms later
        // (below the two periods after which the bucket stops waiting), or never.
        let mut delays: HashMap<u32, (u64, bool)> = HashMap::new();
        for &(shard, delay, fate) in &shards {
            schedule.request(shard);
            delays.insert(shard, (delay.min(1_900), fate == 0));
        }
        let mut pending: Vec<(Instant, u32, bool)> = Vec::new();
        let mut written: HashMap<u32, Instant> = HashMap::new();
        let mut now = start;
        loop {
            while let Some(shard) = schedule.poll_grant(now) {
                let (delay, lost) = delays[&shard];
                pending.push((now + Duration::from_millis(delay), shard, lost));
            }
            pending.sort();
            let next_report = pending.first().map(|p| p.0);
            let Some(next) = [next_report, schedule.poll_timeout()].into_iter().flatten().min() else {
                break;
            };
            now = now.max(next);
            while let Some(&(at, shard, lost)) = pending.first() {
                if at > now { break; }
                pending.remove(0);
                if lost {
                    schedule.unused(shard);
                    continue;
                }
                prop_assert!(schedule.written(shard, at));
                let bucket = shard % k;
                if let Some(prev) = written.insert(bucket, at) {
                    prop_assert!(at - prev >= config.window, "bucket {bucket}: writes {:?} apart", at - prev);
                }
            }
        }
        prop_assert_eq!(schedule.queued(), 0);
    }

    #[test]
    fn never_two_grants_in_one_bucket_inside_a_window(
        k in 1u32..8,
        events in prop::collection::vec((0u32..40, 0u64..3_000, any::<bool>()), 1..200),
    ) {
        let config = config(k, 1_000);
        let start = Instant::now();
        let mut now = start;
        let mut schedule = IdentifySchedule::new(config, 1000, 1000, DAY, start);
        let mut last: HashMap<u32, Instant> = HashMap::new();
        for (shard, wait, cancel) in events {
            now += Duration::from_millis(wait);
            if cancel { schedule.cancel(shard); } else { schedule.request(shard); }
            while let Some(granted) = schedule.poll_grant(now) {
                let bucket = granted % k;
                if let Some(prev) = last.insert(bucket, now) {
                    prop_assert!(now - prev >= config.window, "bucket {bucket} granted twice within a window");
                }
            }
        }
    }
}
