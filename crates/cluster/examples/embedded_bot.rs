//! A small bot that embeds shardkeeper: it counts MESSAGE_CREATE per guild, sets a
//! presence on every shard and asks for the members of one guild.
//!
//! It runs against the bundled gateway simulator, so it needs no Discord token:
//!
//! ```sh
//! cargo run -p shardkeeper-cluster --example embedded_bot
//! ```
//!
//! Against Discord, drop the simulator and keep `api_base` at its default.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shardkeeper_cluster::{ChannelSink, Cluster, ClusterConfig};
use shardkeeper_protocol::payload::{
    Activity, ActivityType, PresenceUpdate, RequestGuildMembers, Status,
};
use shardkeeper_protocol::{Snowflake, Token};
use shardkeeper_sim::{Sim, SimConfig};

const TOKEN: &str = "embedded-example-token";

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Sim::start(SimConfig {
        token: TOKEN.into(),
        shards: 4,
        max_concurrency: 4,
        events_per_sec: 20.0,
        ..SimConfig::default()
    })
    .await?;

    let mut config = ClusterConfig::new(Token::new(TOKEN));
    config.api_base = sim.api_base();
    let (sink, mut events) = ChannelSink::new();
    let cluster = Cluster::builder(config)
        .sink(Arc::new(sink))
        .start()
        .await?;

    let mut per_guild: BTreeMap<u64, u64> = BTreeMap::new();
    let listen = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(listen);
    loop {
        tokio::select! {
            () = &mut listen => break,
            event = events.recv() => {
                let Some(event) = event else { break };
                if &*event.t == "MESSAGE_CREATE"
                    && let Some(guild) = event.guild_id()
                {
                    *per_guild.entry(guild).or_default() += 1;
                }
            }
        }
    }
    for (guild, count) in &per_guild {
        println!(
            "guild {guild}: {count} messages (shard {})",
            cluster.shard_for_guild(*guild)
        );
    }

    let presence = PresenceUpdate {
        since: None,
        activities: vec![Activity {
            name: "the shards".into(),
            kind: ActivityType::WATCHING,
            url: None,
            state: None,
        }],
        status: Status::Online,
        afk: false,
    };
    let shards = cluster.presence(None, presence).await?;
    println!("presence set on {shards} shards");

    if let Some(&guild) = per_guild.keys().next() {
        let request = RequestGuildMembers {
            guild_id: Snowflake(guild),
            query: Some(String::new()),
            limit: Some(0),
            presences: false,
            user_ids: None,
            nonce: None,
        };
        let chunks = cluster.request_members(request).await?;
        let members: usize = chunks
            .iter()
            .filter_map(|chunk| serde_json::from_str::<serde_json::Value>(chunk.get()).ok())
            .filter_map(|chunk| chunk["members"].as_array().map(Vec::len))
            .sum();
        println!(
            "guild {guild} has {members} members in {} chunks",
            chunks.len()
        );
    }

    cluster.shutdown().await?;
    sim.shutdown().await;
    Ok(())
}
