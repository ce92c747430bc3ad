//! The actix runtime of shardkeeper.
//!
//! Each shard is an actix actor (`Shard`) that owns one WebSocket (tokio-tungstenite,
//! rustls), one timer and one sans-IO `ShardSession` from `shardkeeper-session`, and
//! performs the session's actions in order: write the socket, ask the [`PermitSource`]
//! for a permit, hand events to the sinks, buffer the session in the [`SessionLedger`].
//! Shards are spread over one thread (arbiter) per core; a supervisor starts the shards
//! the [`Placement`] assigns, retires those it takes away, and restarts an actor that
//! crashed, with its session, so a shard never silently disappears.
//!
//! This crate does not parse configuration files or serve HTTP: `shardkeeper-cli`
//! reads configuration and `shardkeeper-admin` serves the admin API on top of
//! [`ClusterHandle`].
//!
//! ```no_run
//! # async fn run() -> Result<(), shardkeeper_cluster::ClusterError> {
//! use std::sync::Arc;
//! use shardkeeper_cluster::{ChannelSink, Cluster, ClusterConfig};
//! use shardkeeper_protocol::Token;
//!
//! let (sink, mut events) = ChannelSink::new();
//! let cluster = Cluster::builder(ClusterConfig::new(Token::new("…")))
//!     .sink(Arc::new(sink))
//!     .start()
//!     .await?;
//! while let Some(event) = events.recv().await {
//!     println!("{}", event.to_line());
//! }
//! cluster.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - `cluster.rs`: [`Cluster`] builder and start-up; `config.rs`: [`ClusterConfig`]
//! - `supervisor.rs`: the one actor that starts, restarts and retires shard actors;
//!   `directory.rs`: id → actor; `status.rs`: the cell each shard publishes into
//! - `handle.rs`: [`ClusterHandle`] commands and snapshots; `snapshot.rs`: plain data
//! - `shard.rs` (+ `shard/link.rs`, `shard/delivery.rs`, `shard/notice.rs`): the `Shard`
//!   actor, its side of the connection, in-order delivery to the sinks, log lines
//! - the seams: `placement.rs` ([`Placement`]: which shards to run),
//!   `permit.rs` + `permit/local.rs` ([`PermitSource`]: identify permits),
//!   `store.rs` + `store/ledger.rs`, `store/sled.rs` ([`SessionStore`] backends behind
//!   the one flush path, [`SessionLedger`])
//! - `transport.rs` (+ `net`, `tls`, `rest`, `upgrade`, `socket`): everything that
//!   touches the network
//! - `peers.rs`: [`Peers`], the other nodes of a cluster (cluster mode), and the
//!   handle's cluster-wide view and commands
//! - `sink.rs`, `event.rs`: [`EventSink`], [`Event`]; `members.rs`: member chunks by nonce
//! - `metrics.rs`, `persist.rs` (the flush thread), `trim.rs`, `clock.rs` (the one place
//!   time is read)

mod audit;
mod clock;
mod cluster;
mod config;
#[cfg(feature = "contract")]
pub mod contract;
mod directory;
mod error;
mod event;
mod handle;
mod jobs;
mod members;
mod metrics;
mod peers;
mod permit;
mod persist;
mod placement;
mod shard;
mod sink;
mod snapshot;
mod status;
mod store;
mod supervisor;
mod transport;
mod trim;

pub use audit::{AUDIT_KEPT, AuditEntry, AuditError, AuditFuture, AuditLog, MemoryAudit};
pub use cluster::{Cluster, ClusterBuilder};
pub use config::{Auto, ClusterConfig, DISCORD_API_BASE, ShardIds};
pub use error::ClusterError;
pub use event::Event;
pub use handle::ClusterHandle;
pub use jobs::{Job, JobError, JobKind, JobState, STEP_TIMEOUT};
pub use members::{MembersError, MembersResult};
pub use metrics::Metrics;
pub use peers::{PeerFuture, PeerNode, Peers, PlacedShard, ShardAction};
pub use permit::{Grant, LocalPermits, PermitSource};
pub use persist::StoreHealth;
pub use placement::{Fence, Placement, ShardSet, StaticPlacement};
pub use shardkeeper_session::{QuarantinePolicy, StateKind};
pub use sink::{ChannelSink, Delivery, EventSink, LineSink, Sinks, sink_path};
pub use snapshot::{BucketView, IdentifyStatus, ShardSnapshot};
pub use store::{
    Change, MemoryStore, ScheduleStore, SessionBatch, SessionLedger, SessionStore, SledStore,
    StoreError, StoredSession,
};
pub use transport::net::Dialer;
pub use transport::rest::{RestClient, RestError};
pub use transport::tls::{TlsError, client_config};
