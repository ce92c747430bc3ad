//! `twilight-reader`: the smallest gateway client built on twilight-gateway 0.18 that
//! `shardkeeper bench compare` measures against `shardkeeper run`.
//!
//! It connects shards `0..N` of `N` to a simulator, drives each shard on its own task and
//! counts dispatches: `--mode raw` counts every [`Message::Text`] the shard yields (no
//! parse beyond the one twilight does itself to read `op`, `s` and `t`); `--mode typed`
//! deserializes each into a twilight-model [`Event`] (`next_event(EventTypeFlags::all())`).
//! It prints `events <total> failed <n>` once a second, and again at once for every line
//! read on stdin, so the bench can read the count at the instants it reads the CPU.
//!
//! It is not part of shardkeeper: it lives outside the main workspace so twilight stays
//! out of the product's build and CI's. twilight-gateway chooses its transport
//! compression at compile time, so each compression is a build of its own (features
//! `zlib`, `zstd`; `build.sh` makes all three).

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use twilight_gateway::queue::InMemoryQueue;
use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Message, Shard, ShardId, StreamExt as _,
};

/// The transport compression this build reads, fixed by twilight-gateway's features.
const BUILT_COMPRESSION: &str = if cfg!(feature = "zstd") {
    "zstd-stream"
} else if cfg!(feature = "zlib") {
    "zlib-stream"
} else {
    "none"
};

/// Deserialization errors logged per shard (a simulator event twilight-model rejects is
/// rejected every time).
const LOGGED_ERRORS: u32 = 3;

/// Session starts the identify queue believes it has (the simulator keeps the real count).
const SESSION_STARTS: u32 = 100_000;

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("twilight-reader: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("twilight-reader: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

const USAGE: &str = "usage: twilight-reader --gateway ws://HOST:PORT [--token TOKEN] [--shards N] \
[--max-concurrency K] [--compression none|zlib-stream|zstd-stream] [--mode raw|typed] [--stats FILE]";

/// What to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every text message, unparsed.
    Raw,
    /// Dispatches deserialized into twilight-model events.
    Typed,
}

/// Command-line options.
#[derive(Debug)]
struct Args {
    gateway: String,
    token: String,
    shards: u32,
    max_concurrency: u16,
    mode: Mode,
    stats: Option<std::path::PathBuf>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let (mut gateway, mut token, mut shards) = (None, String::from("bench-token"), 1);
        let (mut max_concurrency, mut mode, mut stats) = (None, Mode::Raw, None);
        let mut compression = String::from(BUILT_COMPRESSION);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--gateway" => gateway = Some(value()?.trim_end_matches('/').to_owned()),
                "--token" => token = value()?,
                "--shards" => shards = number(&flag, &value()?)?,
                "--max-concurrency" => max_concurrency = Some(number(&flag, &value()?)?),
                "--compression" => compression = value()?,
                "--mode" => {
                    mode = match value()?.as_str() {
                        "raw" => Mode::Raw,
                        "typed" => Mode::Typed,
                        other => return Err(format!("unknown mode {other:?}")),
                    };
                }
                "--stats" => stats = Some(value()?.into()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if compression != BUILT_COMPRESSION {
            return Err(format!(
                "this build reads {BUILT_COMPRESSION}, not {compression:?}: twilight-gateway \
                 picks the compression at compile time (build with --features zlib or zstd, \
                 or run bench/compare/build.sh)"
            ));
        }
        let shards = shards.max(1);
        Ok(Self {
            gateway: gateway.ok_or("--gateway is required")?,
            token,
            shards,
            max_concurrency: max_concurrency
                .unwrap_or_else(|| u16::try_from(shards).unwrap_or(u16::MAX)),
            mode,
            stats,
        })
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: {value:?} is not a number"))
}

/// Dispatches counted and messages twilight could not turn into an event, over all shards.
#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn line(&self) -> String {
        format!(
            "events {} failed {}\n",
            self.events.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        )
    }
}

async fn run(args: Args) -> ExitCode {
    let counters = Arc::new(Counters::default());
    // One bucket per shard when max_concurrency equals the shard count, as in the bench.
    let queue = InMemoryQueue::new(
        args.max_concurrency,
        SESSION_STARTS,
        Duration::from_secs(24 * 60 * 60),
        SESSION_STARTS,
    );
    let config = ConfigBuilder::new(
        args.token.clone(),
        Intents::GUILDS | Intents::GUILD_MESSAGES,
    )
    .proxy_url(args.gateway.clone())
    .queue(queue)
    .build();
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..args.shards {
        let shard = Shard::with_config(ShardId::new(id, args.shards), config.clone());
        let counters = Arc::clone(&counters);
        match args.mode {
            Mode::Raw => tasks.spawn(raw(shard, counters)),
            Mode::Typed => tasks.spawn(typed(shard, counters)),
        };
    }
    tokio::spawn(report_on_request(Arc::clone(&counters)));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(error) = report(&counters, args.stats.as_deref()).await {
                    eprintln!("twilight-reader: writing the count: {error}");
                    return ExitCode::FAILURE;
                }
            }
            ended = tasks.join_next() => {
                eprintln!("twilight-reader: a shard ended: {ended:?}");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Counts every text message; twilight has already read its `op`, `s` and `t`.
async fn raw(mut shard: Shard<InMemoryQueue>, counters: Arc<Counters>) -> String {
    while let Some(item) = shard.next().await {
        match item {
            Ok(Message::Text(_)) => {
                counters.events.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Message::Close(frame)) => eprintln!("shard {}: closed {frame:?}", shard.id()),
            Err(error) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("shard {}: {error}", shard.id());
            }
        }
    }
    format!("shard {} stream ended", shard.id())
}

/// Deserializes every message into a twilight-model event and counts the dispatches.
async fn typed(mut shard: Shard<InMemoryQueue>, counters: Arc<Counters>) -> String {
    let mut logged = 0;
    while let Some(item) = shard.next_event(EventTypeFlags::all()).await {
        match item {
            Ok(event) if is_dispatch(&event) => {
                counters.events.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::GatewayClose(frame)) => eprintln!("shard {}: closed {frame:?}", shard.id()),
            Ok(_) => {}
            Err(error) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                if logged < LOGGED_ERRORS {
                    logged += 1;
                    let source = std::error::Error::source(&error)
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    eprintln!("shard {}: {source}: {error}", shard.id());
                }
            }
        }
    }
    format!("shard {} stream ended", shard.id())
}

/// Dispatch events have a name (`MESSAGE_CREATE`); gateway ones (HELLO, ACK) do not.
fn is_dispatch(event: &Event) -> bool {
    event.kind().name().is_some()
}

/// Prints the count (and writes it to `stats` when given).
async fn report(counters: &Counters, stats: Option<&std::path::Path>) -> std::io::Result<()> {
    let line = counters.line();
    if let Some(path) = stats {
        tokio::fs::write(path, &line).await?;
    }
    // One locked write of one short line: concurrent reports never interleave.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.flush()
}

/// Prints the count at once for every line read on stdin.
async fn report_on_request(counters: Arc<Counters>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {
        if report(&counters, None).await.is_err() {
            return;
        }
    }
}
