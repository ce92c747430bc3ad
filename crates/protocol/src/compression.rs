//! Transport compression (`compress=zlib-stream|zstd-stream`) and connect URLs.

use std::fmt;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use zstd::stream::raw::{Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

use crate::API_VERSION;

/// The 4-byte `Z_SYNC_FLUSH` suffix that ends every zlib-stream gateway message.
pub const ZLIB_SUFFIX: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Growth step of the output buffer while inflating (it grows by half its size beyond
/// that), small so that a thousand idle connections do not each hold a large buffer.
const OUTPUT_STEP: usize = 4 * 1024;

/// Smallest block an arena of [`Decoder::push_shared`] takes at a time: documents are
/// copied in one after another, and the block is reused once they are all dropped.
const ARENA_BLOCK: usize = 64 * 1024;

/// Default cap on one decompressed document. Discord's largest GUILD_CREATE payloads
/// are a few MiB; anything past this is treated as a decompression bomb.
pub const DEFAULT_DOCUMENT_LIMIT: usize = 64 * 1024 * 1024;

/// Transport compression requested with the `compress` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Plain JSON text frames.
    #[default]
    None,
    /// One zlib context per connection, messages end with `00 00 ff ff`.
    ZlibStream,
    /// One zstd stream per connection, one gateway message per WebSocket message.
    ZstdStream,
}

impl Compression {
    /// The value of the `compress` query parameter, if any.
    #[must_use]
    pub fn query_value(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::ZlibStream => Some("zlib-stream"),
            Self::ZstdStream => Some("zstd-stream"),
        }
    }

    /// The configuration name: `none`, `zlib-stream` or `zstd-stream`.
    #[must_use]
    pub fn name(self) -> &'static str {
        self.query_value().unwrap_or("none")
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "zlib-stream" => Ok(Self::ZlibStream),
            "zstd-stream" => Ok(Self::ZstdStream),
            other => Err(format!(
                "unknown compression {other:?}, expected \"none\", \"zlib-stream\" or \"zstd-stream\""
            )),
        }
    }
}

/// Builds the URL a shard connects to: `base` plus `v`, `encoding=json` and `compress`.
///
/// The same parameters are used for the gateway URL and for `resume_gateway_url`.
#[must_use]
pub fn gateway_connect_url(base: &str, compression: Compression) -> String {
    let base = base.trim_end_matches(['?', '&']);
    let after_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
    let separator = if base.contains('?') {
        "&"
    } else if after_scheme.contains('/') {
        "?"
    } else {
        "/?"
    };
    let mut url = format!("{base}{separator}v={API_VERSION}&encoding=json");
    if let Some(value) = compression.query_value() {
        url.push_str("&compress=");
        url.push_str(value);
    }
    url
}

/// Why a received message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The compressed stream is corrupt.
    #[error("corrupt {kind} stream: {detail}")]
    Corrupt {
        /// Which decoder failed.
        kind: &'static str,
        /// What the decompressor reported.
        detail: String,
    },
    /// The decompressed document would exceed the configured cap.
    #[error("decompressed document exceeds {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// Buffered input that never completed grew past the cap.
    #[error("incomplete zlib-stream message exceeds {limit} bytes")]
    Unterminated {
        /// The cap in bytes.
        limit: usize,
    },
}

/// Per-connection decoder of server messages. Create a new one for every connection,
/// resumes included.
pub struct Decoder {
    inner: Inner,
    out: Vec<u8>,
    limit: usize,
}

