//! Dispatch events as they leave a shard.

use std::fmt;

use serde::Deserialize;
use shardkeeper_protocol::{EventName, RawJson};
use shardkeeper_session::Dispatch;

/// One dispatch received by one shard. `d` is byte-for-byte what Discord sent, sharing
/// the memory of the frame it came in, so a clone costs a reference count. That memory
/// is a block of recent documents (64 KiB, or the size of a larger document): an event
/// kept for long keeps its block; keep a copy of `d` instead
/// (`RawJson::parse(event.d.get())`) to hold only the body.
#[derive(Clone)]
pub struct Event {
    /// Shard id.
    pub shard: u32,
    /// Sequence number on the shard's session.
    pub seq: u64,
    /// Event name.
    pub t: EventName,
    /// Event data, unparsed.
    pub d: RawJson,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("shard", &self.shard)
            .field("seq", &self.seq)
            .field("t", &self.t)
            .field("bytes", &self.d.get().len())
            .finish()
    }
}

impl Event {
    pub(crate) fn new(shard: u32, dispatch: Dispatch) -> Self {
        Self {
            shard,
            seq: dispatch.seq,
            t: dispatch.t,
            d: dispatch.d,
        }
    }

    /// The NDJSON event line (without the newline):
    /// `{"shard":3,"seq":42,"t":"MESSAGE_CREATE","d":{…}}`, built from the envelope fields
    /// and the raw body without parsing it.
    #[must_use]
    pub fn to_line(&self) -> String {
        let mut line = String::with_capacity(self.d.get().len() + self.t.len() + 48);
        self.write_line(&mut line);
        line
    }

    /// Appends the event line (without the newline) to `out`.
    pub fn write_line(&self, out: &mut String) {
        let mut number = itoa::Buffer::new();
        out.push_str(r#"{"shard":"#);
        out.push_str(number.format(self.shard));
        out.push_str(r#","seq":"#);
        out.push_str(number.format(self.seq));
        out.push_str(r#","t":"#);
        // Event names are upper-case ASCII identifiers and go out as they are; anything
        // else is escaped, so a hostile name can never break the line format.
        if self
            .t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            out.push('"');
            out.push_str(&self.t);
            out.push('"');
        } else {
            out.push_str(&serde_json::to_string(&*self.t).unwrap_or_else(|_| "\"\"".to_owned()));
        }
        out.push_str(r#","d":"#);
        out.push_str(self.d.get());
        out.push('}');
    }

    /// Parses `d` into a typed view, for the few events a bot inspects.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.d.get())
    }

    /// The `guild_id` of the event, if it has one (parses `d`).
    #[must_use]
    pub fn guild_id(&self) -> Option<u64> {
        #[derive(Deserialize)]
        struct GuildOf {
            guild_id: Option<shardkeeper_protocol::Snowflake>,
        }
        self.parse::<GuildOf>().ok()?.guild_id.map(|g| g.0)
    }
}

#[cfg(test)]
mod tests {
    use shardkeeper_protocol::RawJson;

    use super::Event;

    #[test]
    fn line_keeps_d_verbatim() {
        let d =
            RawJson::parse(r#"{"guild_id":"41771983423143937", "x":1.50}"#).expect("valid json");
        let event = Event {
            shard: 3,
            seq: 42,
            t: "MESSAGE_CREATE".into(),
            d,
        };
        assert_eq!(
            event.to_line(),
            r#"{"shard":3,"seq":42,"t":"MESSAGE_CREATE","d":{"guild_id":"41771983423143937", "x":1.50}}"#
        );
        assert_eq!(event.guild_id(), Some(41_771_983_423_143_937));
    }

    #[test]
    fn a_hostile_event_name_cannot_break_the_line() {
        let event = Event {
            shard: 0,
            seq: u64::MAX,
            t: "X\",\"d\":1}\n".into(),
            d: RawJson::null(),
        };
        let line = event.to_line();
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        assert_eq!(parsed["t"], "X\",\"d\":1}\n");
        assert_eq!(parsed["seq"], u64::MAX);
        assert_eq!(parsed["d"], serde_json::Value::Null);
    }
}
