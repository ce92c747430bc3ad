//! How `bench compare` reads a contestant's count: the lines of shardkeeper's event file,
//! or the `events N failed M` lines twilight-reader prints when asked on its stdin.

use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;

/// Where the contestant's count comes from.
pub(super) enum Counter {
    /// Lines of shardkeeper's event file, counted once the run is over.
    File(PathBuf),
    /// The reader answers every line on its stdin with `events N failed M`.
    Reader {
        stdin: ChildStdin,
        lines: mpsc::Receiver<(u64, u64)>,
    },
}

/// A count at one instant: the event file's length, or the reader's totals.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mark {
    Offset(u64),
    Totals(u64, u64),
}

impl Counter {
    pub(super) fn mark(&mut self) -> anyhow::Result<Mark> {
        match self {
            Self::File(path) => Ok(Mark::Offset(std::fs::metadata(path)?.len())),
            Self::Reader { stdin, lines } => {
                while lines.try_recv().is_ok() {}
                stdin.write_all(b"\n")?;
                stdin.flush()?;
                let (events, failed) = lines
                    .recv_timeout(Duration::from_secs(5))
                    .context("twilight-reader did not report its count")?;
                Ok(Mark::Totals(events, failed))
            }
        }
    }

    /// Dispatches counted and messages rejected between two marks.
    pub(super) fn between(&self, start: Mark, end: Mark) -> anyhow::Result<(u64, u64)> {
        match (self, start, end) {
            (Self::File(path), Mark::Offset(from), Mark::Offset(to)) => {
                Ok((newlines_between(path, from, to)?, 0))
            }
            (Self::Reader { .. }, Mark::Totals(e0, f0), Mark::Totals(e1, f1)) => {
                Ok((e1.saturating_sub(e0), f1.saturating_sub(f0)))
            }
            _ => anyhow::bail!("marks of different counters"),
        }
    }
}

/// A thread that forwards the reader's `events N failed M` lines.
pub(super) fn read_counts(stdout: ChildStdout) -> mpsc::Receiver<(u64, u64)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            if let (Some("events"), Some(events), Some("failed"), Some(failed)) =
                (words.next(), words.next(), words.next(), words.next())
                && let (Ok(events), Ok(failed)) = (events.parse(), failed.parse())
                && tx.send((events, failed)).is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Newline bytes of `path` in `from..to`.
#[allow(
    clippy::naive_bytecount,
    reason = "runs once per run of a benchmark, after the measured window"
)]
fn newlines_between(path: &Path, from: u64, to: u64) -> anyhow::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut rest = file.take(to.saturating_sub(from));
    let (mut buf, mut count) = (vec![0u8; 1 << 20], 0);
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            return Ok(count);
        }
        count += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::newlines_between;

    #[test]
    fn newlines_are_counted_between_two_offsets_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events");
        let mut file = std::fs::File::create(&path).expect("file");
        file.write_all(b"a\nbb\nccc\ndddd\n").expect("write");
        assert_eq!(newlines_between(&path, 0, 14).expect("reads"), 4);
        assert_eq!(newlines_between(&path, 2, 9).expect("reads"), 2);
        assert_eq!(newlines_between(&path, 9, 9).expect("reads"), 0);
    }
}
