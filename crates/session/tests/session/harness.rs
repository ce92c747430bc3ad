//! A scripted driver for `ShardSession`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use shardkeeper_protocol::{Compression, ShardId, Token};
use shardkeeper_session::{
    Action, Command, CommandError, Input, ResumeInfo, SessionConfig, ShardSession, StateKind,
};

pub(crate) const TOKEN: &str = "bot-token-secret";
pub(crate) const GATEWAY: &str = "ws://gateway.test";
pub(crate) const RESUME_URL: &str = "ws://resume.test/r/abc";
pub(crate) const GATEWAY_URL: &str = "ws://gateway.test/?v=10&encoding=json";
pub(crate) const RESUME_CONNECT_URL: &str = "ws://resume.test/r/abc?v=10&encoding=json";

/// The shard every test session plays: 3 of 16.
pub(crate) fn shard() -> ShardId {
    ShardId::new(3, 16).expect("valid shard")
}

pub(crate) fn config() -> SessionConfig {
    let mut config = SessionConfig::new(Token::new(TOKEN), GATEWAY);
    config.compression = Compression::None;
    // Reconnect scripts fail many times in a row; `quarantine.rs` sets its own policy.
    config.quarantine.failures = 0;
    config
}

pub(crate) fn stored(seq: u64) -> ResumeInfo {
    ResumeInfo {
        session_id: "stored-session".into(),
        resume_url: RESUME_URL.into(),
        seq,
    }
}

/// A received WebSocket message with these bytes.
pub(crate) fn frame(bytes: &[u8]) -> Input {
    Input::Frame(Bytes::copy_from_slice(bytes))
}

pub(crate) struct Harness {
    pub(crate) session: ShardSession,
    pub(crate) start: Instant,
    pub(crate) now: Instant,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Self::with(config(), None)
    }

    pub(crate) fn with(config: SessionConfig, resume: Option<ResumeInfo>) -> Self {
        let start = Instant::now();
        Self {
            session: ShardSession::new(shard(), Arc::new(config), resume, 42),
            start,
            now: start,
        }
    }

    pub(crate) fn state(&self) -> StateKind {
        self.session.state()
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    pub(crate) fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }

    pub(crate) fn input(&mut self, input: Input) -> Vec<Action> {
        self.session.handle(self.now, input);
        self.drain()
    }

    pub(crate) fn frame(&mut self, json: &str) -> Vec<Action> {
        self.input(frame(json.as_bytes()))
    }

    pub(crate) fn command(&mut self, command: Command) -> Result<Vec<Action>, CommandError> {
        self.session.command(self.now, command)?;
        Ok(self.drain())
    }

    /// Moves time to the session's timer and fires it.
    pub(crate) fn fire(&mut self) -> Vec<Action> {
        let at = self.session.poll_timeout().expect("a timer is armed");
        self.now = self.now.max(at);
        self.input(Input::Timeout)
    }

    /// Fires timers until an action matching `pred` appears; returns everything seen.
    pub(crate) fn fire_until(&mut self, pred: impl Fn(&Action) -> bool) -> Vec<Action> {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let actions = self.fire();
            let done = actions.iter().any(&pred);
            seen.extend(actions);
            if done {
                return seen;
            }
        }
        panic!("no matching action after 20 timers: {seen:?}");
    }

    pub(crate) fn start(&mut self) -> Vec<Action> {
        self.command(Command::Start).expect("start is accepted")
    }

    pub(crate) fn hello(&mut self, interval_ms: u64) -> Vec<Action> {
        self.frame(&format!(
            r#"{{"op":10,"d":{{"heartbeat_interval":{interval_ms}}},"s":null,"t":null}}"#
        ))
    }

    pub(crate) fn dispatch(&mut self, seq: u64, t: &str, d: &str) -> Vec<Action> {
        self.frame(&format!(r#"{{"op":0,"s":{seq},"t":"{t}","d":{d}}}"#))
    }

    pub(crate) fn ready(&mut self, seq: u64) -> Vec<Action> {
        self.dispatch(
            seq,
            "READY",
            &format!(
                r#"{{"v":10,"session_id":"fresh-session","resume_gateway_url":"{RESUME_URL}","shard":[3,16],"guilds":[{{"id":"100","unavailable":true}},{{"id":"200","unavailable":true}}]}}"#
            ),
        )
    }

    /// Start → open → HELLO → permit → IDENTIFY → READY (seq 1).
    pub(crate) fn identify_to_ready(&mut self) -> Vec<Action> {
        let mut all = self.start();
        all.extend(self.input(Input::Opened));
        all.extend(self.hello(41_250));
        all.extend(self.input(Input::PermitGranted));
        all.extend(self.ready(1));
        assert_eq!(self.state(), StateKind::Ready);
        all
    }
}

/// The JSON of every frame sent.
pub(crate) fn sent(actions: &[Action]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(frame) | Action::Identify(frame) => {
                Some(serde_json::from_str(frame.as_str()).expect("json"))
            }
            _ => None,
        })
        .collect()
}

/// The opcodes of every frame sent.
pub(crate) fn sent_ops(actions: &[Action]) -> Vec<u64> {
    sent(actions)
        .iter()
        .map(|v| v["op"].as_u64().expect("op"))
        .collect()
}

pub(crate) fn connect_url(actions: &[Action]) -> Option<(&str, bool)> {
    actions.iter().find_map(|a| match a {
        Action::Connect { url, resuming } => Some((url.as_str(), *resuming)),
        _ => None,
    })
}

pub(crate) fn closes(actions: &[Action]) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close(code) => Some(*code),
            _ => None,
        })
        .collect()
}

pub(crate) fn has(actions: &[Action], pred: impl Fn(&Action) -> bool) -> bool {
    actions.iter().any(pred)
}

pub(crate) fn is_forget(a: &Action) -> bool {
    matches!(a, Action::Forget)
}

pub(crate) fn is_permit_request(a: &Action) -> bool {
    matches!(a, Action::RequestPermit)
}

pub(crate) fn is_connect(a: &Action) -> bool {
    matches!(a, Action::Connect { .. })
}
