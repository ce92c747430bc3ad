//! Invariants over random input sequences.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shardkeeper_protocol::OpCode;
use shardkeeper_session::{
    Action, ClientPayload, Command, Input, Notice, QuarantinePolicy, SEND_BUDGET, SEND_WINDOW,
    ShardSession, StateKind,
};

use crate::harness::{RESUME_URL, config, frame, shard, stored};

#[derive(Debug, Clone)]
enum Step {
    Opened,
    Hello(u64),
    Dispatch(String),
    Ready,
    Resumed,
    Ack,
    ServerHeartbeat,
    Reconnect,
    InvalidSession(bool),
    Closed(Option<u16>),
    Bytes(Vec<u8>),
    Wait(u64),
    Timer,
    Grant,
    Stop,
    Start,
    Restart(bool),
    Send,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Opened),
        3 => (100u64..60_000).prop_map(Step::Hello),
        6 => prop::sample::select(vec!["MESSAGE_CREATE", "GUILD_CREATE", "TYPING_START"])
            .prop_map(|t| Step::Dispatch(t.to_owned())),
        2 => Just(Step::Ready),
        2 => Just(Step::Resumed),
        4 => Just(Step::Ack),
        2 => Just(Step::ServerHeartbeat),
        1 => Just(Step::Reconnect),
        1 => any::<bool>().prop_map(Step::InvalidSession),
        2 => prop::option::of(prop::sample::select(vec![1000u16, 1006, 4000, 4001, 4003, 4004, 4007, 4008, 4009, 4011, 4014])).prop_map(Step::Closed),
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Step::Bytes),
        4 => (0u64..90_000).prop_map(Step::Wait),
        6 => Just(Step::Timer),
        4 => Just(Step::Grant),
        1 => Just(Step::Stop),
        2 => Just(Step::Start),
        1 => any::<bool>().prop_map(Step::Restart),
        5 => Just(Step::Send),
    ]
}

/// Tracks what the session did and checks the invariants after every step.
struct Checker {
    session: ShardSession,
    now: Instant,
    next_seq: u64,
    permit_outstanding: bool,
    unused_grants: u32,
    max_emitted: Option<u64>,
    sends: VecDeque<Instant>,
    /// The quarantine model: connections that ended before READY or RESUMED.
    failures: VecDeque<Instant>,
    came_up: bool,
}

/// A policy small enough for random sequences to reach.
const POLICY: QuarantinePolicy = QuarantinePolicy {
    failures: 3,
    window: Duration::from_secs(120),
};

impl Checker {
    fn new(resume: bool) -> Self {
        let stored = resume.then(|| stored(10));
        let mut config = config();
        config.quarantine = POLICY;
        Self {
            max_emitted: stored.as_ref().map(|s| s.seq),
            next_seq: 11,
            session: ShardSession::new(shard(), Arc::new(config), stored, 7),
            now: Instant::now(),
            permit_outstanding: false,
            unused_grants: 0,
            sends: VecDeque::new(),
            failures: VecDeque::new(),
            came_up: false,
        }
    }

    fn frame(&mut self, json: &str) {
        self.session.handle(self.now, frame(json.as_bytes()));
    }

