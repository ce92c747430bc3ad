//! A strict simulator of Discord's gateway and its `/gateway/bot` endpoint.
//!
//! It behaves like the real gateway for everything a shard manager touches (HELLO,
//! IDENTIFY with its window and daily budget, READY and GUILD_CREATE, RESUME with a
//! replay buffer, heartbeats, the send limits, presence, voice and member requests,
//! `zlib-stream`/`zstd-stream` transport compression, optional TLS) and **records every
//! rule a client breaks** in a violation log. Faults can be injected by hand or by a
//! seeded chaos schedule. The end-to-end tests, the demo and the benchmarks run against
//! it, because no machine here can reach Discord.
//!
//! It is not a Discord client library, and it shares the wire types of
//! `shardkeeper-protocol` but pins them with the golden fixtures of that crate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), shardkeeper_sim::SimError> {
//! use shardkeeper_sim::{Fault, FaultTarget, Sim, SimConfig};
//! let sim = Sim::start(SimConfig::default()).await?;
//! println!("gateway at {}, REST at {}", sim.gateway_url(), sim.api_base());
//! sim.inject(FaultTarget::shard(0), Fault::Reconnect);
//! assert!(sim.stats().violations.is_empty());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - `config.rs`: [`SimConfig`], Discord's defaults
//! - `rules.rs`: the gateway's limits as pure checks
//! - `conn.rs`: one connection's server-side state machine
//! - `world.rs`: sessions, identify buckets and budget shared by all connections
//! - `events.rs`: READY, GUILD_CREATE, MESSAGE_CREATE, member chunks, replay buffer
//! - `fault.rs`: [`Fault`], [`FaultTarget`], [`ChaosConfig`]
//! - `stats.rs`: [`Stats`] and the violation log
//! - `server.rs`: accept loop, TLS, HTTP endpoints, WebSocket loop, compression

mod config;
mod conn;
mod events;
mod fault;
mod rules;
mod server;
mod stats;
mod world;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::SimConfig;
pub use events::guild_ids;
pub use fault::{ChaosConfig, Fault, FaultTarget, RestFault};
pub use stats::{BucketStats, SessionSummary, ShardStats, Stats, Violation, ViolationKind};

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("invalid tls configuration: {0}")]
    Tls(String),
}

/// A certificate chain and private key in PEM, for `wss://` and `https://`.
#[derive(Clone)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_pem: String,
    /// Private key.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// A self-signed certificate for `localhost` and `127.0.0.1`; clients trust it by
    /// adding [`TlsConfig::cert_pem`] as a root.
    pub fn self_signed() -> Result<Self, SimError> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let cert =
            rcgen::generate_simple_self_signed(names).map_err(|e| SimError::Tls(e.to_string()))?;
        Ok(Self {
            cert_pem: cert.cert.pem(),
            key_pem: cert.signing_key.serialize_pem(),
        })
    }

    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, SimError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let tls = |e: &dyn std::fmt::Display| SimError::Tls(e.to_string());
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls(&e))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| tls(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| tls(&e))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Sim;

impl Sim {
    /// Binds `config.listen` and serves until [`SimHandle::shutdown`]. Must be called
    /// inside a tokio runtime.
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        let acceptor = config.tls.as_ref().map(TlsConfig::acceptor).transpose()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
        let secure = acceptor.is_some();
        let ws_base = format!("{}://{addr}", if secure { "wss" } else { "ws" });
        let world = Arc::new(world::World::new(config, ws_base));
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, Arc::clone(&world), acceptor, stop));
        Ok(SimHandle {
            addr,
            secure,
            world,
            shutdown,
            task,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

/// Connections to a simulator without a socket: the other end of each stream is
/// served like an accepted TCP connection (HTTP, the WebSocket upgrade, the gateway),
/// under the same rules. Plain (no TLS). A connection ends when the client drops its
/// end; the simulator's shutdown does not wait for these.
#[derive(Clone)]
pub struct MemoryDialer {
    world: Arc<world::World>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for MemoryDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDialer").finish_non_exhaustive()
    }
}

impl MemoryDialer {
    /// A new connection.
    #[must_use]
    pub fn dial(&self) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        self.runtime
            .spawn(server::handle(server, Arc::clone(&self.world)));
        client
    }
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    secure: bool,
    world: Arc<world::World>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Where in-memory connections are served.
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// Opens connections to the simulator without a socket (see [`MemoryDialer`]).
    #[must_use]
    pub fn dialer(&self) -> MemoryDialer {
        MemoryDialer {
            world: Arc::clone(&self.world),
            runtime: self.runtime.clone(),
        }
    }

    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://addr/api/v10`, the REST base for `/gateway/bot`.
    #[must_use]
    pub fn api_base(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}/api/v10", self.addr)
    }

    /// `ws(s)://addr`, the gateway URL `/gateway/bot` returns.
    #[must_use]
    pub fn gateway_url(&self) -> String {
        self.world.ws_base.clone()
    }

    /// Everything counted so far.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.world.stats()
    }

    /// Applies a fault to the connections `target` names.
    pub fn inject(&self, target: FaultTarget, fault: Fault) {
        let _ = self.world.faults.send((target, fault));
    }

    /// Changes the generated dispatches per second per Ready shard (0 stops them).
    pub fn set_events_per_sec(&self, rate: f64) {
        self.world.set_events_per_sec(rate);
    }

    /// Pauses (or resumes) the chaos schedule.
    pub fn pause_chaos(&self, paused: bool) {
        self.world.pause_chaos(paused);
    }

    /// Stops accepting and ends every connection.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}
