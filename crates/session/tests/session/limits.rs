//! The 4096-byte cap, the outbox and the 120-per-60 s send budget.

use std::time::{Duration, Instant};

use shardkeeper_protocol::payload::{
    Activity, ActivityType, PresenceUpdate, Status, VoiceStateUpdate,
};
use shardkeeper_protocol::{OutboundError, Snowflake};
use shardkeeper_session::{
    Action, ClientPayload, Command, CommandError, Input, SEND_BUDGET, SEND_WINDOW, StateKind,
};

use crate::harness::{Harness, config, sent, sent_ops};

fn presence(name: &str) -> ClientPayload {
    ClientPayload::Presence(PresenceUpdate {
        since: None,
        activities: vec![Activity {
            name: name.to_owned(),
            kind: ActivityType::PLAYING,
            url: None,
            state: None,
        }],
        status: Status::Online,
        afk: false,
    })
}

fn voice(guild: u64) -> ClientPayload {
    ClientPayload::VoiceState(VoiceStateUpdate {
        guild_id: Snowflake(guild),
        channel_id: None,
        self_mute: false,
        self_deaf: false,
    })
}

#[test]
fn oversized_payloads_are_refused_before_sending() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let err = h
        .command(Command::Send(presence(&"x".repeat(5000))))
        .expect_err("too large");
    assert!(matches!(err, CommandError::Payload(OutboundError::TooLarge { size }) if size > 4096));
    assert!(h.drain().is_empty(), "nothing was sent");
}

#[test]
fn sending_while_not_running_is_an_error() {
    let mut h = Harness::new();
    assert_eq!(
        h.command(Command::Send(voice(1))).map(|_| ()),
        Err(CommandError::NotRunning {
            state: StateKind::Idle
        })
    );
    h.identify_to_ready();
    h.command(Command::Stop).expect("accepted");
    assert_eq!(
        h.command(Command::Send(presence("x"))).map(|_| ()),
        Err(CommandError::NotRunning {
            state: StateKind::Stopped
        })
    );
}

#[test]
fn payloads_wait_for_ready_and_presence_carries_into_identify() {
    let mut h = Harness::new();
    h.start();
    let actions = h
        .command(Command::Send(presence("queued")))
        .expect("queued");
    assert!(sent(&actions).is_empty());
    h.input(Input::Opened);
    h.hello(41_250);
    let identify = sent(&h.input(Input::PermitGranted));
    assert_eq!(
        identify[0]["d"]["presence"]["activities"][0]["name"],
        "queued"
    );
    let actions = h.ready(1);
    assert!(
        sent(&actions).is_empty(),
        "the outbox flushes on the next send opportunity"
    );
    let actions = h.command(Command::Send(voice(5))).expect("sent");
    assert_eq!(sent_ops(&actions), [3, 4], "queued first, in order");
}

#[test]
fn outbox_is_bounded() {
    let mut config = config();
    config.outbox_capacity = 2;
    let mut h = Harness::with(config, None);
    h.start();
    h.command(Command::Send(voice(1))).expect("1");
    h.command(Command::Send(voice(2))).expect("2");
    assert_eq!(
        h.command(Command::Send(voice(3))).map(|_| ()),
        Err(CommandError::OutboxFull { capacity: 2 })
    );
}

/// Floods the shard with payloads for five minutes while heartbeating every 5 s.
#[test]
fn flood_never_exceeds_the_budget_and_heartbeats_stay_on_time() {
    let mut config = config();
    config.outbox_capacity = 100_000;
    let mut h = Harness::with(config, None);
    h.start();
    h.input(Input::Opened);
    h.hello(5_000);
    h.input(Input::PermitGranted);
    h.ready(1);
    let mut sends: Vec<(Instant, u64)> = Vec::new();
    let mut beat_due = h.session.poll_timeout().expect("armed");
    let end = h.now + Duration::from_secs(300);
    let mut late_beats = 0;
    while h.now < end {
        for _ in 0..3 {
            let actions = h.command(Command::Send(voice(7))).expect("queued");
            sends.extend(sent_ops(&actions).into_iter().map(|op| (h.now, op)));
        }
        let next = h.session.poll_timeout().expect("armed");
        h.now = next.min(h.now + Duration::from_millis(100)).max(h.now);
        let actions = h.input(Input::Timeout);
        if has_beat(&actions) {
            if h.now > beat_due {
                late_beats += 1;
            }
            h.frame(r#"{"op":11,"d":null}"#);
            beat_due = h.now + Duration::from_secs(5);
        }
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Close(_))),
            "never a zombie"
        );
        sends.extend(sent_ops(&actions).into_iter().map(|op| (h.now, op)));
    }
    let max = sends
        .iter()
        .map(|&(t, _)| {
            sends
                .iter()
                .filter(|&&(u, _)| u >= t && u < t + SEND_WINDOW)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(max <= SEND_BUDGET as usize, "{max} sends in one window");
    assert!(max >= 110, "the budget is used: {max}");
    let beats = sends.iter().filter(|&&(_, op)| op == 1).count();
    assert_eq!(late_beats, 0);
    assert!(beats >= 59, "{beats} heartbeats in 300 s at 5 s");
}

fn has_beat(actions: &[Action]) -> bool {
    sent_ops(actions).contains(&1)
}

#[test]
fn configured_presence_goes_into_identify_unless_it_makes_identify_too_large() {
    let identify_with = |name: &str| {
        let mut config = config();
        config.presence = match presence(name) {
            ClientPayload::Presence(presence) => Some(presence),
            _ => None,
        };
        let mut h = Harness::with(config, None);
        h.start();
        h.input(Input::Opened);
        h.hello(41_250);
        let actions = h.input(Input::PermitGranted);
        let notices = actions
            .iter()
            .filter(|a| matches!(a, Action::Notice(_)))
            .count();
        (sent(&actions).remove(0), notices)
    };
    let (identify, notices) = identify_with("configured");
    assert_eq!(
        (
            &identify["d"]["presence"]["activities"][0]["name"],
            &identify["d"]["shard"],
            notices
        ),
        (&"configured".into(), &serde_json::json!([3, 16]), 0)
    );
    let (identify, notices) = identify_with(&"x".repeat(4000));
    assert!(identify["d"]["presence"].is_null(), "{identify}");
    assert_eq!(notices, 1, "the dropped presence is reported");
}
