//! The store contract suites (`shardkeeper_cluster::contract`) against the local
//! backends, and what only sled does (reopen, locks, permissions, corrupt files).
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]

use std::sync::Arc;
use std::time::Duration;

use shardkeeper_cluster::contract;
use shardkeeper_cluster::contract::{flush, info};
use shardkeeper_cluster::{
    AuditLog, MemoryAudit, MemoryStore, ScheduleStore, SessionBatch, SessionLedger, SessionStore,
    SledStore, StoreError,
};

/// A store whose writes fail until told otherwise.
#[derive(Default)]
struct Flaky {
    inner: MemoryStore,
    failing: std::sync::atomic::AtomicBool,
}

impl SessionStore for Flaky {
    fn load_sessions(
        &self,
    ) -> Result<std::collections::HashMap<u32, shardkeeper_cluster::StoredSession>, StoreError>
    {
        self.inner.load_sessions()
    }

    fn write_sessions(&self, batch: &SessionBatch) -> Result<(), StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Backend("disk on fire".into()));
        }
        self.inner.write_sessions(batch)
    }
}

#[test]
fn a_failed_write_keeps_its_changes_unless_newer_ones_came() {
    let flaky = Arc::new(Flaky::default());
    flaky
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let ledger = SessionLedger::new(Arc::clone(&flaky) as Arc<dyn SessionStore>);
    ledger.save(1, 4, &info("a", 5));
    ledger.save(2, 4, &info("b", 5));
    let mut newer = || ledger.save(2, 4, &info("b", 8));
    assert!(ledger.flush(&mut newer).is_err());
    flaky
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    flush(&ledger);
    let sessions = flaky.load_sessions().expect("load");
    assert_eq!((sessions[&1].seq, sessions[&2].seq), (5, 8));
}

#[test]
fn memory_store_contract() {
    let store = Arc::new(MemoryStore::default());
    contract::session_store(&(Arc::clone(&store) as Arc<dyn SessionStore>));
    contract::schedule_store(store.as_ref());
}

#[test]
fn sled_store_contract_and_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.sled");
    let store = Arc::new(SledStore::open(&path).expect("opens"));
    contract::session_store(&(Arc::clone(&store) as Arc<dyn SessionStore>));
    contract::schedule_store(store.as_ref());
    drop(store);
    let reopened = SledStore::open(&path).expect("reopens");
    let sessions = reopened.load_sessions().expect("load");
    assert_eq!(sessions[&4].session_id, "d");
    assert_eq!(
        reopened.load_schedule().expect("load").map(|s| s.remaining),
        Some(990)
    );
}

#[test]
fn a_locked_store_is_waited_for_then_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("locked.sled");
    let first = SledStore::open(&path).expect("opens");
    let releasing = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
    });
    let second = SledStore::open(&path).expect("opens once the first lets go");
    releasing.join().expect("released");
    let err = SledStore::open(&path).expect_err("the second holds the lock");
    assert!(err.to_string().contains("is locked by another"), "{err}");
    assert!(err.to_string().contains("locked.sled"), "{err}");
    drop(second);
}

#[cfg(unix)]
#[test]
fn sled_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("private.sled");
    let ledger = SessionLedger::new(Arc::new(SledStore::open(&path).expect("opens")));
    ledger.save(1, 2, &info("x", 1));
    flush(&ledger);
    let dir_mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    for entry in std::fs::read_dir(&path).expect("list").flatten() {
        if entry.path().is_file() {
            let mode = entry.metadata().expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", entry.path().display());
        }
    }
}

#[test]
fn unusable_paths_are_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("written");
    let err = SledStore::open(&file.join("store.sled")).expect_err("parent is a file");
    assert!(matches!(err, StoreError::Open { .. }));
    assert!(err.to_string().contains("a-file"), "{err}");

    let corrupt = dir.path().join("corrupt.sled");
    std::fs::create_dir_all(&corrupt).expect("dir");
    std::fs::write(corrupt.join("conf"), b"\xff\xfe garbage config").expect("written");
    std::fs::write(corrupt.join("db"), vec![0xAB; 4096]).expect("written");
    let err = SledStore::open(&corrupt).expect_err("corrupt files are refused");
    assert!(
        matches!(&err, StoreError::Open { path, .. } if path.contains("corrupt.sled")),
        "{err}"
    );
}

#[tokio::test]
async fn the_audit_logs_keep_the_audit_contract_and_sled_keeps_it_across_a_reopen() {
    contract::audit_log(&MemoryAudit::default(), Duration::ZERO).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    {
        let store = SledStore::open(&path).expect("opens");
        contract::audit_log(&store, Duration::ZERO).await;
    }
    let store = SledStore::open(&path).expect("reopens");
    let kept = store.recent(10).await.expect("readable");
    assert_eq!(kept.len(), 5, "the entries outlive the process");
    assert_eq!(kept[0].at_ms, 1_004);
}
