//! The `/gateway/bot` client: ureq over the cluster's own TLS configuration (webpki roots
//! plus `ca_file`), with retries on 429, 5xx and network errors.

mod connector;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shardkeeper_protocol::Token;
use shardkeeper_protocol::payload::GatewayBot;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector, TcpConnector};
use url::Url;

use self::connector::TlsConnector;

/// Largest response body accepted.
const MAX_RESPONSE: u64 = 1 << 20;
/// Time allowed for one request, from resolving the host to the end of the body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The `User-Agent` Discord asks bots to send.
const USER_AGENT: &str = concat!(
    "DiscordBot (https://github.com/shardkeeper/shardkeeper, ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// Why `/gateway/bot` could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// `api_base` is not an http(s) URL.
    #[error("invalid api_base {0:?}: expected http://host[:port]/path or https://…")]
    InvalidBase(String),
    /// Discord rejected the token.
    #[error("discord rejected the bot token (HTTP 401 from {0})")]
    Unauthorized(String),
    /// Every attempt failed, or one failed in a way that repeating cannot fix (a 4xx
    /// status); the last failure is given.
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
#[derive(Debug)]
enum Failure {
    /// Try again after this long (429 `retry_after`) or after the backoff.
    Retry(Option<Duration>, String),
    /// Do not try again; the request failed for this reason.
    Final(String),
    /// Do not try again; report this error.
    Fatal(RestError),
}

/// Client for Discord's REST API, as far as a shard manager needs it.
#[derive(Clone)]
pub struct RestClient {
    agent: ureq::Agent,
    /// `api_base` without a trailing slash, for messages.
    display: String,
    /// The URL of `/gateway/bot` under `api_base`.
    gateway_bot: String,
    token: Token,
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
    /// A client for `api_base` (e.g. `https://discord.com/api/v10`); `https` connections
    /// use `tls`, the configuration the gateway connections use too.
    pub fn new(
        api_base: &str,
        token: Token,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, RestError> {
        let invalid = || RestError::InvalidBase(api_base.to_owned());
        let mut url = Url::parse(api_base)
            .ok()
            .filter(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.username().is_empty()
                    && url.password().is_none()
            })
            .ok_or_else(invalid)?;
        url.path_segments_mut()
            .map_err(|()| invalid())?
            .pop_if_empty()
            .extend(["gateway", "bot"]);
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(USER_AGENT)
            .build();
        let connector = ().chain(TcpConnector::default()).chain(TlsConnector::new(tls));
        Ok(Self {
            agent: ureq::Agent::with_parts(config, connector, DefaultResolver::default()),
            display: api_base.trim_end_matches('/').to_owned(),
            gateway_bot: url.into(),
            token,
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
        let url = &self.gateway_bot;
        let mut last = String::new();
        for attempt in 0..self.attempts {
            let fetched = self.get_once().await.and_then(|body| {
                serde_json::from_slice::<GatewayBot>(&body)
                    .map_err(|err| Failure::Retry(None, format!("unreadable response body: {err}")))
            });
            match fetched {
                Ok(bot) => return Ok(bot),
                Err(Failure::Fatal(err)) => return Err(err),
                Err(Failure::Final(why)) => {
                    return Err(RestError::Exhausted {
                        url: url.clone(),
                        attempts: attempt + 1,
                        last: why,
                    });
                }
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
            url: url.clone(),
            attempts: self.attempts,
            last,
        })
    }

    /// One GET of `/gateway/bot` on a blocking thread (ureq is blocking); the body of a
    /// successful answer.
    async fn get_once(&self) -> Result<Vec<u8>, Failure> {
        let agent = self.agent.clone();
        let url = self.gateway_bot.clone();
        let token = self.token.clone();
        let reply = tokio::task::spawn_blocking(move || fetch(&agent, &url, &token))
            .await
            .map_err(|err| Failure::Retry(None, format!("request task failed: {err}")))?
            .map_err(|err| Failure::Retry(None, describe(&err)))?;
        reply.outcome(&self.display)
    }
}

/// What one request got back.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// The `Retry-After` header, in seconds.
    retry_after_header: Option<f64>,
    /// The body of a 2xx or 429 answer; other bodies are not read.
    body: Vec<u8>,
}

impl Reply {
    /// The body of a 2xx answer, else whether and when to try again.
    fn outcome(self, display: &str) -> Result<Vec<u8>, Failure> {
        match self.status {
            200..=299 => Ok(self.body),
            401 | 403 => Err(Failure::Fatal(RestError::Unauthorized(display.to_owned()))),
            429 => Err(Failure::Retry(
                self.retry_after(),
                "rate limited (429)".into(),
            )),
            status @ 400..=499 => Err(Failure::Final(format!("HTTP {status}"))),
            status => Err(Failure::Retry(None, format!("HTTP {status}"))),
        }
    }

    /// How long a 429 asks to wait: `retry_after` of the JSON body, else the
    /// `Retry-After` header; at most an hour.
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

/// Sends the GET and reads the status, `Retry-After` and (for 2xx and 429) the body.
fn fetch(agent: &ureq::Agent, url: &str, token: &Token) -> Result<Reply, ureq::Error> {
    let mut response = agent
        .get(url)
        .header("Authorization", format!("Bot {}", token.expose()))
        .header("Accept", "application/json")
        .call()?;
    let status = response.status().as_u16();
    let retry_after_header = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    let body = if (200..=299).contains(&status) || status == 429 {
        response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()?
    } else {
        Vec::new()
    };
    Ok(Reply {
        status,
        retry_after_header,
        body,
    })
}

/// A request error as the retry log and `RestError::Exhausted` give it.
fn describe(err: &ureq::Error) -> String {
    match err {
        ureq::Error::Timeout(_) => "request timed out".into(),
        ureq::Error::BodyExceedsLimit(_) => "response too large".into(),
        ureq::Error::Protocol(err) => format!("malformed HTTP response: {err}"),
        ureq::Error::Io(err) => err.to_string(),
        err => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    use shardkeeper_protocol::Token;

    use super::{Failure, Reply, RestClient, RestError};
    use crate::transport::tls::client_config;

    fn reply(status: u16, retry_after_header: Option<f64>, body: &str) -> Reply {
        Reply {
            status,
            retry_after_header,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn statuses_decide_whether_to_retry() {
        assert!(matches!(reply(200, None, "{}").outcome("b"), Ok(body) if body == b"{}"));
        for status in [401, 403] {
            assert!(matches!(
                reply(status, None, "").outcome("b"),
                Err(Failure::Fatal(RestError::Unauthorized(base))) if base == "b"
            ));
        }
        assert!(matches!(
            reply(404, None, "").outcome("b"),
            Err(Failure::Final(why)) if why == "HTTP 404"
        ));
        assert!(matches!(
            reply(502, None, "").outcome("b"),
            Err(Failure::Retry(None, why)) if why == "HTTP 502"
        ));
        let waits = [
            (reply(429, None, r#"{"retry_after":1.5}"#), Some(1500)),
            (reply(429, Some(2.0), r#"{"retry_after":0.25}"#), Some(250)),
            (reply(429, Some(2.0), "not json"), Some(2000)),
            (reply(429, None, r#"{"retry_after":-1}"#), None),
            (reply(429, None, ""), None),
        ];
        for (reply, wait) in waits {
            match reply.outcome("b") {
                Err(Failure::Retry(after, _)) => {
                    assert_eq!(after.map(|d| d.as_millis()), wait);
                }
                other => panic!("429 is retried: {other:?}"),
            }
        }
    }

    #[test]
    fn api_base_must_be_an_http_url_without_credentials() {
        let tls = client_config(None).expect("default roots");
        for base in [
            "ftp://x/api",
            "discord.com/api/v10",
            "http://user:pw@h/api",
            "http://:80/",
        ] {
            assert!(
                matches!(
                    RestClient::new(base, Token::new("t"), tls.clone()),
                    Err(RestError::InvalidBase(_))
                ),
                "{base}"
            );
        }
        for (base, url) in [
            (
                "https://discord.com/api/v10",
                "https://discord.com/api/v10/gateway/bot",
            ),
            (
                "http://127.0.0.1:8080/api/v10/",
                "http://127.0.0.1:8080/api/v10/gateway/bot",
            ),
            ("http://[::1]:9", "http://[::1]:9/gateway/bot"),
        ] {
            let client = RestClient::new(base, Token::new("secret"), tls.clone()).expect(base);
            assert_eq!(client.gateway_bot, url);
            assert!(!format!("{client:?}").contains("secret"));
        }
    }

    /// Answers one request on a local port with `response`; returns the base URL and the
    /// request the client sent.
    fn serve_once(response: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bound");
        let base = format!("http://{}/api/v10", listener.local_addr().expect("address"));
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accepted");
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut chunk).expect("read");
                assert!(n > 0, "request ended early");
                request.extend_from_slice(&chunk[..n]);
            }
            // The client may hang up once it has seen enough.
            let _ = stream.write_all(&response);
            String::from_utf8_lossy(&request).into_owned()
        });
        (base, server)
    }

    #[tokio::test]
    async fn sends_the_token_and_refuses_oversized_bodies() {
        let body = vec![b' '; (1 << 20) + 1];
        let mut response =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        response.extend_from_slice(&body);
        let (base, server) = serve_once(response);
        let tls = client_config(None).expect("default roots");
        let client = RestClient::new(&base, Token::new("secret"), tls)
            .expect("valid base")
            .with_retries(1, Duration::ZERO);
        let err = client.gateway_bot().await.expect_err("too large");
        let request = server.join().expect("server");
        assert!(
            request.starts_with("GET /api/v10/gateway/bot HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nauthorization: bot secret\r\n"),
            "{request}"
        );
        assert!(lower.contains("\r\nuser-agent: discordbot ("), "{request}");
        assert!(
            matches!(&err, RestError::Exhausted { attempts: 1, last, .. } if last == "response too large"),
            "{err}"
        );
        assert!(!err.to_string().contains("secret"));
    }

    #[tokio::test]
    async fn https_uses_the_cluster_tls_configuration() {
        let tls = shardkeeper_sim::TlsConfig::self_signed().expect("certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &tls.cert_pem).expect("written");
        let sim = shardkeeper_sim::Sim::start(shardkeeper_sim::SimConfig {
            token: "secret".into(),
            tls: Some(tls),
            ..shardkeeper_sim::SimConfig::default()
        })
        .await
        .expect("sim");
        let base = sim.api_base();
        assert!(base.starts_with("https://127.0.0.1:"), "{base}");
        for base in [base.clone(), base.replace("127.0.0.1", "localhost")] {
            let trusted = client_config(Some(&ca)).expect("ca file");
            let client = RestClient::new(&base, Token::new("secret"), trusted).expect("valid base");
            let bot = client.gateway_bot().await.expect("trusted by the ca file");
            assert!(bot.url.starts_with("wss://"), "{}", bot.url);
        }
        let untrusted = client_config(None).expect("default roots");
        let err = RestClient::new(&base, Token::new("secret"), untrusted)
            .expect("valid base")
            .with_retries(1, Duration::ZERO)
            .gateway_bot()
            .await
            .expect_err("the self-signed certificate is not a webpki root");
        assert!(err.to_string().contains("certificate"), "{err}");
        sim.shutdown().await;
    }
}
