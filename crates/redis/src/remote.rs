//! The cluster-wide admin view and the commands nodes carry for each other: every node
//! publishes its shards' snapshots (fenced, like sessions), lists the others', and
//! sends a command for a shard it does not run to the owner's command stream, where
//! the owner carries it out and answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::RedisError;
use serde::{Deserialize, Serialize};
use shardkeeper_cluster::{
    AuditEntry, ClusterError, ClusterHandle, PeerNode, PlacedShard, ShardAction, ShardSnapshot,
    StateKind,
};

use crate::control::millis;
use crate::link::Link;
use crate::node::{Inner, NodeCounters, NodeInfo};

/// How long a forwarded command waits for the owner's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer is kept for the node that asked.
const REPLY_TTL_MS: u64 = 30_000;
/// Commands kept in their stream (approximately).
const COMMANDS_KEPT: u32 = 1000;

/// A shard snapshot as stored in Redis.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    state: String,
    latency_ms: Option<u64>,
    seq: Option<u64>,
    session_id: Option<String>,
    resumable: bool,
    identifies: u64,
    resumes: u64,
    reconnects: u64,
    last_close_code: Option<u16>,
    guilds: usize,
    zombies: u64,
    failed_code: Option<u16>,
    restarts: u64,
    #[serde(default)]
    events: u64,
}

impl Published {
    fn of(s: &ShardSnapshot) -> Self {
        Self {
            state: s.state.api_name().to_owned(),
            latency_ms: s.latency_ms,
            seq: s.seq,
            session_id: s.session_id.as_deref().map(str::to_owned),
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
        }
    }

    fn snapshot(self, id: u32) -> ShardSnapshot {
        ShardSnapshot {
            id,
            state: StateKind::ALL
                .iter()
                .copied()
                .find(|kind| kind.api_name() == self.state)
                .unwrap_or(StateKind::Idle),
            latency_ms: self.latency_ms,
            seq: self.seq,
            session_id: self.session_id.map(Into::into),
            resumable: self.resumable,
            identifies: self.identifies,
            resumes: self.resumes,
            reconnects: self.reconnects,
            last_close_code: self.last_close_code,
            guilds: self.guilds,
            zombies: self.zombies,
            failed_code: self.failed_code,
            restarts: self.restarts,
            events: self.events,
        }
    }
}

/// A command on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Wire {
    Restart { fresh: bool },
    Stop,
    Start,
}

/// An answer on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Answer {
    Done,
    /// The shard is no longer the answering node's (at that epoch).
    Moved,
    Failed {
        error: String,
    },
}

/// Publishes the snapshots of the shards this node runs that changed since the last
/// time (a thousand idle shards send nothing).
pub(crate) async fn publish(inner: &Inner) -> Result<(), RedisError> {
    let Some(handle) = inner.handle.get() else {
        return Ok(());
    };
    let held = inner.held().clone();
    let mut keys = vec![inner.link.keys.status()];
    let mut args = vec![inner.identity.id.clone()];
    let mut sent = Vec::new();
    {
        let mut published = inner
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        published.retain(|shard, _| held.contains_key(shard));
        for snapshot in handle.shards() {
            let Some(epoch) = held.get(&snapshot.id) else {
                continue;
            };
            let Ok(json) = serde_json::to_string(&Published::of(&snapshot)) else {
                continue;
            };
            if published.get(&snapshot.id) == Some(&json) {
                continue;
            }
            keys.push(inner.link.keys.owner(snapshot.id));
            args.push(snapshot.id.to_string());
            args.push(epoch.to_string());
            args.push(json.clone());
            sent.push((snapshot.id, json));
        }
    }
    if sent.is_empty() {
        return Ok(());
    }
    let refused: u64 = inner.link.fcall("sk1_status", &keys, &args).await?;
    NodeCounters::add(&inner.counters.fenced_writes, refused);
    inner
        .published
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(sent);
    Ok(())
}

/// Every shard as its owner last published it; a shard no node runs reads idle.
pub(crate) async fn placed(link: &Link, total: u32) -> Result<Vec<PlacedShard>, RedisError> {
    let keys = &link.keys;
    let mut pipe = redis::pipe();
    pipe.cmd("HGETALL").arg(keys.status());
    pipe.cmd("MGET")
        .arg((0..total.max(1)).map(|s| keys.owner(s)).collect::<Vec<_>>());
    let (published, owners): (HashMap<u32, String>, Vec<Option<String>>) = link.pipe(&pipe).await?;
    Ok((0..total)
        .map(|id| {
            let node = owners
                .get(id as usize)
                .cloned()
                .flatten()
                .and_then(|value| value.rsplit_once(':').map(|(node, _)| node.to_owned()));
            let snapshot = match (&node, published.get(&id)) {
                (Some(_), Some(json)) => serde_json::from_str::<Published>(json)
                    .map_or_else(|_| ShardSnapshot::idle(id), |p| p.snapshot(id)),
                _ => ShardSnapshot::idle(id),
            };
            PlacedShard { snapshot, node }
        })
        .collect())
}

