//! Any bytes as a gateway payload: parsing never panics, and a parsed dispatch keeps
//! `d` as valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardkeeper_protocol::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::parse(data) {
        if let Some(d) = env.d {
            assert!(serde_json::from_str::<serde_json::Value>(d.get()).is_ok());
        }
        let _ = env.body::<bool>();
    }
});