enum Inner {
    Plain,
    Zlib {
        ctx: Decompress,
        header_read: bool,
        pending: Vec<u8>,
    },
    Zstd {
        ctx: Box<ZstdDecoder<'static>>,
    },
    /// The zstd context could not be allocated; every message reports it.
    Unavailable(String),
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Plain => "none",
            Inner::Zlib { .. } => "zlib-stream",
            Inner::Zstd { .. } | Inner::Unavailable(_) => "zstd-stream",
        };
        f.debug_struct("Decoder")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder with the default document cap.
    #[must_use]
    pub fn new(compression: Compression) -> Self {
        Self::with_limit(compression, DEFAULT_DOCUMENT_LIMIT)
    }

    /// A decoder that refuses documents larger than `limit` bytes.
    #[must_use]
    pub fn with_limit(compression: Compression, limit: usize) -> Self {
        let inner = match compression {
            Compression::None => Inner::Plain,
            Compression::ZlibStream => Inner::Zlib {
                ctx: Decompress::new(false),
                header_read: false,
                pending: Vec::new(),
            },
            Compression::ZstdStream => match ZstdDecoder::new() {
                Ok(ctx) => Inner::Zstd { ctx: Box::new(ctx) },
                Err(err) => Inner::Unavailable(err.to_string()),
            },
        };
        Self {
            inner,
            out: Vec::new(),
            limit,
        }
    }

    /// Feeds one WebSocket message. Returns the decoded document once one is complete,
    /// `None` while a zlib-stream message is still being buffered.
    pub fn push<'a>(&'a mut self, message: &'a [u8]) -> Result<Option<&'a [u8]>, DecodeError> {
        decode(&mut self.inner, self.limit, message, &mut self.out)
    }

    /// Like [`push`](Self::push), but the document comes back as shared bytes that
    /// outlive the call: an uncompressed message is its own document (no copy); a
    /// compressed one is decompressed into `scratch` (cleared first) and copied into
    /// `arena`. Both buffers belong to the caller, so many connections served by one
    /// thread share them; the arena reuses its memory once every document taken from it
    /// has been dropped, so steady traffic allocates nothing per message.
    pub fn push_shared(
        &mut self,
        message: Bytes,
        scratch: &mut Vec<u8>,
        arena: &mut BytesMut,
    ) -> Result<Option<Bytes>, DecodeError> {
        if let Inner::Plain = self.inner {
            if message.len() > self.limit {
                return Err(DecodeError::TooLarge { limit: self.limit });
            }
            return Ok(Some(message));
        }
        let Some(document) = decode(&mut self.inner, self.limit, &message, scratch)? else {
            return Ok(None);
        };
        if arena.capacity() < document.len() {
            arena.reserve(document.len().max(ARENA_BLOCK));
        }
        arena.extend_from_slice(document);
        Ok(Some(arena.split().freeze()))
    }
}

fn decode<'a>(
    inner: &mut Inner,
    limit: usize,
    message: &'a [u8],
    out: &'a mut Vec<u8>,
) -> Result<Option<&'a [u8]>, DecodeError> {
    match inner {
        Inner::Plain => {
            if message.len() > limit {
                return Err(DecodeError::TooLarge { limit });
            }
            Ok(Some(message))
        }
        Inner::Zlib {
            ctx,
            header_read,
            pending,
        } => {
            if pending.is_empty() && message.ends_with(&ZLIB_SUFFIX) {
                inflate(ctx, strip_header(header_read, message)?, out, limit)?;
                return Ok(Some(out));
            }
            if pending.len() + message.len() > limit {
                *pending = Vec::new();
                return Err(DecodeError::Unterminated { limit });
            }
            pending.extend_from_slice(message);
            if !pending.ends_with(&ZLIB_SUFFIX) {
                return Ok(None);
            }
            // Split messages are rare: the buffer is released, not kept per connection.
            let whole = std::mem::take(pending);
            inflate(ctx, strip_header(header_read, &whole)?, out, limit)?;
            Ok(Some(out))
        }
        Inner::Zstd { ctx } => {
            unzstd(ctx, message, out, limit)?;
            Ok(Some(out))
        }
        Inner::Unavailable(detail) => Err(corrupt_zstd(detail)),
    }
}

