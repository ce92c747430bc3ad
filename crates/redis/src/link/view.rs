//! One reconcile round's reading of the namespace, in one pipeline.

use redis::RedisError;

use super::Link;

impl Link {
    /// The live nodes' descriptions, owners of `0..total`, buckets and budget, read
    /// together for one reconcile round.
    pub(crate) async fn view(&self, total: u32) -> Result<View, RedisError> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(k.nodes());
        pipe.cmd("HGETALL").arg(k.buckets());
        pipe.cmd("HGETALL").arg(k.budget());
        pipe.cmd("TIME");
        pipe.cmd("PTTL").arg(k.grace());
        pipe.cmd("MGET")
            .arg((0..total.max(1)).map(|s| k.owner(s)).collect::<Vec<_>>());
        let mut conn = self.conn.clone();
        let (nodes, buckets, budget, time, grace, mut owners): Reading =
            pipe.query_async(&mut conn).await?;
        owners.truncate(total as usize);
        let mut alive_cmd = redis::pipe();
        for (id, _) in &nodes {
            alive_cmd.cmd("EXISTS").arg(k.alive(id));
        }
        let alive: Vec<bool> = if nodes.is_empty() {
            Vec::new()
        } else {
            alive_cmd.query_async(&mut conn).await?
        };
        Ok(View {
            nodes: nodes
                .into_iter()
                .zip(alive)
                .map(|((id, info), alive)| (id, info, alive))
                .collect(),
            buckets,
            budget,
            redis_now_ms: time.0 * 1000 + time.1 / 1000,
            grace: grace > 0,
            owners,
        })
    }
}

/// One reconcile round's reading of the namespace.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    /// Node id, JSON description, whether its lease is live.
    pub(crate) nodes: Vec<(String, String, bool)>,
    /// Bucket → Redis time it may grant again.
    pub(crate) buckets: Vec<(u32, u64)>,
    /// The budget hash.
    pub(crate) budget: Vec<(String, String)>,
    /// Redis's clock when read.
    pub(crate) redis_now_ms: u64,
    /// Whether grants are paused (after a Redis restart).
    pub(crate) grace: bool,
    /// Owner value of each shard, by id.
    pub(crate) owners: Vec<Option<String>>,
}

impl View {
    /// A number from the budget hash.
    pub(crate) fn budget_field(&self, name: &str) -> Option<u64> {
        self.budget
            .iter()
            .find(|(field, _)| field == name)
            .and_then(|(_, value)| value.parse().ok())
    }
}

/// The replies of [`Link::view`]'s pipeline, in order.
type Reading = (
    Vec<(String, String)>,
    Vec<(u32, u64)>,
    Vec<(String, String)>,
    (u64, u64),
    i64,
    Vec<Option<String>>,
);
