//! The payload envelope: `{op, d, s, t}`.

use std::borrow::Cow;
use std::fmt;

use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::OpCode;
use crate::json::{JsonError, RawJson, Reader};

/// Largest frame a client may send; a larger one is closed by Discord with 4002.
pub const MAX_OUTBOUND_BYTES: usize = 4096;

/// A received payload. `d` stays raw JSON borrowed from the frame, so dispatch bodies
/// are forwarded byte-for-byte and parsed only where a field is needed.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The opcode.
    pub op: OpCode,
    /// The sequence number; set only on dispatches.
    pub s: Option<u64>,
    /// The event name; set only on dispatches.
    pub t: Option<Cow<'a, str>>,
    /// The event data, checked but untouched; `None` when absent or `null`.
    pub d: Option<Raw<'a>>,
}

/// A JSON value borrowed from a frame, already checked against the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// The JSON text.
    #[must_use]
    pub fn get(self) -> &'a str {
        self.0
    }

    /// The value as a [`RawJson`] sharing the memory of `document`, the text it was
    /// read from (no copy); a value from another text is copied.
    #[must_use]
    pub fn share(self, document: &ByteString) -> RawJson {
        RawJson::checked(Some(document), self.0)
    }
}

impl From<Raw<'_>> for RawJson {
    fn from(raw: Raw<'_>) -> Self {
        Self::checked(None, raw.0)
    }
}

/// Why a frame is not a gateway payload.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not UTF-8 JSON, or not an object with the envelope's fields.
    #[error("malformed gateway payload: {0}")]
    Syntax(#[from] JsonError),
    /// `d` does not have the shape of the expected body.
    #[error("malformed gateway payload: {0}")]
    Body(#[from] serde_json::Error),
}

impl<'a> Envelope<'a> {
    /// Parses one decoded frame in a single pass: `op`, `s` and `t` are read, `d` and
    /// any other member are checked against the JSON grammar and skipped. Any byte
    /// sequence is accepted without panicking.
    pub fn parse(frame: &'a [u8]) -> Result<Self, EnvelopeError> {
        let text = std::str::from_utf8(frame).map_err(JsonError::from)?;
        Self::parse_str(text)
    }

    /// [`parse`](Self::parse) of a document already known to be UTF-8.
    pub fn parse_str(text: &'a str) -> Result<Self, EnvelopeError> {
        let mut reader = Reader::new(text.as_bytes());
        let mut fields = Fields::default();
        reader.whitespace();
        reader.expect(b'{', "expected an object")?;
        reader.whitespace();
        if reader.peek() == Some(b'}') {
            reader.expect(b'}', "expected '}'")?;
        } else {
            loop {
                let key = string_at(text, &mut reader)?;
                reader.whitespace();
                reader.expect(b':', "expected ':'")?;
                reader.whitespace();
                fields.member(text, &key, &mut reader)?;
                reader.whitespace();
                if reader.peek() == Some(b',') {
                    reader.expect(b',', "expected ','")?;
                    reader.whitespace();
                } else {
                    reader.expect(b'}', "expected ',' or '}'")?;
                    break;
                }
            }
        }
        reader.whitespace();
        reader.end()?;
        let op = fields.op.ok_or(JsonError {
            at: 0,
            what: "missing field `op`",
        })?;
        Ok(Self {
            op,
            s: fields.s,
            t: fields.t,
            d: fields.d,
        })
    }

    /// Parses `d` into a typed body.
    pub fn body<T: Deserialize<'a>>(&self) -> Result<T, EnvelopeError> {
        let raw = self.d.map_or("null", Raw::get);
        Ok(serde_json::from_str(raw)?)
    }
}

/// The envelope's members as read, and which keys appeared (each may appear once).
#[derive(Default)]
struct Fields<'a> {
    seen: u8,
    op: Option<OpCode>,
    s: Option<u64>,
    t: Option<Cow<'a, str>>,
    d: Option<Raw<'a>>,
}

impl<'a> Fields<'a> {
    fn first(&mut self, bit: u8, at: usize) -> Result<(), JsonError> {
        if self.seen & bit != 0 {
            return Err(JsonError {
                at,
                what: "duplicate envelope field",
            });
        }
        self.seen |= bit;
        Ok(())
    }

    fn member(
        &mut self,
        text: &'a str,
        key: &str,
        reader: &mut Reader<'_>,
    ) -> Result<(), EnvelopeError> {
        let at = reader.pos();
        match key {
            "op" => {
                self.first(1, at)?;
                let what = "opcode must be an integer from 0 to 255";
                let code = reader.unsigned(what)?;
                let code = u8::try_from(code).map_err(|_| JsonError { at, what })?;
                self.op = Some(OpCode::from_code(code));
            }
            "s" => {
                self.first(2, at)?;
                if !reader.null() {
                    self.s = Some(reader.unsigned("s must be an unsigned integer")?);
                }
            }
            "t" => {
                self.first(4, at)?;
                if !reader.null() {
                    self.t = Some(string_at(text, reader)?);
                }
            }
            "d" => {
                self.first(8, at)?;
                if !reader.null() {
                    reader.value()?;
                    self.d = Some(Raw(&text[at..reader.pos()]));
                }
            }
            _ => reader.value()?,
        }
        Ok(())
    }
}

