//! NDJSON line sinks (`stdout`, `file:PATH`): the shard's thread appends the event line
//! to the sink's pending buffer, and a writer thread per sink swaps that buffer for an
//! empty one and writes it, so a slow pipe or disk never runs on a shard's thread and no
//! event crosses threads (nor is freed on another thread's heap). A flush barrier serves
//! the store.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::Event;
use crate::sink::{Delivery, EventSink};

/// Events a line sink holds before it answers `Full` and the shard stops reading.
const QUEUE: usize = 8_192;
/// Bytes of pending lines past which the sink answers `Full` (one event always fits).
const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// How long the writer waits for more lines after writing a partial batch.
const LINGER: std::time::Duration = std::time::Duration::from_micros(250);
/// A write of at least this many bytes is a full batch: the writer goes straight on.
const BATCH_BYTES: usize = 256 * 1024;

/// Lines the shards appended since the writer last took them.
#[derive(Default)]
struct Pending {
    lines: String,
    events: usize,
    flushes: Vec<SyncSender<()>>,
    closed: bool,
}

impl Pending {
    fn is_idle(&self) -> bool {
        self.lines.is_empty() && self.flushes.is_empty() && !self.closed
    }
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    /// The pending lines; a panic elsewhere never leaves them half-written, so a
    /// poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds to the pending lines and wakes the writer if it was waiting for work.
    fn add(&self, add: impl FnOnce(&mut Pending)) {
        let mut pending = self.lock();
        let was_idle = pending.is_idle();
        add(&mut pending);
        drop(pending);
        if was_idle {
            self.wake.notify_one();
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
        let shared = Arc::new(Shared::default());
        let thread_name = format!("sink-{}", name.chars().take(10).collect::<String>());
        let sink_name = name.clone();
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || run(&sink_name, &writer, target))?;
        Ok(Self { name, shared })
    }
}

impl Drop for LineSink {
    /// The writer writes what is pending and ends.
    fn drop(&mut self) {
        self.shared.add(|pending| pending.closed = true);
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
    // Two buffers take turns: the shards fill one while this thread writes the other.
    let mut batch = String::with_capacity(BATCH_BYTES);
    let mut failed = false;
    loop {
        let mut pending = shared.lock();
        while pending.is_idle() {
            pending = shared
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        std::mem::swap(&mut pending.lines, &mut batch);
        let events = std::mem::take(&mut pending.events);
        let flushes = std::mem::take(&mut pending.flushes);
        let closed = pending.closed;
        drop(pending);
        let full = batch.len() >= BATCH_BYTES;
        if !batch.is_empty() {
            if let Err(err) = target.write_batch(batch.as_bytes()) {
                if !failed {
                    tracing::error!(sink = name, %err, "event sink cannot write");
                }
                failed = true;
            } else {
                failed = false;
            }
            batch.clear();
            // A burst (a large GUILD_CREATE backlog) does not pin its buffer for good.
            if batch.capacity() > 4 * BATCH_BYTES {
                batch = String::with_capacity(BATCH_BYTES);
            }
        }
        if !flushes.is_empty() {
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
        // While events flow, let the next ones gather instead of waiting on the condition
        // variable: a waiting writer has to be woken (a futex call on a shard's thread)
        // for every event.
        if events > 0 && !full {
            std::thread::sleep(LINGER);
        }
    }
}

impl EventSink for LineSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&self, event: &Arc<Event>) -> Delivery {
        let mut delivery = Delivery::Accepted;
        self.shared.add(|pending| {
            if pending.events >= QUEUE || pending.lines.len() >= QUEUE_BYTES {
                delivery = Delivery::Full;
                return;
            }
            event.write_line(&mut pending.lines);
            pending.lines.push('\n');
            pending.events += 1;
        });
        delivery
    }

    fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        self.shared.add(|pending| pending.flushes.push(ack));
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
mod tests {
    use std::sync::Arc;

    use shardkeeper_protocol::RawJson;

    use std::sync::mpsc::{self, Receiver};
    use std::sync::{Mutex, PoisonError};

    use super::{LineSink, QUEUE, Target};
    use crate::Event;
    use crate::sink::{Delivery, EventSink};

    /// A target that keeps what it is given, each write waiting for a permit.
    struct Gated {
        written: Arc<Mutex<Vec<u8>>>,
        permits: Receiver<()>,
    }

    impl Target for Gated {
        fn write_batch(&mut self, batch: &[u8]) -> std::io::Result<()> {
            let _ = self.permits.recv();
            self.written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(batch);
            Ok(())
        }

        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn event(seq: u64) -> Arc<Event> {
        Arc::new(Event {
            shard: 1,
            seq,
            t: "MESSAGE_CREATE".into(),
            d: RawJson::parse(format!(r#"{{"n":{seq}}}"#)).expect("json"),
        })
    }

    #[test]
    fn file_sink_appends_whole_lines_and_repairs_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("sk-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("events.ndjson");
        std::fs::write(
            &path,
            "{\"shard\":0,\"seq\":1,\"t\":\"X\",\"d\":{}}\n{\"shard\":0,\"se",
        )
        .expect("written");
        let sink = LineSink::file(&path).expect("opens");
        for seq in 1..=3 {
            assert_eq!(sink.deliver(&event(seq)), Delivery::Accepted);
        }
        sink.flush();
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(
            lines[2],
            r#"{"shard":1,"seq":1,"t":"MESSAGE_CREATE","d":{"n":1}}"#
        );
        assert!(text.ends_with('\n'));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_stalled_writer_fills_the_queue_then_loses_nothing() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (permit, permits) = mpsc::channel();
        let sink = LineSink::spawn(
            "gated".into(),
            Gated {
                written: Arc::clone(&written),
                permits,
            },
        )
        .expect("spawns");
        let mut accepted = 0u64;
        while sink.deliver(&event(accepted + 1)) == Delivery::Accepted {
            accepted += 1;
            assert!(accepted <= 2 * QUEUE as u64, "the queue never fills");
        }
        assert!(accepted >= QUEUE as u64, "full after {accepted}");
        assert_eq!(sink.deliver(&event(accepted + 1)), Delivery::Full);
        for _ in 0..2 {
            permit.send(()).expect("writer alive");
        }
        sink.flush();
        let expected: String = (1..=accepted)
            .map(|seq| event(seq).to_line() + "\n")
            .collect();
        let text = String::from_utf8(written.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text, expected);
        // What is pending when the sink is dropped is still written.
        assert_eq!(sink.deliver(&event(accepted + 1)), Delivery::Accepted);
        drop(sink);
        permit.send(()).expect("writer alive");
        let last = event(accepted + 1).to_line() + "\n";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !written.lock().expect("lock").ends_with(last.as_bytes()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the last line was lost"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
