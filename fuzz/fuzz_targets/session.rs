//! The shard session fed arbitrary frames, closes, timers and permits: it never panics
//! and never sends IDENTIFY without a permit or a frame over 4096 bytes.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shardkeeper_protocol::{Compression, ShardId, Token};
use shardkeeper_session::{Action, Command, Input, SessionConfig, ShardSession};

fuzz_target!(|data: &[u8]| {
    let Some(shard) = ShardId::new(0, 1) else { return };
    let mut config = SessionConfig::new(Token::new("fuzz"), "ws://gateway.test");
    config.compression = Compression::None;
    let mut session = ShardSession::new(shard, Arc::new(config), None, 1);
    let mut now = Instant::now();
    let _ = session.command(now, Command::Start);
    session.handle(now, Input::Opened);
    session.handle(
        now,
        Input::Frame(Bytes::from_static(br#"{"op":10,"d":{"heartbeat_interval":1000}}"#)),
    );
    let mut permits = 0u32;
    let mut granted = 0u32;
    for chunk in data.split(|b| *b == b'\n') {
        match chunk.first() {
            Some(b'T') => {
                now += Duration::from_millis(u64::from(chunk.get(1).copied().unwrap_or(0)) * 50);
                session.handle(now, Input::Timeout);
            }
            Some(b'P') if permits > granted => {
                granted += 1;
                session.handle(now, Input::PermitGranted);
            }
            Some(b'C') => session.handle(now, Input::Closed(chunk.get(1).map(|c| 4000 + u16::from(*c % 20)))),
            Some(b'O') => session.handle(now, Input::Opened),
            _ => session.handle(now, Input::Frame(Bytes::copy_from_slice(chunk))),
        }
        let mut identifies = 0;
        while let Some(action) = session.poll_action() {
            match action {
                Action::RequestPermit => permits += 1,
                Action::Send(frame) => {
                    assert!(frame.len() <= 4096);
                    if frame.as_str().starts_with(r#"{"op":2"#) {
                        identifies += 1;
                    }
                }
                _ => {}
            }
        }
        assert!(identifies <= 1);
    }
});
