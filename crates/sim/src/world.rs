//! State shared by every connection: sessions, identify buckets, budget and stats.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::broadcast;

use crate::SimConfig;
use crate::events::SessionRecord;
use crate::fault::{Fault, FaultTarget};
use crate::stats::{BucketStats, SessionSummary, ShardStats, Stats, Violation, ViolationKind};

/// A shared, lockable session.
pub(crate) type SharedSession = Arc<Mutex<SessionRecord>>;

/// Locks a mutex, recovering the data if a connection task panicked while holding it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why an IDENTIFY was refused after its own checks passed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IdentifyRefusal {
    /// The bucket already identified inside this window: op 9 false.
    Window { detail: String },
    /// No session starts left: close 4004.
    Budget,
}

/// The outcome of a RESUME.
pub(crate) enum ResumeOutcome {
    /// Replay these frames, then send RESUMED.
    Resumed {
        session: SharedSession,
        replay: Vec<Arc<str>>,
    },
    /// Unknown, expired or invalidated session, wrong token, or replay gap: op 9 false.
    Invalid(String),
    /// The client claims a sequence that was never sent: close 4007.
    SeqAhead { last: u64, claimed: u64 },
}

struct Inner {
    sessions: HashMap<String, SharedSession>,
    /// Identify attempts per bucket inside the trailing window.
    bucket_attempts: Vec<VecDeque<Instant>>,
    bucket_last_grant: Vec<Option<Instant>>,
    buckets: Vec<BucketStats>,
    remaining: u32,
    reset_at: Instant,
    member_cooldowns: HashMap<u64, Instant>,
    shards: BTreeMap<u32, ShardStats>,
    /// The newest connection that authenticated each shard.
    serving: HashMap<u32, u64>,
    violations: Vec<Violation>,
    identifies: u64,
    resumes_ok: u64,
    resumes_failed: u64,
    client_close_codes: BTreeMap<u16, u64>,
    faults: BTreeMap<String, u64>,
    rest_faults: VecDeque<crate::fault::RestFault>,
    rng: SmallRng,
}

/// Everything the connections share.
pub(crate) struct World {
    pub(crate) config: SimConfig,
    pub(crate) started: Instant,
    /// `ws://host:port` or `wss://host:port`.
    pub(crate) ws_base: String,
    pub(crate) faults: broadcast::Sender<(FaultTarget, Fault)>,
    next_conn: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) open_connections: AtomicU64,
    pub(crate) events_sent: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    /// Dispatches per second per Ready shard (f64 bits), adjustable at run time.
    events_per_sec: AtomicU64,
    /// Connections left that get no HELLO.
    silent_left: std::sync::atomic::AtomicU32,
    /// While set, the chaos schedule injects nothing.
    chaos_paused: std::sync::atomic::AtomicBool,
    inner: Mutex<Inner>,
}

impl World {
    pub(crate) fn new(config: SimConfig, ws_base: String) -> Self {
        let buckets = config.max_concurrency.max(1) as usize;
        let now = Instant::now();
        let (faults, _) = broadcast::channel(1024);
        let rate = config.events_per_sec.max(0.0).to_bits();
        let silent = config.silent_connections;
        let inner = Inner {
            sessions: HashMap::new(),
            bucket_attempts: vec![VecDeque::new(); buckets],
            bucket_last_grant: vec![None; buckets],
            buckets: vec![BucketStats::default(); buckets],
            remaining: config
                .session_start_remaining
                .min(config.session_start_total),
            reset_at: now + config.session_start_reset,
            member_cooldowns: HashMap::new(),
            shards: BTreeMap::new(),
            serving: HashMap::new(),
            violations: Vec::new(),
            identifies: 0,
            resumes_ok: 0,
            resumes_failed: 0,
            client_close_codes: BTreeMap::new(),
            faults: BTreeMap::new(),
            rest_faults: config.rest_faults.iter().cloned().collect(),
            rng: SmallRng::seed_from_u64(config.seed),
        };
        Self {
            config,
            started: now,
            ws_base,
            faults,
            next_conn: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            open_connections: AtomicU64::new(0),
            events_sent: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            events_per_sec: AtomicU64::new(rate),
            silent_left: std::sync::atomic::AtomicU32::new(silent),
            chaos_paused: std::sync::atomic::AtomicBool::new(false),
            inner: Mutex::new(inner),
        }
    }

