//! Server-side transport compression: one compressor per connection.

use shardkeeper_protocol::{Compression, ZLIB_SUFFIX};
use tokio_tungstenite::tungstenite::Message;
use zlib_rs::{Deflate, DeflateFlush};
use zstd::stream::raw::{Encoder as ZstdEncoder, InBuffer, Operation, OutBuffer};

/// The zlib header (deflate, 32 KiB window, fastest level) that opens a zlib-stream.
const ZLIB_HEADER: [u8; 2] = [0x78, 0x01];

/// zlib-rs's fastest level: each message becomes one block of fixed Huffman codes, about
/// six times cheaper to produce than with C zlib's level 1 (which builds a code table per
/// message: 6–8 µs against 0.9–1.1 µs for a 512-byte MESSAGE_CREATE), 10 % larger, and
/// as cheap for the client to inflate (0.5–0.7 µs either way on the bench machine).
const ZLIB_LEVEL: i32 = 1;

/// A 32 KiB window, as Discord's stream has.
const ZLIB_WINDOW_BITS: u8 = 15;

/// Turns JSON frames into WebSocket messages for the connection's `compress` setting.
pub(crate) enum Encoder {
    Plain,
    /// Raw deflate after a header written by hand: a gateway stream never ends, so the
    /// Adler-32 trailer is never due, and zlib would checksum every byte sent for it.
    Zlib {
        compress: Box<Deflate>,
        header_sent: bool,
    },
    Zstd(Box<ZstdEncoder<'static>>),
}

impl Encoder {
    pub(crate) fn new(compression: Compression) -> Self {
        match compression {
            Compression::None => Self::Plain,
            Compression::ZlibStream => Self::Zlib {
                compress: Box::new(Deflate::new(ZLIB_LEVEL, false, ZLIB_WINDOW_BITS)),
                header_sent: false,
            },
            Compression::ZstdStream => match ZstdEncoder::new(3) {
                Ok(encoder) => Self::Zstd(Box::new(encoder)),
                Err(err) => {
                    tracing::error!(%err, "zstd encoder unavailable, sending uncompressed frames");
                    Self::Plain
                }
            },
        }
    }

    /// One gateway message: a text frame, or a binary frame of compressed bytes.
    pub(crate) fn encode(&mut self, json: &str) -> std::io::Result<Message> {
        match self {
            Self::Plain => Ok(Message::text(json)),
            Self::Zlib {
                compress,
                header_sent,
            } => {
                let mut out = Vec::new();
                if !std::mem::replace(header_sent, true) {
                    out.extend_from_slice(&ZLIB_HEADER);
                }
                deflate(compress, json.as_bytes(), out).map(Message::binary)
            }
            Self::Zstd(encoder) => zstd_frame(encoder, json.as_bytes()).map(Message::binary),
        }
    }
}

fn deflate(compress: &mut Deflate, mut input: &[u8], mut out: Vec<u8>) -> std::io::Result<Vec<u8>> {
    loop {
        let written = out.len();
        let room = input.len() / 2 + 64;
        out.resize(written + room, 0);
        let (before_in, before_out) = (compress.total_in(), compress.total_out());
        compress
            .compress(input, &mut out[written..], DeflateFlush::SyncFlush)
            .map_err(|err| std::io::Error::other(err.as_str()))?;
        let produced = usize::try_from(compress.total_out() - before_out).unwrap_or(0);
        out.truncate(written + produced);
        let consumed = usize::try_from(compress.total_in() - before_in).unwrap_or(input.len());
        input = &input[consumed.min(input.len())..];
        if input.is_empty() && produced < room && out.ends_with(&ZLIB_SUFFIX) {
            return Ok(out);
        }
    }
}

fn zstd_frame(encoder: &mut ZstdEncoder<'static>, input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(input.len() / 2 + 128);
    let mut source = InBuffer::around(input);
    while source.pos() < input.len() {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(256));
        }
        let start = out.len();
        let mut target = OutBuffer::around_pos(&mut out, start);
        encoder.run(&mut source, &mut target)?;
    }
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(256));
        }
        let start = out.len();
        let mut target = OutBuffer::around_pos(&mut out, start);
        if encoder.flush(&mut target)? == 0 {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use shardkeeper_protocol::{Compression, Decoder};

    use super::Encoder;

    /// Text that deflate cannot shrink to half: letters and digits from a linear
    /// congruential sequence.
    fn noise(len: usize, seed: u32) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                char::from(ALPHABET[(state >> 24) as usize % ALPHABET.len()])
            })
            .collect()
    }

    #[test]
    fn frames_decode_with_the_client_decoder() {
        for compression in [
            Compression::None,
            Compression::ZlibStream,
            Compression::ZstdStream,
        ] {
            let mut encoder = Encoder::new(compression);
            let mut decoder = Decoder::new(compression);
            for n in 0..50 {
                let body = if n % 2 == 0 {
                    "y".repeat(n * 97)
                } else {
                    noise(n * 211, n as u32)
                };
                let json = format!(r#"{{"op":0,"s":{n},"t":"X","d":"{body}"}}"#);
                let wire = encoder.encode(&json).expect("encodes").into_data();
                let document = decoder.push(&wire).expect("decodes").expect("complete");
                assert_eq!(document, json.as_bytes(), "{compression}");
            }
        }
    }
}
