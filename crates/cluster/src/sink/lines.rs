//! NDJSON line sinks (`stdout`, `file:PATH`): a writer thread per sink, so a slow pipe
//! or disk never runs on a shard's thread, and a flush barrier for the store.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use crate::Event;
use crate::sink::{Delivery, EventSink};

/// Events a line sink holds before it answers `Full` and the shard stops reading.
const QUEUE: usize = 8_192;
/// How long the writer waits for more lines after writing a partial batch.
const LINGER: std::time::Duration = std::time::Duration::from_micros(250);
/// Bytes gathered into one write call.
const BATCH_BYTES: usize = 256 * 1024;

enum Item {
    Event(Arc<Event>),
    Flush(SyncSender<()>),
}

/// Writes one event line per dispatch to a byte stream.
pub struct LineSink {
    name: String,
    tx: SyncSender<Item>,
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
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread_name = format!("sink-{}", name.chars().take(10).collect::<String>());
        let sink_name = name.clone();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || run(&sink_name, &rx, target))?;
        Ok(Self { name, tx })
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

fn run(name: &str, rx: &Receiver<Item>, mut target: impl Target) {
    let mut batch = String::with_capacity(BATCH_BYTES);
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut flushes = Vec::new();
        let mut events = 0usize;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Event(event) => {
                    event.write_line(&mut batch);
                    batch.push('\n');
                    events += 1;
                }
                Item::Flush(ack) => flushes.push(ack),
            }
            if batch.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
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
        }
        if !flushes.is_empty() {
            if let Err(err) = target.sync() {
                tracing::warn!(sink = name, %err, "event sink cannot sync");
            }
            for ack in flushes {
                let _ = ack.send(());
            }
        }
        // While events flow, let the next ones gather instead of parking: a parked
        // writer has to be woken (a futex call on the shard's thread) for every event.
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
        match self.tx.try_send(Item::Event(Arc::clone(event))) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => Delivery::Accepted,
            Err(TrySendError::Full(_)) => Delivery::Full,
        }
    }

    fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Item::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
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

    use super::LineSink;
    use crate::Event;
    use crate::sink::{Delivery, EventSink};

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
}
