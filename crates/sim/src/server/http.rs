//! The HTTP side: request heads, REST endpoints and the WebSocket upgrade response.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::fault::{Fault, FaultTarget, RestFault};
use crate::world::World;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (fault injection only).
const MAX_BODY: usize = 16 * 1024;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed request head.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) websocket_key: Option<String>,
    pub(crate) authorization: Option<String>,
    content_length: usize,
    /// Body bytes read together with the head.
    body_start: Vec<u8>,
}

/// Reads and parses a request head; `None` if the client sent garbage or nothing.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Request> {
    let mut buf = Vec::with_capacity(1024);
    let head_len = tokio::time::timeout(HEAD_TIMEOUT, async {
        let mut chunk = [0u8; 2048];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(end + 4);
            }
            if buf.len() > MAX_HEAD {
                return None;
            }
        }
    })
    .await
    .ok()??;
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(&buf[..head_len]).ok()?;
    let target = parsed.path?.to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::to_owned)
    };
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    Some(Request {
        method: parsed.method?.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        websocket_key: header("sec-websocket-key").filter(|_| upgrade),
        authorization: header("authorization"),
        content_length: header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        body_start: buf[head_len..].to_vec(),
    })
}

/// Completes the WebSocket handshake.
pub(crate) async fn accept_upgrade<S: AsyncWrite + Unpin>(
    stream: &mut S,
    key: &str,
) -> std::io::Result<()> {
    let accept = derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await
}

async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

#[derive(Deserialize)]
struct FaultRequest {
    #[serde(default)]
    shard: Option<u32>,
    fault: Fault,
}

/// Answers a plain HTTP request.
pub(crate) async fn serve_rest<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: Request,
    world: &World,
) {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/api/v10/gateway/bot") => {
            let expected = format!("Bot {}", world.config.token);
            if request.authorization.as_deref() != Some(expected.as_str()) {
                let body = json!({"message": "401: Unauthorized", "code": 0});
                return respond(stream, "401 Unauthorized", &body.to_string()).await;
            }
            match world.next_rest_fault() {
                Some(RestFault::Status { code }) => {
                    let body = json!({"message": format!("{code}: simulated failure"), "code": 0});
                    return respond(stream, &format!("{code} Simulated"), &body.to_string()).await;
                }
                Some(RestFault::RateLimited { retry_after }) => {
                    let body = json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false});
                    return respond(stream, "429 Too Many Requests", &body.to_string()).await;
                }
                Some(RestFault::Garbage) => {
                    return respond(stream, "200 OK", "<html>not json").await;
                }
                None => {}
            }
            let (remaining, reset_after) = world.budget(Instant::now());
            let body = json!({
                "url": world.advertised_url(),
                "shards": world.config.shards,
                "session_start_limit": {
                    "total": world.config.session_start_total,
                    "remaining": remaining,
                    "reset_after": u64::try_from(reset_after.as_millis()).unwrap_or(u64::MAX),
                    "max_concurrency": world.config.max_concurrency,
                },
            });
            respond(stream, "200 OK", &body.to_string()).await;
        }
        ("GET", "/api/v10/gateway") => {
            respond(
                stream,
                "200 OK",
                &json!({"url": world.advertised_url()}).to_string(),
            )
            .await;
        }
        ("GET", "/sim/stats") => {
            let body = serde_json::to_string(&world.stats()).unwrap_or_else(|_| "{}".into());
            respond(stream, "200 OK", &body).await;
        }
        ("POST", "/sim/faults") => inject_fault(stream, request, world).await,
        _ => {
            respond(
                stream,
                "404 Not Found",
                r#"{"message":"404: Not Found","code":0}"#,
            )
            .await;
        }
    }
}

async fn inject_fault<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: Request,
    world: &World,
) {
    if request.content_length > MAX_BODY {
        return respond(
            stream,
            "413 Payload Too Large",
            r#"{"message":"body too large"}"#,
        )
        .await;
    }
    let mut body = request.body_start;
    while body.len() < request.content_length {
        let mut chunk = vec![0u8; request.content_length - body.len()];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    match serde_json::from_slice::<FaultRequest>(&body) {
        Ok(req) => {
            let _ = world
                .faults
                .send((FaultTarget { shard: req.shard }, req.fault));
            respond(stream, "202 Accepted", "{}").await;
        }
        Err(err) => {
            let body = json!({"message": format!("invalid fault request: {err}")});
            respond(stream, "400 Bad Request", &body.to_string()).await;
        }
    }
}
