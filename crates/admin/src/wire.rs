//! How the cluster's plain data looks on the wire: the admin API owns its JSON and its
//! OpenAPI schemas.

use std::borrow::Cow;

use serde::{Serialize, Serializer};
use shardkeeper_cluster::{
    BucketView, IdentifyStatus, PeerNode, PlacedShard, ShardSnapshot, StateKind,
};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A shard's state by its API name (`awaiting_hello` reads `connecting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireState(pub(crate) StateKind);

impl Serialize for WireState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.api_name())
    }
}

impl utoipa::PartialSchema for WireState {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Shard state"))
            .enum_values(Some(StateKind::api_names()))
            .into()
    }
}

impl ToSchema for WireState {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("StateKind")
    }
}

/// One shard.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ShardSnapshot)]
pub(crate) struct ShardView {
    /// Shard id.
    id: u32,
    /// State.
    state: WireState,
    /// Last heartbeat round trip.
    latency_ms: Option<u64>,
    /// Last sequence received.
    seq: Option<u64>,
    /// Current session.
    session_id: Option<String>,
    /// Whether a RESUME is possible.
    resumable: bool,
    /// IDENTIFYs sent.
    identifies: u64,
    /// Successful resumes.
    resumes: u64,
    /// Connections after the first.
    reconnects: u64,
    /// Last close code from the server.
    last_close_code: Option<u16>,
    /// Guilds held.
    guilds: usize,
    /// Zombie connections detected.
    zombies: u64,
    /// The fatal close code, when failed.
    failed_code: Option<u16>,
    /// Times the supervisor restarted the shard's actor after a crash.
    restarts: u64,
    /// Dispatches received and handed to the sinks (counted from the shard's start
    /// on its current node).
    events: u64,
    /// Cluster mode only: the id of the node that runs the shard (`null`: none now).
    #[serde(skip_serializing_if = "Owner::is_alone")]
    #[schema(value_type = Option<String>)]
    node: Owner,
}

/// Who runs a shard, as far as the wire says: nothing in single mode, the node (or
/// `null`) in cluster mode.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Alone,
    Node(Option<String>),
}

impl Owner {
    fn is_alone(&self) -> bool {
        *self == Self::Alone
    }
}

impl Serialize for Owner {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Alone | Self::Node(None) => serializer.serialize_none(),
            Self::Node(Some(id)) => serializer.serialize_str(id),
        }
    }
}

impl ShardView {
    /// A shard of the cluster with its node (cluster mode shows `node`, single mode not).
    pub(crate) fn placed(shard: PlacedShard, clustered: bool) -> Self {
        Self {
            node: if clustered {
                Owner::Node(shard.node)
            } else {
                Owner::Alone
            },
            ..Self::from(shard.snapshot)
        }
    }
}

/// One node of the cluster.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeWire {
    /// Node id.
    id: String,
    /// Its admin API.
    admin_url: String,
    /// Shards it owns.
    shards: u32,
    /// Most shards it runs (0 = no limit).
    capacity: u32,
    /// Milliseconds since its last heartbeat.
    last_seen_ms: u64,
    /// Whether it is the node that answered.
    #[serde(rename = "self")]
    is_self: bool,
}

impl From<PeerNode> for NodeWire {
    fn from(n: PeerNode) -> Self {
        Self {
            id: n.id,
            admin_url: n.admin_url,
            shards: n.shards,
            capacity: n.capacity,
            last_seen_ms: n.last_seen_ms,
            is_self: n.is_self,
        }
    }
}

impl From<ShardSnapshot> for ShardView {
    fn from(s: ShardSnapshot) -> Self {
        Self {
            id: s.id,
            state: WireState(s.state),
            latency_ms: s.latency_ms,
            seq: s.seq,
            session_id: s.session_id.map(|id| id.to_string()),
            resumable: s.resumable,
            identifies: s.identifies,
            resumes: s.resumes,
            reconnects: s.reconnects,
            last_close_code: s.last_close_code,
            guilds: s.guilds,
            zombies: s.zombies,
            failed_code: s.failed_code,
            restarts: s.restarts,
            events: s.events,
            node: Owner::Alone,
        }
    }
}

/// One identify bucket.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = BucketView)]
pub(crate) struct BucketWire {
    /// `shard_id % max_concurrency`.
    bucket: u32,
    /// Shards waiting, in grant order.
    queued: Vec<u32>,
    /// Milliseconds until the bucket may grant again (0: now).
    next_grant_in_ms: u64,
    /// Milliseconds since the last grant.
    last_grant_ago_ms: Option<u64>,
}

impl From<BucketView> for BucketWire {
    fn from(b: BucketView) -> Self {
        Self {
            bucket: b.bucket,
            queued: b.queued,
            next_grant_in_ms: b.next_grant_in_ms,
            last_grant_ago_ms: b.last_grant_ago_ms,
        }
    }
}

/// The identify schedule and the session start budget.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = IdentifyStatus)]
pub(crate) struct IdentifyWire {
    /// Buckets.
    max_concurrency: u32,
    /// Window per bucket.
    window_ms: u64,
    /// Session starts per budget period.
    total: u32,
    /// Session starts left.
    remaining: u32,
    /// Session starts kept back: no permit once `remaining` is down to it.
    reserve: u32,
    /// Milliseconds until the budget resets.
    reset_in_ms: u64,
    /// Shards waiting for a permit.
    queued: usize,
    /// Permits granted since start.
    granted: u64,
    /// Per bucket.
    buckets: Vec<BucketWire>,
}

impl From<IdentifyStatus> for IdentifyWire {
    fn from(s: IdentifyStatus) -> Self {
        Self {
            max_concurrency: s.max_concurrency,
            window_ms: s.window_ms,
            total: s.total,
            remaining: s.remaining,
            reserve: s.reserve,
            reset_in_ms: s.reset_in_ms,
            queued: s.queued,
            granted: s.granted,
            buckets: s.buckets.into_iter().map(BucketWire::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use shardkeeper_cluster::{ShardSnapshot, StateKind};

    use super::ShardView;

    #[test]
    fn states_read_by_their_api_names() {
        let mut snapshot = ShardSnapshot::idle(3);
        snapshot.state = StateKind::AwaitingHello;
        snapshot.session_id = Some("abc".into());
        let json = serde_json::to_value(ShardView::from(snapshot)).expect("serializes");
        assert_eq!(json["state"], "connecting");
        assert_eq!(json["session_id"], "abc");
        let quarantined = ShardSnapshot {
            state: StateKind::Quarantined,
            ..ShardSnapshot::idle(1)
        };
        assert_eq!(
            serde_json::to_value(ShardView::from(quarantined)).expect("serializes")["state"],
            "quarantined"
        );
    }
}
