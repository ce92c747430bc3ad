//! Micro-benchmarks of the receive path: envelope parsing and transport inflate.
//!
//! `cargo bench -p shardkeeper-protocol --bench decode`
#![allow(clippy::expect_used, reason = "a benchmark fails loudly")]
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flate2::{Compress, Compression as Level, FlushCompress};
use shardkeeper_protocol::{Compression, Decoder, Envelope};

/// A MESSAGE_CREATE of about 512 bytes, as the benchmarks elsewhere use.
fn dispatch(seq: u64) -> String {
    let content = "x".repeat(300);
    format!(
        r#"{{"t":"MESSAGE_CREATE","s":{seq},"op":0,"d":{{"id":"{id}","channel_id":"290926798999357250","guild_id":"41771983423143937","author":{{"id":"53908099506183680","username":"Mason","bot":false}},"content":"{content}","type":0,"tts":false}}}}"#,
        id = 334_385_199_974_967_042_u64 + seq
    )
}

/// A MESSAGE_CREATE as Discord sends it for a user's message in a guild (every field it
/// always sends; the simulator's shape), about 600 bytes: many short strings.
fn full_dispatch(seq: u64) -> String {
    format!(
        r#"{{"t":"MESSAGE_CREATE","s":{seq},"op":0,"d":{{"type":0,"tts":false,"timestamp":"2026-12-02T06:35:37.123456+00:00","pinned":false,"nonce":"1764657337123456","mentions":[],"mention_roles":[],"mention_everyone":false,"id":"{id}","flags":0,"embeds":[],"edited_timestamp":null,"components":[],"channel_id":"290926798999357250","author":{{"username":"member-42","public_flags":0,"id":"900000000000000042","global_name":null,"discriminator":"0","bot":false,"avatar":null}},"attachments":[],"guild_id":"41771983423143937","content":"hello there, this is a message of a typical length"}}}}"#,
        id = 334_385_199_974_967_042_u64 + seq
    )
}

fn zlib_messages(count: u64) -> Vec<Vec<u8>> {
    let mut compressor = Compress::new(Level::fast(), true);
    (0..count)
        .map(|seq| {
            let json = dispatch(seq);
            let mut out = Vec::with_capacity(json.len() + 64);
            compressor
                .compress_vec(json.as_bytes(), &mut out, FlushCompress::Sync)
                .expect("compresses");
            out
        })
        .collect()
}

fn zstd_messages(count: u64) -> Vec<Vec<u8>> {
    use zstd::stream::raw::{Encoder, InBuffer, Operation, OutBuffer};
    let mut encoder = Encoder::new(3).expect("encoder");
    (0..count)
        .map(|seq| {
            let json = dispatch(seq);
            let mut out = vec![0u8; json.len() + 256];
            let mut output = OutBuffer::around(&mut out[..]);
            let mut input = InBuffer::around(json.as_bytes());
            encoder.run(&mut input, &mut output).expect("compresses");
            while encoder.flush(&mut output).expect("flushes") > 0 {}
            let written = output.pos();
            out.truncate(written);
            out
        })
        .collect()
}

fn envelope(c: &mut Criterion) {
    let frame = dispatch(42);
    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("parse_dispatch_512b", |b| {
        b.iter(|| {
            let env = Envelope::parse(black_box(frame.as_bytes())).expect("parses");
            black_box((env.op, env.s, env.d.map(|d| d.get().len())));
        });
    });
    let full = full_dispatch(42);
    group.throughput(Throughput::Bytes(full.len() as u64));
    group.bench_function("parse_full_message_create", |b| {
        b.iter(|| {
            let env = Envelope::parse(black_box(full.as_bytes())).expect("parses");
            black_box((env.op, env.s, env.d.map(|d| d.get().len())));
        });
    });
    group.finish();
}

fn inflate(c: &mut Criterion) {
    const MESSAGES: u64 = 1000;
    let bytes: u64 = (0..MESSAGES).map(|s| dispatch(s).len() as u64).sum();
    let mut group = c.benchmark_group("inflate");
    group.throughput(Throughput::Bytes(bytes));
    for (name, compression, messages) in [
        (
            "zlib_stream_1000x512b",
            Compression::ZlibStream,
            zlib_messages(MESSAGES),
        ),
        (
            "zstd_stream_1000x512b",
            Compression::ZstdStream,
            zstd_messages(MESSAGES),
        ),
        (
            "none_1000x512b",
            Compression::None,
            (0..MESSAGES).map(|s| dispatch(s).into_bytes()).collect(),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut decoder = Decoder::new(compression);
                for message in &messages {
                    black_box(decoder.push(message).expect("decodes").map(<[u8]>::len));
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, envelope, inflate);
criterion_main!(benches);
