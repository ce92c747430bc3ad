//! Any bytes as a gateway payload: the one-pass envelope reader never panics and agrees
//! with serde_json, the oracle, on every UTF-8 frame — both refuse it, or both read the
//! same `op`, `s`, `t` and `d`. A `d` it keeps is on its own a complete JSON value.
//! (Lone surrogate escapes such as `"\udd25"` are grammatical and pass through
//! byte-for-byte, as Discord sent them; strict parsers such as `serde_json::Value`
//! refuse them, so the check is for a raw value, not a parsed one.)
#![no_main]

#[path = "../../crates/protocol/tests/oracle/mod.rs"]
mod oracle;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use shardkeeper_protocol::RawJson;

use self::oracle::{oracle, ours};

fuzz_target!(|data: &[u8]| {
    let reading = ours(data);
    if let Some((_, _, _, Some(d))) = &reading {
        assert!(RawJson::parse(d.as_str()).is_ok());
        let reparsed = serde_json::from_str::<Box<RawValue>>(d);
        assert_eq!(reparsed.map(|r| r.get().len()).ok(), Some(d.len()));
    }
    match std::str::from_utf8(data) {
        Ok(text) => assert_eq!(reading, oracle(text), "frame {text:?}"),
        Err(_) => assert_eq!(reading, None, "a frame that is not UTF-8 is refused"),
    }
});
