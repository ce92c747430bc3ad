//! Opening a gateway connection: TCP (and TLS), the HTTP/1.1 upgrade, then a
//! tokio-tungstenite stream over a reader that holds a buffer only while it has unread
//! bytes.
//!
//! The upgrade is done here rather than by tungstenite's client handshake for memory: that
//! handshake reads through a 4 KiB chunk plus a 4 KiB buffer which then becomes the
//! connection's permanent read buffer, and at a thousand idle shards those buffers are
//! most of what a shard costs. Here the response is read into a small buffer, the
//! bytes after it are handed to the WebSocket as they are, and tungstenite reads in small
//! steps from [`OnDemand`], which takes whole socket reads into a per-thread scratch
//! buffer and keeps only what the WebSocket has not taken yet.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::net::{Dialer, Endpoint, Transport};

/// The WebSocket of a shard.
pub(crate) type Ws = WebSocketStream<OnDemand<Transport>>;

/// Largest upgrade response head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// One socket read into the thread's scratch buffer.
const SCRATCH: usize = 64 * 1024;

/// Why a gateway connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error("invalid gateway url {0:?}: expected ws://host[:port]/… or wss://…")]
    Url(String),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the gateway closed the connection during the upgrade")]
    Closed,
    #[error("malformed upgrade response: {0}")]
    Malformed(String),
    #[error("upgrade response head exceeds {MAX_HEAD} bytes")]
    TooLarge,
    #[error("the gateway answered the upgrade with HTTP {0}")]
    Status(u16),
    #[error("upgrade response lacks {0}")]
    Missing(&'static str),
    #[error("Sec-WebSocket-Accept does not match the key sent")]
    Accept,
}

/// Connects to `url` (`ws://` or `wss://`), through `dialer` when there is one, and
/// upgrades to a WebSocket.
pub(crate) async fn connect(
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
    config: WebSocketConfig,
    dialer: Option<&dyn Dialer>,
) -> Result<Ws, UpgradeError> {
    let endpoint = Endpoint::parse(url)
        .filter(|_| url.get(..2).is_some_and(|s| s.eq_ignore_ascii_case("ws")))
        .ok_or_else(|| UpgradeError::Url(url.to_owned()))?;
    let mut stream = match dialer {
        Some(dialer) => Transport::Memory(dialer.dial()),
        None => endpoint.connect(tls).await?,
    };
    let key = generate_key();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nUser-Agent: shardkeeper/{}\r\n\r\n",
        endpoint.target,
        endpoint.host_header(),
        env!("CARGO_PKG_VERSION"),
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let tail = read_response(&mut stream, &key).await?;
    Ok(WebSocketStream::from_partially_read(
        OnDemand::new(stream),
        tail,
        Role::Client,
        Some(config),
    )
    .await)
}

/// Reads and checks the upgrade response; returns the bytes that followed its head (the
/// gateway may send HELLO in the same packet).
async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    key: &str,
) -> Result<Vec<u8>, UpgradeError> {
    let mut buffer = Vec::with_capacity(512);
    loop {
        if buffer.len() == buffer.capacity() {
            buffer.reserve(512);
        }
        if stream.read_buf(&mut buffer).await? == 0 {
            return Err(UpgradeError::Closed);
        }
        if let Some(head) = check_response(&buffer, key)? {
            return Ok(buffer.split_off(head));
        }
        if buffer.len() > MAX_HEAD {
            return Err(UpgradeError::TooLarge);
        }
    }
}

