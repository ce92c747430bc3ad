//! A one-pass JSON checker for received frames: it walks a document once, checking it
//! against the RFC 8259 grammar, without building anything. The envelope reader uses it
//! to find `op`, `s`, `t` and the extent of `d`; a checked `d` is kept as [`RawJson`]
//! and never parsed again.

use std::fmt;

use bytestring::ByteString;

/// JSON text that is one complete, valid value. Event bodies are kept this way: checked
/// once when the frame is read, then forwarded byte-for-byte. A body read from a frame
/// shares the frame's memory (cloning one costs a reference count, not a copy).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawJson(ByteString);

impl RawJson {
    /// Checks `text` and keeps it.
    pub fn parse(text: impl Into<String>) -> Result<Self, JsonError> {
        let text: String = text.into();
        let mut reader = Reader::new(text.as_bytes());
        reader.whitespace();
        reader.value()?;
        reader.whitespace();
        reader.end()?;
        Ok(Self(text.into()))
    }

    /// `null`.
    #[must_use]
    pub fn null() -> Self {
        Self(ByteString::from_static("null"))
    }

    /// A value the reader has already checked: a slice of `document` when `text` lies
    /// within it, else a copy.
    pub(crate) fn checked(document: Option<&ByteString>, text: &str) -> Self {
        let part = text.as_bytes().as_ptr_range();
        match document {
            Some(document) if contains(&document.as_bytes().as_ptr_range(), &part) => {
                Self(document.slice_ref(text))
            }
            _ => Self(text.into()),
        }
    }

    /// The JSON text.
    #[must_use]
    pub fn get(&self) -> &str {
        &self.0
    }
}