/// Checks and removes the two-byte zlib header that opens a zlib-stream connection,
/// if it is still due (`header_read`). The stream is inflated as raw deflate after it:
/// Discord never ends the stream, so the Adler-32 trailer that would check it never
/// arrives, and computing the checksum over every byte of output would cost for nothing.
fn strip_header<'a>(header_read: &mut bool, message: &'a [u8]) -> Result<&'a [u8], DecodeError> {
    if *header_read {
        return Ok(message);
    }
    // Every message handed here ends with the 4-byte suffix, so the header is whole.
    match *message {
        // Deflate with a window of at most 32 KiB, the check bits, no preset dictionary.
        [cmf, flags, ..]
            if cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && (u16::from(cmf) << 8 | u16::from(flags)) % 31 == 0
                && flags & 0x20 == 0 =>
        {
            *header_read = true;
            Ok(&message[2..])
        }
        _ => Err(DecodeError::Corrupt {
            kind: "zlib-stream",
            detail: "invalid zlib header".into(),
        }),
    }
}

fn grow(out: &mut Vec<u8>, limit: usize) -> Result<(), DecodeError> {
    if out.len() >= limit {
        return Err(DecodeError::TooLarge { limit });
    }
    let step = OUTPUT_STEP.max(out.len() / 2).min(limit - out.len());
    out.reserve(step);
    Ok(())
}

fn inflate(
    ctx: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), DecodeError> {
    out.clear();
    loop {
        if out.len() == out.capacity() {
            grow(out, limit)?;
        }
        let before_in = ctx.total_in();
        let before_out = out.len();
        let status = ctx
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|err| DecodeError::Corrupt {
                kind: "zlib-stream",
                detail: err.to_string(),
            })?;
        let consumed = usize::try_from(ctx.total_in() - before_in).unwrap_or(input.len());
        input = &input[consumed.min(input.len())..];
        let output_full = out.len() == out.capacity();
        if input.is_empty() && !output_full {
            return Ok(());
        }
        if status == Status::StreamEnd && !input.is_empty() && !output_full {
            return Err(DecodeError::Corrupt {
                kind: "zlib-stream",
                detail: "data after the end of the stream".into(),
            });
        }
        if consumed == 0 && out.len() == before_out && !output_full {
            return Err(DecodeError::Corrupt {
                kind: "zlib-stream",
                detail: "decompressor made no progress".into(),
            });
        }
    }
}

fn corrupt_zstd(detail: &str) -> DecodeError {
    DecodeError::Corrupt {
        kind: "zstd-stream",
        detail: detail.to_owned(),
    }
}

fn unzstd(
    ctx: &mut ZstdDecoder<'static>,
    message: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), DecodeError> {
    out.clear();
    let mut input = InBuffer::around(message);
    loop {
        if out.len() == out.capacity() {
            grow(out, limit)?;
        }
        let start = out.len();
        let consumed_before = input.pos();
        let mut output = OutBuffer::around_pos(out, start);
        ctx.run(&mut input, &mut output)
            .map_err(|err| corrupt_zstd(&err.to_string()))?;
        let written = output.pos();
        let output_full = written == out.capacity();
        if input.pos() == message.len() && !output_full {
            return Ok(());
        }
        if written == start && input.pos() == consumed_before {
            return Err(corrupt_zstd("decompressor made no progress"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Compression, gateway_connect_url};

    #[test]
    fn connect_url_adds_version_encoding_and_compression() {
        assert_eq!(
            gateway_connect_url("wss://gateway.discord.gg", Compression::ZlibStream),
            "wss://gateway.discord.gg/?v=10&encoding=json&compress=zlib-stream"
        );
        assert_eq!(
            gateway_connect_url("wss://gateway.discord.gg/", Compression::None),
            "wss://gateway.discord.gg/?v=10&encoding=json"
        );
        assert_eq!(
            gateway_connect_url("ws://127.0.0.1:9000/resume/abc", Compression::ZstdStream),
            "ws://127.0.0.1:9000/resume/abc?v=10&encoding=json&compress=zstd-stream"
        );
        assert_eq!(
            gateway_connect_url("ws://h/x?region=eu", Compression::None),
            "ws://h/x?region=eu&v=10&encoding=json"
        );
    }

    #[test]
    fn compression_names_round_trip() {
        for c in [
            Compression::None,
            Compression::ZlibStream,
            Compression::ZstdStream,
        ] {
            assert_eq!(c.name().parse::<Compression>(), Ok(c));
        }
        assert!("gzip".parse::<Compression>().is_err());
    }
}
