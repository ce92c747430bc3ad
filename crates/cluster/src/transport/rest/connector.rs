//! The TLS step of the REST client's ureq connector chain: it wraps the TCP connection of
//! an `https` request with the cluster's own rustls `ClientConfig`, so that REST and the
//! gateway connections trust the same roots (webpki plus `ca_file`) through one
//! configuration built by [`crate::tls::client_config`].
//!
//! ureq 3 builds its rustls configuration from a `TlsConfig` of its own and cannot be
//! given a prebuilt one; a connector can. Its transport API (`ureq::unversioned`) is
//! outside ureq's semver promise, so a ureq update may need this module adapted (the
//! version is pinned by Cargo.lock, and a change shows as a build error here).

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use ureq::unversioned::transport::time::{Duration, Instant};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// Adds TLS from a rustls configuration to the connections of `https` requests and passes
/// other connections on as they are.
#[derive(Debug)]
pub(super) struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl TlsConnector {
    /// A connector using `config` for every TLS connection.
    pub(super) fn new(config: Arc<rustls::ClientConfig>) -> Self {
        Self { config }
    }
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .ok_or_else(|| ureq::Error::BadUri(details.uri.to_string()))?;
        let bare = host
            .strip_prefix('[')
            .and_then(|v6| v6.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|_| ureq::Error::Tls("the host is not a valid tls server name"))?;
        let mut connection = ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|err| ureq::Error::Io(io::Error::other(err)))?;
        let below: Box<dyn Transport> = Box::new(transport);
        let mut socket = TransportAdapter::new(below, Arc::clone(&details.current_time));
        socket.set_timeout(remaining(details));
        connection.complete_io(&mut socket)?;
        Ok(Some(Either::B(TlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned::new(connection, socket),
        })))
    }
}

/// The connection's timeout less the time the steps before TLS (resolving the host,
/// opening the TCP connection) have taken, so that the handshake stays within it.
fn remaining(details: &ConnectionDetails) -> NextTimeout {
    let mut timeout = details.timeout;
    if let (Duration::Exact(after), Instant::Exact(started), Instant::Exact(now)) =
        (timeout.after, details.now, (details.current_time)())
    {
        timeout.after =
            Duration::Exact(after.saturating_sub(now.saturating_duration_since(started)));
    }
    timeout
}

/// A TLS connection over the transport below it.
pub(super) struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = self
            .buffers
            .output()
            .get(..amount)
            .ok_or_else(|| io::Error::other("output larger than its buffer"))?;
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let amount = self.stream.read(self.buffers.input_append_buf())?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
