//! Golden-fixture and transport-compression tests of the wire format.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]

use std::fs;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shardkeeper_protocol::payload::{
    GatewayBot, GuildMembersChunkHeader, Hello, Identify, PresenceUpdate, RateLimited, Ready,
    RequestChannelInfo, RequestGuildMembers, RequestSoundboardSounds, Resume, VoiceStateUpdate,
};
use shardkeeper_protocol::{
    Compression, DecodeError, Decoder, Envelope, Intents, OpCode, Outbound, ShardId,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Parses the fixture's `d` into `T`, re-serializes it under the same opcode and checks
/// the result equals the fixture as JSON.
fn round_trip<T: Serialize + DeserializeOwned>(name: &str, op: OpCode) -> T {
    let bytes = fixture(name);
    let env = Envelope::parse(&bytes).expect("fixture parses");
    assert_eq!(env.op, op, "{name}");
    let body: T = env.body().expect("typed body parses");
    let frame = Outbound::new(op, &body).expect("serializes");
    let sent: Value = serde_json::from_str(frame.as_str()).expect("valid json");
    let original: Value = serde_json::from_slice(&bytes).expect("valid json");
    assert_eq!(sent["op"], original["op"], "{name}");
    assert_eq!(sent["d"], original["d"], "{name}");
    body
}

#[test]
fn client_payloads_round_trip() {
    let identify: Identify = round_trip("identify.json", OpCode::Identify);
    assert_eq!(identify.token.expose(), "my_token");
    assert_eq!(identify.shard, ShardId::new(0, 1));
    assert_eq!(
        identify.intents,
        Intents::GUILDS | Intents::GUILD_MEMBERS | Intents::GUILD_MODERATION
    );
    let resume: Resume = round_trip("resume.json", OpCode::Resume);
    assert_eq!(resume.seq, 1337);
    round_trip::<PresenceUpdate>("presence_update.json", OpCode::PresenceUpdate);
    round_trip::<VoiceStateUpdate>("voice_state_update.json", OpCode::VoiceStateUpdate);
    let all: RequestGuildMembers =
        round_trip("request_guild_members.json", OpCode::RequestGuildMembers);
    assert!(all.is_full_list() && all.validate().is_ok());
    let ids: RequestGuildMembers = round_trip(
        "request_guild_members_ids.json",
        OpCode::RequestGuildMembers,
    );
    assert_eq!(ids.nonce.as_deref(), Some("abc123"));
    round_trip::<RequestSoundboardSounds>(
        "request_soundboard_sounds.json",
        OpCode::RequestSoundboardSounds,
    );
    round_trip::<RequestChannelInfo>("request_channel_info.json", OpCode::RequestChannelInfo);
    round_trip::<u64>("heartbeat.json", OpCode::Heartbeat);
}

#[test]
fn identify_debug_hides_the_token() {
    let bytes = fixture("identify.json");
    let identify: Identify = Envelope::parse(&bytes)
        .and_then(|env| env.body())
        .expect("parses");
    assert!(!format!("{identify:?}").contains("my_token"));
    let frame = Outbound::new(OpCode::Identify, &identify).expect("serializes");
    assert!(!format!("{frame:?}").contains("my_token"));
}

#[test]
fn server_payloads_parse() {
    let hello = fixture("hello.json");
    let env = Envelope::parse(&hello).expect("parses");
    assert_eq!(env.op, OpCode::Hello);
    assert_eq!(
        env.body::<Hello>().expect("hello body").heartbeat_interval,
        45_000
    );

    let ready = fixture("ready.json");
    let env = Envelope::parse(&ready).expect("parses");
    assert_eq!(
        (env.op, env.s, env.t.as_deref()),
        (OpCode::Dispatch, Some(1), Some("READY"))
    );
    let body: Ready = env.body().expect("ready body");
    assert_eq!(body.session_id, "e8c5b2a9f6d04a7b");
    assert_eq!(
        body.resume_gateway_url,
        "wss://gateway-us-east1-b.discord.gg"
    );
    assert_eq!(body.guilds.len(), 1);
    assert!(body.guilds[0].unavailable);

    let invalid = fixture("invalid_session.json");
    let env = Envelope::parse(&invalid).expect("parses");
    assert_eq!(env.op, OpCode::InvalidSession);
    assert!(!env.body::<bool>().expect("bool body"));

    let reconnect = fixture("reconnect.json");
    assert_eq!(
        Envelope::parse(&reconnect).expect("parses").op,
        OpCode::Reconnect
    );
    let ack = fixture("heartbeat_ack.json");
    assert_eq!(
        Envelope::parse(&ack).expect("parses").op,
        OpCode::HeartbeatAck
    );

    let limited = fixture("rate_limited.json");
    let body: RateLimited = Envelope::parse(&limited)
        .and_then(|env| env.body())
        .expect("rate limited body");
    assert_eq!(body.opcode, 8);
    assert!((body.retry_after - 28.25).abs() < f64::EPSILON);

    let chunk = fixture("guild_members_chunk.json");
    let header: GuildMembersChunkHeader = Envelope::parse(&chunk)
        .and_then(|env| env.body())
        .expect("chunk header");
    assert_eq!((header.chunk_index, header.chunk_count), (0, 1));

    let bot: GatewayBot = serde_json::from_slice(&fixture("gateway_bot.json")).expect("parses");
    assert_eq!(bot.session_start_limit.max_concurrency, 1);
    assert_eq!(bot.shards, 9);
}

#[test]
fn dispatch_body_is_byte_for_byte() {
    let bytes = fixture("message_create.json");
    let text = std::str::from_utf8(&bytes).expect("utf-8");
    let env = Envelope::parse(&bytes).expect("parses");
    let d = env.d.expect("has d").get();
    let start = text.find(r#""d":"#).expect("has d") + 4;
    assert_eq!(d, &text.trim_end()[start..text.trim_end().len() - 1]);
    assert!(d.contains(r"\ud83d\udd25"), "escapes are kept as sent");
}

fn zlib_messages() -> Vec<Vec<u8>> {
    let bytes = fixture("zlib_stream.bin");
    let mut rest = &bytes[..];
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        messages.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    messages
}

fn expected_documents() -> Vec<String> {
    String::from_utf8(fixture("zlib_stream.expected.ndjson"))
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn zlib_stream_sample_decodes_with_split_frames() {
    let mut decoder = Decoder::new(Compression::ZlibStream);
    let mut documents = Vec::new();
    let mut incomplete = 0;
    for message in zlib_messages() {
        match decoder.push(&message).expect("decodes") {
            Some(doc) => documents.push(String::from_utf8(doc.to_vec()).expect("utf-8")),
            None => incomplete += 1,
        }
    }
    assert_eq!(incomplete, 2, "the split document waits for its suffix");
    assert_eq!(documents, expected_documents());
}

#[test]
fn zlib_stream_corruption_is_an_error() {
    let messages = zlib_messages();
    let mut decoder = Decoder::new(Compression::ZlibStream);
    decoder.push(&messages[0]).expect("first message decodes");
    let mut corrupt = messages[1].clone();
    for byte in corrupt.iter_mut().take(20).skip(2) {
        *byte ^= 0x5a;
    }
    assert!(matches!(
        decoder.push(&corrupt),
        Err(DecodeError::Corrupt { .. })
    ));
    let mut fresh = Decoder::new(Compression::ZlibStream);
    assert!(
        fresh.push(&messages[1]).is_err(),
        "a message needs its predecessors"
    );
}

#[test]
fn zlib_stream_header_is_checked() {
    let messages = zlib_messages();
    assert_eq!(
        &messages[0][..2],
        [0x78, 0x9c],
        "the sample opens with a zlib header"
    );
    for header in [[0x79, 0x9c], [0x78, 0x9d], [0x78, 0xbb], [0x88, 0x98]] {
        let mut first = messages[0].clone();
        first[..2].copy_from_slice(&header);
        let mut decoder = Decoder::new(Compression::ZlibStream);
        assert!(
            matches!(decoder.push(&first), Err(DecodeError::Corrupt { .. })),
            "header {header:02x?}"
        );
    }
    let mut decoder = Decoder::new(Compression::ZlibStream);
    assert!(
        decoder.push(&messages[0][..2]).expect("buffers").is_none(),
        "a lone header waits for the rest of its message"
    );
    let rest = decoder
        .push(&messages[0][2..])
        .expect("decodes")
        .map(<[u8]>::to_vec);
    assert_eq!(
        rest.map(String::from_utf8),
        Some(Ok(expected_documents()[0].clone()))
    );
}

#[test]
fn zlib_stream_limits_document_size() {
    let messages = zlib_messages();
    let mut decoder = Decoder::with_limit(Compression::ZlibStream, 100);
    assert!(decoder.push(&messages[0]).is_ok());
    assert!(matches!(
        decoder.push(&messages[1]),
        Err(DecodeError::TooLarge { limit: 100 })
    ));
    let mut unterminated = Decoder::with_limit(Compression::ZlibStream, 10);
    assert!(matches!(
        unterminated.push(&[1u8; 11]),
        Err(DecodeError::Unterminated { limit: 10 })
    ));
}

fn zstd_messages(documents: &[String]) -> Vec<Vec<u8>> {
    use zstd::stream::raw::{Encoder, Operation, OutBuffer};
    use zstd::zstd_safe::InBuffer;

    let mut encoder = Encoder::new(3).expect("encoder");
    documents
        .iter()
        .map(|doc| {
            let mut out = vec![0u8; doc.len() + 1024];
            let mut output = OutBuffer::around(&mut out[..]);
            let mut input = InBuffer::around(doc.as_bytes());
            encoder.run(&mut input, &mut output).expect("compresses");
            assert_eq!(input.pos(), doc.len());
            while encoder.flush(&mut output).expect("flushes") > 0 {}
            let written = output.pos();
            out.truncate(written);
            out
        })
        .collect()
}

#[test]
fn zstd_stream_decodes_one_message_per_document() {
    let documents = expected_documents();
    let mut decoder = Decoder::new(Compression::ZstdStream);
    for (message, expected) in zstd_messages(&documents).iter().zip(&documents) {
        let doc = decoder.push(message).expect("decodes").expect("complete");
        assert_eq!(std::str::from_utf8(doc).expect("utf-8"), expected);
    }
}

#[test]
fn zstd_stream_corruption_is_an_error() {
    let documents = expected_documents();
    let messages = zstd_messages(&documents);
    let mut decoder = Decoder::new(Compression::ZstdStream);
    assert!(decoder.push(b"definitely not zstd").is_err());
    let mut fresh = Decoder::new(Compression::ZstdStream);
    assert!(fresh.push(&messages[0]).is_ok());
    let mut headless = Decoder::new(Compression::ZstdStream);
    assert!(
        headless.push(&messages[1]).is_err(),
        "a later message lacks the frame header its context needs"
    );
}

#[test]
fn plain_frames_pass_through() {
    let mut decoder = Decoder::new(Compression::None);
    assert_eq!(decoder.push(b"{}").expect("ok"), Some(&b"{}"[..]));
}

mod fuzz_like {
    use proptest::prelude::*;
    use shardkeeper_protocol::{Compression, Decoder, Envelope};

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8)) {
            for compression in [Compression::None, Compression::ZlibStream, Compression::ZstdStream] {
                let mut decoder = Decoder::with_limit(compression, 1 << 20);
                for message in &messages {
                    if let Ok(Some(doc)) = decoder.push(message) {
                        let _ = Envelope::parse(doc);
                    }
                }
            }
        }
    }
}

