//! Server-side transport compression: one compressor per connection.

use flate2::{Compress, Compression as Level, FlushCompress};
use shardkeeper_protocol::Compression;
use tokio_tungstenite::tungstenite::Message;
use zstd::stream::raw::{Encoder as ZstdEncoder, InBuffer, Operation, OutBuffer};

/// The zlib header (deflate, 32 KiB window, fastest level) that opens a zlib-stream.
const ZLIB_HEADER: [u8; 2] = [0x78, 0x01];

/// Turns JSON frames into WebSocket messages for the connection's `compress` setting.
pub(crate) enum Encoder {
    Plain,
    /// Raw deflate after a header written by hand: a gateway stream never ends, so the
    /// Adler-32 trailer is never due, and zlib would checksum every byte sent for it.
    Zlib {
        compress: Box<Compress>,
        header_sent: bool,
    },
    Zstd(Box<ZstdEncoder<'static>>),
}

impl Encoder {
    pub(crate) fn new(compression: Compression) -> Self {
        match compression {
            Compression::None => Self::Plain,
            Compression::ZlibStream => Self::Zlib {
                compress: Box::new(Compress::new(Level::fast(), false)),
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
                let mut out = Vec::with_capacity(json.len() / 2 + 64);
                if !std::mem::replace(header_sent, true) {
                    out.extend_from_slice(&ZLIB_HEADER);
                }
                deflate(compress, json.as_bytes(), out).map(Message::binary)
            }
            Self::Zstd(encoder) => zstd_frame(encoder, json.as_bytes()).map(Message::binary),
        }
    }
}

fn deflate(
    compress: &mut Compress,
    mut input: &[u8],
    mut out: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(256));
        }
        let before = compress.total_in();
        compress
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .map_err(std::io::Error::other)?;
        let consumed = usize::try_from(compress.total_in() - before).unwrap_or(input.len());
        input = &input[consumed.min(input.len())..];
        if input.is_empty() && out.len() < out.capacity() && out.ends_with(&[0, 0, 0xff, 0xff]) {
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
                let json = format!(r#"{{"op":0,"s":{n},"t":"X","d":"{}"}}"#, "y".repeat(n * 97));
                let wire = encoder.encode(&json).expect("encodes").into_data();
                let document = decoder.push(&wire).expect("decodes").expect("complete");
                assert_eq!(document, json.as_bytes(), "{compression}");
            }
        }
    }
}