/// Whether the byte range `part` lies within `whole`.
fn contains(whole: &std::ops::Range<*const u8>, part: &std::ops::Range<*const u8>) -> bool {
    whole.start <= part.start && part.end <= whole.end
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawJson").field(&self.0.len()).finish()
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where and why a document is not valid JSON (or not the shape expected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct JsonError {
    /// Byte offset.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl JsonError {
    fn at(at: usize, what: &'static str) -> Self {
        Self { at, what }
    }
}

impl From<std::str::Utf8Error> for JsonError {
    fn from(err: std::str::Utf8Error) -> Self {
        Self {
            at: err.valid_up_to(),
            what: "invalid UTF-8",
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags (high bit of a byte) the bytes of `word` equal to `byte`; the lowest flag is
/// always a real match.
fn equal_bytes(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Flags the ASCII bytes of `word` below 0x20; the lowest flag is always a real match.
fn control_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES * 0x20) & !word & HIGHS
}

/// Flags the bytes of `word` that end a run of plain string bytes: a quote, a backslash,
/// a control byte.
#[inline]
fn stops(word: u64) -> u64 {
    equal_bytes(word, b'"') | equal_bytes(word, b'\\') | control_bytes(word)
}

/// The eight bytes of `bytes` at `at` as a little-endian word, if there are eight.
#[inline]
fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..at + 8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    Some(u64::from_le_bytes(word))
}

/// Where the run of plain string bytes starting at `at` ends: at a quote, a backslash, a
/// control byte, or the end of the document. Most strings (keys, ids, names) end within
/// eight bytes, so one word is looked at first; a longer run goes in 32-byte blocks (a
/// branch-free test the compiler turns into vector compares), then by words again, then
/// by bytes at the end of the document.
#[expect(
    clippy::inline_always,
    reason = "measured: inlined into every string, the envelope check is 12 % faster"
)]
#[inline(always)]
fn plain_end(bytes: &[u8], mut at: usize) -> usize {
    if let Some(word) = word_at(bytes, at) {
        let found = stops(word);
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    long_plain_end(bytes, at)
}

/// [`plain_end`] past the first word: out of line, for the few long runs.
fn long_plain_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(block) = bytes.get(at..at + 32) {
        let found = block.iter().fold(0u8, |any, &b| {
            any | u8::from(b == b'"') | u8::from(b == b'\\') | u8::from(b < 0x20)
        });
        if found != 0 {
            break;
        }
        at += 32;
    }
    while let Some(word) = word_at(bytes, at) {
        let found = stops(word);
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        at += 1;
    }
    at
}

/// Checks the escape whose backslash is at `at`; returns where the string goes on.
#[cold]
fn escape_end(bytes: &[u8], at: usize) -> Result<usize, JsonError> {
    match bytes.get(at + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(at + 2),
        Some(b'u') => match bytes.get(at + 2..at + 6) {
            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(at + 6),
            _ => {
                let bad = (at + 2..at + 6)
                    .find(|&i| !bytes.get(i).is_some_and(u8::is_ascii_hexdigit))
                    .unwrap_or(at + 2);
                Err(JsonError::at(bad, "invalid \\u escape"))
            }
        },
        _ => Err(JsonError::at(at + 1, "invalid escape")),
    }
}

/// A cursor over a document.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn fail<T>(&self, what: &'static str) -> Result<T, JsonError> {
        Err(JsonError { at: self.pos, what })
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    pub(crate) fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `byte` or fails with `what`.
    #[inline]
    pub(crate) fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(what)
        }
    }

    pub(crate) fn end(&self) -> Result<(), JsonError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            self.fail("trailing characters")
        }
    }

    /// Checks a string starting at its opening quote; returns its contents (between the
    /// quotes) and whether it holds escapes.
    #[expect(
        clippy::inline_always,
        reason = "measured: inlined into every key and value, the envelope check is 12 % faster"
    )]
    #[inline(always)]
    pub(crate) fn string(&mut self) -> Result<(&'a [u8], bool), JsonError> {
        self.expect(b'"', "expected a string")?;
        let start = self.pos;
        let bytes = self.bytes;
        let mut at = start;
        let mut escaped = false;
        loop {
            at = plain_end(bytes, at);
            match bytes.get(at) {
                Some(b'"') => {
                    self.pos = at + 1;
                    return Ok((&bytes[start..at], escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    at = escape_end(bytes, at)?;
                }
                Some(_) => return Err(JsonError::at(at, "control character in a string")),
                None => return Err(JsonError::at(at, "unterminated string")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Checks a number; returns whether it was a plain non-negative integer.
    fn number(&mut self) -> Result<bool, JsonError> {
        let mut integer = true;
        if self.peek() == Some(b'-') {
            self.pos += 1;
            integer = false;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return self.fail("leading zero in a number");
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.fail("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integer = false;
            if self.digits() == 0 {
                return self.fail("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.fail("invalid number");
            }
        }
        Ok(integer)
    }

    /// Reads a non-negative integer that fits a `u64`.
    pub(crate) fn unsigned(&mut self, what: &'static str) -> Result<u64, JsonError> {
        let start = self.pos;
        if !self.number()? {
            self.pos = start;
            return self.fail(what);
        }
        let mut value: u64 = 0;
        for &digit in &self.bytes[start..self.pos] {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit - b'0')))
                .ok_or(JsonError { at: start, what })?;
        }
        Ok(value)
    }

    /// Consumes `null` if it comes next.
    pub(crate) fn null(&mut self) -> bool {
        if self.bytes[self.pos..].starts_with(b"null") {
            self.pos += 4;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), JsonError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.fail("invalid literal")
        }
    }

    /// Checks one value of any kind and depth, iteratively.
    pub(crate) fn value(&mut self) -> Result<(), JsonError> {
        // One bit per open container: set for an object, clear for an array.
        let mut open = Nesting::default();
        loop {
            // At the start of a value.
            match self.peek() {
                Some(bracket @ (b'{' | b'[')) => {
                    let object = bracket == b'{';
                    self.pos += 1;
                    self.whitespace();
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.pos += 1;
                    } else {
                        open.push(object);
                        if object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(_) => return self.fail("expected a value"),
                None => return self.fail("unexpected end"),
            }
            // After a value: close containers until one continues.
            loop {
                let Some(object) = open.top() else {
                    return Ok(());
                };
                self.whitespace();
                match (self.peek(), object) {
                    (Some(b','), true) => {
                        self.pos += 1;
                        self.whitespace();
                        self.member_key()?;
                        break;
                    }
                    (Some(b','), false) => {
                        self.pos += 1;
                        self.whitespace();
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.pos += 1;
                        open.pop();
                    }
                    _ => return self.fail("expected ',' or the end of a container"),
                }
            }
        }
    }

    /// `"key" :` and the whitespace after it.
    #[inline]
    fn member_key(&mut self) -> Result<(), JsonError> {
        self.string()?;
        self.whitespace();
        self.expect(b':', "expected ':'")?;
        self.whitespace();
        Ok(())
    }
}

/// The kinds of the open containers, as bits: 64 inline, more on the heap (a deeply
/// nested value is legal JSON and must not be refused for its depth).
#[derive(Default)]
struct Nesting {
    inline: u64,
    depth: usize,
    deeper: Vec<u64>,
}

impl Nesting {
    fn push(&mut self, object: bool) {
        if self.depth > 0 && self.depth.is_multiple_of(64) {
            self.deeper.push(self.inline);
            self.inline = 0;
        }
        let bit = 1u64 << (self.depth % 64);
        if object {
            self.inline |= bit;
        } else {
            self.inline &= !bit;
        }
        self.depth += 1;
    }

    fn top(&self) -> Option<bool> {
        let index = self.depth.checked_sub(1)?;
        Some(self.inline & (1u64 << (index % 64)) != 0)
    }

    fn pop(&mut self) {
        self.depth -= 1;
        if self.depth > 0 && self.depth.is_multiple_of(64) {
            self.inline = self.deeper.pop().unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{JsonError, RawJson, control_bytes, equal_bytes};

    #[test]
    fn valid_values_are_kept_verbatim() {
        for text in [
            "null",
            " true ",
            "-0.5e+10",
            r#"{"a":[1,2,{"b":"\u00e9\n"}],"c":{}}"#,
            "[[[]]]",
            r#""\ud800""#,
            "\"é😀\"",
        ] {
            assert_eq!(
                RawJson::parse(text).map(|r| r.get().to_owned()),
                Ok(text.to_owned())
            );
        }
    }

    #[test]
    fn invalid_values_are_refused() {
        for text in [
            "",
            "nul",
            "01",
            "1.",
            "-",
            "1e",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "[1 2]",
            "\"a\u{1}\"",
            "\"\\x\"",
            "\"\\u12g4\"",
            "{1:2}",
            "[",
            "]",
            "{} {}",
            "\"open",
        ] {
            assert!(RawJson::parse(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn deep_nesting_is_legal() {
        let deep = format!("{}0{}", "[{\"a\":".repeat(200), "}]".repeat(200));
        assert!(RawJson::parse(deep.as_str()).is_ok());
        let broken = format!("{}0{}", "[{\"a\":".repeat(200), "]}".repeat(200));
        assert!(matches!(RawJson::parse(broken), Err(JsonError { .. })));
    }

    #[test]
    fn word_scans_find_the_first_stop() {
        let word = u64::from_le_bytes(*b"ab\"c\\d\x01e");
        assert_eq!(equal_bytes(word, b'"').trailing_zeros() / 8, 2);
        assert_eq!(equal_bytes(word, b'\\').trailing_zeros() / 8, 4);
        assert_eq!(control_bytes(word).trailing_zeros() / 8, 6);
        assert_eq!(control_bytes(u64::from_le_bytes(*b"\xc3\xa9 abcde")), 0);
    }
}
