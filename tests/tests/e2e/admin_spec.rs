//! The admin API driven by its own OpenAPI document: every operation it lists gets
//! hostile path segments, query values and bodies built from its schemas, with and
//! without the token. No answer may be a 500, every 4xx is a JSON error, every status
//! is one the document names for that operation, and a secured operation never acts
//! without the token.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::admin::{ADMIN_TOKEN, Api};
use crate::harness::{Env, sim_config};

/// Largest request body the API accepts (16 KiB).
const BODY_CAP: usize = 16 * 1024;

/// Path segments: valid ids, out-of-range, signed, huge, non-numeric, encoded unicode,
/// traversal and control characters.
const SEGMENTS: [&str; 16] = [
    "0",
    "1",
    "7",
    "4294967296",
    "-1",
    "99999999999999999999",
    "abc",
    "%00",
    "..",
    "%2e%2e",
    "%C3%BC",
    "%F0%9F%98%80",
    "0x10",
    "%201",
    "1.5",
    "%FF%FE",
];

/// A path segment every operation accepts (shard 1 exists, and 1 is a snowflake), so
/// the query and body cases reach the part they break.
const VALID_SEGMENT: &str = "1";

/// Query values: booleans spelled wrong, numbers where words go, empty, unicode.
const QUERY_VALUES: [&str; 9] = [
    "true",
    "false",
    "maybe",
    "1",
    "-1",
    "",
    "%C3%BC",
    "%00",
    "4294967296",
];

/// Values that break a property of the wrong type.
fn wrong_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(-1),
        json!(1.5),
        json!(u64::MAX),
        json!("ü😀\u{0}"),
        json!(""),
        json!([]),
        json!({}),
        json!([[[[[[[[[[1]]]]]]]]]]),
    ]
}

/// Whole bodies that are not the object an operation wants.
fn broken_bodies() -> Vec<String> {
    vec![
        String::new(),
        "null".into(),
        "[]".into(),
        "\"text\"".into(),
        "{".into(),
        "{\"a\":}".into(),
        "\u{0}\u{1}".into(),
        "[".repeat(5_000),
        format!("{{\"a\":\"{}\"}}", "é".repeat(BODY_CAP)),
    ]
}

struct Operation {
    method: &'static str,
    path: String,
    secured: bool,
    statuses: BTreeSet<u16>,
    path_params: Vec<String>,
    query_params: Vec<String>,
    body: Option<Value>,
}

struct Case {
    path: String,
    body: Option<String>,
    why: String,
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(doc, doc.pointer(pointer).unwrap_or(&Value::Null))
        }
        None => schema,
    }
}

/// A value shaped like `schema`: the starting point that the cases then break.
fn example(doc: &Value, schema: &Value, depth: u32) -> Value {
    let schema = resolve(doc, schema);
    if depth > 4 {
        return Value::Null;
    }
    if let Some(first) = ["oneOf", "anyOf", "allOf"]
        .iter()
        .find_map(|key| schema[*key].as_array()?.first())
    {
        return example(doc, first, depth + 1);
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    let kind = match &schema["type"] {
        Value::String(kind) => kind.as_str(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema["properties"].is_object() => "object",
        _ => "null",
    };
    match kind {
        "object" => Value::Object(
            schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, property)| (name.clone(), example(doc, property, depth + 1)))
                .collect(),
        ),
        "array" => json!([example(doc, &schema["items"], depth + 1)]),
        "integer" | "number" if schema["minimum"].is_number() => schema["minimum"].clone(),
        "integer" | "number" => json!(0),
        "boolean" => json!(false),
        "string" => json!("1"),
        _ => Value::Null,
    }
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let method = match method.as_str() {
                "get" => "GET",
                "post" => "POST",
                other => panic!("{path}: the test does not speak {other}"),
            };
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let named = |place: &str| {
                params
                    .iter()
                    .filter(|p| p["in"] == place)
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            };
            operations.push(Operation {
                method,
                path: path.clone(),
                secured: op["security"].as_array().is_some_and(|s| !s.is_empty()),
                statuses: op["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                    .map(|k| k.parse().expect("numeric status"))
                    .collect(),
                path_params: named("path"),
                query_params: named("query"),
                body: op
                    .pointer("/requestBody/content/application~1json/schema")
                    .map(|schema| example(doc, schema, 0)),
            });
        }
    }
    operations
}