    pub(crate) fn events_per_sec(&self) -> f64 {
        f64::from_bits(self.events_per_sec.load(Ordering::Relaxed))
    }

    pub(crate) fn set_events_per_sec(&self, rate: f64) {
        self.events_per_sec
            .store(rate.max(0.0).to_bits(), Ordering::Relaxed);
    }

    /// Whether the next connection is one that never gets HELLO.
    pub(crate) fn take_silent(&self) -> bool {
        self.silent_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    pub(crate) fn chaos_paused(&self) -> bool {
        self.chaos_paused.load(Ordering::Relaxed)
    }

    pub(crate) fn pause_chaos(&self, paused: bool) {
        self.chaos_paused.store(paused, Ordering::Relaxed);
    }

    /// The gateway URL `/gateway/bot` and `/gateway` return.
    pub(crate) fn advertised_url(&self) -> &str {
        self.config.gateway_url.as_deref().unwrap_or(&self.ws_base)
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn resume_url(&self) -> String {
        format!("{}/resume", self.ws_base)
    }

    /// Records a broken rule.
    pub(crate) fn violation(&self, kind: ViolationKind, shard: Option<u32>, detail: String) {
        tracing::warn!(?kind, shard, %detail, "client broke a gateway rule");
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        lock(&self.inner).violations.push(Violation {
            kind,
            shard,
            at_ms,
            detail,
        });
    }

    /// Applies the identify window and budget, then starts a session owned by `conn`.
    pub(crate) fn identify(
        &self,
        now: Instant,
        conn: u64,
        shard: u32,
        total: u32,
        token: &str,
    ) -> Result<SharedSession, IdentifyRefusal> {
        let mut inner = lock(&self.inner);
        let bucket = (shard % self.config.max_concurrency.max(1)) as usize;
        let window = self.config.identify_window;
        let attempts = &mut inner.bucket_attempts[bucket];
        while attempts
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            attempts.pop_front();
        }
        attempts.push_back(now);
        let in_window = u32::try_from(attempts.len()).unwrap_or(u32::MAX);
        let stats = &mut inner.buckets[bucket];
        stats.max_per_window = stats.max_per_window.max(in_window);
        if let Some(last) = inner.bucket_last_grant[bucket] {
            let since = now.saturating_duration_since(last);
            if since < window {
                return Err(IdentifyRefusal::Window {
                    detail: format!(
                        "bucket {bucket} identified {since:?} ago, window is {window:?}"
                    ),
                });
            }
        }
        if now >= inner.reset_at {
            inner.remaining = self.config.session_start_total;
            inner.reset_at = now + self.config.session_start_reset;
        }
        if inner.remaining == 0 {
            return Err(IdentifyRefusal::Budget);
        }
        inner.remaining -= 1;
        let last = inner.bucket_last_grant[bucket];
        let stats = &mut inner.buckets[bucket];
        if let Some(last) = last {
            let gap =
                u64::try_from(now.saturating_duration_since(last).as_millis()).unwrap_or(u64::MAX);
            stats.min_gap_ms = Some(stats.min_gap_ms.map_or(gap, |min| min.min(gap)));
            stats.max_gap_ms = Some(stats.max_gap_ms.map_or(gap, |max| max.max(gap)));
        }
        stats.identifies += 1;
        inner.bucket_last_grant[bucket] = Some(now);
        inner.identifies += 1;
        let id = format!("{:032x}", inner.rng.random::<u128>());
        let mut record = SessionRecord::new(
            id.clone(),
            (shard, total),
            token.to_owned(),
            self.config.replay_capacity,
            self.config.guilds_per_shard,
        );
        record.owner = Some(conn);
        record.index = inner.sessions.len() as u64;
        let session = Arc::new(Mutex::new(record));
        inner.sessions.insert(id.clone(), Arc::clone(&session));
        let stats = inner.shards.entry(shard).or_default();
        stats.identifies += 1;
        stats.connections += 1;
        stats.session_id = Some(id);
        stats.state = "ready".into();
        Ok(session)
    }

    /// Looks a session up for RESUME and, if it can continue, hands it to `conn`.
    pub(crate) fn resume(
        &self,
        now: Instant,
        conn: u64,
        session_id: &str,
        token: &str,
        seq: u64,
    ) -> ResumeOutcome {
        let mut inner = lock(&self.inner);
        let outcome = self.try_resume(&inner, now, conn, session_id, token, seq);
        match &outcome {
            ResumeOutcome::Resumed { session, .. } => {
                inner.resumes_ok += 1;
                let shard = lock(session).shard;
                let stats = inner.shards.entry(shard).or_default();
                stats.resumes += 1;
                stats.connections += 1;
                stats.state = "ready".into();
            }
            ResumeOutcome::Invalid(_) | ResumeOutcome::SeqAhead { .. } => inner.resumes_failed += 1,
        }
        outcome
    }

    fn try_resume(
        &self,
        inner: &Inner,
        now: Instant,
        conn: u64,
        session_id: &str,
        token: &str,
        seq: u64,
    ) -> ResumeOutcome {
        let Some(session) = inner.sessions.get(session_id) else {
            return ResumeOutcome::Invalid(format!("unknown session {session_id}"));
        };
        let mut record = lock(session);
        if record.token != token {
            return ResumeOutcome::Invalid("wrong token".into());
        }
        if record.invalidated {
            return ResumeOutcome::Invalid("session was invalidated".into());
        }
        if record.owner.is_none()
            && record
                .detached_at
                .is_some_and(|at| now.saturating_duration_since(at) > self.config.session_ttl)
        {
            record.invalidated = true;
            return ResumeOutcome::Invalid("session expired".into());
        }
        if seq > record.last_seq() {
            return ResumeOutcome::SeqAhead {
                last: record.last_seq(),
                claimed: seq,
            };
        }
        let Some(replay) = record.replay_after(seq) else {
            record.invalidated = true;
            return ResumeOutcome::Invalid(format!("events after {seq} are no longer kept"));
        };
        record.owner = Some(conn);
        record.detached_at = None;
        drop(record);
        ResumeOutcome::Resumed {
            session: Arc::clone(session),
            replay,
        }
    }

    /// Connection `conn` authenticated `shard`: it serves the shard from now on.
    pub(crate) fn serve(&self, shard: u32, conn: u64) {
        lock(&self.inner).serving.insert(shard, conn);
    }

    /// Why connection `conn` of `shard`, holding `session`, may no longer talk: a newer
    /// connection resumed its session, or identified the shard anew.
    pub(crate) fn superseded(
        &self,
        shard: u32,
        conn: u64,
        session: &SharedSession,
    ) -> Option<ViolationKind> {
        let record = lock(session);
        if record.owner.is_some_and(|owner| owner != conn) {
            return Some(ViolationKind::SessionFoughtOver);
        }
        drop(record);
        let serving = lock(&self.inner).serving.get(&shard).copied();
        serving
            .is_some_and(|serving| serving != conn)
            .then_some(ViolationKind::TwoLiveConnections)
    }

    /// The connection `conn` no longer serves `session`.
    pub(crate) fn detach(&self, now: Instant, conn: u64, session: &SharedSession) {
        let (shard, id) = {
            let mut record = lock(session);
            if record.owner != Some(conn) {
                return;
            }
            record.owner = None;
            record.detached_at = Some(now);
            (record.shard, record.id.clone())
        };
        // A newer session of the shard may already be serving it.
        if let Some(stats) = lock(&self.inner).shards.get_mut(&shard)
            && stats.session_id.as_deref() == Some(id.as_str())
        {
            stats.state = "disconnected".into();
        }
    }

    /// Whether a full member list of `guild` may be requested now; else seconds to wait.
    pub(crate) fn member_request(&self, now: Instant, guild: u64) -> Result<(), f64> {
        let cooldown = self.config.member_request_cooldown;
        let mut inner = lock(&self.inner);
        if let Some(&last) = inner.member_cooldowns.get(&guild) {
            let since = now.saturating_duration_since(last);
            if since < cooldown {
                return Err(cooldown.saturating_sub(since).as_secs_f64());
            }
        }
        inner.member_cooldowns.insert(guild, now);
        Ok(())
    }

    pub(crate) fn presence(&self, shard: u32, presence: serde_json::Value) {
        let mut inner = lock(&self.inner);
        let stats = inner.shards.entry(shard).or_default();
        stats.presence_updates += 1;
        stats.presence = Some(presence);
    }

    pub(crate) fn client_closed(&self, code: u16) {
        *lock(&self.inner)
            .client_close_codes
            .entry(code)
            .or_default() += 1;
    }

    pub(crate) fn fault_applied(&self, fault: &Fault) {
        let name = match fault {
            Fault::Drop => "drop".to_owned(),
            Fault::Close { code } => format!("close_{code}"),
            Fault::Reconnect => "reconnect".to_owned(),
            Fault::InvalidSession { resumable } => format!("invalid_session_{resumable}"),
            Fault::Zombie => "zombie".to_owned(),
            Fault::Garbage => "garbage".to_owned(),
            Fault::HeartbeatRequest => "heartbeat_request".to_owned(),
        };
        *lock(&self.inner).faults.entry(name).or_default() += 1;
    }

    /// The next scripted `/gateway/bot` failure, if any is left.
    pub(crate) fn next_rest_fault(&self) -> Option<crate::fault::RestFault> {
        lock(&self.inner).rest_faults.pop_front()
    }

    /// Remaining session starts and the time until they reset.
    pub(crate) fn budget(&self, now: Instant) -> (u32, Duration) {
        let inner = lock(&self.inner);
        (
            inner.remaining,
            inner.reset_at.saturating_duration_since(now),
        )
    }

    pub(crate) fn stats(&self) -> Stats {
        let inner = lock(&self.inner);
        let mut shards = inner.shards.clone();
        let mut sessions: Vec<SessionSummary> = inner
            .sessions
            .values()
            .map(|s| {
                let record = lock(s);
                SessionSummary {
                    index: record.index,
                    session_id: record.id.clone(),
                    shard: record.shard,
                    last_seq: record.last_seq(),
                }
            })
            .collect();
        sessions.sort_by_key(|s| (s.shard, s.index));
        for summary in &sessions {
            if let Some(stats) = shards.get_mut(&summary.shard)
                && stats.session_id.as_deref() == Some(summary.session_id.as_str())
            {
                stats.last_seq = summary.last_seq;
            }
        }
        Stats {
            identifies: inner.identifies,
            resumes_ok: inner.resumes_ok,
            resumes_failed: inner.resumes_failed,
            connections: self.connections.load(Ordering::Relaxed),
            open_connections: self.open_connections.load(Ordering::Relaxed),
            events_sent: self.events_sent.load(Ordering::Relaxed),
            heartbeats: self.heartbeats.load(Ordering::Relaxed),
            session_start_remaining: inner.remaining,
            client_close_codes: inner.client_close_codes.clone(),
            faults: inner.faults.clone(),
            shards,
            buckets: inner.buckets.clone(),
            sessions,
            violations: inner.violations.clone(),
        }
    }
}
