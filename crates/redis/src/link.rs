//! The connection to Redis and one typed call per step of `library.lua`.
//!
//! The connection manager reconnects by itself but never replays a command, so every
//! error means "outcome unknown": each step is written to be safe to repeat.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisError, Value};

use crate::error::NodeError;

mod view;

pub(crate) use self::view::View;
use crate::keys::Keys;

/// The function library, loaded at every start.
const LIBRARY: &str = include_str!("library.lua");

/// Version of the key layout and of the functions; a node of another version exits.
pub(crate) const PROTOCOL: u32 = 1;

/// What a grant request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Granted: IDENTIFY within this many milliseconds.
    Grant(u64),
    /// Ask again in this many milliseconds.
    Wait(u64),
    /// The budget is at its reserve (this many left).
    Budget(u64),
    /// The budget is not known (or its reset passed): fetch it before any grant.
    Unknown,
    /// This node does not own the shard.
    NotOwner,
}

/// The node's link to Redis: the connection and the namespace's keys.
#[derive(Clone)]
pub(crate) struct Link {
    conn: ConnectionManager,
    pub(crate) keys: Keys,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

impl Link {
    /// Connects to `url` (which may hold a password: it is never logged).
    pub(crate) async fn connect(
        url: &str,
        namespace: &str,
        timeout: Duration,
    ) -> Result<Self, NodeError> {
        let client = redis::Client::open(url).map_err(|err| NodeError::Url(err.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|err| NodeError::Unreachable(err.to_string()))?;
        Ok(Self {
            conn,
            keys: Keys::new(namespace),
        })
    }

    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await
    }

    pub(crate) async fn fcall<T: FromRedisValue>(
        &self,
        function: &str,
        keys: &[String],
        args: &[String],
    ) -> Result<T, RedisError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(function).arg(keys.len()).arg(keys).arg(args);
        self.query(&cmd).await
    }

