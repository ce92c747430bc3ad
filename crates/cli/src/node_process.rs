//! The environment of a node process against the simulator (for `demo --nodes` and
//! `bench failover`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// How a node process runs against the simulator.
pub(crate) struct NodeSpec<'a> {
    pub(crate) api_base: String,
    pub(crate) token: &'a str,
    pub(crate) admin_token: &'a str,
    pub(crate) total: u32,
    pub(crate) window_ms: u64,
    pub(crate) redis_url: String,
    pub(crate) id: &'a str,
    pub(crate) lease_ms: u64,
    pub(crate) admin: SocketAddr,
    pub(crate) sinks: String,
}

impl NodeSpec<'_> {
    /// `exe run` in redis mode with this node's environment.
    pub(crate) fn command(&self, exe: &Path) -> Command {
        let mut command = Command::new(exe);
        command
            .arg("run")
            .env("DISCORD_TOKEN", self.token)
            .env("SHARDKEEPER_ADMIN_TOKEN", self.admin_token)
            .env("SHARDKEEPER_DISCORD__API_BASE", &self.api_base)
            .env("SHARDKEEPER_SHARDS__TOTAL", self.total.to_string())
            .env(
                "SHARDKEEPER_IDENTIFY__WINDOW_MS",
                self.window_ms.to_string(),
            )
            .env("SHARDKEEPER_ADMIN__BIND", self.admin.to_string())
            .env("SHARDKEEPER_EVENTS__SINKS", &self.sinks)
            .env("SHARDKEEPER_CLUSTER__MODE", "redis")
            .env("SHARDKEEPER_CLUSTER__URL", &self.redis_url)
            .env("SHARDKEEPER_CLUSTER__NODE_ID", self.id)
            .env("SHARDKEEPER_CLUSTER__LEASE_MS", self.lease_ms.to_string())
            .stdin(Stdio::null());
        command
    }
}
