//! One contract suite run against every `PermitSource`, in an actix system without
//! sockets and with a shrunk window.
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

/// Two buckets grant side by side; a bucket's second shard waits for the window.
async fn buckets_are_independent(factory: Factory) {
    let (source, _) = factory(2, 100, &[]);
    let first = granted(source.ask(0)).await;
    source.written(0, Instant::now());
    let other = granted(source.ask(1)).await;
    source.written(1, Instant::now());
    assert!(other - first < WINDOW, "bucket 1 did not wait for bucket 0");
    let mut second = source.ask(2);
    not_granted(&mut second, WINDOW / 2).await;
    granted(second).await;
}

/// A cancelled request is never granted; asking again replaces a request; an unused
/// grant frees its bucket without an IDENTIFY having been written.
async fn cancel_replace_and_unused(factory: Factory) {
    let (source, _) = factory(1, 100, &[]);
    granted(source.ask(0)).await;
    source.unused(0);
    let mut cancelled = source.ask(1);
    let waiting = source.ask(2);
    source.cancel(1);
    let at = granted(waiting).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut cancelled)
            .await
            .map_or(true, |r| r.is_err()),
        "a cancelled request is not granted"
    );
    source.written(2, at);
    let old = source.ask(3);
    let new = source.ask(3);
    granted(new).await;
    assert!(old.await.is_err(), "the replaced request closed");
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

/// No budget left: nothing is granted, and the status says why (fail closed).
async fn an_exhausted_budget_grants_nothing(factory: Factory) {
    let (source, _) = factory(1, 0, &[]);
    let mut rx = source.ask(0);
    not_granted(&mut rx, WINDOW * 3).await;
    let status = source.status().expect("status");
    assert_eq!((status.remaining, status.queued), (0, 1));
    source.halt();
}

#[actix::test]
async fn permit_source_contract() {
    for (name, factory) in SOURCES {
        eprintln!("permit source: {name}");
        lower_ids_first_one_per_bucket_per_window(factory).await;
        buckets_are_independent(factory).await;
        cancel_replace_and_unused(factory).await;
        a_grant_given_up_unseen_frees_its_bucket(factory).await;
        an_exhausted_budget_grants_nothing(factory).await;
    }
}