/// A string at the reader, borrowed from `text` unless it holds escapes.
fn string_at<'a>(text: &'a str, reader: &mut Reader<'_>) -> Result<Cow<'a, str>, EnvelopeError> {
    let start = reader.pos();
    let (_, escaped) = reader.string()?;
    let quoted = &text[start..reader.pos()];
    if escaped {
        Ok(Cow::Owned(serde_json::from_str(quoted)?))
    } else {
        Ok(Cow::Borrowed(&quoted[1..quoted.len() - 1]))
    }
}

/// A serialized frame ready to send: `{"op":N,"d":…}` of at most 4096 bytes.
///
/// `Debug` shows only the opcode and size, because IDENTIFY and RESUME frames carry the
/// bot token.
#[derive(Clone, PartialEq, Eq)]
pub struct Outbound {
    op: OpCode,
    json: String,
}

/// Why a payload cannot be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    /// The frame would exceed Discord's 4096-byte limit.
    #[error("payload is {size} bytes, over the gateway limit of {MAX_OUTBOUND_BYTES}")]
    TooLarge {
        /// Serialized size in bytes.
        size: usize,
    },
    /// The body could not be serialized.
    #[error("payload cannot be serialized: {0}")]
    Serialize(String),
}

#[derive(Serialize)]
struct Frame<'a, T> {
    op: u8,
    d: &'a T,
}

impl Outbound {
    /// Serializes `d` under `op`, refusing frames over [`MAX_OUTBOUND_BYTES`].
    pub fn new<T: Serialize>(op: OpCode, d: &T) -> Result<Self, OutboundError> {
        let json = serde_json::to_string(&Frame { op: op.code(), d })
            .map_err(|err| OutboundError::Serialize(err.to_string()))?;
        if json.len() > MAX_OUTBOUND_BYTES {
            return Err(OutboundError::TooLarge { size: json.len() });
        }
        Ok(Self { op, json })
    }

    /// A heartbeat carrying the last sequence received (`null` before any dispatch).
    #[must_use]
    pub fn heartbeat(seq: Option<u64>) -> Self {
        let json = match seq {
            Some(seq) => format!(r#"{{"op":1,"d":{seq}}}"#),
            None => r#"{"op":1,"d":null}"#.to_owned(),
        };
        Self {
            op: OpCode::Heartbeat,
            json,
        }
    }

    /// The opcode of the frame.
    #[must_use]
    pub fn op(&self) -> OpCode {
        self.op
    }

    /// The frame text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.json
    }

    /// The frame text, owned.
    #[must_use]
    pub fn into_string(self) -> String {
        self.json
    }

    /// Size of the frame in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Whether the frame is empty (never true for a constructed frame).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("op", &self.op)
            .field("bytes", &self.json.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{Envelope, MAX_OUTBOUND_BYTES, OpCode, Outbound, OutboundError};

    #[test]
    fn dispatch_keeps_d_verbatim() {
        let frame = br#"{"t":"MESSAGE_CREATE","s":42,"op":0,"d":{"content":"hi \u00e9","n":1.50}}"#;
        let env = Envelope::parse(frame).expect("valid frame");
        assert_eq!(env.op, OpCode::Dispatch);
        assert_eq!(env.s, Some(42));
        assert_eq!(env.t.as_deref(), Some("MESSAGE_CREATE"));
        assert_eq!(
            env.d.map(super::Raw::get),
            Some(r#"{"content":"hi \u00e9","n":1.50}"#)
        );
    }

    #[test]
    fn null_fields_and_unknown_ops_parse() {
        let env = Envelope::parse(br#"{"op":200,"d":null,"s":null,"t":null,"_trace":[1]}"#)
            .expect("valid frame");
        assert_eq!(env.op, OpCode::Unknown(200));
        assert!(env.d.is_none() && env.s.is_none() && env.t.is_none());
    }

    #[test]
    fn garbage_is_an_error() {
        for frame in [
            &b"not json"[..],
            b"{}",
            br#"{"op":-1}"#,
            br#"{"op":256}"#,
            b"\xff\xfe",
        ] {
            assert!(Envelope::parse(frame).is_err());
        }
    }

    #[test]
    fn heartbeat_frames() {
        assert_eq!(Outbound::heartbeat(None).as_str(), r#"{"op":1,"d":null}"#);
        assert_eq!(
            Outbound::heartbeat(Some(251)).as_str(),
            r#"{"op":1,"d":251}"#
        );
    }

    #[test]
    fn oversized_frames_are_refused() {
        let big = "x".repeat(MAX_OUTBOUND_BYTES);
        let err = Outbound::new(OpCode::PresenceUpdate, &big).expect_err("too large");
        assert!(matches!(err, OutboundError::TooLarge { size } if size > MAX_OUTBOUND_BYTES));
        let fits = "x".repeat(MAX_OUTBOUND_BYTES - r#"{"op":3,"d":""}"#.len());
        assert_eq!(
            Outbound::new(OpCode::PresenceUpdate, &fits).map(|o| o.len()),
            Ok(MAX_OUTBOUND_BYTES)
        );
    }
}
