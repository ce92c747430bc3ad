//! Discord's gateway rules as pure checks: each returns the violation and the close
//! code the real gateway would answer with.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use shardkeeper_protocol::payload::Identify;
use shardkeeper_protocol::{Compression, Intents, MAX_OUTBOUND_BYTES, OpCode, Token};

use crate::SimConfig;
use crate::stats::ViolationKind;

/// Payloads a client may send per connection per [`SEND_WINDOW`].
pub(crate) const SEND_LIMIT: usize = 120;
/// The send-limit window.
pub(crate) const SEND_WINDOW: Duration = Duration::from_secs(60);

/// A broken rule and how the gateway answers it: a close code, or op 9 when `close` is
/// `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reject {
    pub(crate) kind: ViolationKind,
    pub(crate) close: Option<u16>,
    pub(crate) detail: String,
}

impl Reject {
    pub(crate) fn close(kind: ViolationKind, code: u16, detail: impl Into<String>) -> Self {
        Self {
            kind,
            close: Some(code),
            detail: detail.into(),
        }
    }
}

/// Connection parameters from the URL query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectParams {
    pub(crate) compression: Compression,
    pub(crate) version: Result<(), Reject>,
}

/// Parses `v`, `encoding` and `compress`. A missing or unsupported `v` or `encoding`
/// is remembered and answered with 4012 after HELLO; an unknown `compress` value falls
/// back to no compression, as the real gateway does.
pub(crate) fn connect_params(query: &str) -> ConnectParams {
    let mut version = None;
    let mut encoding = None;
    let mut compression = Compression::None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "v" => version = Some(value.to_owned()),
            "encoding" => encoding = Some(value.to_owned()),
            "compress" => compression = value.parse().unwrap_or(Compression::None),
            _ => {}
        }
    }
    let version = match (version.as_deref(), encoding.as_deref()) {
        (Some("9" | "10"), Some("json")) => Ok(()),
        (v, e) => Err(Reject::close(
            ViolationKind::InvalidApiVersion,
            4012,
            format!("v={v:?} encoding={e:?}: expected v=10 (or 9) and encoding=json"),
        )),
    };
    ConnectParams {
        compression,
        version,
    }
}

/// The size cap on client payloads.
pub(crate) fn check_size(len: usize) -> Result<(), Reject> {
    if len > MAX_OUTBOUND_BYTES {
        return Err(Reject::close(
            ViolationKind::PayloadTooLarge,
            4002,
            format!("{len} bytes, over {MAX_OUTBOUND_BYTES}"),
        ));
    }
    Ok(())
}

/// Opcodes a client may send; anything else closes with 4001.
pub(crate) fn check_client_opcode(op: OpCode) -> Result<(), Reject> {
    match op {
        OpCode::Heartbeat
        | OpCode::Identify
        | OpCode::PresenceUpdate
        | OpCode::VoiceStateUpdate
        | OpCode::Resume
        | OpCode::RequestGuildMembers
        | OpCode::RequestSoundboardSounds
        | OpCode::RequestChannelInfo => Ok(()),
        OpCode::Unknown(5) => Err(Reject::close(
            ViolationKind::Opcode5,
            4001,
            "op 5 is unassigned",
        )),
        other => Err(Reject::close(
            ViolationKind::UnknownOpcode,
            4001,
            format!("op {} is not a client opcode", other.code()),
        )),
    }
}

/// The token as Discord reads it: a `Bot ` prefix in IDENTIFY or RESUME is accepted as
/// well as the bare token (some libraries, twilight among them, always send it).
pub(crate) fn bare_token(token: &str) -> &str {
    token.strip_prefix("Bot ").unwrap_or(token)
}

/// Token, shard and intents of an IDENTIFY. Returns `(shard_id, num_shards)`.
pub(crate) fn check_identify(
    identify: &Identify,
    config: &SimConfig,
) -> Result<(u32, u32), Reject> {
    if !Token::new(bare_token(&config.token)).matches(bare_token(identify.token.expose())) {
        return Err(Reject::close(
            ViolationKind::AuthenticationFailed,
            4004,
            "wrong token",
        ));
    }
    let (id, total) = identify
        .shard
        .map_or((0, 1), |shard| (shard.id(), shard.total()));
    if total < config.min_shards {
        return Err(Reject::close(
            ViolationKind::ShardingRequired,
            4011,
            format!(
                "{total} shards, the bot needs at least {}",
                config.min_shards
            ),
        ));
    }
    let unknown = identify.intents.bits() & !Intents::all().bits();
    if unknown != 0 {
        return Err(Reject::close(
            ViolationKind::InvalidIntents,
            4013,
            format!("undefined intent bits {unknown:#x}"),
        ));
    }
    if !config.allow_privileged_intents && identify.intents.intersects(Intents::PRIVILEGED) {
        return Err(Reject::close(
            ViolationKind::DisallowedIntents,
            4014,
            "privileged intents are not enabled for this app",
        ));
    }
    Ok((id, total))
}

