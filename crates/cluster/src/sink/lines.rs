//! NDJSON line sinks (`stdout`, `file:PATH`): the shard's thread appends the event line
//! to a pending buffer of its own, and a writer thread per sink takes those buffers in
//! exchange for empty ones and writes them, so a slow pipe or disk never runs on a
//! shard's thread, no event crosses threads (nor is freed on another thread's heap), and
//! two shard threads never contend for one lock or write into one buffer. A shard stays
//! on its thread, so its lines keep their order. A flush barrier serves the store.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

use crate::Event;
use crate::sink::{Delivery, EventSink};

/// Events a thread's pending buffer holds before the sink answers `Full` and the shard
/// stops reading.
const QUEUE: usize = 8_192;
/// Bytes of a thread's pending lines past which the sink answers `Full` (one event
/// always fits).
const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// How long the writer waits for more lines after writing a partial batch.
const LINGER: Duration = Duration::from_micros(250);
/// A pass that wrote at least this many events was busy traffic (at 50 events a
/// second per shard a pass writes one or two)...
const BUSY_PASS: usize = 64;
/// ...after which the writer waits longer: each wake-up is a context switch, and under
/// load a millisecond more of lines per write costs nothing a reader of the sink sees.
const LINGER_BUSY: Duration = Duration::from_millis(1);
/// A write of at least this many bytes is a full batch: the writer goes straight on.
const BATCH_BYTES: usize = 256 * 1024;
/// How long after the last full batch the writer keeps a buffer grown past four batches.
const SHRINK_AFTER: Duration = Duration::from_secs(1);

/// Lines one thread appended since the writer last took them.
#[derive(Default)]
struct Pending {
    lines: String,
    events: usize,
}

/// A poisoned lock is still usable: a panic elsewhere never leaves a buffer half-written.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This thread's number, for picking a pending buffer.
fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|number| *number)
}

struct Shared {
    /// Pending buffers, one per shard thread (threads share one when there are more).
    slots: Box<[Mutex<Pending>]>,
    /// Flush barriers, answered after the next write.
    flushes: Mutex<Vec<SyncSender<()>>>,
    closed: AtomicBool,
    /// The writer, unparked when work arrives.
    writer: OnceLock<Thread>,
}

impl Shared {
    fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| Mutex::default()).collect(),
            flushes: Mutex::default(),
            closed: AtomicBool::new(false),
            writer: OnceLock::new(),
        }
    }

    fn slot(&self) -> &Mutex<Pending> {
        &self.slots[thread_number() % self.slots.len()]
    }

    fn wake(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }
}

/// Writes one event line per dispatch to a byte stream.
pub struct LineSink {
    name: String,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Where a line sink writes.
trait Target: Send + 'static {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
}

struct Stdout;

impl Target for Stdout {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(batch)?;
        out.flush()
    }

    fn sync(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}

struct Appending(File);

impl Target for Appending {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        self.0.write_all(batch)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl LineSink {
    /// How the writer thread of a file sink is named (as `/proc/PID/task/*/comm` shows
    /// it), for tools that measure it.
    pub const FILE_WRITER_THREAD: &str = "sink-file:";

    /// Event lines on standard output (logs go to stderr).
    pub fn stdout() -> io::Result<Self> {
        Self::spawn("stdout".into(), Stdout)
    }

    /// Event lines appended to `path`, which is created if missing and never truncated.
    /// A last line torn by a crash is reported and terminated, so new lines start clean.
    pub fn file(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        if ends_torn(&mut file)? {
            tracing::warn!(path = %path.display(), "event file ends with a torn line (crash while writing); terminating it");
            file.write_all(b"\n")?;
        }
        Self::spawn(format!("file:{}", path.display()), Appending(file))
    }

    fn spawn(name: String, target: impl Target) -> io::Result<Self> {
        // Shards run on one thread per core.
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let shared = Arc::new(Shared::new(threads));
        let thread_name = format!("sink-{}", name.chars().take(10).collect::<String>());
        let sink_name = name.clone();
        let writer = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || run(&sink_name, &writer, target))?;
        // Before any line is delivered; the writer looks at the buffers before it first
        // parks, so it cannot miss a line either way.
        let _ = shared.writer.set(handle.thread().clone());
        Ok(Self { name, shared })
    }
}

impl Drop for LineSink {
    /// The writer writes what is pending and ends.
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake();
    }
}

fn ends_torn(file: &mut File) -> io::Result<bool> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

fn run(name: &str, shared: &Shared, mut target: impl Target) {
    // Buffers take turns: the shards fill theirs while this thread writes this one.
    let mut batch = String::with_capacity(BATCH_BYTES);
    let mut failed = false;
    let mut last_full = crate::clock::now();
    loop {
        // Barriers and the close first: every line delivered before them is in a buffer
        // taken below.
        let flushes = std::mem::take(&mut *lock(&shared.flushes));
        let closed = shared.closed.load(Ordering::Acquire);
        let (mut events, mut full) = (0, false);
        for slot in &shared.slots {
            let mut pending = lock(slot);
            if pending.lines.is_empty() {
                continue;
            }
            std::mem::swap(&mut pending.lines, &mut batch);
            events += std::mem::take(&mut pending.events);
            drop(pending);
            full |= batch.len() >= BATCH_BYTES;
            let written = target.write_batch(batch.as_bytes());
            if let Err(err) = &written
                && !failed
            {
                tracing::error!(sink = name, %err, "event sink cannot write");
            }
            failed = written.is_err();
            batch.clear();
        }
        let barrier = !flushes.is_empty();
        if barrier {
            if let Err(err) = target.sync() {
                tracing::warn!(sink = name, %err, "event sink cannot sync");
            }
            for ack in flushes {
                let _ = ack.send(());
            }
        }
        if closed {
            return;
        }
        if barrier {
            continue;
        }
        if full {
            last_full = crate::clock::now();
        }
        if events == 0 {
            // A burst's oversized buffer (a large GUILD_CREATE backlog, a writer
            // descheduled under load) goes back once no full batch came for a while: freed
            // while events still flow, it would be grown again page by page — a page fault
            // and a copy per doubling, for every pass of the writer.
            let oversized = batch.capacity() > 4 * BATCH_BYTES;
            if oversized && last_full.elapsed() >= SHRINK_AFTER {
                batch = String::with_capacity(BATCH_BYTES);
                std::thread::park();
            } else if oversized {
                std::thread::park_timeout(SHRINK_AFTER);
            } else {
                // Woken by the first line of an empty buffer, a barrier or the close.
                std::thread::park();
            }
        } else if !full {
            // While events flow, let the next ones gather: a parked writer has to be
            // woken (a futex call on a shard's thread) for every event.
            std::thread::sleep(if events >= BUSY_PASS {
                LINGER_BUSY
            } else {
                LINGER
            });
        }
    }
}

impl EventSink for LineSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&self, event: &Event) -> Delivery {
        let mut pending = lock(self.shared.slot());
        if pending.events >= QUEUE || pending.lines.len() >= QUEUE_BYTES {
            return Delivery::Full;
        }
        let first = pending.lines.is_empty();
        event.write_line(&mut pending.lines);
        pending.lines.push('\n');
        pending.events += 1;
        drop(pending);
        if first {
            self.shared.wake();
        }
        Delivery::Accepted
    }

    fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        lock(&self.shared.flushes).push(ack);
        self.shared.wake();
        let _ = done.recv();
    }
}

/// Where `file:` sinks write, relative paths taken as given.
#[must_use]
pub fn sink_path(spec: &str) -> Option<PathBuf> {
    spec.strip_prefix("file:")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests;