/// Every live node.
pub(crate) async fn nodes(link: &Link, me: &str, total: u32) -> Result<Vec<PeerNode>, RedisError> {
    let view = link.view(total).await?;
    let seen: HashMap<String, u64> = link.seen().await?;
    let mut owned: HashMap<String, u32> = HashMap::new();
    for value in view.owners.iter().flatten() {
        if let Some((node, _)) = value.rsplit_once(':') {
            *owned.entry(node.to_owned()).or_default() += 1;
        }
    }
    let mut nodes: Vec<PeerNode> = view
        .nodes
        .into_iter()
        .filter(|(_, _, alive)| *alive)
        .map(|(id, info, _)| {
            let info: Option<NodeInfo> = serde_json::from_str(&info).ok();
            PeerNode {
                shards: owned.get(&id).copied().unwrap_or(0),
                capacity: info.as_ref().map_or(0, |i| i.capacity),
                admin_url: info.map(|i| i.admin_url).unwrap_or_default(),
                last_seen_ms: seen
                    .get(&id)
                    .map_or(0, |at| view.redis_now_ms.saturating_sub(*at)),
                is_self: id == me,
                id,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(nodes)
}

fn peer_error(shard: u32, reason: impl std::fmt::Display) -> ClusterError {
    ClusterError::Peer {
        shard,
        reason: reason.to_string(),
    }
}

/// Carries `action` to the owner of `shard` and waits for its answer; a "moved"
/// answer (the shard changed hands meanwhile) is retried once with the new owner.
pub(crate) async fn forward(
    inner: Arc<Inner>,
    shard: u32,
    action: ShardAction,
) -> Result<(), ClusterError> {
    let wire = match action {
        ShardAction::Restart { fresh, .. } => Wire::Restart { fresh },
        ShardAction::Stop => Wire::Stop,
        ShardAction::Start => Wire::Start,
    };
    let body = serde_json::to_string(&wire).map_err(|err| peer_error(shard, err))?;
    let link = &inner.link;
    for _ in 0..2 {
        let mut get = redis::cmd("GET");
        get.arg(link.keys.owner(shard));
        let owner: Option<String> = link.query(&get).await.map_err(|e| peer_error(shard, e))?;
        let Some((node, epoch)) = owner.as_deref().and_then(|v| v.rsplit_once(':')) else {
            return Err(peer_error(shard, "no node runs it right now; try again"));
        };
        if node == inner.identity.id
            && let Some(handle) = inner.handle.get()
        {
            return handle.act_here(shard, action).await;
        }
        let id = format!("{:016x}", rand::random::<u64>());
        let mut add = redis::cmd("XADD");
        add.arg(link.keys.commands(node))
            .arg("MAXLEN")
            .arg("~")
            .arg(COMMANDS_KEPT)
            .arg("*")
            .arg("id")
            .arg(&id)
            .arg("shard")
            .arg(shard)
            .arg("epoch")
            .arg(epoch)
            .arg("command")
            .arg(&body);
        link.query::<String>(&add)
            .await
            .map_err(|e| peer_error(shard, e))?;
        match wait_for_answer(link, &id).await {
            Some(Answer::Done) => return Ok(()),
            Some(Answer::Moved) => {}
            Some(Answer::Failed { error }) => return Err(peer_error(shard, error)),
            None => {
                return Err(peer_error(
                    shard,
                    format!("node {node} did not answer within {FORWARD_TIMEOUT:?}"),
                ));
            }
        }
    }
    Err(peer_error(shard, "it changed hands twice; try again"))
}

async fn wait_for_answer(link: &Link, id: &str) -> Option<Answer> {
    let deadline = Instant::now() + FORWARD_TIMEOUT;
    let mut get = redis::cmd("GET");
    get.arg(link.keys.reply(id));
    while Instant::now() < deadline {
        if let Ok(Some(json)) = link.query::<Option<String>>(&get).await {
            return serde_json::from_str(&json).ok();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// The entries of one XREAD: stream → [(entry id, [field, value, …])].
type Entries = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;

/// Reads this node's command stream and carries each command out, until the node
/// stops. Its own connection: a blocking read would hold up every other call.
pub(crate) async fn serve(inner: Arc<Inner>, handle: ClusterHandle) {
    let reader = loop {
        let connected = Link::connect(
            &inner.config.url,
            &inner.config.namespace,
            Duration::from_secs(3),
        )
        .await;
        match connected {
            Ok(reader) => break reader,
            Err(err) => {
                tracing::warn!(%err, "cannot open the command connection to Redis; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let stream = inner.link.keys.commands(&inner.identity.id);
    // From the oldest command a sender may still be waiting for: one sent between this
    // node's first claims and now is carried out, an older one is not.
    let mut last = match reader.query::<(u64, u64)>(&redis::cmd("TIME")).await {
        Ok((secs, micros)) => {
            let now_ms = secs * 1000 + micros / 1000;
            let since = now_ms.saturating_sub(millis(FORWARD_TIMEOUT));
            format!("{since}-0")
        }
        Err(_) => "$".to_owned(),
    };
    loop {
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(16)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last);
        let entries: Entries = match reader.query(&read).await {
            Ok(entries) => entries,
            Err(err) => {
                tracing::debug!(%err, "command stream read failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for (_, list) in entries.unwrap_or_default() {
            for (entry, fields) in list {
                last = entry;
                let fields: HashMap<String, String> = fields
                    .chunks(2)
                    .filter_map(|pair| Some((pair.first()?.clone(), pair.get(1)?.clone())))
                    .collect();
                let answer = carry_out(&inner, &handle, &fields).await;
                if let (Some(id), Ok(json)) = (fields.get("id"), serde_json::to_string(&answer)) {
                    let mut set = redis::cmd("SET");
                    set.arg(inner.link.keys.reply(id))
                        .arg(json)
                        .arg("PX")
                        .arg(REPLY_TTL_MS);
                    if let Err(err) = inner.link.query::<()>(&set).await {
                        tracing::warn!(%err, "cannot answer a forwarded command");
                    }
                }
            }
        }
    }
}

async fn carry_out(
    inner: &Inner,
    handle: &ClusterHandle,
    fields: &HashMap<String, String>,
) -> Answer {
    let shard = fields.get("shard").and_then(|s| s.parse::<u32>().ok());
    let epoch = fields.get("epoch").and_then(|s| s.parse::<u64>().ok());
    let wire = fields
        .get("command")
        .and_then(|c| serde_json::from_str::<Wire>(c).ok());
    let (Some(shard), Some(epoch), Some(wire)) = (shard, epoch, wire) else {
        return Answer::Failed {
            error: "unreadable command".into(),
        };
    };
    if inner.held().get(&shard) != Some(&epoch) {
        return Answer::Moved;
    }
    let action = match wire {
        // The asking node checked the shared budget before sending.
        Wire::Restart { fresh } => ShardAction::Restart { fresh, force: true },
        Wire::Stop => ShardAction::Stop,
        Wire::Start => ShardAction::Start,
    };
    tracing::info!(shard, ?action, "carrying out a command from another node");
    match handle.act_here(shard, action).await {
        Ok(()) => Answer::Done,
        Err(ClusterError::NotOwned(_)) => Answer::Moved,
        Err(err) => Answer::Failed {
            error: err.to_string(),
        },
    }
}

/// Appends an operator action to the cluster's audit stream, as one JSON field.
pub(crate) fn audit(inner: &Arc<Inner>, mut entry: AuditEntry) {
    let link = inner.link.clone();
    entry.node = Some(inner.identity.id.clone());
    inner.runtime.spawn(async move {
        let Ok(json) = serde_json::to_string(&entry) else {
            return;
        };
        let mut add = redis::cmd("XADD");
        add.arg(link.keys.audit())
            .arg("MAXLEN")
            .arg("~")
            .arg(shardkeeper_cluster::AUDIT_KEPT)
            .arg("*")
            .arg("entry")
            .arg(json);
        if let Err(err) = link.query::<String>(&add).await {
            tracing::warn!(%err, action = %entry.action, "cannot write the audit entry");
        }
    });
}

/// The newest `limit` entries of the audit stream, newest first; entries that do not
/// read as one are skipped.
pub(crate) async fn recent_audit(link: &Link, limit: usize) -> Result<Vec<AuditEntry>, RedisError> {
    let mut range = redis::cmd("XREVRANGE");
    range
        .arg(link.keys.audit())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(limit);
    let read: Vec<(String, Vec<String>)> = link.query(&range).await?;
    Ok(read
        .into_iter()
        .filter_map(|(_, fields)| {
            let json = fields
                .chunks(2)
                .find(|pair| pair.first().is_some_and(|name| name == "entry"))?
                .get(1)?;
            serde_json::from_str(json).ok()
        })
        .collect())
}
