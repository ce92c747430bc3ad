//! serde_json's reading of an envelope: the oracle the one-pass envelope reader is
//! checked against, by the property tests of `tests/envelope.rs` and by the `envelope`
//! fuzz target (which includes this file).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use shardkeeper_protocol::Envelope;

/// The envelope as serde_json reads it.
#[derive(Deserialize)]
struct Oracle<'a> {
    op: u64,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default, borrow)]
    t: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    d: Option<&'a RawValue>,
}

/// What a reader made of a frame: `(op, s, t, d)`, or `None` for a refusal.
pub(crate) type Reading = Option<(u8, Option<u64>, Option<String>, Option<String>)>;

/// serde_json's reading.
pub(crate) fn oracle(frame: &str) -> Reading {
    // serde also reads a struct from an array of its fields; a gateway payload is an
    // object, and the envelope reader accepts nothing else.
    if !frame
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return None;
    }
    let env: Oracle<'_> = serde_json::from_str(frame).ok()?;
    Some((
        u8::try_from(env.op).ok()?,
        env.s,
        env.t.map(Cow::into_owned),
        env.d.map(|d| d.get().to_owned()),
    ))
}

/// The envelope reader's reading.
pub(crate) fn ours(frame: &[u8]) -> Reading {
    let env = Envelope::parse(frame).ok()?;
    Some((
        env.op.code(),
        env.s,
        env.t.map(Cow::into_owned),
        env.d.map(|d| d.get().to_owned()),
    ))
}
