//! The happy paths: identify, heartbeat, resume, op 1/7/9/11, operator commands.

use std::time::Duration;

use shardkeeper_session::{Action, Command, Input, Notice, StateKind};

use crate::harness::{
    GATEWAY_URL, Harness, RESUME_CONNECT_URL, TOKEN, closes, config, connect_url, frame, has,
    is_connect, is_forget, is_permit_request, sent, sent_ops, stored,
};

#[test]
fn identify_flow_waits_for_a_permit_and_persists_after_emit() {
    let mut h = Harness::new();
    let actions = h.start();
    assert_eq!(connect_url(&actions), Some((GATEWAY_URL, false)));
    assert_eq!(h.state(), StateKind::Connecting);
    h.input(Input::Opened);
    assert_eq!(h.state(), StateKind::AwaitingHello);
    let actions = h.hello(41_250);
    assert!(has(&actions, is_permit_request));
    assert!(sent(&actions).is_empty(), "no IDENTIFY before the permit");
    assert_eq!(h.state(), StateKind::Identifying);

    let actions = h.input(Input::PermitGranted);
    let frames = sent(&actions);
    assert_eq!(frames.len(), 1);
    let identify = &frames[0];
    assert_eq!(identify["op"], 2);
    assert_eq!(identify["d"]["token"], TOKEN);
    assert_eq!(identify["d"]["shard"], serde_json::json!([3, 16]));
    assert_eq!(identify["d"]["intents"], 1 | 1 << 9);
    assert_eq!(identify["d"]["properties"]["browser"], "shardkeeper");

    let actions = h.ready(1);
    let emit = actions
        .iter()
        .position(|a| matches!(a, Action::Emit(d) if d.seq == 1 && &*d.t == "READY"));
    let persist = actions.iter().position(
        |a| matches!(a, Action::Persist(r) if r.seq == 1 && &*r.session_id == "fresh-session"),
    );
    assert!(emit.expect("READY emitted") < persist.expect("session persisted"));
    assert!(has(&actions, |a| matches!(
        a,
        Action::Changed(StateKind::Ready)
    )));
    assert_eq!(h.state(), StateKind::Ready);
    let stats = h.session.stats();
    assert_eq!((stats.identifies, stats.guilds), (1, 2));
}

#[test]
fn second_permit_never_sends_a_second_identify() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let actions = h.input(Input::PermitGranted);
    assert!(sent(&actions).is_empty());
    assert_eq!(h.session.stats().identifies, 1);
}

#[test]
fn first_heartbeat_is_jittered_then_periodic_with_last_seq() {
    let mut h = Harness::new();
    h.start();
    h.input(Input::Opened);
    let hello_at = h.now;
    h.hello(1_000);
    let first = h.session.poll_timeout().expect("heartbeat armed");
    assert!(first >= hello_at && first < hello_at + Duration::from_secs(1));
    let actions = h.fire();
    assert_eq!(sent(&actions), [serde_json::json!({"op": 1, "d": null})]);
    h.input(Input::PermitGranted);
    h.frame(r#"{"op":11,"d":null}"#);
    h.ready(1);
    h.dispatch(2, "MESSAGE_CREATE", "{}");
    h.dispatch(5, "MESSAGE_CREATE", "{}");
    h.frame(r#"{"op":11,"d":null}"#);
    let beat_at = h.now;
    let actions = h.fire();
    assert!(h.now.duration_since(beat_at) <= Duration::from_secs(1));
    assert_eq!(sent(&actions), [serde_json::json!({"op": 1, "d": 5})]);
    let next = h.session.poll_timeout().expect("armed");
    assert_eq!(
        next - h.now,
        Duration::from_secs(1),
        "every interval after the first"
    );
}

#[test]
fn heartbeat_ack_measures_latency() {
    let mut h = Harness::new();
    h.identify_to_ready();
    h.fire();
    h.advance(Duration::from_millis(37));
    let actions = h.frame(r#"{"op":11,"d":null}"#);
    assert!(has(
        &actions,
        |a| matches!(a, Action::Notice(Notice::HeartbeatAck { latency }) if *latency == Duration::from_millis(37))
    ));
    assert_eq!(h.session.stats().latency, Some(Duration::from_millis(37)));
}

#[test]
fn server_heartbeat_request_is_answered_at_once() {
    let mut h = Harness::new();
    h.identify_to_ready();
    h.dispatch(9, "MESSAGE_CREATE", "{}");
    let actions = h.frame(r#"{"op":1,"d":null}"#);
    assert_eq!(sent(&actions), [serde_json::json!({"op": 1, "d": 9})]);
}

#[test]
fn zombie_connection_is_closed_without_1000_and_resumed() {
    let mut h = Harness::new();
    h.identify_to_ready();
    h.dispatch(2, "MESSAGE_CREATE", "{}");
    let actions = h.fire();
    assert_eq!(sent_ops(&actions), [1]);
    let actions = h.fire();
    assert!(has(&actions, |a| matches!(
        a,
        Action::Notice(Notice::ZombieDetected)
    )));
    assert_eq!(closes(&actions), [4000]);
    assert_eq!(h.state(), StateKind::Reconnecting);
    assert_eq!(h.session.stats().zombies, 1);
    let actions = h.fire_until(is_connect);
    assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));
}

#[test]
fn resume_replays_then_resumed_without_a_permit() {
    let mut h = Harness::with(config(), Some(stored(40)));
    let actions = h.start();
    assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));
    h.input(Input::Opened);
    let actions = h.hello(41_250);
    assert!(!has(&actions, is_permit_request));
    let frames = sent(&actions);
    assert_eq!(
        frames,
        [
            serde_json::json!({"op": 6, "d": {"token": TOKEN, "session_id": "stored-session", "seq": 40}})
        ]
    );
    assert_eq!(h.state(), StateKind::Resuming);
    let actions = h.dispatch(41, "MESSAGE_CREATE", "{}");
    assert!(
        matches!(actions.as_slice(), [Action::Emit(d), Action::Persist(r)] if d.seq == 41 && r.seq == 41)
    );
    h.dispatch(42, "MESSAGE_CREATE", "{}");
    let actions = h.dispatch(43, "RESUMED", "{}");
    assert!(has(&actions, |a| matches!(
        a,
        Action::Notice(Notice::Resumed { replayed: 2 })
    )));
    assert_eq!(h.state(), StateKind::Ready);
    let stats = h.session.stats();
    assert_eq!((stats.resumes, stats.identifies), (1, 0));
    assert_eq!(h.session.resume_info().map(|r| r.seq), Some(43));
}

