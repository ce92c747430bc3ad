//! Any bytes as a gateway payload: parsing never panics, and a parsed `d` is on its own
//! a complete JSON value by the RFC 8259 grammar. (Lone surrogate escapes such as
//! `"\udd25"` are grammatical and pass through byte-for-byte, as Discord sent them;
//! strict parsers such as `serde_json::Value` refuse them, so the check is for a raw
//! value, not a parsed one.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardkeeper_protocol::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::parse(data) {
        if let Some(d) = env.d {
            let reparsed = serde_json::from_str::<Box<serde_json::value::RawValue>>(d.get());
            assert_eq!(reparsed.map(|r| r.get().len()).ok(), Some(d.get().len()));
        }
        let _ = env.body::<bool>();
    }
});
