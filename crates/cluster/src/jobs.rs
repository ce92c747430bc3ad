//! Long operator actions as jobs: a rolling restart runs in the background, reports its
//! progress and can be cancelled between steps.
//!
//! A rolling restart takes the bot's shards in steps of one per identify bucket (at
//! most `max_concurrency` shards down at once), restarts each step's shards wherever
//! they run and waits until each is Ready again on a new connection before the next
//! step. A shard that cannot be restarted, or is not back within
//! [`STEP_TIMEOUT`], is recorded as an error and the job goes on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shardkeeper_session::StateKind;

use crate::clock;
use crate::handle::ClusterHandle;
use crate::peers::ShardAction;
use crate::snapshot::ShardSnapshot;

/// How long one step waits for its shards to be Ready again.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Finished jobs kept for `GET /api/v1/jobs`.
const JOBS_KEPT: usize = 100;
/// How often a step looks at its shards.
const POLL: Duration = Duration::from_millis(25);

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

    /// Registers a running job over `total` shards.
    fn open(&self, kind: JobKind, total: u32) -> (Job, Arc<AtomicBool>) {
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

    fn update(&self, id: &str, change: impl FnOnce(&mut Job)) {
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

/// Starts a rolling restart of `targets` in steps of `width` shards.
pub(crate) fn rolling_restart(
    handle: &ClusterHandle,
    jobs: &Arc<Jobs>,
    targets: Vec<u32>,
    width: usize,
    fresh: bool,
) -> Job {
    let total = u32::try_from(targets.len()).unwrap_or(u32::MAX);
    let (job, cancel) = jobs.open(JobKind::RollingRestart { fresh }, total);
    let id = job.id.clone();
    let handle = handle.clone();
    let jobs = Arc::clone(jobs);
    actix::spawn(async move {
        let mut cancelled = false;
        for step in targets.chunks(width.max(1)) {
            if cancel.load(Ordering::SeqCst) {
                cancelled = true;
                break;
            }
            jobs.update(&id, |job| job.current = step.to_vec());
            let errors = restart_step(&handle, step, fresh, &cancel).await;
            jobs.update(&id, |job| {
                job.done += u32::try_from(step.len()).unwrap_or(u32::MAX);
                job.errors.extend(errors);
            });
        }
        let cancelled = cancelled || cancel.load(Ordering::SeqCst);
        jobs.update(&id, |job| {
            job.current.clear();
            job.finished_at_ms = Some(clock::wall_ms());
            job.state = if cancelled && job.done < job.total {
                JobState::Cancelled
            } else if job.errors.is_empty() {
                JobState::Completed
            } else {
                JobState::Failed
            };
            tracing::info!(
                job = %job.id,
                state = job.state.api_name(),
                done = job.done,
                errors = job.errors.len(),
                "rolling restart ended"
            );
        });
    });
    job
}

/// Restarts the shards of one step and waits until each is Ready on a new connection.
async fn restart_step(
    handle: &ClusterHandle,
    step: &[u32],
    fresh: bool,
    cancel: &AtomicBool,
) -> Vec<JobError> {
    let mut errors = Vec::new();
    let mut waiting = Vec::new();
    for &shard in step {
        let before = handle.locate(shard).await.map_or(0, |s| sessions_begun(&s));
        // The budget of the whole job was checked when it started.
        let action = ShardAction::Restart { fresh, force: true };
        match handle.act(shard, action).await {
            Ok(()) => waiting.push((shard, before)),
            Err(err) => errors.push(JobError {
                shard,
                error: err.to_string(),
            }),
        }
    }
    let deadline = clock::now() + STEP_TIMEOUT;
    while !waiting.is_empty() && clock::now() < deadline && !cancel.load(Ordering::SeqCst) {
        tokio::time::sleep(POLL).await;
        let mut still = Vec::with_capacity(waiting.len());
        for (shard, before) in waiting {
            let back = handle
                .locate(shard)
                .await
                .is_some_and(|s| s.state == StateKind::Ready && sessions_begun(&s) > before);
            if !back {
                still.push((shard, before));
            }
        }
        waiting = still;
    }
    if !cancel.load(Ordering::SeqCst) {
        errors.extend(waiting.into_iter().map(|(shard, _)| JobError {
            shard,
            error: format!("not Ready again within {} s", STEP_TIMEOUT.as_secs()),
        }));
    }
    errors
}

/// Sessions the shard began or took up again: rises with every new connection that
/// reached Ready or Resumed.
fn sessions_begun(snapshot: &ShardSnapshot) -> u64 {
    snapshot.identifies + snapshot.resumes
}
