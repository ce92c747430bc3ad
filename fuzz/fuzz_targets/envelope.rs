//! Any bytes as a gateway payload: the one-pass envelope reader never panics and agrees
//! with serde_json, the oracle, on every UTF-8 frame — both refuse it, or both read the
//! same `op`, `s`, `t` and `d`. A `d` it keeps is on its own a complete JSON value.
//! (Lone surrogate escapes such as `"\udd25"` are grammatical and pass through
//! byte-for-byte, as Discord sent them; strict parsers such as `serde_json::Value`
//! refuse them, so the check is for a raw value, not a parsed one.)
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;
use shardkeeper_protocol::{Envelope, RawJson};

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

type Reading = Option<(u8, Option<u64>, Option<String>, Option<String>)>;

fn oracle(text: &str) -> Reading {
    // serde also reads a struct from an array of its fields; a gateway payload is an
    // object, and the envelope reader accepts nothing else.
    if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        return None;
    }
    let env: Oracle<'_> = serde_json::from_str(text).ok()?;
    Some((
        u8::try_from(env.op).ok()?,
        env.s,
        env.t.map(Cow::into_owned),
        env.d.map(|d| d.get().to_owned()),
    ))
}

fuzz_target!(|data: &[u8]| {
    let ours: Reading = Envelope::parse(data).ok().map(|env| {
        (
            env.op.code(),
            env.s,
            env.t.map(Cow::into_owned),
            env.d.map(|d| d.get().to_owned()),
        )
    });
    if let Some((_, _, _, Some(d))) = &ours {
        assert!(RawJson::parse(d.as_str()).is_ok());
        let reparsed = serde_json::from_str::<Box<RawValue>>(d);
        assert_eq!(reparsed.map(|r| r.get().len()).ok(), Some(d.len()));
    }
    match std::str::from_utf8(data) {
        Ok(text) => assert_eq!(ours, oracle(text), "frame {text:?}"),
        Err(_) => assert_eq!(ours, None, "a frame that is not UTF-8 is refused"),
    }
});
