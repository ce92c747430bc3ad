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
    /// Reconnect a shard now (RESUME), or with --fresh start a new session; with --all,
    /// a rolling restart of every shard, followed to its end.
    Restart {
        /// Shard id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u32>,
        /// Every shard of the bot, a step of one shard per identify bucket at a time,
        /// as a job whose progress is shown until it ends.
        #[arg(long)]
        all: bool,
        /// Drop the session and IDENTIFY (spends a session start per shard).
        #[arg(long)]
        fresh: bool,
        /// With --all --fresh: even if the session-start budget cannot afford it.
        #[arg(long, requires = "all")]
        force: bool,
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
    /// Stop a running job (a rolling restart) after its current step.
    Cancel {
        /// Job id, as `restart --all` printed it.
        job: String,
    },
}

/// The admin API, with the token.
struct Client {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

impl Client {
    /// Sends a request without a body; the JSON answer of a 2xx, else the API's error.
    fn call(&self, method: &str, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut response = if method == "GET" {
            self.agent
                .get(&url)
                .header("Authorization", &self.auth)
                .call()
        } else {
            self.agent
                .post(&url)
                .header("Authorization", &self.auth)
                .send_empty()
        }
        .map_err(|err| anyhow::anyhow!("cannot reach the admin API at {}: {err}", self.base))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            anyhow::bail!(
                "admin API answered {status}: {}",
                body["error"].as_str().unwrap_or("no error message")
            );
        }
        Ok(body)
    }
}

pub(crate) fn run(args: &ShardsArgs) -> anyhow::Result<()> {
    let token = crate::config::Config::secret(&args.token_env, "--token-env")?;
    let client = Client {
        base: args.admin.trim_end_matches('/').to_owned(),
        auth: format!("Bearer {}", token.expose()),
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into(),
    };
    match &args.action {
        Action::List => print_table(&client.call("GET", "/api/v1/shards")?),
        Action::Restart {
            all: true,
            fresh,
            force,
            ..
        } => {
            let path = format!("/api/v1/shards/restart?fresh={fresh}&force={force}");
            let started = client.call("POST", &path)?;
            let job = started["job"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("the admin API started no job: {started}"))?;
            println!(
                "job {job}: rolling restart of {} shards",
                started["shards"].as_array().map_or(0, Vec::len)
            );
            follow(&client, job)?;
        }
        Action::Restart { id, fresh, .. } => {
            let id = id.ok_or_else(|| anyhow::anyhow!("a shard id or --all"))?;
            let body = client.call(
                "POST",
                &format!("/api/v1/shards/{id}/restart?fresh={fresh}"),
            )?;
            println!("accepted: shards {}", body["shards"]);
        }
        Action::Stop { id } => {
            let body = client.call("POST", &format!("/api/v1/shards/{id}/stop"))?;
            println!("accepted: shards {}", body["shards"]);
        }
        Action::Start { id } => {
            let body = client.call("POST", &format!("/api/v1/shards/{id}/start"))?;
            println!("accepted: shards {}", body["shards"]);
        }
        Action::Cancel { job } => {
            let body = client.call("POST", &format!("/api/v1/jobs/{job}/cancel"))?;
            println!(
                "job {job}: cancel asked; {} of {} done",
                body["done"], body["total"]
            );
        }
    }
    Ok(())
}

/// Shows a job's progress until it ends: a bar redrawn in place on a terminal, a line
/// per step otherwise. Fails unless the job completed.
fn follow(client: &Client, job: &str) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stderr().is_terminal();
    let mut shown = None;
    let ended = loop {
        let status = client.call("GET", &format!("/api/v1/jobs/{job}"))?;
        let line = progress_line(&status);
        if shown.as_ref() != Some(&line) {
            let mut err = std::io::stderr().lock();
            if terminal {
                let _ = write!(err, "\r\x1b[2K{line}");
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
            shown = Some(line);
        }
        if status["state"] != "running" {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    if terminal {
        eprintln!();
    }
    for error in ended["errors"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        eprintln!(
            "shard {}: {}",
            error["shard"],
            error["error"].as_str().unwrap_or("?")
        );
    }
    match ended["state"].as_str() {
        Some("completed") => {
            println!("job {job}: completed, {} shards restarted", ended["done"]);
            Ok(())
        }
        other => anyhow::bail!(
            "job {job} {}: {} of {} done, {} errors",
            other.unwrap_or("ended"),
            ended["done"],
            ended["total"],
            ended["errors"].as_array().map_or(0, Vec::len)
        ),
    }
}

/// `[#########-----------]  32/64  shard 33`.
fn progress_line(job: &Value) -> String {
    const WIDTH: u64 = 30;
    let done = job["done"].as_u64().unwrap_or(0);
    let total = job["total"].as_u64().unwrap_or(0).max(1);
    let filled = (done * WIDTH / total).min(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    let current = job["current"]
        .as_u64()
        .map_or_else(String::new, |shard| format!("  shard {shard}"));
    format!("[{bar}] {done:>5}/{total}{current}")
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