#[test]
fn op7_reconnects_at_once_and_resumes() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let actions = h.frame(r#"{"op":7,"d":null}"#);
    assert_eq!(closes(&actions), [4000]);
    assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));
    assert!(!has(&actions, is_forget));
    h.input(Input::Opened);
    assert_eq!(sent_ops(&h.hello(41_250)), [6]);
}

#[test]
fn op7_before_ready_identifies_again() {
    let mut h = Harness::new();
    h.start();
    h.input(Input::Opened);
    h.hello(41_250);
    let actions = h.frame(r#"{"op":7,"d":null}"#);
    assert!(has(&actions, |a| matches!(a, Action::CancelPermit)));
    assert_eq!(connect_url(&actions), Some((GATEWAY_URL, false)));
    h.input(Input::Opened);
    assert!(has(&h.hello(41_250), is_permit_request));
}

#[test]
fn op7_before_hello_is_honoured() {
    let mut h = Harness::with(config(), Some(stored(5)));
    h.start();
    h.input(Input::Opened);
    let actions = h.frame(r#"{"op":7,"d":null}"#);
    assert_eq!(closes(&actions), [4000]);
    assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));
}

#[test]
fn op9_true_waits_then_resumes() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let actions = h.frame(r#"{"op":9,"d":true}"#);
    assert_eq!(closes(&actions), [4000]);
    assert!(!has(&actions, is_forget));
    let wait = h.session.poll_timeout().expect("armed") - h.now;
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(5),
        "{wait:?}"
    );
    let actions = h.fire();
    assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));
}

#[test]
fn op9_false_forgets_waits_and_identifies_with_a_new_permit() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let actions = h.frame(r#"{"op":9,"d":false}"#);
    assert!(has(&actions, is_forget));
    assert_eq!(closes(&actions), [4000]);
    assert!(h.session.resume_info().is_none());
    let wait = h.session.poll_timeout().expect("armed") - h.now;
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(5),
        "{wait:?}"
    );
    let actions = h.fire();
    assert_eq!(connect_url(&actions), Some((GATEWAY_URL, false)));
    h.input(Input::Opened);
    let actions = h.hello(41_250);
    assert!(has(&actions, is_permit_request));
    assert!(sent(&actions).is_empty());
}

