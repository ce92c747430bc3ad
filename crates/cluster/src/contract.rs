//! Contract suites (feature `contract`): one per seam, run by every implementation —
//! the cluster's own tests run them against the local backends, `shardkeeper-redis`'s
//! against cluster mode's. Each panics at the first broken rule.
#![allow(
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "a contract suite fails the test that runs it loudly"
)]

use std::cell::Cell;
use std::sync::Arc;

use shardkeeper_session::{ResumeInfo, ScheduleSnapshot};

use crate::store::{Change, ScheduleStore, SessionBatch, SessionLedger, SessionStore};

/// A session to store in a test: `session` at `seq`, with a fixed resume URL.
#[must_use]
pub fn info(session: &str, seq: u64) -> ResumeInfo {
    ResumeInfo {
        session_id: session.into(),
        resume_url: "wss://resume.example/".into(),
        seq,
    }
}

/// Flushes `ledger` with no sink to wait for; panics if the write fails.
pub fn flush(ledger: &SessionLedger) {
    ledger.flush(&mut || {}).expect("flush");
}

/// The session store contract, through the one flush path (`SessionLedger`): changes
/// wait for a flush, the barrier runs before the write, the newest change of a shard
/// wins, forgetting deletes, and a batch writes every change. Uses shards 3, 4 and 9 of
/// a bot of 16 shards on a backend that holds no session yet.
pub fn session_store(backend: &Arc<dyn SessionStore>) {
    let ledger = SessionLedger::new(Arc::clone(backend));
    let store = backend.as_ref();
    assert!(store.load_sessions().expect("load").is_empty());

    ledger.save(3, 16, &info("a", 10));
    ledger.save(3, 16, &info("a", 12));
    assert!(
        store.load_sessions().expect("load").is_empty(),
        "buffered until flush"
    );
    let barrier_ran = Cell::new(false);
    ledger
        .flush(&mut || {
            barrier_ran.set(true);
            assert!(
                store.load_sessions().expect("load").is_empty(),
                "the barrier runs before the write"
            );
        })
        .expect("flush");
    assert!(barrier_ran.get());
    let sessions = store.load_sessions().expect("load");
    let stored = &sessions[&3];
    assert_eq!(
        (stored.session_id.as_str(), stored.seq, stored.total),
        ("a", 12, 16)
    );
    assert_eq!(stored.resume_info(), info("a", 12));
    assert!(stored.updated > 1_600_000_000_000);

    ledger.save(3, 16, &info("b", 1));
    ledger.save(4, 16, &info("c", 7));
    flush(&ledger);
    let sessions = store.load_sessions().expect("load");
    assert_eq!(
        (sessions[&3].session_id.as_str(), sessions[&3].seq),
        ("b", 1)
    );
    assert_eq!(sessions.len(), 2);

    ledger.forget(3);
    ledger.save(4, 16, &info("c", 9));
    flush(&ledger);
    let sessions = store.load_sessions().expect("load");
    assert!(!sessions.contains_key(&3));
    assert_eq!(sessions[&4].seq, 9);

    ledger.forget(4);
    ledger.save(4, 16, &info("d", 2));
    flush(&ledger);
    assert_eq!(
        store.load_sessions().expect("load")[&4].session_id,
        "d",
        "the newest change wins"
    );

    let mut batch = SessionBatch::new();
    batch.insert(
        9,
        Change::Save(store.load_sessions().expect("load")[&4].clone()),
    );
    batch.insert(4, Change::Forget);
    store.write_sessions(&batch).expect("a batch");
    let sessions = store.load_sessions().expect("load");
    assert!(!sessions.contains_key(&4), "a batch writes every change");
    assert_eq!(sessions[&9].session_id, "d");
    batch.clear();
    batch.insert(4, Change::Save(sessions[&9].clone()));
    batch.insert(9, Change::Forget);
    store.write_sessions(&batch).expect("a batch");
}

/// The schedule store contract: a saved snapshot reads back as it was.
pub fn schedule_store(store: &dyn ScheduleStore) {
    assert!(store.load_schedule().expect("load").is_none());
    let snapshot = ScheduleSnapshot {
        last_grants_ms: vec![Some(1_700_000_000_000), None],
        total: 1000,
        remaining: 990,
        reset_at_ms: 1_700_000_100_000,
    };
    store.save_schedule(&snapshot).expect("save");
    assert_eq!(store.load_schedule().expect("load"), Some(snapshot));
}

/// The placement contract. `change` makes the placement give this process another set
/// (a static placement: assign one; cluster mode: another node joins). The placement
/// starts with a non-empty set and nothing else moving.
pub async fn placement<F: std::future::Future<Output = ()>>(
    placement: &dyn crate::Placement,
    change: impl FnOnce() -> F,
) {
    use std::time::Duration;
    let mut watcher = placement.watch();
    let before = watcher.borrow_and_update().clone();
    assert!(!before.is_empty(), "the set to run now");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), watcher.changed())
            .await
            .is_err(),
        "no change is announced while nothing changes"
    );
    change().await;
    tokio::time::timeout(Duration::from_secs(10), watcher.changed())
        .await
        .expect("a change is announced")
        .expect("the placement is alive");
    let after = watcher.borrow_and_update().clone();
    assert_ne!(after, before, "the announced set is the new one");
    assert_eq!(
        *placement.watch().borrow(),
        *watcher.borrow(),
        "a late watcher sees the current set"
    );
    let outside = watcher.borrow().last().map_or(0, |last| last + 1);
    placement.released(outside);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !placement.watch().borrow().contains(&outside),
        "releasing a shard the process does not run gives it nothing"
    );
}

