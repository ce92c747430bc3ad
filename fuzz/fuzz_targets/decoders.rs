//! Any byte stream cut into WebSocket messages through a zlib-stream (first byte even)
//! or zstd-stream (odd) decoder: errors are fine, panics and unbounded output are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardkeeper_protocol::{Compression, Decoder};

fuzz_target!(|data: &[u8]| {
    let Some((selector, stream)) = data.split_first() else { return };
    let compression = if selector % 2 == 0 { Compression::ZlibStream } else { Compression::ZstdStream };
    let mut decoder = Decoder::with_limit(compression, 1 << 20);
    for message in stream.split(|b| *b == 0xA5) {
        if let Ok(Some(document)) = decoder.push(message) {
            assert!(document.len() <= 1 << 20);
        }
    }
});
