//! Events per second through the line sinks with 512-byte bodies: the shard's side
//! (`deliver`) and the writer thread, until `flush` confirms everything is written.
//!
//! `cargo bench -p shardkeeper-cluster --bench sinks`
#![allow(clippy::expect_used, reason = "a benchmark fails loudly")]
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shardkeeper_cluster::{Delivery, Event, EventSink, LineSink};
use shardkeeper_protocol::RawJson;

const EVENTS: u64 = 10_000;

fn events() -> Vec<Event> {
    (0..EVENTS)
        .map(|seq| {
            let d = format!(
                r#"{{"id":"{seq}","guild_id":"41771983423143937","content":"{}"}}"#,
                "x".repeat(450)
            );
            Event {
                shard: 3,
                seq,
                t: "MESSAGE_CREATE".into(),
                d: RawJson::parse(d).expect("json"),
            }
        })
        .collect()
}

fn file_sink(c: &mut Criterion) {
    let events = events();
    let dir = std::env::temp_dir().join(format!("sk-sink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut group = c.benchmark_group("line_sink");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    for (name, path) in [
        ("file", dir.join("events.ndjson")),
        ("dev_null", "/dev/null".into()),
    ] {
        let sink = LineSink::file(&path).expect("opens");
        group.bench_function(name, |b| {
            b.iter(|| {
                for event in &events {
                    while sink.deliver(black_box(event)) == Delivery::Full {
                        std::thread::yield_now();
                    }
                }
                sink.flush();
            });
        });
        let _ = std::fs::remove_file(dir.join("events.ndjson"));
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, file_sink);
criterion_main!(benches);