    pub(crate) async fn pipe<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await
    }

    /// Node id → Redis time of its last heartbeat.
    pub(crate) async fn seen(&self) -> Result<std::collections::HashMap<String, u64>, RedisError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.seen());
        self.query(&cmd).await
    }

    /// Removes a dead node's description (its lease key is long gone).
    pub(crate) async fn forget_node(&self, id: &str) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL").arg(self.keys.nodes()).arg(id).ignore();
        pipe.cmd("HDEL").arg(self.keys.seen()).arg(id).ignore();
        pipe.cmd("DEL").arg(self.keys.commands(id)).ignore();
        self.pipe::<()>(&pipe).await
    }

    /// Loads (or replaces with the same code) the function library.
    pub(crate) async fn load_library(&self) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg("REPLACE").arg(LIBRARY);
        self.query::<String>(&cmd).await.map(drop)
    }

    /// A setting from `CONFIG GET`.
    pub(crate) async fn setting(&self, name: &str) -> Result<Option<String>, RedisError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        let pairs: Vec<String> = self.query(&cmd).await?;
        Ok(pairs.into_iter().nth(1))
    }

    /// The server's `run_id`: it changes whenever Redis restarts.
    pub(crate) async fn run_id(&self) -> Result<String, RedisError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("server");
        let info: String = self.query(&cmd).await?;
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
            .to_owned())
    }

    /// Whether the namespace still holds its description (false: Redis lost its data).
    pub(crate) async fn has_meta(&self) -> Result<bool, RedisError> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.keys.meta());
        self.query(&cmd).await
    }

    /// Joins the namespace; true when it was empty.
    pub(crate) async fn join(
        &self,
        node: &Identity,
        info: &str,
        terms: &Terms,
    ) -> Result<bool, RedisError> {
        let k = &self.keys;
        let keys = [k.meta(), k.alive(&node.id), k.nodes(), k.seen(), k.clock()];
        let args = [
            node.id.clone(),
            node.instance.clone(),
            node.lease_ms.to_string(),
            info.to_owned(),
            terms.total.to_string(),
            PROTOCOL.to_string(),
            terms.max_concurrency.to_string(),
            format!("{}+{}", terms.window_ms, terms.margin_ms),
        ];
        self.fcall::<i64>("sk1_join", &keys, &args)
            .await
            .map(|fresh| fresh == 1)
    }

    /// Leaves the namespace (after every shard was handed over).
    pub(crate) async fn leave(&self, node: &Identity) -> Result<(), RedisError> {
        let k = &self.keys;
        let keys = [k.alive(&node.id), k.nodes(), k.seen()];
        let args = [node.id.clone(), node.instance.clone()];
        self.fcall::<i64>("sk1_leave", &keys, &args).await.map(drop)
    }

    /// The heartbeat and every lease renewal: which of `held` this node still owns.
    pub(crate) async fn beat(
        &self,
        node: &Identity,
        held: &[(u32, u64)],
    ) -> Result<Vec<bool>, RedisError> {
        let k = &self.keys;
        let mut keys = vec![k.alive(&node.id), k.epochs(), k.seen(), k.clock()];
        let mut args = vec![
            node.id.clone(),
            node.instance.clone(),
            node.lease_ms.to_string(),
        ];
        for &(shard, epoch) in held {
            keys.push(k.owner(shard));
            args.push(shard.to_string());
            args.push(epoch.to_string());
        }
        let kept: Vec<i64> = self.fcall("sk1_beat", &keys, &args).await?;
        Ok(kept.into_iter().map(|flag| flag == 1).collect())
    }

    /// Claims `shard` if it has no owner; the owner value afterwards.
    pub(crate) async fn claim(&self, node: &Identity, shard: u32) -> Result<String, RedisError> {
        let keys = [
            self.keys.owner(shard),
            self.keys.epochs(),
            self.keys.alive(&node.id),
        ];
        let args = [
            shard.to_string(),
            node.id.clone(),
            node.lease_ms.to_string(),
            node.instance.clone(),
        ];
        self.fcall("sk1_claim", &keys, &args).await
    }

    /// Gives `shard` up if this node still owns it with `epoch`.
    pub(crate) async fn release(
        &self,
        node: &Identity,
        shard: u32,
        epoch: u64,
    ) -> Result<(), RedisError> {
        let keys = [self.keys.owner(shard)];
        let args = [owner_value(&node.id, epoch)];
        self.fcall::<i64>("sk1_release", &keys, &args)
            .await
            .map(drop)
    }

    /// Writes session changes (`None` deletes), each fenced by its owner epoch; the
    /// shards whose change Redis refused.
    pub(crate) async fn save(
        &self,
        node: &Identity,
        changes: &[(u32, u64, Option<String>)],
    ) -> Result<Vec<u32>, RedisError> {
        let mut keys = vec![self.keys.sessions()];
        let mut args = vec![node.id.clone()];
        for (shard, epoch, session) in changes {
            keys.push(self.keys.owner(*shard));
            args.push(shard.to_string());
            args.push(epoch.to_string());
            args.push(session.clone().unwrap_or_default());
        }
        self.fcall("sk1_save", &keys, &args).await
    }

    /// One shard's stored session JSON.
    pub(crate) async fn session(&self, shard: u32) -> Result<Option<String>, RedisError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.keys.sessions()).arg(shard);
        self.query(&cmd).await
    }

    /// Every stored session, as JSON by shard.
    pub(crate) async fn sessions(&self) -> Result<Vec<(String, String)>, RedisError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.sessions());
        self.query(&cmd).await
    }

    /// Asks for an identify permit.
    pub(crate) async fn grant(
        &self,
        node: &Identity,
        ask: &GrantAsk,
    ) -> Result<Verdict, RedisError> {
        let k = &self.keys;
        let keys = [
            k.clock(),
            k.buckets(),
            k.budget(),
            k.grants(),
            k.owner(ask.shard),
            k.grace(),
        ];
        let args = [
            ask.shard.to_string(),
            ask.bucket.to_string(),
            ask.request.to_string(),
            ask.spacing_ms.to_string(),
            ask.validity_ms.to_string(),
            ask.reserve
                .map_or_else(|| "-1".to_owned(), |r| r.to_string()),
            owner_value(&node.id, ask.epoch),
            ask.pause_ms.to_string(),
        ];
        let (verdict, n): (String, u64) = self.fcall("sk1_grant", &keys, &args).await?;
        Ok(match verdict.as_str() {
            "GRANT" => Verdict::Grant(n),
            "WAIT" => Verdict::Wait(n),
            "BUDGET" => Verdict::Budget(n),
            "NOTOWNER" => Verdict::NotOwner,
            _ => Verdict::Unknown,
        })
    }

    /// The IDENTIFY of a grant was written `elapsed` after its request was sent.
    pub(crate) async fn written(
        &self,
        ask: &GrantAsk,
        elapsed: Duration,
        gap: Duration,
    ) -> Result<(), RedisError> {
        let keys = [self.keys.grants(), self.keys.buckets()];
        let args = [
            ask.shard.to_string(),
            ask.request.to_string(),
            ask.bucket.to_string(),
            elapsed.as_millis().to_string(),
            gap.as_millis().to_string(),
            ask.validity_ms.to_string(),
            ask.spacing_ms.to_string(),
        ];
        self.fcall::<i64>("sk1_written", &keys, &args)
            .await
            .map(drop)
    }

    /// A granted permit was never used: its IDENTIFY was not written.
    pub(crate) async fn unused(&self, ask: &GrantAsk) -> Result<(), RedisError> {
        let k = &self.keys;
        let keys = [k.grants(), k.budget(), k.budget_lease()];
        let args = [
            ask.shard.to_string(),
            ask.request.to_string(),
            ask.validity_ms.to_string(),
        ];
        self.fcall::<i64>("sk1_unused", &keys, &args)
            .await
            .map(drop)
    }

    /// Starts a budget refresh if one is still due (figures unknown, `every` old or past
    /// their reset): the grants counter to charge, or `None` when another node is
    /// refreshing or no refresh is due any more.
    pub(crate) async fn budget_begin(
        &self,
        node: &Identity,
        lease: Duration,
        every: Duration,
    ) -> Result<Option<u64>, RedisError> {
        let k = &self.keys;
        let keys = [k.budget_lease(), k.budget(), k.clock()];
        let args = [
            node.id.clone(),
            lease.as_millis().to_string(),
            every.as_millis().to_string(),
        ];
        let counter: i64 = self.fcall("sk1_budget_begin", &keys, &args).await?;
        Ok(u64::try_from(counter).ok())
    }

    /// Ends a budget refresh with Discord's figures; the remaining count stored.
    pub(crate) async fn budget_set(
        &self,
        node: &Identity,
        figures: Figures,
        counter: u64,
    ) -> Result<Option<u64>, RedisError> {
        let k = &self.keys;
        let keys = [k.budget_lease(), k.budget(), k.clock()];
        let args = [
            node.id.clone(),
            figures.remaining.to_string(),
            figures.total.to_string(),
            figures.reset_after_ms.to_string(),
            counter.to_string(),
        ];
        let stored: i64 = self.fcall("sk1_budget_set", &keys, &args).await?;
        Ok(u64::try_from(stored).ok())
    }

    /// No grants for `pause` (after a Redis restart), unless a pause already runs.
    pub(crate) async fn pause_grants(&self, pause: Duration) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.grace())
            .arg(1)
            .arg("PX")
            .arg(pause.as_millis().max(1).to_string())
            .arg("NX");
        self.query::<Value>(&cmd).await.map(drop)
    }
}

