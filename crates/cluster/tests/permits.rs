//! The permit contract (`shardkeeper_cluster::contract::permits`) against the local
//! coordinator, and what only it does, in an actix system without sockets and with a
//! shrunk window.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]
#![allow(
    clippy::disallowed_methods,
    reason = "tests time the cluster from outside, on the real clock"
)]

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::select_all;
use shardkeeper_cluster::contract;
use shardkeeper_cluster::{LocalPermits, MemoryStore, PermitSource, RestClient, ScheduleStore};
use shardkeeper_protocol::Token;
use shardkeeper_session::{IdentifySchedule, ScheduleConfig};
use tokio::sync::oneshot;

const WINDOW: Duration = Duration::from_millis(150);
const MARGIN: Duration = Duration::from_millis(20);
/// Longer than any grant should take once its bucket is free.
const PATIENCE: Duration = Duration::from_secs(3);

/// A permit source for `buckets` buckets with `remaining` session starts, expecting
/// `expected` at start-up; returns it with the store its grants are written to.
type Factory = fn(u32, u32, &[u32]) -> (Arc<dyn PermitSource>, Arc<MemoryStore>);

fn local(
    buckets: u32,
    remaining: u32,
    expected: &[u32],
) -> (Arc<dyn PermitSource>, Arc<MemoryStore>) {
    let config = ScheduleConfig {
        max_concurrency: NonZeroU32::new(buckets).expect("buckets"),
        window: WINDOW,
        margin: MARGIN,
    };
    let schedule = IdentifySchedule::new(
        config,
        1000,
        remaining,
        Duration::from_secs(3600),
        Instant::now(),
    );
    let store = Arc::new(MemoryStore::default());
    // Nothing listens there: a budget refresh fails, as it should when Discord is away.
    let rest = RestClient::new(
        "http://127.0.0.1:9",
        Token::new("t"),
        shardkeeper_cluster::client_config(None).expect("tls"),
    )
    .expect("client")
    .with_retries(1, Duration::from_millis(10));
    let expected: HashSet<u32> = expected.iter().copied().collect();
    let source = LocalPermits::start(
        schedule,
        expected,
        Arc::clone(&store) as Arc<dyn ScheduleStore>,
        rest,
    );
    (Arc::new(source), store)
}

const SOURCES: [(&str, Factory); 1] = [("local", local)];

async fn granted(rx: oneshot::Receiver<shardkeeper_cluster::Grant>) -> Instant {
    tokio::time::timeout(PATIENCE, rx)
        .await
        .expect("granted in time")
        .expect("the source kept the request");
    Instant::now()
}

async fn not_granted(rx: &mut oneshot::Receiver<shardkeeper_cluster::Grant>, within: Duration) {
    assert!(
        tokio::time::timeout(within, rx).await.is_err(),
        "granted although it must wait"
    );
}

/// Start-up: everyone expected asks in any order; lower ids go first, one per bucket
/// per window, counted from the moment each IDENTIFY was written.
async fn lower_ids_first_one_per_bucket_per_window(factory: Factory) {
    let (source, store) = factory(1, 100, &[0, 1, 2]);
    let mut pending: Vec<_> = [2, 0, 1]
        .into_iter()
        .map(|id| {
            let rx = source.ask(id);
            Box::pin(async move { rx.await.map(|_| id) })
        })
        .collect();
    let mut order = Vec::new();
    while !pending.is_empty() {
        let (result, _, rest) = tokio::time::timeout(PATIENCE, select_all(pending))
            .await
            .expect("granted in time");
        let id = result.expect("the source kept the request");
        source.written(id, Instant::now());
        order.push((id, Instant::now()));
        pending = rest;
    }
    let ids: Vec<u32> = order.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        [0, 1, 2],
        "lower ids first, whatever order they asked in"
    );
    for pair in order.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= WINDOW,
            "bucket granted {gap:?} after the last write, window {WINDOW:?}"
        );
    }
    let status = source.status().expect("status");
    assert_eq!(
        (status.granted, status.remaining, status.queued),
        (3, 97, 0)
    );
    assert!(
        store.load_schedule().expect("load").is_some(),
        "grants are written to the store"
    );
}

/// A shard that gives its request up after the grant was sent but before it saw it
/// wrote no IDENTIFY: the bucket opens again a window after that grant, not after the
/// much longer wait for a lost report.
async fn a_grant_given_up_unseen_frees_its_bucket(factory: Factory) {
    let (source, _) = factory(1, 100, &[]);
    let unseen = source.ask(0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let granted_at = Instant::now();
    source.cancel(0);
    drop(unseen);
    let next = granted(source.ask(1)).await;
    let waited = next - granted_at;
    assert!(
        waited < WINDOW + MARGIN + Duration::from_millis(60),
        "the bucket waited {waited:?} for a report that could not come"
    );
}

#[actix::test]
async fn local_permits_keep_the_permit_contract() {
    contract::permits(
        |buckets, remaining| async move {
            let (source, store) = local(buckets, remaining, &[]);
            (source, Box::new(store) as Box<dyn std::any::Any + Send>)
        },
        WINDOW,
    )
    .await;
}

/// What the local coordinator does beyond the contract: the start-up gather order,
/// grants written to its store, an unseen grant freeing its bucket at once, and the
/// status of a spent budget.
#[actix::test]
async fn local_permits_gather_store_and_free_unseen_grants() {
    for (name, factory) in SOURCES {
        eprintln!("permit source: {name}");
        lower_ids_first_one_per_bucket_per_window(factory).await;
        a_grant_given_up_unseen_frees_its_bucket(factory).await;
        an_exhausted_budget_says_so(factory).await;
    }
}

/// No budget left: the status says why nothing is granted.
async fn an_exhausted_budget_says_so(factory: Factory) {
    let (source, _) = factory(1, 0, &[]);
    let mut rx = source.ask(0);
    not_granted(&mut rx, WINDOW * 3).await;
    let status = source.status().expect("status");
    assert_eq!((status.remaining, status.queued), (0, 1));
    source.halt();
}

/// Once the known reset passes, the local coordinator fetches Discord's new figures by
/// itself: a budget that never ran out does not stay at yesterday's count.
#[actix::test]
async fn past_its_reset_the_local_budget_is_fetched_again() {
    let sim = shardkeeper_sim::Sim::start(shardkeeper_sim::SimConfig {
        token: "permits-token".into(),
        session_start_total: 1000,
        session_start_remaining: 990,
        ..shardkeeper_sim::SimConfig::default()
    })
    .await
    .expect("sim");
    let config = ScheduleConfig {
        max_concurrency: NonZeroU32::MIN,
        window: WINDOW,
        margin: MARGIN,
    };
    let schedule =
        IdentifySchedule::new(config, 1000, 5, Duration::from_millis(300), Instant::now());
    let rest = RestClient::new(
        &sim.api_base(),
        Token::new("permits-token"),
        shardkeeper_cluster::client_config(None).expect("tls"),
    )
    .expect("client");
    let source = LocalPermits::start(
        schedule,
        HashSet::new(),
        Arc::new(MemoryStore::default()) as Arc<dyn ScheduleStore>,
        rest,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while source.status().map(|s| s.remaining) != Some(990) {
        assert!(
            Instant::now() < deadline,
            "still {:?} after the reset",
            source.status().map(|s| s.remaining)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(source.status().is_some_and(|s| s.reset_in_ms > 60_000));
    source.halt();
    sim.shutdown().await;
}