    fn dispatch(&mut self, t: &str, d: &str) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.frame(&format!(r#"{{"op":0,"s":{seq},"t":"{t}","d":{d}}}"#));
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Opened => self.session.handle(self.now, Input::Opened),
            Step::Hello(ms) => {
                self.frame(&format!(r#"{{"op":10,"d":{{"heartbeat_interval":{ms}}}}}"#));
            }
            Step::Dispatch(t) => self.dispatch(t, r#"{"id":"5"}"#),
            Step::Ready => self.dispatch(
                "READY",
                &format!(
                    r#"{{"v":10,"session_id":"s","resume_gateway_url":"{RESUME_URL}","guilds":[]}}"#
                ),
            ),
            Step::Resumed => self.dispatch("RESUMED", "{}"),
            Step::Ack => self.frame(r#"{"op":11,"d":null}"#),
            Step::ServerHeartbeat => self.frame(r#"{"op":1,"d":null}"#),
            Step::Reconnect => self.frame(r#"{"op":7,"d":null}"#),
            Step::InvalidSession(b) => self.frame(&format!(r#"{{"op":9,"d":{b}}}"#)),
            Step::Closed(code) => self.session.handle(self.now, Input::Closed(*code)),
            Step::Bytes(bytes) => self.session.handle(self.now, frame(bytes)),
            Step::Wait(ms) => self.now += Duration::from_millis(*ms),
            Step::Timer => {
                if let Some(at) = self.session.poll_timeout() {
                    self.now = self.now.max(at);
                    self.session.handle(self.now, Input::Timeout);
                }
            }
            Step::Grant => {
                // The coordinator only grants requests it holds.
                if self.permit_outstanding {
                    self.permit_outstanding = false;
                    self.unused_grants += 1;
                    self.session.handle(self.now, Input::PermitGranted);
                }
            }
            Step::Stop => drop(self.session.command(self.now, Command::Stop)),
            Step::Start => {
                self.failures.clear();
                drop(self.session.command(self.now, Command::Start));
            }
            Step::Restart(fresh) => {
                self.failures.clear();
                drop(
                    self.session
                        .command(self.now, Command::Restart { fresh: *fresh }),
                );
            }
            Step::Send => drop(self.session.command(
                self.now,
                Command::Send(ClientPayload::SoundboardSounds(
                    shardkeeper_protocol::payload::RequestSoundboardSounds { guild_ids: vec![] },
                )),
            )),
        }
        self.check_actions();
    }

    fn check_actions(&mut self) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::RequestPermit => {
                    self.permit_outstanding = true;
                    self.max_emitted = None;
                }
                Action::CancelPermit => self.permit_outstanding = false,
                Action::Connect { .. } => {
                    self.sends.clear();
                    self.unused_grants = 0;
                    self.came_up = false;
                }
                Action::Notice(notice) => self.check_notice(&notice),
                Action::Emit(dispatch) => {
                    self.max_emitted = Some(
                        self.max_emitted
                            .map_or(dispatch.seq, |m| m.max(dispatch.seq)),
                    );
                }
                Action::Persist(resume) => {
                    let emitted = self.max_emitted.expect("persist after an emit");
                    assert!(
                        resume.seq <= emitted,
                        "persisted {} before emitting it",
                        resume.seq
                    );
                }
                Action::Send(frame) => {
                    assert_ne!(frame.op(), OpCode::Identify, "unmarked IDENTIFY");
                    self.check_send(frame.as_str());
                }
                Action::Identify(frame) => {
                    assert_eq!(frame.op(), OpCode::Identify, "marked frame is no IDENTIFY");
                    self.check_send(frame.as_str());
                }
                _ => {}
            }
        }
        if self.session.state() == StateKind::Quarantined {
            assert_eq!(
                self.session.poll_timeout(),
                None,
                "a quarantined shard waits for nothing"
            );
        }
    }

    /// Quarantine exactly when the model counts `POLICY.failures` within the window.
    fn check_notice(&mut self, notice: &Notice) {
        match notice {
            Notice::Identified { .. } | Notice::Resumed { .. } => self.came_up = true,
            Notice::Disconnected { .. } if !std::mem::take(&mut self.came_up) => {
                self.failures.push_back(self.now);
                while self
                    .failures
                    .front()
                    .is_some_and(|&t| self.now.saturating_duration_since(t) > POLICY.window)
                {
                    self.failures.pop_front();
                }
            }
            Notice::Quarantined { failures, .. } => {
                assert_eq!(*failures, self.failures.len());
                assert!(self.failures.len() >= POLICY.failures as usize);
                self.failures.clear();
            }
            _ => {}
        }
        if self.failures.len() >= POLICY.failures as usize
            && !matches!(notice, Notice::Disconnected { .. })
        {
            assert!(
                matches!(notice, Notice::Quarantined { .. }),
                "{} failures in the window but no quarantine",
                self.failures.len()
            );
        }
    }

    fn check_send(&mut self, json: &str) {
        assert_ne!(json.len(), 0);
        assert!(json.len() <= 4096);
        let value: serde_json::Value = serde_json::from_str(json).expect("valid json");
        match value["op"].as_u64() {
            Some(1) => assert_eq!(
                value["d"].as_u64(),
                self.max_emitted,
                "heartbeat d is the last seq"
            ),
            Some(2) => {
                assert!(self.unused_grants > 0, "IDENTIFY without a permit");
                self.unused_grants -= 1;
            }
            Some(5) => panic!("op 5 sent"),
            _ => {}
        }
        self.sends.push_back(self.now);
        while self
            .sends
            .front()
            .is_some_and(|&t| t + SEND_WINDOW <= self.now)
        {
            self.sends.pop_front();
        }
        assert!(
            self.sends.len() <= SEND_BUDGET as usize,
            "send budget exceeded"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_for_any_input_sequence(resume in any::<bool>(), steps in prop::collection::vec(step(), 1..200)) {
        let mut checker = Checker::new(resume);
        checker.apply(&Step::Start);
        for step in &steps {
            checker.apply(step);
        }
    }

    #[test]
    fn any_bytes_as_a_frame_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 1..20)) {
        let mut checker = Checker::new(true);
        checker.apply(&Step::Start);
        checker.apply(&Step::Opened);
        for bytes in frames {
            checker.apply(&Step::Bytes(bytes));
        }
    }
}
