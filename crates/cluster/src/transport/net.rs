//! Where a shard connects — `ws(s)://` gateway URLs, parsed with the `url` crate — and the
//! TCP or TLS connection to it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use url::{Host, Position, Url};

/// A parsed URL: scheme security, host, port and request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `https` or `wss`.
    pub(crate) secure: bool,
    /// Host name or address, IPv6 without brackets.
    pub(crate) host: String,
    /// The URL's port, else the scheme's (80 or 443).
    pub(crate) port: u16,
    /// Path and query, always starting with `/`.
    pub(crate) target: String,
}

impl Endpoint {
    /// Parses `http://`, `https://`, `ws://` or `wss://` URLs; the port defaults to the
    /// scheme's (80 or 443). URLs with credentials are refused, a fragment is dropped.
    pub(crate) fn parse(url: &str) -> Option<Self> {
        let url = Url::parse(url).ok()?;
        let secure = match url.scheme() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            _ => return None,
        };
        if !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = match url.host()? {
            Host::Domain(domain) => domain.to_owned(),
            Host::Ipv4(address) => address.to_string(),
            Host::Ipv6(address) => address.to_string(),
        };
        Some(Self {
            secure,
            host,
            port: url.port_or_known_default()?,
            target: url[Position::BeforePath..Position::AfterQuery].to_owned(),
        })
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub(crate) fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.secure { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Opens a TCP connection (Nagle off: gateway frames are small and latency counts),
    /// with TLS on top for a secure scheme.
    pub(crate) async fn connect(&self, tls: &Arc<rustls::ClientConfig>) -> io::Result<Transport> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        if !self.secure {
            return Ok(Transport::Plain(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await?;
        Ok(Transport::Tls(Box::new(stream)))
    }
}

/// A TCP connection, or TLS over one. The TLS state (over a kilobyte) is boxed so that a
/// plain connection does not carry its size.
pub(crate) enum Transport {
    /// `ws://`: the TCP connection itself.
    Plain(TcpStream),
    /// `wss://`: TLS over the TCP connection.
    Tls(Box<TlsStream<TcpStream>>),
    /// A connection without a socket, from a [`Dialer`].
    Memory(DuplexStream),
}

/// Opens gateway connections without a socket: when a cluster has one
/// (`ClusterBuilder::dialer`), every WebSocket its shards open is a stream from
/// `dial` instead of a TCP connection, and the upgrade and the gateway protocol run
/// over it unchanged. For tests of the actor layer against an in-process gateway.
pub trait Dialer: Send + Sync + 'static {
    /// A new connection to the gateway.
    fn dial(&self) -> DuplexStream;
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Self::Memory(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Self::Memory(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Self::Memory(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Self::Memory(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    fn parts(url: &str) -> Option<(bool, String, u16, String, String)> {
        Endpoint::parse(url).map(|e| {
            let host = e.host_header();
            (e.secure, e.host, e.port, e.target, host)
        })
    }

    #[test]
    fn parses_api_and_gateway_urls() {
        let cases = [
            (
                "https://discord.com/api/v10",
                (true, "discord.com", 443, "/api/v10", "discord.com"),
            ),
            (
                "http://127.0.0.1:8080/api/v10/",
                (false, "127.0.0.1", 8080, "/api/v10/", "127.0.0.1:8080"),
            ),
            (
                "wss://gateway.discord.gg/?v=10&encoding=json",
                (
                    true,
                    "gateway.discord.gg",
                    443,
                    "/?v=10&encoding=json",
                    "gateway.discord.gg",
                ),
            ),
            (
                "ws://[::1]:9/resume/x?v=10",
                (false, "::1", 9, "/resume/x?v=10", "[::1]:9"),
            ),
            ("WS://h?v=10", (false, "h", 80, "/?v=10", "h")),
            ("wss://h:443", (true, "h", 443, "/", "h")),
            (
                "wss://[2001:DB8::1]/x#fragment",
                (true, "2001:db8::1", 443, "/x", "[2001:db8::1]"),
            ),
            (
                "ws://Gateway.Example:80/a%20b?q=1",
                (
                    false,
                    "gateway.example",
                    80,
                    "/a%20b?q=1",
                    "gateway.example",
                ),
            ),
        ];
        for (url, (secure, host, port, target, header)) in cases {
            assert_eq!(
                parts(url),
                Some((
                    secure,
                    host.to_owned(),
                    port,
                    target.to_owned(),
                    header.to_owned()
                )),
                "{url}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_url_it_can_connect_to() {
        for url in [
            "ftp://x",
            "http://:80/",
            "http://h:notaport/",
            "ws://h:70000/",
            "gateway.discord.gg",
            "ws://user@h/",
            "ws://:secret@h/",
            "ws://[::1/",
            "ws://h h/",
        ] {
            assert_eq!(Endpoint::parse(url), None, "{url}");
        }
    }
}