/// A shard id from an IDENTIFY whose `shard` failed to parse (id ≥ total).
pub(crate) fn invalid_shard(detail: impl Into<String>) -> Reject {
    Reject::close(ViolationKind::InvalidShard, 4010, detail)
}

/// Payloads received on one connection, for the 120-per-60 s rule.
#[derive(Debug, Default)]
pub(crate) struct SendWindow {
    sent: VecDeque<Instant>,
}

impl SendWindow {
    pub(crate) fn record(&mut self, now: Instant) -> Result<(), Reject> {
        while self
            .sent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= SEND_WINDOW)
        {
            self.sent.pop_front();
        }
        self.sent.push_back(now);
        if self.sent.len() > SEND_LIMIT {
            return Err(Reject::close(
                ViolationKind::SendRateExceeded,
                4008,
                format!("{} payloads within 60 s", self.sent.len()),
            ));
        }
        Ok(())
    }
}

/// When a connection that last heartbeat at `last` has missed its heartbeat.
pub(crate) fn heartbeat_deadline(last: Instant, interval: Duration) -> Instant {
    last + interval.mul_f64(1.5)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use shardkeeper_protocol::{Compression, OpCode};

    use super::{
        SEND_LIMIT, SendWindow, check_client_opcode, check_identify, check_size, connect_params,
    };
    use crate::SimConfig;
    use crate::stats::ViolationKind;

    #[test]
    fn the_token_is_accepted_with_or_without_the_bot_prefix() {
        let config = SimConfig::default();
        let identify = |token: &str| {
            serde_json::from_value(serde_json::json!({
                "token": token, "intents": 513, "shard": [1, 2],
                "properties": {"os": "linux", "browser": "x", "device": "x"},
            }))
            .expect("an IDENTIFY body")
        };
        for token in ["sim-token", "Bot sim-token"] {
            assert_eq!(
                check_identify(&identify(token), &config).map_err(|r| r.close),
                Ok((1, 2)),
                "{token}"
            );
        }
        for token in [
            "Bot  sim-token",
            "bot sim-token",
            "Bearer sim-token",
            "Bot sim-tokens",
        ] {
            assert_eq!(
                check_identify(&identify(token), &config).map_err(|r| r.close),
                Err(Some(4004)),
                "{token}"
            );
        }
    }

    #[test]
    fn query_parameters() {
        let ok = connect_params("v=10&encoding=json&compress=zstd-stream");
        assert_eq!(ok.compression, Compression::ZstdStream);
        assert!(ok.version.is_ok());
        assert!(connect_params("v=9&encoding=json").version.is_ok());
        for bad in ["", "v=6&encoding=json", "v=10", "v=10&encoding=etf"] {
            let err = connect_params(bad).version.expect_err(bad);
            assert_eq!(
                (err.kind, err.close),
                (ViolationKind::InvalidApiVersion, Some(4012))
            );
        }
    }

    #[test]
    fn opcodes() {
        assert!(check_client_opcode(OpCode::Heartbeat).is_ok());
        assert_eq!(
            check_client_opcode(OpCode::Unknown(5)).map_err(|r| r.kind),
            Err(ViolationKind::Opcode5)
        );
        for op in [
            OpCode::Dispatch,
            OpCode::Hello,
            OpCode::HeartbeatAck,
            OpCode::Reconnect,
            OpCode::Unknown(77),
        ] {
            assert_eq!(
                check_client_opcode(op).map_err(|r| r.close),
                Err(Some(4001))
            );
        }
    }

    #[test]
    fn size_cap() {
        assert!(check_size(4096).is_ok());
        assert_eq!(check_size(4097).map_err(|r| r.close), Err(Some(4002)));
    }

    #[test]
    fn send_window_allows_120_per_minute() {
        let start = Instant::now();
        let mut window = SendWindow::default();
        for i in 0..SEND_LIMIT {
            assert!(
                window
                    .record(start + Duration::from_millis(i as u64))
                    .is_ok()
            );
        }
        assert!(window.record(start + Duration::from_secs(59)).is_err());
        let mut window = SendWindow::default();
        for i in 0..SEND_LIMIT {
            assert!(
                window
                    .record(start + Duration::from_millis(i as u64))
                    .is_ok()
            );
        }
        assert!(
            window.record(start + Duration::from_secs(60)).is_ok(),
            "the first send left the window"
        );
    }
}
