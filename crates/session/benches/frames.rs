//! What one received dispatch costs a Ready session: inflate, envelope check and the
//! `Emit` action, without any I/O — the per-event work of a shard minus sinks and sockets.
//!
//! `cargo bench -p shardkeeper-session --bench frames`
#![allow(clippy::expect_used, reason = "a benchmark fails loudly")]
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flate2::{Compress, Compression as Level, FlushCompress};
use shardkeeper_protocol::{Compression, ShardId, Token};
use shardkeeper_session::{Action, Command, Input, SessionConfig, ShardSession};

/// Dispatches per connection (few enough to stay in cache, as a frame just read is);
/// the stream is replayed on a fresh session after that.
const STREAM: u64 = 256;

/// A MESSAGE_CREATE with a body of about 512 bytes, shaped like the simulator's.
fn message(seq: u64) -> String {
    let content = "x".repeat(290);
    format!(
        r#"{{"op":0,"s":{seq},"t":"MESSAGE_CREATE","d":{{"id":"{id}","channel_id":"290926798999357250","guild_id":"41771983423143937","author":{{"id":"900000000000000{n:03}","username":"member-{n}","bot":false}},"type":0,"tts":false,"nonce":"1764489600000000","content":"{content}"}}}}"#,
        id = 334_385_199_974_967_042_u64 + seq,
        n = seq % 1000,
    )
}

/// HELLO, READY and `STREAM` dispatches as one connection sends them.
fn documents() -> Vec<String> {
    let mut all = vec![
        r#"{"op":10,"d":{"heartbeat_interval":41250},"s":null,"t":null}"#.to_owned(),
        r#"{"op":0,"s":1,"t":"READY","d":{"v":10,"session_id":"s","resume_gateway_url":"ws://resume.test","shard":[0,1],"guilds":[]}}"#.to_owned(),
    ];
    all.extend((2..STREAM + 2).map(message));
    all
}

/// The connection's frames on the wire: as they are, or one zlib stream.
fn frames(compression: Compression) -> Vec<Bytes> {
    let mut zlib = Compress::new(Level::fast(), true);
    documents()
        .into_iter()
        .map(|json| match compression {
            Compression::ZlibStream => {
                let mut out = Vec::with_capacity(json.len() + 64);
                zlib.compress_vec(json.as_bytes(), &mut out, FlushCompress::Sync)
                    .expect("compresses");
                Bytes::from(out)
            }
            _ => Bytes::from(json),
        })
        .collect()
}

/// A session that has read HELLO and READY from `frames`, at `now`.
fn ready_session(compression: Compression, frames: &[Bytes], now: Instant) -> ShardSession {
    let mut config = SessionConfig::new(Token::new("bench-token"), "ws://gateway.test");
    config.compression = compression;
    let shard = ShardId::new(0, 1).expect("valid shard");
    let mut session = ShardSession::new(shard, Arc::new(config), None, 1);
    session
        .command(now, Command::Start)
        .expect("start is accepted");
    session.handle(now, Input::Opened);
    session.handle(now, Input::Frame(frames[0].clone()));
    session.handle(now, Input::PermitGranted);
    session.handle(now, Input::Frame(frames[1].clone()));
    while session.poll_action().is_some() {}
    session
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("session_dispatch");
    group.throughput(Throughput::Elements(1));
    for compression in [Compression::None, Compression::ZlibStream] {
        let frames = frames(compression);
        group.bench_function(format!("{compression}_512b"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let now = Instant::now();
                    let mut session = ready_session(compression, &frames, now);
                    let batch = left.min(STREAM);
                    let started = Instant::now();
                    for frame in &frames[2..2 + batch as usize] {
                        session.handle(now, Input::Frame(frame.clone()));
                        while let Some(action) = session.poll_action() {
                            if let Action::Emit(event) = action {
                                black_box(event);
                            }
                        }
                    }
                    spent += started.elapsed();
                    left -= batch;
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
