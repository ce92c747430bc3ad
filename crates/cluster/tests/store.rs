//! One contract suite run against every `SessionStore`.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]

use std::cell::Cell;
use std::time::Duration;

use shardkeeper_cluster::{MemoryStore, SessionStore, SledStore, StoreError};
use shardkeeper_session::{ResumeInfo, ScheduleSnapshot};

fn info(session: &str, seq: u64) -> ResumeInfo {
    ResumeInfo {
        session_id: session.into(),
        resume_url: "wss://resume.example/".into(),
        seq,
    }
}

fn flush(store: &dyn SessionStore) {
    store.flush(&mut || {}).expect("flush");
}

fn contract(store: &dyn SessionStore) {
    assert!(store.load_sessions().expect("load").is_empty());
    assert!(store.load_schedule().expect("load").is_none());

    store.save_session(3, 16, &info("a", 10));
    store.save_session(3, 16, &info("a", 12));
    assert!(
        store.load_sessions().expect("load").is_empty(),
        "buffered until flush"
    );
    let barrier_ran = Cell::new(false);
    store
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

    store.save_session(3, 16, &info("b", 1));
    store.save_session(4, 16, &info("c", 7));
    flush(store);
    let sessions = store.load_sessions().expect("load");
    assert_eq!(
        (sessions[&3].session_id.as_str(), sessions[&3].seq),
        ("b", 1)
    );
    assert_eq!(sessions.len(), 2);

    store.forget_session(3);
    store.save_session(4, 16, &info("c", 9));
    flush(store);
    let sessions = store.load_sessions().expect("load");
    assert!(!sessions.contains_key(&3));
    assert_eq!(sessions[&4].seq, 9);

    store.forget_session(4);
    store.save_session(4, 16, &info("d", 2));
    flush(store);
    assert_eq!(
        store.load_sessions().expect("load")[&4].session_id,
        "d",
        "the newest change wins"
    );

    let snapshot = ScheduleSnapshot {
        last_grants_ms: vec![Some(1_700_000_000_000), None],
        total: 1000,
        remaining: 990,
        reset_at_ms: 1_700_000_100_000,
    };
    store.save_schedule(&snapshot).expect("save");
    assert_eq!(store.load_schedule().expect("load"), Some(snapshot));
}

#[test]
fn memory_store_contract() {
    contract(&MemoryStore::default());
}

#[test]
fn sled_store_contract_and_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.sled");
    {
        let store = SledStore::open(&path).expect("opens");
        contract(&store);
    }
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
    let store = SledStore::open(&path).expect("opens");
    store.save_session(1, 2, &info("x", 1));
    store.flush(&mut || {}).expect("flush");
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
