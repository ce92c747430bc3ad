//! The flush thread: every interval, make the sinks write out what they were handed,
//! then write the buffered sessions. Runs off the shard threads because flushing blocks;
//! for the same reason it also returns free heap pages once a connect storm is over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock;
use crate::sink::Sinks;
use crate::store::SessionLedger;
use crate::trim::{self, AfterStorm};

/// Whether sessions reach the disk. `Degraded` keeps the cluster running on in-memory
/// state; resumes after a restart are lost until the store works again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Writes succeed.
    Healthy,
    /// The last write failed with this error.
    Degraded(String),
}

/// Health and the time of the last successful flush.
#[derive(Debug)]
pub(crate) struct StoreStatus {
    pub(crate) health: StoreHealth,
    pub(crate) last_flush: Instant,
}

pub(crate) type HealthCell = Arc<Mutex<StoreStatus>>;

pub(crate) fn health_cell() -> HealthCell {
    Arc::new(Mutex::new(StoreStatus {
        health: StoreHealth::Healthy,
        last_flush: clock::now(),
    }))
}

/// Whether every shard is Ready or parked (a connect storm is over).
pub(crate) type Settled = Box<dyn Fn() -> bool + Send>;

pub(crate) struct Persister {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    ledger: Arc<SessionLedger>,
    sinks: Sinks,
    health: HealthCell,
}

impl Persister {
    pub(crate) fn spawn(
        ledger: Arc<SessionLedger>,
        sinks: Sinks,
        interval: Duration,
        health: HealthCell,
        settled: Settled,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, ledger, sinks, health) = (
                Arc::clone(&stop),
                Arc::clone(&ledger),
                sinks.clone(),
                Arc::clone(&health),
            );
            std::thread::Builder::new()
                .name("shardkeeper-flush".into())
                .spawn(move || {
                    let mut after_storm = AfterStorm::default();
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(interval);
                        flush_once(&ledger, &sinks, &health);
                        if after_storm.observe(settled(), clock::now()) {
                            let released = trim::release_free_memory();
                            tracing::debug!(released, "shards settled; returned free heap pages");
                        }
                    }
                })
                .map_err(|err| tracing::error!(%err, "cannot start the store flush thread; flushing only at shutdown"))
                .ok()
        };
        Self {
            stop,
            thread,
            ledger,
            sinks,
            health,
        }
    }

    /// Stops the thread and flushes one last time.
    pub(crate) fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        flush_once(&self.ledger, &self.sinks, &self.health);
    }
}

fn flush_once(ledger: &SessionLedger, sinks: &Sinks, health: &HealthCell) {
    let result = ledger.flush(&mut || sinks.flush());
    let mut status = health.lock().unwrap_or_else(PoisonError::into_inner);
    match result {
        Ok(()) => {
            if let StoreHealth::Degraded(_) = &status.health {
                tracing::info!("session store writes work again");
            }
            status.health = StoreHealth::Healthy;
            status.last_flush = clock::now();
        }
        Err(err) => {
            let message = err.to_string();
            if status.health != StoreHealth::Degraded(message.clone()) {
                tracing::error!(%err, "session store write failed; running on in-memory sessions (resumes after a restart may be lost)");
            }
            status.health = StoreHealth::Degraded(message);
        }
    }
}