/// Waits until the source's budget reads `remaining`.
async fn budget_reads(
    source: &dyn crate::PermitSource,
    remaining: u32,
    patience: std::time::Duration,
    what: &str,
) {
    let deadline = crate::clock::now() + patience;
    loop {
        let read = source.status().map(|s| s.remaining);
        if read == Some(remaining) {
            return;
        }
        assert!(
            crate::clock::now() < deadline,
            "{what}: the budget reads {read:?}, not {remaining}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A permit source made for the permit contract, with what keeps it alive.
pub type PermitSubject = (Arc<dyn crate::PermitSource>, Box<dyn std::any::Any + Send>);

/// The permit source contract. `make(buckets, remaining)` builds a source for shards
/// 0..8 in `buckets` buckets with `remaining` session starts and a window of `window`:
/// one grant per bucket per window counted from the written IDENTIFY, buckets side by
/// side, cancelled requests never granted, a repeated ask replacing the earlier one,
/// an unused grant given back to the budget and a written one not, and no grant at all
/// once the budget is spent (fail closed).
pub async fn permits<F, Fut>(make: F, window: std::time::Duration)
where
    F: Fn(u32, u32) -> Fut,
    Fut: std::future::Future<Output = PermitSubject>,
{
    use std::time::Duration;
    // Longer than any grant should take once its bucket is free (a source may keep
    // the bucket closed for a validity period after an unused grant).
    let patience = window + Duration::from_secs(5);
    let granted = |rx: tokio::sync::oneshot::Receiver<crate::Grant>| async move {
        tokio::time::timeout(patience, rx)
            .await
            .expect("granted in time")
            .expect("the source kept the request");
        crate::clock::now()
    };

    let (source, _keep) = make(1, 100).await;
    let mut last = None;
    for shard in [0, 1, 2] {
        let at = granted(source.ask(shard)).await;
        source.written(shard, at);
        if let Some(previous) = last {
            let gap: Duration = at - previous;
            assert!(gap >= window, "one bucket granted twice {gap:?} apart");
        }
        last = Some(at);
    }
    let old = source.ask(3);
    let new = source.ask(3);
    let at = granted(new).await;
    source.written(3, at);
    assert!(old.await.is_err(), "the replaced request closed");
    let mut cancelled = source.ask(4);
    let waiting = source.ask(5);
    source.cancel(4);
    let at = granted(waiting).await;
    source.written(5, at);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut cancelled)
            .await
            .map_or(true, |r| r.is_err()),
        "a cancelled request is not granted"
    );
    source.halt();

    let (source, _keep) = make(2, 100).await;
    let first = granted(source.ask(0)).await;
    source.written(0, first);
    let other = granted(source.ask(1)).await;
    source.written(1, other);
    assert!(other - first < window, "bucket 1 waited for bucket 0");
    source.halt();

    let (source, _keep) = make(1, 100).await;
    budget_reads(
        source.as_ref(),
        100,
        patience,
        "the budget before any grant",
    )
    .await;
    let at = granted(source.ask(0)).await;
    budget_reads(source.as_ref(), 99, patience, "a grant spends one").await;
    source.unused(0);
    budget_reads(source.as_ref(), 100, patience, "an unused grant goes back").await;
    let again = granted(source.ask(0)).await;
    source.written(0, again.max(at));
    budget_reads(source.as_ref(), 99, patience, "a written grant stays spent").await;
    tokio::time::sleep(window).await;
    assert_eq!(
        source.status().map(|s| s.remaining),
        Some(99),
        "a written grant stays spent"
    );
    source.halt();

    let (source, _keep) = make(1, 0).await;
    let mut rx = source.ask(0);
    assert!(
        tokio::time::timeout(window * 3, &mut rx).await.is_err(),
        "granted with no session start left"
    );
    source.halt();
}

/// The audit log contract, on a log that holds no entry yet: entries come back newest
/// first, as recorded, at most `limit` of them. A log that records in the background
/// may take up to `patience` for an entry to read back.
pub async fn audit_log(log: &dyn crate::AuditLog, patience: std::time::Duration) {
    use crate::AuditEntry;
    assert!(
        log.recent(10).await.expect("readable").is_empty(),
        "a new log is empty"
    );
    let entries: Vec<AuditEntry> = (0..5)
        .map(|n| AuditEntry {
            at_ms: 1_000 + n,
            actor: "admin".into(),
            from: "127.0.0.1".into(),
            action: format!("POST /api/v1/shards/{{id}}/stop #{n}"),
            target: n.to_string(),
            result: if n == 3 {
                "shard 3 is not run by this process".into()
            } else {
                "ok".into()
            },
            node: None,
        })
        .collect();
    for entry in &entries {
        log.record(entry.clone());
        // One at a time: a background writer keeps the order it was given.
        let deadline = crate::clock::now() + patience;
        while log
            .recent(1)
            .await
            .expect("readable")
            .first()
            .map(|e| e.at_ms)
            != Some(entry.at_ms)
        {
            assert!(
                crate::clock::now() < deadline,
                "entry {} never read back",
                entry.at_ms
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let newest = log.recent(3).await.expect("readable");
    let read: Vec<u64> = newest.iter().map(|e| e.at_ms).collect();
    assert_eq!(
        read,
        [1_004, 1_003, 1_002],
        "the newest three, newest first"
    );
    assert_eq!(newest[1].result, entries[3].result);
    assert_eq!(newest[1].target, "3");
    assert_eq!(newest[1].actor, "admin");
    assert_eq!(newest[1].from, "127.0.0.1");
    assert_eq!(log.recent(100).await.expect("readable").len(), 5);
}
