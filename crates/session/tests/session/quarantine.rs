//! Crash-loop protection: the quarantine policy, and the marks the shell relies on.

use std::time::Duration;

use shardkeeper_protocol::OpCode;
use shardkeeper_protocol::payload::RequestGuildMembers;
use shardkeeper_session::{Action, Command, Input, Notice, QuarantinePolicy, StateKind};

use crate::harness::{Harness, config, has, is_connect, sent};

fn policy(failures: u32) -> Harness {
    let mut config = config();
    config.quarantine = QuarantinePolicy {
        failures,
        window: Duration::from_secs(60),
    };
    Harness::with(config, None)
}

/// Opens the connection asked for and drops it before HELLO.
fn fail_once(h: &mut Harness) -> Vec<Action> {
    let mut actions = h.input(Input::Opened);
    actions.extend(h.input(Input::Closed(Some(4000))));
    actions
}

fn quarantined(actions: &[Action]) -> bool {
    has(actions, |a| {
        matches!(a, Action::Notice(Notice::Quarantined { .. }))
    })
}

#[test]
fn connections_failing_before_ready_quarantine_the_shard() {
    let mut h = policy(3);
    h.start();
    for _ in 0..2 {
        assert!(!quarantined(&fail_once(&mut h)));
        assert_eq!(h.state(), StateKind::Reconnecting);
        h.fire_until(is_connect);
    }
    let actions = fail_once(&mut h);
    assert!(quarantined(&actions), "{actions:?}");
    assert_eq!(h.state(), StateKind::Quarantined);
    assert_eq!(
        h.session.poll_timeout(),
        None,
        "a quarantined shard never reconnects"
    );
    assert!(
        h.session.command(h.now, Command::Send(presence())).is_err(),
        "nothing is sent through a quarantined shard"
    );
    let restart = h.command(Command::Start).expect("start");
    assert!(has(&restart, is_connect));
    assert!(
        !quarantined(&fail_once(&mut h)),
        "start cleared the failures"
    );
}

#[test]
fn failures_outside_the_window_and_sessions_that_came_up_do_not_count() {
    let mut h = policy(2);
    h.start();
    fail_once(&mut h);
    h.advance(Duration::from_secs(61));
    h.fire_until(is_connect);
    assert!(
        !quarantined(&fail_once(&mut h)),
        "the first failure aged out"
    );
    h.fire_until(is_connect);
    h.input(Input::Opened);
    h.hello(41_250);
    h.input(Input::PermitGranted);
    h.ready(1);
    let actions = h.input(Input::Closed(Some(4000)));
    assert!(!quarantined(&actions), "this connection reached READY");
    assert_eq!(h.state(), StateKind::Reconnecting);
}

#[test]
fn restart_clears_the_quarantine_and_zero_disables_it() {
    let mut h = policy(1);
    h.start();
    assert!(quarantined(&fail_once(&mut h)));
    h.command(Command::Restart { fresh: false })
        .expect("restart");
    assert_eq!(h.state(), StateKind::Connecting);

    let mut off = policy(0);
    off.start();
    for _ in 0..20 {
        assert!(!quarantined(&fail_once(&mut off)));
        off.fire_until(is_connect);
    }
}

#[test]
fn the_identify_is_marked_and_nothing_else_is() {
    let mut h = Harness::new();
    let actions = h.identify_to_ready();
    let marked: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Identify(frame) => Some(frame.op()),
            _ => None,
        })
        .collect();
    assert_eq!(marked, [OpCode::Identify]);
    assert!(
        actions
            .iter()
            .all(|a| !matches!(a, Action::Send(f) if f.op() == OpCode::Identify))
    );
}

#[test]
fn member_requests_get_a_nonce_from_the_session() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let request = |nonce: Option<&str>| RequestGuildMembers {
        guild_id: shardkeeper_protocol::Snowflake(100),
        query: Some(String::new()),
        limit: Some(0),
        presences: false,
        user_ids: None,
        nonce: nonce.map(str::to_owned),
    };
    let own = h
        .session
        .request_members(h.now, request(Some("mine")))
        .expect("accepted");
    assert_eq!(own, "mine");
    let generated = h
        .session
        .request_members(h.now, request(None))
        .expect("accepted");
    assert!(
        generated.starts_with("sk") && generated.len() == 18,
        "{generated}"
    );
    let frames = sent(&h.drain());
    let nonces: Vec<_> = frames.iter().map(|f| f["d"]["nonce"].clone()).collect();
    assert_eq!(
        nonces,
        [serde_json::json!("mine"), serde_json::json!(generated)]
    );
}

fn presence() -> shardkeeper_session::ClientPayload {
    shardkeeper_session::ClientPayload::Presence(shardkeeper_protocol::payload::PresenceUpdate {
        since: None,
        activities: Vec::new(),
        status: shardkeeper_protocol::payload::Status::Online,
        afk: false,
    })
}