#[test]
fn op9_after_failed_resume_identifies() {
    let mut h = Harness::with(config(), Some(stored(7)));
    h.start();
    h.input(Input::Opened);
    h.hello(41_250);
    let actions = h.frame(r#"{"op":9,"d":false}"#);
    assert!(has(&actions, is_forget));
    let actions = h.fire();
    assert_eq!(connect_url(&actions), Some((GATEWAY_URL, false)));
}

#[test]
fn client_only_and_unknown_opcodes_are_ignored() {
    let mut h = Harness::new();
    h.identify_to_ready();
    for op in [2, 3, 4, 5, 6, 8, 31, 43, 99] {
        let actions = h.frame(&format!(r#"{{"op":{op},"d":null}}"#));
        assert!(
            matches!(actions.as_slice(), [Action::Notice(Notice::UnexpectedOpcode { op: o })] if u64::from(*o) == op),
            "op {op}: {actions:?}"
        );
        assert_eq!(h.state(), StateKind::Ready);
    }
}

#[test]
fn garbage_frames_reconnect_and_resume() {
    for garbage in [
        "not json",
        r#"{"op":0,"d":{}}"#,
        r#"{"op":10,"d":{"heartbeat_interval":"x"}}"#,
        "\u{0}",
    ] {
        let mut h = Harness::new();
        h.identify_to_ready();
        let actions = h.frame(garbage);
        assert!(
            has(&actions, |a| matches!(
                a,
                Action::Notice(Notice::ProtocolError { .. })
            )),
            "{garbage}"
        );
        assert_eq!(closes(&actions), [4000]);
        assert!(!has(&actions, is_forget));
        let actions = h.fire_until(is_connect);
        assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));
    }
}

#[test]
fn a_frame_that_is_not_utf8_is_garbage_with_its_position() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let actions = h.input(frame(b"{\"op\":11,\"d\":\"\xff\"}"));
    let detail = actions.iter().find_map(|a| match a {
        Action::Notice(Notice::ProtocolError { detail }) => Some(detail.as_str()),
        _ => None,
    });
    assert_eq!(
        detail,
        Some("malformed gateway payload: invalid UTF-8 at byte 14")
    );
    assert_eq!(closes(&actions), [4000]);
}

#[test]
fn hello_timeout_reconnects() {
    let mut h = Harness::new();
    h.start();
    h.input(Input::Opened);
    let actions = h.fire();
    assert!(has(&actions, |a| matches!(
        a,
        Action::Notice(Notice::TimedOut {
            waiting_for: "hello"
        })
    )));
    assert_eq!(closes(&actions), [4000]);
    assert_eq!(h.elapsed(), Duration::from_secs(20));
    assert_eq!(h.state(), StateKind::Reconnecting);
}

#[test]
fn stop_keeps_the_session_and_start_resumes() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let actions = h.command(Command::Stop).expect("accepted");
    assert_eq!(closes(&actions), [4000]);
    assert!(!has(&actions, is_forget));
    assert_eq!(h.state(), StateKind::Stopped);
    assert!(h.session.poll_timeout().is_none());
    assert!(
        h.input(Input::Closed(Some(4000))).is_empty(),
        "the old socket's close is stale"
    );
    let actions = h.start();
    assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));
}

#[test]
fn restart_resumes_and_fresh_restart_identifies() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let actions = h
        .command(Command::Restart { fresh: false })
        .expect("accepted");
    assert_eq!(closes(&actions), [4000]);
    assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));

    let mut h = Harness::new();
    h.identify_to_ready();
    let actions = h
        .command(Command::Restart { fresh: true })
        .expect("accepted");
    assert_eq!(closes(&actions), [1000]);
    assert!(has(&actions, is_forget));
    assert_eq!(connect_url(&actions), Some((GATEWAY_URL, false)));
}

#[test]
fn restart_acts_immediately_during_backoff() {
    let mut h = Harness::new();
    h.identify_to_ready();
    h.input(Input::Closed(None));
    assert_eq!(h.state(), StateKind::Reconnecting);
    let actions = h
        .command(Command::Restart { fresh: false })
        .expect("accepted");
    assert!(closes(&actions).is_empty(), "no socket to close");
    assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));
}

#[test]
fn zlib_stream_frames_are_inflated() {
    use flate2::{Compress, Compression, FlushCompress};

    let mut config = config();
    config.compression = shardkeeper_protocol::Compression::ZlibStream;
    let mut h = Harness::with(config, None);
    let actions = h.start();
    assert_eq!(
        connect_url(&actions).map(|(url, _)| url),
        Some("ws://gateway.test/?v=10&encoding=json&compress=zlib-stream")
    );
    h.input(Input::Opened);
    let mut compressor = Compress::new(Compression::default(), true);
    let mut compress = |json: &str| {
        let mut out = Vec::with_capacity(json.len() + 64);
        compressor
            .compress_vec(json.as_bytes(), &mut out, FlushCompress::Sync)
            .expect("compresses");
        out
    };
    let hello = compress(r#"{"op":10,"d":{"heartbeat_interval":41250}}"#);
    let (head, tail) = hello.split_at(3);
    assert!(h.input(frame(head)).is_empty(), "partial message waits");
    assert!(has(&h.input(frame(tail)), is_permit_request));
    h.input(Input::PermitGranted);
    let ready = compress(&format!(
        r#"{{"op":0,"s":1,"t":"READY","d":{{"v":10,"session_id":"z","resume_gateway_url":"{}","guilds":[]}}}}"#,
        crate::harness::RESUME_URL
    ));
    h.input(frame(&ready));
    assert_eq!(h.state(), StateKind::Ready);
}
