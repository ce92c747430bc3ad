//! `shardkeeper shards …`: operator commands over the admin API.

use clap::{Args, Subcommand};
use serde_json::Value;

/// Options of `shardkeeper shards`.
#[derive(Debug, Args)]
pub(crate) struct ShardsArgs {
    /// Base URL of the admin API.
    #[arg(long, default_value = "http://127.0.0.1:7878")]
    admin: String,
    /// Environment variable holding the admin token.
    #[arg(long, default_value = "SHARDKEEPER_ADMIN_TOKEN")]
    token_env: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List every shard with its state and counters.
    List,
    /// Reconnect a shard now (RESUME), or with --fresh start a new session.
    Restart {
        /// Shard id.
        id: u32,
        /// Drop the session and IDENTIFY (spends a session start).
        #[arg(long)]
        fresh: bool,
    },
    /// Close a shard with 4000 and keep it stopped (its session stays resumable).
    Stop {
        /// Shard id.
        id: u32,
    },
    /// Start a stopped, quarantined or failed shard.
    Start {
        /// Shard id.
        id: u32,
    },
}

pub(crate) fn run(args: &ShardsArgs) -> anyhow::Result<()> {
    let token = crate::config::Config::secret(&args.token_env, "--token-env")?;
    let base = args.admin.trim_end_matches('/');
    let (method, path) = match &args.action {
        Action::List => ("GET", "/api/v1/shards".to_owned()),
        Action::Restart { id, fresh } => {
            ("POST", format!("/api/v1/shards/{id}/restart?fresh={fresh}"))
        }
        Action::Stop { id } => ("POST", format!("/api/v1/shards/{id}/stop")),
        Action::Start { id } => ("POST", format!("/api/v1/shards/{id}/start")),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{base}{path}");
    let auth = format!("Bearer {}", token.expose());
    let mut response = if method == "GET" {
        agent.get(&url).header("Authorization", &auth).call()
    } else {
        agent.post(&url).header("Authorization", &auth).send_empty()
    }
    .map_err(|err| anyhow::anyhow!("cannot reach the admin API at {base}: {err}"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        anyhow::bail!(
            "admin API answered {status}: {}",
            body["error"].as_str().unwrap_or("no error message")
        );
    }
    match &args.action {
        Action::List => print_table(&body),
        _ => println!("accepted: shards {}", body["shards"]),
    }
    Ok(())
}

/// The shard table; in cluster mode (shards carry `node`) with each shard's node.
fn print_table(body: &Value) {
    let shards = body["shards"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let clustered = shards.iter().any(|s| s.get("node").is_some());
    let node = |shard: &Value| {
        if clustered {
            format!("  {}", shard["node"].as_str().unwrap_or("-"))
        } else {
            String::new()
        }
    };
    println!(
        "{:>5}  {:<12} {:>8} {:>10} {:>6} {:>8} {:>10} {:>10} {:>6}{}",
        "id",
        "state",
        "latency",
        "seq",
        "guilds",
        "resumes",
        "identifies",
        "reconnects",
        "close",
        if clustered { "  node" } else { "" }
    );
    for shard in shards {
        let field = |key: &str| match &shard[key] {
            Value::Null => "-".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!(
            "{:>5}  {:<12} {:>8} {:>10} {:>6} {:>8} {:>10} {:>10} {:>6}{}",
            field("id"),
            field("state"),
            field("latency_ms"),
            field("seq"),
            field("guilds"),
            field("resumes"),
            field("identifies"),
            field("reconnects"),
            field("last_close_code"),
            node(shard)
        );
    }
}
