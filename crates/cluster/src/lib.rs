//! The actix runtime of shardkeeper.
//!
//! Each shard is an actix actor (`Shard`) that owns one WebSocket (tokio-tungstenite,
//! rustls), one timer and one sans-IO `ShardSession` from `shardkeeper-session`, and
//! performs the session's actions in order: write the socket, ask the
//! `IdentifyCoordinator` for a permit, hand events to the sinks, write the store.
//! Shards are spread over one thread (arbiter) per core; a supervisor restarts an actor
//! that crashed, with its session, so a shard never silently disappears.
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
//! - `cluster.rs`: [`Cluster`] builder, start-up, supervisor
//! - `handle.rs`: [`ClusterHandle`] commands and snapshots
//! - `shard.rs` (+ `shard/socket.rs`, `shard/delivery.rs`): the `Shard` actor, its
//!   connection, and in-order delivery to the sinks
//! - `coordinator.rs`: the `IdentifyCoordinator` actor
//! - `registry.rs`: [`ShardSnapshot`]s shared with the handle
//! - `members.rs`: member chunks collected by nonce
//! - `sink.rs`, `event.rs`: [`EventSink`], [`Event`]
//! - `store.rs`: [`SessionStore`] and [`MemoryStore`]
//! - `rest.rs`: the `/gateway/bot` client; `tls.rs`: rustls configuration
//! - `config.rs`: [`ClusterConfig`]; `clock.rs`: the one place time is read

mod clock;
mod cluster;
mod config;
mod coordinator;
mod event;
mod handle;
mod members;
mod metrics;
mod net;
mod persist;
mod registry;
mod rest;
mod shard;
mod sink;
mod store;
mod tls;
mod trim;

pub use cluster::{Cluster, ClusterBuilder};
pub use config::{Auto, ClusterConfig, DISCORD_API_BASE, QuarantinePolicy, ShardIds};
pub use coordinator::{BucketView, IdentifyStatus};
pub use event::Event;
pub use handle::{ClusterError, ClusterHandle};
pub use members::{MembersError, MembersResult};
pub use metrics::Metrics;
pub use persist::StoreHealth;
pub use registry::{ShardSnapshot, ShardState};
pub use rest::{RestClient, RestError};
pub use sink::{ChannelSink, Delivery, EventSink, LineSink, Sinks, sink_path};
pub use store::{MemoryStore, SessionStore, SledStore, StoreError, StoredSession};
pub use tls::{TlsError, client_config};
