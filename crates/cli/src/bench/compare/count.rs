//! How `bench compare` reads a contestant's count: the dispatches shardkeeper's
//! `/metrics` says it delivered, or the `events N failed M` lines twilight-reader prints
//! when asked on its stdin.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{ChildStdin, ChildStdout};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;

/// How long a contestant may take to answer for its count.
const ANSWER: Duration = Duration::from_secs(5);

/// Where the contestant's count comes from.
pub(super) enum Counter {
    /// The sum of `shardkeeper_events_total` at this `/metrics` URL.
    Metrics { agent: ureq::Agent, url: String },
    /// The reader answers every line on its stdin with `events N failed M`.
    Reader {
        stdin: ChildStdin,
        lines: mpsc::Receiver<(u64, u64)>,
    },
}

/// Dispatches counted and messages rejected so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    pub(super) events: u64,
    pub(super) failed: u64,
}

impl Counter {
    pub(super) fn metrics(url: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(ANSWER))
            .build()
            .new_agent();
        Self::Metrics { agent, url }
    }

    pub(super) fn mark(&mut self) -> anyhow::Result<Mark> {
        match self {
            Self::Metrics { agent, url } => {
                let text = agent
                    .get(url.as_str())
                    .call()
                    .and_then(|mut r| r.body_mut().read_to_string())
                    .with_context(|| format!("reading {url}"))?;
                Ok(Mark {
                    events: events_total(&text),
                    failed: 0,
                })
            }
            Self::Reader { stdin, lines } => {
                while lines.try_recv().is_ok() {}
                stdin.write_all(b"\n")?;
                stdin.flush()?;
                let (events, failed) = lines
                    .recv_timeout(ANSWER)
                    .context("twilight-reader did not report its count")?;
                Ok(Mark { events, failed })
            }
        }
    }
}

impl Mark {
    /// Dispatches counted and messages rejected since `start`.
    pub(super) fn since(self, start: Self) -> (u64, u64) {
        (
            self.events.saturating_sub(start.events),
            self.failed.saturating_sub(start.failed),
        )
    }
}

/// The sum of every `shardkeeper_events_total` series in a Prometheus text exposition.
fn events_total(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.strip_prefix("shardkeeper_events_total{"))
        .filter_map(|rest| rest.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
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

#[cfg(test)]
mod tests {
    use super::events_total;

    #[test]
    fn every_event_series_is_summed_and_nothing_else() {
        let text = "# HELP shardkeeper_events_total Dispatches.\n\
                    # TYPE shardkeeper_events_total counter\n\
                    shardkeeper_events_total{t=\"READY\"} 16\n\
                    shardkeeper_events_total{t=\"MESSAGE_CREATE\"} 1234567\n\
                    shardkeeper_events_total_created 1.7e9\n\
                    shardkeeper_reconnects_total 3\n";
        assert_eq!(events_total(text), 1_234_583);
        assert_eq!(events_total(""), 0);
    }
}
