//! The key layout of one bot's namespace (documented in `docs/cluster.md`).

/// Keys under `<namespace>:`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Self {
        Self {
            prefix: namespace.to_owned(),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Hash: protocol, total, max_concurrency of the bot.
    pub(crate) fn meta(&self) -> String {
        self.key("meta")
    }
    /// Redis's clock as last read by a function (never runs backwards).
    pub(crate) fn clock(&self) -> String {
        self.key("clock")
    }
    /// Hash: node id → its JSON description.
    pub(crate) fn nodes(&self) -> String {
        self.key("nodes")
    }
    /// Hash: node id → Redis time of its last heartbeat.
    pub(crate) fn seen(&self) -> String {
        self.key("seen")
    }
    /// String with a lease: the instance token of the live node `node`.
    pub(crate) fn alive(&self, node: &str) -> String {
        self.key(&format!("alive:{node}"))
    }
    /// String with a lease: `"<node>:<epoch>"` of the shard's owner.
    pub(crate) fn owner(&self, shard: u32) -> String {
        self.key(&format!("owner:{shard}"))
    }
    /// Hash: shard → last epoch claimed.
    pub(crate) fn epochs(&self) -> String {
        self.key("epochs")
    }
    /// Hash: shard → stored session JSON.
    pub(crate) fn sessions(&self) -> String {
        self.key("sessions")
    }
    /// Hash: bucket → Redis time from which it may grant again.
    pub(crate) fn buckets(&self) -> String {
        self.key("buckets")
    }
    /// Hash: shard → `"<request>:<expires>"` of its open grant.
    pub(crate) fn grants(&self) -> String {
        self.key("grants")
    }
    /// Hash: remaining, total, reset_at, fetched_at, granted.
    pub(crate) fn budget(&self) -> String {
        self.key("budget")
    }
    /// String with a lease: the node refreshing the budget.
    pub(crate) fn budget_lease(&self) -> String {
        self.key("budget:lease")
    }
    /// String with a lease: no grants while it exists (after a Redis restart).
    pub(crate) fn grace(&self) -> String {
        self.key("grace")
    }
    /// Hash: shard → its owner's last published snapshot (JSON).
    pub(crate) fn status(&self) -> String {
        self.key("status")
    }
    /// Stream: commands for the shards of node `node`.
    pub(crate) fn commands(&self, node: &str) -> String {
        self.key(&format!("commands:{node}"))
    }
    /// String with a lease: the answer to command `id`.
    pub(crate) fn reply(&self, id: &str) -> String {
        self.key(&format!("reply:{id}"))
    }
    /// Stream: every operator action on any node.
    pub(crate) fn audit(&self) -> String {
        self.key("audit")
    }
}