/// Hostile requests for one operation, each with the reason it exists.
fn cases(op: &Operation) -> Vec<Case> {
    let fill = |segment: &str| {
        op.path_params.iter().fold(op.path.clone(), |path, name| {
            path.replace(&format!("{{{name}}}"), segment)
        })
    };
    let valid_body = op.body.as_ref().map(Value::to_string);
    let mut cases = Vec::new();
    let segments: &[&str] = if op.path_params.is_empty() {
        &[VALID_SEGMENT]
    } else {
        &SEGMENTS
    };
    for segment in segments {
        cases.push(Case {
            path: fill(segment),
            body: valid_body.clone(),
            why: format!("path segment {segment:?}"),
        });
    }
    for name in &op.query_params {
        for value in QUERY_VALUES {
            cases.push(Case {
                path: format!("{}?{name}={value}", fill(VALID_SEGMENT)),
                body: valid_body.clone(),
                why: format!("query {name}={value:?}"),
            });
        }
        cases.push(Case {
            path: format!("{}?{name}=true&{name}=false", fill(VALID_SEGMENT)),
            body: valid_body.clone(),
            why: format!("query {name} twice"),
        });
    }
    let Some(Value::Object(base)) = &op.body else {
        return cases;
    };
    let with_body = |body: String, why: String| Case {
        path: fill(VALID_SEGMENT),
        body: Some(body),
        why,
    };
    for (name, _) in base {
        for wrong in wrong_values() {
            let mut body = base.clone();
            body.insert(name.clone(), wrong.clone());
            cases.push(with_body(
                Value::Object(body).to_string(),
                format!("{name} = {wrong}"),
            ));
        }
        let mut body = base.clone();
        body.remove(name);
        cases.push(with_body(
            Value::Object(body).to_string(),
            format!("{name} missing"),
        ));
    }
    let mut extra: Map<String, Value> = base.clone();
    extra.insert("unexpected".into(), json!({"nested": [1, 2, 3]}));
    cases.push(with_body(
        Value::Object(extra).to_string(),
        "unknown property".into(),
    ));
    for body in broken_bodies() {
        let why = format!("body of {} bytes: {body:.24}", body.len());
        cases.push(with_body(body, why));
    }
    cases
}

#[actix::test]
async fn every_documented_operation_survives_hostile_input() {
    let env = Env::start(sim_config(2, 2)).await;
    env.all_ready(Duration::from_secs(5)).await;
    let (server, api) = Api::start(&env);
    let (status, doc) = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let operations = operations(&doc);
    assert!(operations.len() >= 14, "{} operations", operations.len());
    // The document must describe the inputs for the cases to reach them.
    let with = |f: fn(&Operation) -> bool| operations.iter().filter(|o| f(o)).count();
    assert_eq!(
        with(|o| !o.query_params.is_empty()),
        6,
        "operations with a query"
    );
    assert_eq!(with(|o| o.body.is_some()), 3, "operations with a JSON body");
    let mut sent = 0;
    for op in &operations {
        for case in cases(op) {
            let what = format!("{} {} ({})", op.method, case.path, case.why);
            let (status, answer) = api
                .call(op.method, &case.path, Some(ADMIN_TOKEN), case.body.clone())
                .await;
            sent += 1;
            // A 5xx only where the document names it (503 from readyz while shards are
            // down, say), never a 500.
            assert!(
                status < 500 || (status != 500 && op.statuses.contains(&status)),
                "{what} -> {status} {answer}"
            );
            assert!(
                op.statuses.contains(&status),
                "{what} -> {status}, not among the documented {:?}: {answer}",
                op.statuses
            );
            if (400..500).contains(&status) {
                assert!(answer["error"].is_string(), "{what} -> {status} {answer}");
            }
            if case.body.as_ref().is_some_and(|body| body.len() > BODY_CAP) {
                assert_eq!(status, 413, "{what}: the body is over the cap");
            }
            if op.secured {
                for token in [None, Some("wrong-token")] {
                    let (status, answer) = api
                        .call(op.method, &case.path, token, case.body.clone())
                        .await;
                    sent += 1;
                    assert_eq!(status, 401, "{what} with {token:?} -> {answer}");
                }
            }
        }
    }
    println!("{sent} requests over {} operations", operations.len());
    // Raw non-ASCII in the request line is not HTTP at all: the HTTP layer refuses it.
    let (status, _) = api
        .call("GET", "/api/v1/shards/ü", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 400);
    assert_eq!(api.call("GET", "/healthz", None, None).await.0, 200);
    server.stop().await;
    env.stop().await;
}
