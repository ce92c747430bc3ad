//! A minimal raw gateway client and HTTP helper for the tests.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shardkeeper_protocol::{Compression, Decoder};
use shardkeeper_sim::{Sim, SimConfig, SimHandle, Stats, ViolationKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub(crate) const TOKEN: &str = "test-token";
const WAIT: Duration = Duration::from_secs(5);

pub(crate) fn config() -> SimConfig {
    SimConfig {
        token: TOKEN.into(),
        shards: 4,
        max_concurrency: 4,
        identify_window: Duration::from_millis(300),
        heartbeat_interval: Duration::from_secs(10),
        guilds_per_shard: 3,
        members_per_guild: 1500,
        ..SimConfig::default()
    }
}

pub(crate) async fn sim(config: SimConfig) -> SimHandle {
    Sim::start(config).await.expect("simulator starts")
}

/// What the server did next.
#[derive(Debug)]
pub(crate) enum Event {
    Payload(Value),
    Closed(Option<u16>),
    Ended,
}

pub(crate) struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    decoder: Decoder,
}

impl Client {
    pub(crate) async fn connect(url: &str) -> Self {
        Self::connect_with(url, Compression::None, None).await
    }

    pub(crate) async fn connect_with(
        url: &str,
        compression: Compression,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let full = shardkeeper_protocol::gateway_connect_url(url, compression);
        let connector = tls.map(Connector::Rustls);
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(full, None, false, connector)
                .await
                .expect("websocket connects");
        Self {
            ws,
            decoder: Decoder::new(compression),
        }
    }

    pub(crate) async fn connect_raw(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Self {
            ws,
            decoder: Decoder::new(Compression::None),
        }
    }

    pub(crate) async fn send(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("sent");
    }

    pub(crate) async fn close(&mut self, code: u16) {
        let frame = CloseFrame {
            code: code.into(),
            reason: "".into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }

    pub(crate) async fn next(&mut self) -> Event {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("server answers in time");
            let bytes = match message {
                Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                Some(Ok(Message::Close(frame))) => {
                    return Event::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Ended,
            };
            if let Some(document) = self.decoder.push(&bytes).expect("decodes") {
                return match serde_json::from_slice(document) {
                    Ok(value) => Event::Payload(value),
                    Err(_) => Event::Payload(json!({"garbage": String::from_utf8_lossy(document)})),
                };
            }
        }
    }

    /// The next payload; panics on a close.
    pub(crate) async fn payload(&mut self) -> Value {
        match self.next().await {
            Event::Payload(value) => value,
            other => panic!("expected a payload, got {other:?}"),
        }
    }

    /// Skips payloads until one with `op` (and event name `t`, for dispatches).
    pub(crate) async fn until(&mut self, op: u64, t: Option<&str>) -> Value {
        loop {
            let value = self.payload().await;
            if value["op"] == op && t.is_none_or(|t| value["t"] == t) {
                return value;
            }
        }
    }

    /// The first payload with `op` within `wait`, if any (later payloads stay unread).
    pub(crate) async fn within(&mut self, wait: Duration, op: u64) -> Option<Value> {
        tokio::time::timeout(wait, async {
            loop {
                if let Event::Payload(value) = self.next().await
                    && value["op"] == op
                {
                    return value;
                }
            }
        })
        .await
        .ok()
    }

    /// Reads until the server closes; returns the code.
    pub(crate) async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Event::Payload(_) => {}
                Event::Closed(code) => return code,
                Event::Ended => return None,
            }
        }
    }

    pub(crate) async fn hello(&mut self) -> u64 {
        let hello = self.payload().await;
        assert_eq!(hello["op"], 10, "{hello}");
        hello["d"]["heartbeat_interval"].as_u64().expect("interval")
    }

    pub(crate) async fn identify(&mut self, shard: u32, total: u32) {
        self.send(&identify(TOKEN, shard, total, 1 | 1 << 9)).await;
    }

    /// HELLO, IDENTIFY, READY and the GUILD_CREATEs; returns READY's `d` and the last seq.
    pub(crate) async fn login(&mut self, shard: u32, total: u32) -> (Value, u64) {
        self.hello().await;
        self.identify(shard, total).await;
        let ready = self.until(0, Some("READY")).await;
        let guilds = ready["d"]["guilds"].as_array().map_or(0, Vec::len);
        let mut seq = 1;
        for _ in 0..guilds {
            seq = self.until(0, Some("GUILD_CREATE")).await["s"]
                .as_u64()
                .expect("seq");
        }
        (ready["d"].clone(), seq)
    }
}

pub(crate) fn identify(token: &str, shard: u32, total: u32, intents: u64) -> Value {
    json!({"op": 2, "d": {
        "token": token,
        "properties": {"os": "linux", "browser": "raw-test", "device": "raw-test"},
        "shard": [shard, total],
        "intents": intents,
    }})
}

pub(crate) fn resume(session_id: &str, seq: u64) -> Value {
    json!({"op": 6, "d": {"token": TOKEN, "session_id": session_id, "seq": seq}})
}

/// A plain HTTP/1.1 request; returns the status code and the JSON body.
pub(crate) async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let auth = auth.map_or_else(String::new, |a| format!("Authorization: {a}\r\n"));
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("written");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let json = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

/// `GET /api/v10/gateway/bot` with the bot token.
pub(crate) async fn gateway_bot(sim: &SimHandle) -> (u16, Value) {
    http(
        sim.addr(),
        "GET",
        "/api/v10/gateway/bot",
        Some(&format!("Bot {TOKEN}")),
        None,
    )
    .await
}

pub(crate) fn assert_no_violations(stats: &Stats) {
    assert!(
        stats.violations.is_empty(),
        "violations: {:#?}",
        stats.violations
    );
}

pub(crate) fn assert_violation(stats: &Stats, kind: ViolationKind) {
    assert_eq!(
        stats.violations_of(kind),
        1,
        "{kind:?} in {:#?}",
        stats.violations
    );
}
