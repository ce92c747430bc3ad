//! The line sinks: stdout and appending files, torn tails, the writer thread.

use std::sync::Arc;

use shardkeeper_protocol::RawJson;

use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

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

fn event(seq: u64) -> Event {
    shard_event(1, seq)
}

fn shard_event(shard: u32, seq: u64) -> Event {
    Event {
        shard,
        seq,
        t: "MESSAGE_CREATE".into(),
        d: RawJson::parse(format!(r#"{{"n":{seq}}}"#)).expect("json"),
    }
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
    // The thread names itself when it starts; it has written by now.
    let threads = std::fs::read_dir("/proc/self/task").expect("tasks");
    assert!(
        threads.flatten().any(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with(LineSink::FILE_WRITER_THREAD))
        }),
        "a writer thread named {}…",
        LineSink::FILE_WRITER_THREAD
    );
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
    let deadline = crate::clock::now() + Duration::from_secs(10);
    while !written.lock().expect("lock").ends_with(last.as_bytes()) {
        assert!(crate::clock::now() < deadline, "the last line was lost");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn lines_from_many_threads_all_arrive_each_thread_in_order() {
    let written = Arc::new(Mutex::new(Vec::new()));
    // Every write is let through, one at a time.
    let (permit, permits) = mpsc::sync_channel(0);
    let sink = Arc::new(
        LineSink::spawn(
            "threads".into(),
            Gated {
                written: Arc::clone(&written),
                permits,
            },
        )
        .expect("spawns"),
    );
    std::thread::spawn(move || while permit.send(()).is_ok() {});
    let threads: Vec<_> = (0..4u32)
        .map(|shard| {
            let sink = Arc::clone(&sink);
            std::thread::spawn(move || {
                for seq in 1..=2_000 {
                    let event = shard_event(shard, seq);
                    while sink.deliver(&event) == Delivery::Full {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("delivered");
    }
    sink.flush();
    let text = String::from_utf8(written.lock().expect("lock").clone()).expect("utf-8");
    let mut last = [0u64; 4];
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("whole line");
        let (shard, seq) = (value["shard"].as_u64(), value["seq"].as_u64());
        let (Some(shard), Some(seq)) = (shard, seq) else {
            panic!("{line}");
        };
        let last = &mut last[usize::try_from(shard).expect("small")];
        assert_eq!(seq, *last + 1, "shard {shard} out of order");
        *last = seq;
    }
    assert_eq!(last, [2_000; 4]);
}
