//! Long operator actions as jobs: what they report and how they are cancelled. The
//! handle runs them (`handle/rolling.rs`): a rolling restart takes the bot's shards in
//! steps of one per identify bucket (at most `max_concurrency` shards down at once),
//! restarts each step's shards wherever they run and waits until each is Ready again
//! on a new connection before the next step. A shard that cannot be restarted, or is
//! not back within [`STEP_TIMEOUT`], is recorded as an error and the job goes on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock;

/// How long one step waits for its shards to be Ready again.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Finished jobs kept for `GET /api/v1/jobs`.
const JOBS_KEPT: usize = 100;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Restarts every shard of the bot, a step at a time.
    RollingRestart {
        /// Drop each session and IDENTIFY instead of resuming.
        fresh: bool,
    },
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Still going.
    Running,
    /// Every step done without an error.
    Completed,
    /// Stopped by an operator.
    Cancelled,
    /// Every step done; some shards could not be restarted (see the errors).
    Failed,
}

impl JobState {
    /// The state's API name.
    #[must_use]
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

/// A shard a job could not handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// The shard.
    pub shard: u32,
    /// Why.
    pub error: String,
}

/// A job's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id.
    pub id: String,
    /// What it does.
    pub kind: JobKind,
    /// Where it is.
    pub state: JobState,
    /// Shards to handle.
    pub total: u32,
    /// Shards handled (restarted, or recorded as errors).
    pub done: u32,
    /// The shards of the step in flight.
    pub current: Vec<u32>,
    /// Shards that could not be handled.
    pub errors: Vec<JobError>,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    /// Unix milliseconds, once it ended.
    pub finished_at_ms: Option<u64>,
}

struct Entry {
    job: Job,
    cancel: Arc<AtomicBool>,
}

/// The jobs of this process, newest last.
#[derive(Default)]
pub(crate) struct Jobs {
    entries: Mutex<VecDeque<Entry>>,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a running job over `total` shards; the flag asks it to stop.
    pub(crate) fn open(&self, kind: JobKind, total: u32) -> (Job, Arc<AtomicBool>) {
        let job = Job {
            id: format!("{:016x}", rand::random::<u64>()),
            kind,
            state: JobState::Running,
            total,
            done: 0,
            current: Vec::new(),
            errors: Vec::new(),
            started_at_ms: clock::wall_ms(),
            finished_at_ms: None,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let mut entries = self.lock();
        entries.push_back(Entry {
            job: job.clone(),
            cancel: Arc::clone(&cancel),
        });
        while entries.len() > JOBS_KEPT {
            let Some(index) = entries
                .iter()
                .position(|e| e.job.state != JobState::Running)
            else {
                break;
            };
            entries.remove(index);
        }
        (job, cancel)
    }

    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut Job)) {
        if let Some(entry) = self.lock().iter_mut().find(|e| e.job.id == id) {
            change(&mut entry.job);
        }
    }

    pub(crate) fn list(&self) -> Vec<Job> {
        self.lock().iter().rev().map(|e| e.job.clone()).collect()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Job> {
        self.lock()
            .iter()
            .find(|e| e.job.id == id)
            .map(|e| e.job.clone())
    }

    /// Asks a running job to stop after its current step; the job as it is now.
    pub(crate) fn cancel(&self, id: &str) -> Option<Job> {
        let entries = self.lock();
        let entry = entries.iter().find(|e| e.job.id == id)?;
        entry.cancel.store(true, Ordering::SeqCst);
        Some(entry.job.clone())
    }
}