/// `count` zlib-stream messages of documents about 1 KiB long, and the documents.
fn zlib_stream(count: usize) -> (Vec<Bytes>, Vec<String>) {
    let mut compress = flate2::Compress::new(flate2::Compression::fast(), true);
    (0..count)
        .map(|n| {
            let json = format!(
                r#"{{"op":0,"s":{n},"t":"X","d":"{}"}}"#,
                "y".repeat(1000 + n)
            );
            let mut out = Vec::with_capacity(json.len() + 64);
            compress
                .compress_vec(json.as_bytes(), &mut out, flate2::FlushCompress::Sync)
                .expect("compresses");
            (Bytes::from(out), json)
        })
        .unzip()
}

#[test]
fn shared_documents_cost_no_copy_or_allocation_per_message() {
    let (mut scratch, mut arena) = (Vec::new(), BytesMut::new());
    let message = Bytes::from_static(br#"{"op":11,"d":null}"#);
    let document = Decoder::new(Compression::None)
        .push_shared(message.clone(), &mut scratch, &mut arena)
        .expect("decodes")
        .expect("complete");
    assert_eq!(document.as_ptr(), message.as_ptr(), "its own document");

    // 300 KiB of documents, each dropped before the next: one arena block serves all.
    let (messages, expected) = zlib_stream(300);
    let mut decoder = Decoder::new(Compression::ZlibStream);
    let mut addresses = Vec::new();
    for (message, json) in messages.iter().zip(&expected) {
        let document = decoder
            .push_shared(message.clone(), &mut scratch, &mut arena)
            .expect("decodes")
            .expect("complete");
        assert_eq!(document, json.as_bytes());
        addresses.push(document.as_ptr() as usize);
    }
    let spread = addresses.iter().max().zip(addresses.iter().min());
    assert!(
        spread.is_some_and(|(high, low)| high - low < 64 * 1024),
        "the arena block is reused"
    );

    // Documents kept alive stay intact while later ones go elsewhere.
    let mut decoder = Decoder::new(Compression::ZlibStream);
    let kept: Vec<Bytes> = messages
        .iter()
        .filter_map(|m| {
            decoder
                .push_shared(m.clone(), &mut scratch, &mut arena)
                .expect("decodes")
        })
        .collect();
    assert_eq!(kept.len(), expected.len());
    assert!(
        kept.iter()
            .zip(&expected)
            .all(|(d, json)| d == json.as_bytes())
    );
}

#[test]
fn a_shared_body_is_a_slice_of_its_document() {
    let document = ByteString::from(r#"{"op":0,"s":1,"t":"X","d":{"a":[1,2]}}"#.to_owned());
    let env = Envelope::parse_str(&document).expect("parses");
    let d = env.d.expect("has d");
    let shared = d.share(&document);
    assert_eq!(shared.get(), r#"{"a":[1,2]}"#);
    assert_eq!(shared.get().as_ptr(), d.get().as_ptr(), "no copy");
    let elsewhere = ByteString::from("{}".to_owned());
    let copied = d.share(&elsewhere);
    assert_eq!(copied.get(), r#"{"a":[1,2]}"#);
    assert_ne!(
        copied.get().as_ptr(),
        d.get().as_ptr(),
        "not from this document: copied"
    );
}
