//! The other nodes of a cluster (cluster mode): what they run, and carrying an
//! operator's command to the node that owns a shard. A process alone has no peers; the
//! handle then answers for its own shards only.

use std::future::Future;
use std::pin::Pin;

use crate::error::ClusterError;
use crate::snapshot::ShardSnapshot;

/// A future a [`Peers`] implementation returns.
pub type PeerFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A shard anywhere in the cluster, with the node that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedShard {
    /// The shard as its owner last published it (idle when no node runs it).
    pub snapshot: ShardSnapshot,
    /// The owner's node id; `None` while no node runs the shard.
    pub node: Option<String>,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNode {
    /// Node id.
    pub id: String,
    /// Its admin URL.
    pub admin_url: String,
    /// Shards it owns.
    pub shards: u32,
    /// Most shards it runs (0 = no limit).
    pub capacity: u32,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
    /// Whether it is this process.
    pub is_self: bool,
}

/// An operator command for one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardAction {
    /// Reconnect: RESUME, or a new session when `fresh`.
    Restart {
        /// Drop the session and IDENTIFY.
        fresh: bool,
        /// Even if the budget cannot afford it.
        force: bool,
    },
    /// Close with 4000 and keep the session.
    Stop,
    /// Start a stopped, quarantined or failed shard.
    Start,
}

/// The rest of the cluster, as this node sees it.
pub trait Peers: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> String;
    /// Every shard of the bot, as its owner last published it.
    fn shards(&self) -> PeerFuture<Result<Vec<PlacedShard>, ClusterError>>;
    /// Every live node.
    fn nodes(&self) -> PeerFuture<Result<Vec<PeerNode>, ClusterError>>;
    /// Carries `action` to the node that owns `shard` and waits for its answer.
    fn forward(&self, shard: u32, action: ShardAction) -> PeerFuture<Result<(), ClusterError>>;
    /// Whether the cluster's coordination (Redis) answered lately.
    fn reachable(&self) -> bool;
    /// Prometheus text of the node's own metrics.
    fn render_metrics(&self) -> String;
}