/// Checks a response head: `None` while it is incomplete, else the length of the head.
fn check_response(raw: &[u8], key: &str) -> Result<Option<usize>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(raw) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(UpgradeError::Malformed(err.to_string())),
    };
    match response.code {
        Some(101) => {}
        Some(code) => return Err(UpgradeError::Status(code)),
        None => return Err(UpgradeError::Malformed("no status code".into())),
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|value| {
            value
                .split(|&b| b == b',')
                .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if !has_token("upgrade", "websocket") {
        return Err(UpgradeError::Missing("Upgrade: websocket"));
    }
    if !has_token("connection", "upgrade") {
        return Err(UpgradeError::Missing("Connection: Upgrade"));
    }
    let accept =
        header("sec-websocket-accept").ok_or(UpgradeError::Missing("Sec-WebSocket-Accept"))?;
    if accept.trim_ascii() != derive_accept_key(key.as_bytes()).as_bytes() {
        return Err(UpgradeError::Accept);
    }
    Ok(Some(head))
}

thread_local! {
    /// Where sockets are read on this thread; what the WebSocket does not take at once
    /// moves to the connection's own buffer.
    static SCRATCH_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// A stream whose read buffer exists only while it holds bytes not yet read: socket
/// reads go through the thread's scratch buffer, so an idle connection keeps nothing.
pub(crate) struct OnDemand<S> {
    inner: S,
    unread: Vec<u8>,
    taken: usize,
}

impl<S> OnDemand<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            unread: Vec::new(),
            taken: 0,
        }
    }

    /// Hands over buffered bytes; the buffer goes once it is empty.
    fn take_unread(&mut self, out: &mut ReadBuf<'_>) {
        let rest = &self.unread[self.taken..];
        let n = rest.len().min(out.remaining());
        out.put_slice(&rest[..n]);
        self.taken += n;
        if self.taken == self.unread.len() {
            self.unread = Vec::new();
            self.taken = 0;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for OnDemand<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.taken < this.unread.len() {
            this.take_unread(out);
            return Poll::Ready(Ok(()));
        }
        if out.remaining() >= SCRATCH {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        SCRATCH_BUFFER.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let filled = read.filled();
            let n = filled.len().min(out.remaining());
            out.put_slice(&filled[..n]);
            if n < filled.len() {
                this.unread.extend_from_slice(&filled[n..]);
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for OnDemand<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{OnDemand, UpgradeError, check_response, read_response};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn response(status: &str, headers: &str) -> String {
        format!("HTTP/1.1 {status}\r\n{headers}\r\n")
    }

    fn good_headers() -> String {
        format!(
            "Upgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            derive_accept_key(KEY.as_bytes())
        )
    }

    #[test]
    fn accepts_a_proper_upgrade_and_measures_its_head() {
        let head = response("101 Switching Protocols", &good_headers());
        assert_eq!(
            check_response(head.as_bytes(), KEY).ok().flatten(),
            Some(head.len())
        );
        assert!(matches!(
            check_response(&head.as_bytes()[..head.len() - 1], KEY),
            Ok(None)
        ));
    }

    #[test]
    fn refuses_what_is_not_an_upgrade_to_this_key() {
        let accept = derive_accept_key(KEY.as_bytes());
        let cases = [
            (response("200 OK", &good_headers()), "HTTP 200"),
            (
                response(
                    "101 Switching Protocols",
                    &format!("Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"),
                ),
                "Upgrade: websocket",
            ),
            (
                response(
                    "101 Switching Protocols",
                    &format!("Upgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n"),
                ),
                "Connection: Upgrade",
            ),
            (
                response(
                    "101 Switching Protocols",
                    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n",
                ),
                "does not match",
            ),
            ("HTTP/1.1 1x1 Nope\r\n\r\n".to_owned(), "malformed"),
        ];
        for (raw, expected) in cases {
            let err = check_response(raw.as_bytes(), KEY).expect_err(expected);
            assert!(err.to_string().contains(expected), "{err} for {raw:?}");
        }
    }

    #[tokio::test]
    async fn bytes_after_the_head_are_kept_and_endless_heads_refused() {
        let head = response("101 Switching Protocols", &good_headers());
        let (mut server, mut client) = tokio::io::duplex(64 * 1024);
        server
            .write_all(format!("{head}\u{81}\u{2}hi").as_bytes())
            .await
            .expect("written");
        let tail = read_response(&mut client, KEY).await.expect("upgraded");
        assert_eq!(tail, "\u{81}\u{2}hi".as_bytes());

        let (mut server, mut client) = tokio::io::duplex(64 * 1024);
        let endless = format!("HTTP/1.1 101 OK\r\n{}", "X-Pad: y\r\n".repeat(2000));
        server.write_all(endless.as_bytes()).await.expect("written");
        assert!(matches!(
            read_response(&mut client, KEY).await,
            Err(UpgradeError::TooLarge | UpgradeError::Malformed(_))
        ));
        drop(server);
        let (server, mut client) = tokio::io::duplex(64);
        drop(server);
        assert!(matches!(
            read_response(&mut client, KEY).await,
            Err(UpgradeError::Closed)
        ));
    }

    #[tokio::test]
    async fn small_reads_see_every_byte_and_the_buffer_goes_when_drained() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let (mut server, client) = tokio::io::duplex(128 * 1024);
        server.write_all(&data).await.expect("written");
        drop(server);
        let mut reader = OnDemand::new(client);
        let mut seen = Vec::new();
        let mut step = [0u8; 300];
        loop {
            let n = reader.read(&mut step).await.expect("reads");
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&step[..n]);
            if reader.unread.is_empty() {
                assert_eq!(reader.unread.capacity(), 0, "an empty buffer is released");
            }
        }
        assert_eq!(seen, data);
    }
}
