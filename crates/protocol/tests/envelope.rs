//! The one-pass envelope reader against serde_json as an oracle: for any UTF-8 frame,
//! both accept or both refuse, and what they accept they read the same way.
#![allow(clippy::expect_used, reason = "tests fail loudly")]

mod oracle;

use proptest::prelude::*;
use serde_json::Value;
use serde_json::value::RawValue;
use shardkeeper_protocol::{Envelope, RawJson};

use self::oracle::{oracle, ours};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "[\"\\\\/\u{1}\u{1f}é😀\u{0}]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z\"\\\\]{0,4}", inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Members of an envelope, some of them odd, in a random order with random spacing.
fn frame() -> impl Strategy<Value = String> {
    let op = prop_oneof![
        (0u64..300).prop_map(|n| n.to_string()),
        Just("-0".to_owned()),
        Just("1.0".to_owned()),
        Just("null".to_owned()),
        Just("\"0\"".to_owned()),
        Just("18446744073709551616".to_owned()),
    ];
    let s = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        Just("null".to_owned()),
        Just("-1".to_owned()),
        Just("2e3".to_owned()),
    ];
    let t = prop_oneof![
        "[A-Z_]{1,16}".prop_map(|t| format!("\"{t}\"")),
        Just("null".to_owned()),
        Just(r#""A\u0042""#.to_owned()),
        Just(r#""\ud800""#.to_owned()),
        Just("7".to_owned()),
    ];
    let d = json_value().prop_map(|v| v.to_string());
    let key = prop_oneof![
        Just("\"op\""),
        Just("\"s\""),
        Just("\"t\""),
        Just("\"d\""),
        Just("\"\\u006fp\""),
        Just("\"_trace\""),
    ];
    (
        op,
        s,
        t,
        d,
        prop::collection::vec((key, json_value()), 0..3),
        prop::collection::vec(0usize..4, 0..6),
        prop::collection::vec(prop_oneof![Just(""), Just(" "), Just("\n\t\r ")], 8),
    )
        .prop_map(|(op, s, t, d, extra, order, spaces)| {
            let mut members = vec![
                format!("\"op\"{}:{op}", spaces[0]),
                format!("\"s\":{}{s}", spaces[1]),
                format!("\"t\":{t}{}", spaces[2]),
                format!("\"d\":{d}"),
            ];
            members.extend(extra.into_iter().map(|(k, v)| format!("{k}:{v}")));
            // Drop or repeat members by the random order list.
            let chosen: Vec<&String> = if order.is_empty() {
                members.iter().collect()
            } else {
                order.iter().filter_map(|&i| members.get(i)).collect()
            };
            let body: Vec<&str> = chosen.iter().map(|m| m.as_str()).collect();
            format!(
                "{}{{{}{}}}{}",
                spaces[3],
                spaces[4],
                body.join(","),
                spaces[5]
            )
        })
}

/// A frame with a few bytes changed, inserted or removed.
fn mutated() -> impl Strategy<Value = String> {
    (
        frame(),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, 0usize..12), 1..4),
    )
        .prop_map(|(frame, edits)| {
            const ALPHABET: [char; 12] =
                ['{', '}', '[', ']', '"', ',', ':', '\\', '0', '-', 'e', ' '];
            let mut chars: Vec<char> = frame.chars().collect();
            for (at, kind, pick) in edits {
                if chars.is_empty() {
                    break;
                }
                let i = at.index(chars.len());
                match kind {
                    0 => chars[i] = ALPHABET[pick],
                    1 => chars.insert(i, ALPHABET[pick]),
                    _ => {
                        chars.remove(i);
                    }
                }
            }
            chars.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn reads_frames_as_serde_json_does(frame in frame()) {
        prop_assert_eq!(ours(frame.as_bytes()), oracle(&frame), "frame {}", frame);
    }

    #[test]
    fn refuses_what_serde_json_refuses(frame in mutated()) {
        prop_assert_eq!(ours(frame.as_bytes()), oracle(&frame), "frame {}", frame);
    }

    #[test]
    fn raw_json_accepts_exactly_the_json_grammar(value in json_value(), cut in any::<prop::sample::Index>()) {
        let text = value.to_string();
        prop_assert!(RawJson::parse(text.as_str()).is_ok());
        let cut = cut.index(text.len().max(1));
        if let Some(prefix) = text.get(..cut) {
            let oracle = serde_json::from_str::<&RawValue>(prefix).is_ok();
            prop_assert_eq!(RawJson::parse(prefix).is_ok(), oracle, "prefix {}", prefix);
        }
    }
}

#[test]
fn frames_that_are_not_utf8_are_refused() {
    assert!(Envelope::parse(b"{\"op\":0,\"d\":\"\xff\"}").is_err());
    assert!(Envelope::parse(b"{\"op\":0,\"x\":\"\xc3\"}").is_err());
}
