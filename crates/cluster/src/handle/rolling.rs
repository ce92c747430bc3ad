//! The handle's jobs: a rolling restart run step by step in the background (see
//! `jobs.rs` for what a job reports).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shardkeeper_session::StateKind;

use super::ClusterHandle;
use crate::clock;
use crate::error::ClusterError;
use crate::jobs::{Job, JobError, JobKind, JobState, Jobs, STEP_TIMEOUT};
use crate::peers::ShardAction;
use crate::snapshot::ShardSnapshot;

/// How often a step looks at its shards.
const POLL: Duration = Duration::from_millis(25);

impl ClusterHandle {
    /// Starts a rolling restart of every shard of the bot (in cluster mode, every
    /// node's) as a job: a step of one shard per identify bucket at a time, each Ready
    /// again on a new connection before the next step. Unless `force`, a fresh one is
    /// refused with [`ClusterError::Budget`] when the session-start budget cannot
    /// afford every shard (and a later fresh step the budget no longer affords ends the
    /// job). One rolling restart runs at a time: another is refused with
    /// [`ClusterError::JobRunning`]. Shards an operator stopped are left stopped.
    pub fn start_rolling_restart(&self, fresh: bool, force: bool) -> Result<Job, ClusterError> {
        if let Some(running) = self
            .jobs()
            .into_iter()
            .find(|job| job.state == JobState::Running)
        {
            return Err(ClusterError::JobRunning(running.id));
        }
        let targets = self.every_shard();
        if fresh && !force {
            self.check_budget(u32::try_from(targets.len()).unwrap_or(u32::MAX))?;
        }
        let width = self
            .identify_status()
            .map_or(1, |status| status.max_concurrency.max(1) as usize);
        Ok(rolling_restart(
            self,
            self.jobs_table(),
            steps(&targets, width),
            Plan { fresh, force },
        ))
    }

    /// Every job this process started (the newest 100 finished ones), newest first.
    #[must_use]
    pub fn jobs(&self) -> Vec<Job> {
        self.jobs_table().list()
    }

    /// One job.
    #[must_use]
    pub fn job(&self, id: &str) -> Option<Job> {
        self.jobs_table().get(id)
    }

    /// Asks a job to stop after its current step; the job as it is now, or `None` for
    /// an unknown id. Cancelling a job that ended changes nothing.
    #[must_use]
    pub fn cancel_job(&self, id: &str) -> Option<Job> {
        self.jobs_table().cancel(id)
    }

    /// Every shard a rolling restart takes: the bot's in cluster mode, this process's
    /// alone.
    #[must_use]
    pub fn every_shard(&self) -> Vec<u32> {
        if self.peers().is_some() {
            (0..self.total()).collect()
        } else {
            self.ids()
        }
    }

    /// The shards of `ids` as this process runs them now, else as their owners last
    /// published them (one read of the cluster's view for all that run elsewhere).
    async fn locate(&self, ids: &[u32]) -> HashMap<u32, ShardSnapshot> {
        let mut found: HashMap<u32, ShardSnapshot> = ids
            .iter()
            .filter_map(|&id| Some((id, self.shard(id)?)))
            .collect();
        if found.len() < ids.len() && self.peers().is_some() {
            let placed = self.placed_shards().await.unwrap_or_default();
            for shard in placed {
                let id = shard.snapshot.id;
                if ids.contains(&id) {
                    found.entry(id).or_insert(shard.snapshot);
                }
            }
        }
        found
    }
}

/// How a rolling restart restarts.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Drop each session and IDENTIFY.
    fresh: bool,
    /// Even if the budget cannot afford it.
    force: bool,
}

/// `targets` in steps of at most one shard per identify bucket (`id % width`): the
/// k-th step takes the k-th shard of every bucket.
fn steps(targets: &[u32], width: usize) -> Vec<Vec<u32>> {
    let width = u32::try_from(width.max(1)).unwrap_or(u32::MAX);
    let mut buckets: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &shard in targets {
        buckets.entry(shard % width).or_default().push(shard);
    }
    let mut steps: Vec<Vec<u32>> = Vec::new();
    for shards in buckets.into_values() {
        for (k, shard) in shards.into_iter().enumerate() {
            if steps.len() <= k {
                steps.push(Vec::new());
            }
            steps[k].push(shard);
        }
    }
    for step in &mut steps {
        step.sort_unstable();
    }
    steps
}

/// Starts a rolling restart that takes `steps` one after another.
fn rolling_restart(
    handle: &ClusterHandle,
    jobs: &Arc<Jobs>,
    steps: Vec<Vec<u32>>,
    plan: Plan,
) -> Job {
    let total = u32::try_from(steps.iter().map(Vec::len).sum::<usize>()).unwrap_or(u32::MAX);
    let (job, cancel) = jobs.open(JobKind::RollingRestart { fresh: plan.fresh }, total);
    let id = job.id.clone();
    let handle = handle.clone();
    let jobs = Arc::clone(jobs);
    actix::spawn(async move {
        let mut cancelled = false;
        for step in &steps {
            if cancel.load(Ordering::SeqCst) {
                cancelled = true;
                break;
            }
            let cost = u32::try_from(step.len()).unwrap_or(u32::MAX);
            if plan.fresh
                && !plan.force
                && let Err(err) = handle.check_budget(cost)
            {
                // Spent meanwhile by other IDENTIFYs: no session is dropped that
                // could not start again.
                jobs.update(&id, |job| {
                    job.errors.extend(step.iter().map(|&shard| JobError {
                        shard,
                        error: err.to_string(),
                    }));
                });
                break;
            }
            jobs.update(&id, |job| job.current.clone_from(step));
            let errors = restart_step(&handle, step, plan.fresh, &cancel).await;
            jobs.update(&id, |job| {
                job.done += cost;
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
    let found = handle.locate(step).await;
    for &shard in step {
        let found = found.get(&shard);
        if found.is_some_and(|s| s.state == StateKind::Stopped) {
            // An operator stopped it: it stays stopped.
            continue;
        }
        let before = found.map_or(0, sessions_begun);
        // The budget was checked for the step before it started.
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
        let ids: Vec<u32> = waiting.iter().map(|&(shard, _)| shard).collect();
        let now = handle.locate(&ids).await;
        waiting.retain(|(shard, before)| {
            !now.get(shard)
                .is_some_and(|s| s.state == StateKind::Ready && sessions_begun(s) > *before)
        });
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

#[cfg(test)]
mod tests {
    use super::steps;

    #[test]
    fn each_step_takes_at_most_one_shard_of_every_bucket() {
        assert_eq!(
            steps(&[0, 1, 2, 3, 4, 5, 6], 4),
            [vec![0, 1, 2, 3], vec![4, 5, 6]]
        );
        // Every 4th shard of a bot with 4 buckets: one bucket, one shard per step.
        assert_eq!(steps(&[0, 4, 8], 4), [vec![0], vec![4], vec![8]]);
        assert_eq!(
            steps(&[3, 5], 0),
            [vec![3], vec![5]],
            "no bucket count: one by one"
        );
        assert!(steps(&[], 16).is_empty());
    }
}