/// Who this node is, as Redis knows it.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) id: String,
    /// Random per process: a second live process with the same id is told apart.
    pub(crate) instance: String,
    pub(crate) lease_ms: u64,
}

/// What every node of a cluster must agree on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms {
    pub(crate) total: u32,
    pub(crate) max_concurrency: u32,
    pub(crate) window_ms: u64,
    pub(crate) margin_ms: u64,
}

/// One grant request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrantAsk {
    pub(crate) shard: u32,
    pub(crate) epoch: u64,
    pub(crate) bucket: u32,
    /// The same for every retry of one ask: a retried request gets the same grant back.
    pub(crate) request: u64,
    pub(crate) spacing_ms: u64,
    pub(crate) validity_ms: u64,
    /// Session starts kept back (`None`: max(10, 5 % of the daily total), in Redis).
    pub(crate) reserve: Option<u32>,
    /// How long grants pause after Redis was silent (a restart).
    pub(crate) pause_ms: u64,
}

/// Discord's `session_start_limit`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figures {
    pub(crate) remaining: u32,
    pub(crate) total: u32,
    pub(crate) reset_after_ms: u64,
}

/// `"<node>:<epoch>"`.
pub(crate) fn owner_value(node: &str, epoch: u64) -> String {
    format!("{node}:{epoch}")
}

/// The epoch of `value` when it names `node`.
pub(crate) fn epoch_of(value: &str, node: &str) -> Option<u64> {
    let (owner, epoch) = value.rsplit_once(':')?;
    (owner == node).then(|| epoch.parse().ok()).flatten()
}
