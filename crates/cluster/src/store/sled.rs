//! The sled store: tree `sessions` (shard id → JSON record), tree `meta` (identify
//! schedule) and tree `audit` (operator actions by a rising id, the newest
//! [`AUDIT_KEPT`] kept), with session writes batched by the ledger.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shardkeeper_session::ScheduleSnapshot;

use super::{Change, ScheduleStore, SessionBatch, SessionStore, StoreError, StoredSession};
use crate::audit::{AUDIT_KEPT, AuditEntry, AuditError, AuditFuture, AuditLog};

const SCHEDULE_KEY: &[u8] = b"identify_schedule";
/// How long opening waits for the database's lock: a process being replaced may still be
/// writing its last batch, and a store closed in this process lets go of the lock only
/// once sled's background writes finish.
const LOCK_WAIT: Duration = Duration::from_secs(3);
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// Sessions and identify state in a sled database.
#[derive(Debug)]
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    sessions: sled::Tree,
    meta: sled::Tree,
    audit: sled::Tree,
    /// Entries in `audit` (counted once at open: sled's `len` walks the tree).
    audit_len: AtomicUsize,
}

impl SledStore {
    /// Opens (or creates) the database at `path`, readable by the owner only.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let open_error = |detail: String| StoreError::Open {
            path: shown.clone(),
            detail,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| open_error(err.to_string()))?;
        }
        let opened = open_db(path).map_err(open_error)?;
        let sessions = opened
            .open_tree("sessions")
            .map_err(|err| open_error(err.to_string()))?;
        let meta = opened
            .open_tree("meta")
            .map_err(|err| open_error(err.to_string()))?;
        let audit = opened
            .open_tree("audit")
            .map_err(|err| open_error(err.to_string()))?;
        restrict_permissions(path);
        Ok(Self {
            path: path.to_owned(),
            db: opened,
            sessions,
            meta,
            audit_len: AtomicUsize::new(audit.len()),
            audit,
        })
    }

    /// Where the database lives.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens the database once its lock is free (waiting up to `LOCK_WAIT` for it).
fn open_db(path: &Path) -> Result<sled::Db, String> {
    wait_for_lock(&path.join("db"))?;
    let config = sled::Config::new().path(path).flush_every_ms(None);
    // sled 0.34 can panic on some corrupt files; that must be an error, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open()))
        .map_err(|_| "the database files are corrupt".to_owned())?
        .map_err(|err| err.to_string())
}

/// Waits while another holder keeps the exclusive lock sled takes on its `db` file.
fn wait_for_lock(file: &Path) -> Result<(), String> {
    // No file yet: nobody holds it. A file that cannot be read is sled's to report.
    let Ok(file) = File::open(file) else {
        return Ok(());
    };
    let deadline = crate::clock::now() + LOCK_WAIT;
    loop {
        // Probing takes the lock; closing the file when it is dropped gives it back.
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if crate::clock::now() < deadline => {
                std::thread::sleep(LOCK_RETRY);
            }
            Err(TryLockError::WouldBlock) => {
                return Err(format!(
                    "the database is locked by another process or another open store \
                     (waited {LOCK_WAIT:?})"
                ));
            }
            Ok(()) | Err(TryLockError::Error(_)) => return Ok(()),
        }
    }
}

impl SledStore {
    fn write(&self, changes: &SessionBatch) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (shard, change) in changes {
            let key = shard.to_be_bytes();
            match change {
                Change::Save(stored) => {
                    let value = serde_json::to_vec(stored)
                        .map_err(|err| StoreError::Backend(err.to_string()))?;
                    batch.insert(&key, value);
                }
                Change::Forget => batch.remove(&key),
            }
        }
        self.sessions
            .apply_batch(batch)
            .map_err(|err| backend(&err))?;
        self.db.flush().map_err(|err| backend(&err))?;
        Ok(())
    }
}

fn backend(err: &sled::Error) -> StoreError {
    StoreError::Backend(err.to_string())
}

/// Makes the database directory and its files owner-only (0700/0600).
#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let mode = if path.is_dir() {
                stack.push(path.clone());
                0o700
            } else {
                0o600
            };
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
        }
    }
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}

impl SessionStore for SledStore {
    fn load_sessions(&self) -> Result<HashMap<u32, StoredSession>, StoreError> {
        let mut sessions = HashMap::new();
        for item in &self.sessions {
            let (key, value) = item.map_err(|err| backend(&err))?;
            let shard = <[u8; 4]>::try_from(key.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    key: format!("{key:?}"),
                    detail: "key is not a shard id".into(),
                })?;
            let stored = serde_json::from_slice(&value).map_err(|err| StoreError::Corrupt {
                key: format!("shard {shard}"),
                detail: err.to_string(),
            })?;
            sessions.insert(shard, stored);
        }
        Ok(sessions)
    }

    fn write_sessions(&self, batch: &SessionBatch) -> Result<(), StoreError> {
        self.write(batch)
    }
}

impl ScheduleStore for SledStore {
    fn load_schedule(&self) -> Result<Option<ScheduleSnapshot>, StoreError> {
        let Some(value) = self.meta.get(SCHEDULE_KEY).map_err(|err| backend(&err))? else {
            return Ok(None);
        };
        serde_json::from_slice(&value)
            .map(Some)
            .map_err(|err| StoreError::Corrupt {
                key: "identify schedule".into(),
                detail: err.to_string(),
            })
    }

    fn save_schedule(&self, snapshot: &ScheduleSnapshot) -> Result<(), StoreError> {
        let value =
            serde_json::to_vec(snapshot).map_err(|err| StoreError::Backend(err.to_string()))?;
        self.meta
            .insert(SCHEDULE_KEY, value)
            .map_err(|err| backend(&err))?;
        self.meta.flush().map_err(|err| backend(&err))?;
        Ok(())
    }
}

impl SledStore {
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let id = self.db.generate_id().map_err(|err| backend(&err))?;
        let value =
            serde_json::to_vec(entry).map_err(|err| StoreError::Backend(err.to_string()))?;
        self.audit
            .insert(id.to_be_bytes(), value)
            .map_err(|err| backend(&err))?;
        // Ids only rise: past AUDIT_KEPT entries, the smallest key is the oldest.
        if self.audit_len.fetch_add(1, Ordering::AcqRel) >= AUDIT_KEPT
            && self.audit.pop_min().map_err(|err| backend(&err))?.is_some()
        {
            self.audit_len.fetch_sub(1, Ordering::AcqRel);
        }
        self.audit.flush().map_err(|err| backend(&err))?;
        Ok(())
    }

    fn newest_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit
            .iter()
            .rev()
            .take(limit)
            .map(|item| {
                let (key, value) = item.map_err(|err| backend(&err))?;
                serde_json::from_slice(&value).map_err(|err| StoreError::Corrupt {
                    key: format!("audit entry {key:?}"),
                    detail: err.to_string(),
                })
            })
            .collect()
    }
}

impl AuditLog for SledStore {
    fn record(&self, entry: AuditEntry) {
        if let Err(err) = self.append_audit(&entry) {
            tracing::warn!(%err, action = %entry.action, "cannot store the audit entry");
        }
    }

    fn recent(&self, limit: usize) -> AuditFuture {
        let read = self
            .newest_audit(limit)
            .map_err(|err| AuditError(err.to_string()));
        Box::pin(std::future::ready(read))
    }
}
