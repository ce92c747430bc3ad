//! Cluster mode: several shardkeeper nodes share one bot through Redis.
//!
//! A [`Node`] joins a namespace in Redis and plugs the cluster's three seams: its
//! placement runs the shards this node owns (claimed with an epoch-fenced lease,
//! spread by weighted rendezvous hashing over the live nodes), its permit source asks
//! one Redis Function for every identify permit (one schedule and one session start
//! budget for all nodes, on Redis's clock), and its session store writes sessions only
//! while the owner epoch still matches. Every multi-key step is one Function of
//! `library.lua`, so the checks happen inside Redis.
//!
//! Layout: `node.rs` (joining, leaving, shared state), `control.rs` (the control loop
//! and the watchdog that fences; `control/placement.rs` claims and hands over,
//! `control/permits.rs` asks for identify permits), `assign.rs` (pure placement), `link.rs` (+ `link/view.rs`) + `keys.rs`
//! (the typed calls and the key layout), `seams.rs` (the trait implementations),
//! `remote.rs` (the cluster-wide view, forwarded commands, audit), `metrics.rs`,
//! `settings.rs` (start-up checks, joining, the budget refresh), `view.rs` (what a
//! round reads).

mod assign;
mod control;
mod error;
mod keys;
mod link;
mod metrics;
mod node;
mod remote;
mod seams;
pub mod server;
mod settings;
mod view;

use std::sync::Arc;

use shardkeeper_cluster::{AuditLog, Peers, PermitSource, Placement, SessionStore};

pub use error::NodeError;
pub use node::{Node, NodeConfig, NodeCounters, NodeInfo};

impl Node {
    /// The shards this node runs now.
    #[must_use]
    pub fn placement(&self) -> Arc<dyn Placement> {
        Arc::new(seams::Seams(Arc::clone(&self.inner)))
    }

    /// Identify permits from the shared schedule.
    #[must_use]
    pub fn permits(&self) -> Arc<dyn PermitSource> {
        Arc::new(seams::Seams(Arc::clone(&self.inner)))
    }

    /// The other nodes: the cluster-wide view and commands carried to shard owners.
    #[must_use]
    pub fn peers(&self) -> Arc<dyn Peers> {
        Arc::new(seams::Seams(Arc::clone(&self.inner)))
    }

    /// The cluster's audit stream: every node records there and reads it whole.
    #[must_use]
    pub fn audit(&self) -> Arc<dyn AuditLog> {
        Arc::new(seams::Seams(Arc::clone(&self.inner)))
    }

    /// Sessions in Redis, fenced by owner epoch.
    #[must_use]
    pub fn store(&self) -> Arc<dyn SessionStore> {
        Arc::new(seams::Seams(Arc::clone(&self.inner)))
    }
}
