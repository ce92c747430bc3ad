//! The `/gateway/bot` client: one HTTP/1.1 GET over the cluster's own TLS configuration
//! (webpki roots plus `ca_file`), with retries on 429 and 5xx.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shardkeeper_protocol::Token;
use shardkeeper_protocol::payload::GatewayBot;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::net::Endpoint;

/// Largest response accepted.
const MAX_RESPONSE: usize = 1 << 20;
/// Time allowed for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why `/gateway/bot` could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// `api_base` is not an http(s) URL.
    #[error("invalid api_base {0:?}: expected http://host[:port]/path or https://…")]
    InvalidBase(String),
    /// Discord rejected the token.
    #[error("discord rejected the bot token (HTTP 401 from {0})")]
    Unauthorized(String),
    /// Every attempt failed; the last failure is given.
    #[error("GET {url} failed after {attempts} attempts: {last}")]
    Exhausted {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

/// One attempt's failure.
enum Failure {
    /// Try again after this long (429 `retry_after`) or after the backoff.
    Retry(Option<Duration>, String),
    /// Do not retry.
    Fatal(RestError),
}

/// Client for Discord's REST API, as far as a shard manager needs it.
#[derive(Clone)]
pub struct RestClient {
    base: Endpoint,
    /// `api_base` without a trailing slash, for messages.
    display: String,
    token: Token,
    tls: Arc<rustls::ClientConfig>,
    attempts: u32,
    backoff: Duration,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("api_base", &self.display)
            .finish_non_exhaustive()
    }
}

impl RestClient {
    /// A client for `api_base` (e.g. `https://discord.com/api/v10`).
    pub fn new(
        api_base: &str,
        token: Token,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, RestError> {
        let base = Endpoint::parse(api_base)
            .filter(|_| {
                api_base
                    .get(..4)
                    .is_some_and(|s| s.eq_ignore_ascii_case("http"))
            })
            .ok_or_else(|| RestError::InvalidBase(api_base.to_owned()))?;
        Ok(Self {
            base,
            display: api_base.trim_end_matches('/').to_owned(),
            token,
            tls,
            attempts: 6,
            backoff: Duration::from_secs(1),
        })
    }

    /// Changes how often and how patiently a request is retried.
    #[must_use]
    pub fn with_retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// `GET /gateway/bot`, retrying 429 (after `retry_after`), 5xx and network errors
    /// with exponential backoff.
    pub async fn gateway_bot(&self) -> Result<GatewayBot, RestError> {
        let url = format!("{}/gateway/bot", self.display);
        let mut last = String::new();
        for attempt in 0..self.attempts {
            let fetched = self.get_once("/gateway/bot").await.and_then(|body| {
                serde_json::from_slice::<GatewayBot>(&body)
                    .map_err(|err| Failure::Retry(None, format!("unreadable response body: {err}")))
            });
            match fetched {
                Ok(bot) => return Ok(bot),
                Err(Failure::Fatal(err)) => return Err(err),
                Err(Failure::Retry(after, why)) => {
                    last = why;
                    if attempt + 1 < self.attempts {
                        let wait = after
                            .unwrap_or_else(|| self.backoff.saturating_mul(1 << attempt.min(6)));
                        tracing::warn!(%url, attempt = attempt + 1, wait_ms = wait.as_millis() as u64, reason = %last, "retrying discord api request");
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        Err(RestError::Exhausted {
            url,
            attempts: self.attempts,
            last,
        })
    }

    async fn get_once(&self, path: &str) -> Result<Vec<u8>, Failure> {
        let request = format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bot {}\r\nUser-Agent: DiscordBot (https://github.com/shardkeeper/shardkeeper, {})\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            self.base.target.trim_end_matches('/'),
            self.base.host_header(),
            self.token.expose(),
            env!("CARGO_PKG_VERSION"),
        );
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request.as_bytes()))
            .await
            .map_err(|_| Failure::Retry(None, "request timed out".into()))?
            .map_err(|err| Failure::Retry(None, err.to_string()))?;
        let parsed = parse_response(&response)
            .ok_or_else(|| Failure::Retry(None, "malformed HTTP response".into()))?;
        match parsed.status {
            200..=299 => Ok(parsed.body),
            401 | 403 => Err(Failure::Fatal(RestError::Unauthorized(
                self.display.clone(),
            ))),
            429 => Err(Failure::Retry(
                parsed.retry_after(),
                "rate limited (429)".into(),
            )),
            status => Err(Failure::Retry(None, format!("HTTP {status}"))),
        }
    }

    async fn exchange(&self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        roundtrip(self.base.connect(&self.tls).await?, request).await
    }
}

async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            // A TLS peer that closes without close_notify still sent a whole response.
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {
                break;
            }
            Err(err) => return Err(err),
        }
        if response.len() > MAX_RESPONSE {
            return Err(std::io::Error::other("response too large"));
        }
    }
    Ok(response)
}

struct Response {
    status: u16,
    retry_after_header: Option<f64>,
    body: Vec<u8>,
}

impl Response {
    fn retry_after(&self) -> Option<Duration> {
        #[derive(Deserialize)]
        struct Limited {
            retry_after: f64,
        }
        let seconds = serde_json::from_slice::<Limited>(&self.body)
            .ok()
            .map(|l| l.retry_after)
            .or(self.retry_after_header)?;
        (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(3600.0)))
    }
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(raw).ok()? else {
        return None;
    };
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
    let retry_after_header = header("retry-after").and_then(|v| v.trim().parse().ok());
    let rest = &raw[head_len..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(length) => rest.get(..length)?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Some(Response {
        status: response.code?,
        retry_after_header,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn chunked_and_sized_bodies() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).expect("parses").body, b"{\"a\":1}");
        let sized =
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 19\r\n\r\n{\"retry_after\":1.5}";
        let response = parse_response(sized).expect("parses");
        assert_eq!(response.status, 429);
        assert_eq!(response.retry_after().map(|d| d.as_millis()), Some(1500));
        assert!(parse_response(b"garbage").is_none());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .is_none()
        );
    }
}
