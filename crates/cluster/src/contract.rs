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

fn info(session: &str, seq: u64) -> ResumeInfo {
    ResumeInfo {
        session_id: session.into(),
        resume_url: "wss://resume.example/".into(),
        seq,
    }
}

fn flush(ledger: &SessionLedger) {
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
