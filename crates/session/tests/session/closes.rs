//! Every close code of Discord's table, and connection failures.

use std::time::Duration;

use shardkeeper_session::{Action, Input, Notice, StateKind, Timing};

use crate::harness::{
    GATEWAY_URL, Harness, RESUME_CONNECT_URL, config, connect_url, has, is_connect, is_forget,
    stored,
};

const RESUME: [u16; 5] = [4000, 4001, 4002, 4005, 4008];
const IDENTIFY: [u16; 3] = [4003, 4007, 4009];
const FATAL: [u16; 6] = [4004, 4010, 4011, 4012, 4013, 4014];

#[test]
fn resumable_codes_reconnect_to_the_resume_url() {
    for code in RESUME.into_iter().chain([4006, 1001, 1006]) {
        let mut h = Harness::new();
        h.identify_to_ready();
        let actions = h.input(Input::Closed(Some(code)));
        assert!(!has(&actions, is_forget), "{code}");
        assert!(
            has(&actions, |a| matches!(
                a,
                Action::Notice(Notice::Disconnected {
                    resumable: true,
                    ..
                })
            )),
            "{code}"
        );
        assert_eq!(h.state(), StateKind::Reconnecting);
        assert_eq!(h.session.stats().last_close_code, Some(code));
        let actions = h.fire_until(is_connect);
        assert_eq!(
            connect_url(&actions),
            Some((RESUME_CONNECT_URL, true)),
            "{code}"
        );
    }
}

#[test]
fn session_ending_codes_identify_a_new_session() {
    for code in IDENTIFY {
        let mut h = Harness::new();
        h.identify_to_ready();
        let actions = h.input(Input::Closed(Some(code)));
        assert!(has(&actions, is_forget), "{code}");
        let actions = h.fire_until(is_connect);
        assert_eq!(connect_url(&actions), Some((GATEWAY_URL, false)), "{code}");
    }
}

#[test]
fn fatal_codes_fail_and_never_retry() {
    for code in FATAL {
        let mut h = Harness::new();
        h.identify_to_ready();
        let actions = h.input(Input::Closed(Some(code)));
        assert!(has(
            &actions,
            |a| matches!(a, Action::Notice(Notice::Fatal { code: c }) if *c == code)
        ));
        assert!(has(&actions, is_forget));
        assert!(!has(&actions, is_connect));
        assert_eq!(h.state(), StateKind::Failed);
        assert_eq!(h.session.failure_code(), Some(code));
        assert!(
            h.session.poll_timeout().is_none(),
            "{code}: nothing scheduled"
        );
        h.advance(Duration::from_secs(3600));
        assert!(h.input(Input::Timeout).is_empty());
    }
}

#[test]
fn fatal_code_while_waiting_for_a_permit_cancels_it() {
    let mut h = Harness::new();
    h.start();
    h.input(Input::Opened);
    h.hello(41_250);
    let actions = h.input(Input::Closed(Some(4004)));
    assert!(has(&actions, |a| matches!(a, Action::CancelPermit)));
    assert_eq!(h.state(), StateKind::Failed);
}

#[test]
fn drop_without_close_code_resumes() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let actions = h.input(Input::Closed(None));
    assert!(!has(&actions, is_forget));
    let actions = h.fire_until(is_connect);
    assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));
}

#[test]
fn backoff_grows_exponentially_and_caps_at_sixty_seconds() {
    let mut h = Harness::new();
    h.start();
    let mut delays = Vec::new();
    for _ in 0..12 {
        let failed_at = h.now;
        h.input(Input::Closed(None));
        let at = h.session.poll_timeout().expect("armed");
        delays.push(at - failed_at);
        let actions = h.fire();
        assert!(has(&actions, is_connect));
    }
    assert!(delays[0] < Duration::from_secs(1));
    for (n, d) in delays.iter().enumerate().skip(1) {
        let full = Duration::from_secs(1 << n.min(10)).min(Duration::from_secs(60));
        assert!(*d >= full / 2 && *d <= full, "attempt {}: {d:?}", n + 1);
    }
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
    assert!(delays[11] >= Duration::from_secs(30));
}

#[test]
fn ready_resets_the_backoff() {
    let mut h = Harness::new();
    h.identify_to_ready();
    let mut last_wait = Duration::ZERO;
    for _ in 0..5 {
        h.input(Input::Closed(None));
        last_wait = h.session.poll_timeout().expect("armed") - h.now;
        h.fire_until(is_connect);
        h.input(Input::Opened);
        h.hello(41_250);
        assert_eq!(h.state(), StateKind::Resuming);
    }
    assert!(
        last_wait >= Duration::from_secs(8),
        "backoff grew: {last_wait:?}"
    );
    h.dispatch(2, "RESUMED", "{}");
    assert_eq!(h.state(), StateKind::Ready);
    let before = h.now;
    h.input(Input::Closed(None));
    assert!(h.session.poll_timeout().expect("armed") - before < Duration::from_secs(1));
}

#[test]
fn unreachable_resume_url_falls_back_to_identify() {
    let mut config = config();
    config.timing = Timing {
        resume_connect_attempts: 3,
        ..Timing::default()
    };
    let mut h = Harness::with(config, Some(stored(9)));
    let actions = h.start();
    assert_eq!(connect_url(&actions), Some((RESUME_CONNECT_URL, true)));
    let mut forgot = false;
    for attempt in 1..=3 {
        let actions = h.input(Input::Closed(None));
        forgot |= has(&actions, is_forget);
        assert_eq!(forgot, attempt == 3, "attempt {attempt}");
        let actions = h.fire_until(is_connect);
        let expected = if attempt < 3 {
            (RESUME_CONNECT_URL, true)
        } else {
            (GATEWAY_URL, false)
        };
        assert_eq!(connect_url(&actions), Some(expected), "attempt {attempt}");
    }
}

#[test]
fn connect_timeout_aborts_the_attempt() {
    let mut h = Harness::new();
    h.start();
    let actions = h.fire();
    assert!(has(&actions, |a| matches!(
        a,
        Action::Notice(Notice::TimedOut {
            waiting_for: "connection"
        })
    )));
    assert!(has(&actions, |a| matches!(a, Action::Close(4000))));
    assert_eq!(h.elapsed(), Duration::from_secs(30));
}
