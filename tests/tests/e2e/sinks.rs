//! One contract suite for every event sink: each takes events in order and has written
//! all of them once `flush` returns.

use std::time::Duration;

use futures_util::StreamExt;
use shardkeeper_admin::{AdminConfig, EventHub};
use shardkeeper_cluster::{ChannelSink, Delivery, Event, EventSink, LineSink};
use shardkeeper_protocol::RawJson;
use shardkeeper_protocol::Token;

use crate::harness::{Env, sim_config};

fn event(shard: u32, seq: u64, t: &str) -> Event {
    Event {
        shard,
        seq,
        t: t.into(),
        d: RawJson::parse(format!(r#"{{"n":{seq},"s":"é\u00e9"}}"#)).expect("json"),
    }
}

/// Offers 500 events (waiting while the sink is full) and flushes.
fn feed(sink: &dyn EventSink) -> Vec<Event> {
    let events: Vec<_> = (1..=500)
        .map(|seq| event(seq as u32 % 3, seq, if seq % 2 == 0 { "A" } else { "B" }))
        .collect();
    for event in &events {
        while sink.deliver(event) == Delivery::Full {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sink.flush();
    events
}

fn assert_lines(lines: &[String], events: &[Event]) {
    let expected: Vec<String> = events.iter().map(Event::to_line).collect();
    assert_eq!(lines, expected.as_slice());
}

#[test]
fn channel_sink_contract() {
    let (sink, mut rx) = ChannelSink::new();
    let events = feed(&sink);
    let mut lines = Vec::new();
    while let Ok(event) = rx.try_recv() {
        lines.push(event.to_line());
    }
    assert_lines(&lines, &events);
}

#[test]
fn file_sink_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.ndjson");
    std::fs::write(&path, "earlier line\n").expect("written");
    let events = feed(&LineSink::file(&path).expect("opens"));
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<String> = text.lines().skip(1).map(str::to_owned).collect();
    assert!(
        text.starts_with("earlier line\n"),
        "appends, never truncates"
    );
    assert_lines(&lines, &events);
}

#[actix::test]
async fn websocket_sink_contract_and_slow_subscribers() {
    let env = Env::start(sim_config(1, 1)).await;
    let hub = EventHub::new();
    let server = shardkeeper_admin::start(
        AdminConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            token: Token::new("hub-token"),
            read_token: None,
        },
        env.cluster.clone(),
        hub.clone(),
    )
    .expect("admin starts");
    let url = format!("ws://{}/api/v1/events", server.addr());
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .expect("request");
    request
        .headers_mut()
        .insert("Authorization", "Bearer hub-token".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("subscribes");
    while hub.subscriber_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let events = feed(&hub);
    let mut lines = Vec::new();
    while lines.len() < events.len() {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("frame");
        lines.push(message.to_text().expect("text").to_owned());
    }
    assert_lines(&lines, &events);

    // A subscriber that stops reading is cut off once its buffer is full; the hub never
    // makes the shard wait.
    let mut dropped_after = None;
    for seq in 0..200_000u64 {
        assert_eq!(hub.deliver(&event(0, seq, "A")), Delivery::Accepted);
        if hub.subscriber_count() == 0 {
            dropped_after = Some(seq);
            break;
        }
    }
    assert!(
        dropped_after.is_some(),
        "the stalled subscriber was disconnected"
    );
    assert_eq!(hub.dropped().get(), 1);
    server.stop().await;
    env.stop().await;
}
