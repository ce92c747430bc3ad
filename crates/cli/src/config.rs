//! Configuration: TOML with exactly the design's keys, `SHARDKEEPER_<SECTION>__<KEY>`
//! overrides, parsed once into typed values ("parse, don't validate").

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shardkeeper_cluster::{Auto, ClusterConfig, ShardIds};
use shardkeeper_protocol::{Compression, Intents, Token};

/// Prefix of environment overrides.
const ENV_PREFIX: &str = "SHARDKEEPER_";

/// A configuration problem, naming where it came from and the key.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {key}: {message}")]
pub(crate) struct ConfigError {
    origin: String,
    key: String,
    message: String,
}

impl ConfigError {
    fn new(origin: impl Into<String>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The file as written, with every key optional.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    discord: RawDiscord,
    shards: RawShards,
    identify: RawIdentify,
    store: RawStore,
    admin: RawAdmin,
    events: RawEvents,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDiscord {
    token_env: String,
    api_base: String,
    intents: RawIntents,
    compression: String,
    large_threshold: i64,
    ca_file: String,
}

/// The cluster's own defaults: every default of a cluster key is written once, there.
fn defaults() -> ClusterConfig {
    ClusterConfig::new(Token::new(""))
}

fn millis_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Default for RawDiscord {
    fn default() -> Self {
        let session = defaults().session;
        Self {
            token_env: "DISCORD_TOKEN".into(),
            api_base: defaults().api_base,
            intents: RawIntents::Names(session.intents.names().map(str::to_owned).collect()),
            compression: session.compression.name().into(),
            large_threshold: session.large_threshold.map_or(0, i64::from),
            ca_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum RawIntents {
    Names(Vec<String>),
    Bits(i64),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum RawAuto {
    Word(String),
    Number(i64),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawShards {
    total: RawAuto,
    ids: String,
}

impl Default for RawShards {
    fn default() -> Self {
        Self {
            total: RawAuto::Word("auto".into()),
            ids: "all".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIdentify {
    max_concurrency: RawAuto,
    window_ms: i64,
}

impl Default for RawIdentify {
    fn default() -> Self {
        Self {
            max_concurrency: RawAuto::Word("auto".into()),
            window_ms: millis_of(defaults().identify_window),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    path: String,
    flush_interval_ms: i64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            path: "data/shardkeeper.sled".into(),
            flush_interval_ms: millis_of(defaults().flush_interval),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    bind: String,
    token_env: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:7878".into(),
            token_env: "SHARDKEEPER_ADMIN_TOKEN".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEvents {
    sinks: Vec<String>,
}

impl Default for RawEvents {
    fn default() -> Self {
        Self {
            sinks: vec!["stdout".into()],
        }
    }
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SinkSpec {
    Stdout,
    File(PathBuf),
    WebSocket,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) token_env: String,
    pub(crate) api_base: String,
    pub(crate) intents: Intents,
    pub(crate) compression: Compression,
    pub(crate) large_threshold: u16,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) total: Auto,
    pub(crate) ids: ShardIds,
    pub(crate) max_concurrency: Auto,
    pub(crate) window: Duration,
    pub(crate) store_path: PathBuf,
    pub(crate) flush_interval: Duration,
    pub(crate) admin_bind: SocketAddr,
    pub(crate) admin_token_env: String,
    pub(crate) sinks: Vec<SinkSpec>,
}

impl Config {
    /// Loads `path` (or the built-in defaults) and applies environment overrides.
    pub(crate) fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        match path {
            Some(path) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|err| {
                    ConfigError::new(&origin, "(file)", format!("cannot read: {err}"))
                })?;
                Self::parse(&text, &origin, env)
            }
            None => Self::parse("", "built-in defaults", env),
        }
    }

    /// Parses TOML `text` (named `origin` in errors) and applies environment overrides.
    pub(crate) fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let origin = origin.to_owned();
        let mut table = text
            .parse::<toml::Table>()
            .map_err(|err| ConfigError::new(&origin, "(syntax)", err.message().to_owned()))?;
        let overrides = apply_env(&mut table, env)?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
                let key = err.path().to_string();
                let origin = overrides
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| origin.clone());
                ConfigError::new(origin, key, err.into_inner().to_string())
            })?;
        raw.validate(&origin, &overrides)
    }

    /// The cluster's configuration for this file and `token`.
    pub(crate) fn cluster(&self, token: Token) -> ClusterConfig {
        let mut cluster = ClusterConfig::new(token);
        cluster.api_base.clone_from(&self.api_base);
        cluster.session.intents = self.intents;
        cluster.session.compression = self.compression;
        cluster.session.large_threshold = Some(self.large_threshold);
        cluster.ca_file.clone_from(&self.ca_file);
        cluster.total = self.total;
        cluster.ids = self.ids.clone();
        cluster.max_concurrency = self.max_concurrency;
        cluster.identify_window = self.window;
        cluster.flush_interval = self.flush_interval;
        cluster
    }

    /// Reads a secret from the environment variable a `*.token_env` key names.
    pub(crate) fn secret(var: &str, key: &str) -> Result<Token, ConfigError> {
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Ok(Token::new(&value)),
            _ => Err(ConfigError::new(
                format!("environment variable {var}"),
                key,
                format!("not set; export {var} with the token ({key} names this variable)"),
            )),
        }
    }
}

/// Applies `SHARDKEEPER_<SECTION>__<KEY>=value`; returns key path → variable name.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut overrides = BTreeMap::new();
    for (var, value) in env {
        let Some((section, key)) = var
            .strip_prefix(ENV_PREFIX)
            .and_then(|rest| rest.split_once("__"))
        else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::new(var, section, "is not a section"));
        };
        section_table.insert(key.clone(), parsed);
        overrides.insert(
            format!("{section}.{key}"),
            format!("environment variable {var}"),
        );
    }
    Ok(overrides)
}

impl RawConfig {
    fn validate(
        self,
        file: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let fail = |key: &str, message: String| {
            let origin = overrides.get(key).map_or(file, String::as_str);
            ConfigError::new(origin, key, message)
        };
        let d = &self.discord;
        let intents = match &d.intents {
            RawIntents::Names(names) => Intents::from_names(names.iter().map(String::as_str))
                .map_err(|err| fail("discord.intents", err.to_string()))?,
            RawIntents::Bits(bits) => u64::try_from(*bits)
                .ok()
                .and_then(Intents::from_bits)
                .ok_or_else(|| {
                    fail(
                        "discord.intents",
                        format!("{bits} is not a valid intents bitfield"),
                    )
                })?,
        };
        let compression = d
            .compression
            .parse()
            .map_err(|err| fail("discord.compression", err))?;
        let large_threshold = u16::try_from(d.large_threshold)
            .ok()
            .filter(|t| (50..=250).contains(t))
            .ok_or_else(|| {
                fail(
                    "discord.large_threshold",
                    format!("{} is not between 50 and 250", d.large_threshold),
                )
            })?;
        if !(d.api_base.starts_with("https://") || d.api_base.starts_with("http://")) {
            return Err(fail(
                "discord.api_base",
                format!("{:?} is not an http(s) URL", d.api_base),
            ));
        }
        if d.token_env.trim().is_empty() {
            return Err(fail(
                "discord.token_env",
                "must name an environment variable".into(),
            ));
        }
        let total = auto(&self.shards.total).map_err(|m| fail("shards.total", m))?;
        let ids = shard_ids(&self.shards.ids).map_err(|m| fail("shards.ids", m))?;
        let max_concurrency = auto(&self.identify.max_concurrency)
            .map_err(|m| fail("identify.max_concurrency", m))?;
        let window =
            millis(self.identify.window_ms, 1).map_err(|m| fail("identify.window_ms", m))?;
        let flush_interval = millis(self.store.flush_interval_ms, 10)
            .map_err(|m| fail("store.flush_interval_ms", m))?;
        if self.store.path.trim().is_empty() {
            return Err(fail("store.path", "must not be empty".into()));
        }
        let admin_bind = self.admin.bind.parse().map_err(|_| {
            fail(
                "admin.bind",
                format!(
                    "{:?} is not an address like 127.0.0.1:7878",
                    self.admin.bind
                ),
            )
        })?;
        let sinks = self
            .events
            .sinks
            .iter()
            .map(|spec| sink(spec).map_err(|m| fail("events.sinks", m)))
            .collect::<Result<_, _>>()?;
        Ok(Config {
            token_env: d.token_env.clone(),
            api_base: d.api_base.clone(),
            intents,
            compression,
            large_threshold,
            ca_file: (!d.ca_file.is_empty()).then(|| PathBuf::from(&d.ca_file)),
            total,
            ids,
            max_concurrency,
            window,
            store_path: PathBuf::from(&self.store.path),
            flush_interval,
            admin_bind,
            admin_token_env: self.admin.token_env,
            sinks,
        })
    }
}

fn auto(value: &RawAuto) -> Result<Auto, String> {
    match value {
        RawAuto::Word(word) if word == "auto" => Ok(Auto::Auto),
        RawAuto::Number(n) => u32::try_from(*n)
            .ok()
            .filter(|n| *n >= 1)
            .map(Auto::Fixed)
            .ok_or_else(|| format!("{n} is not a positive integer")),
        RawAuto::Word(word) => Err(format!(
            "expected \"auto\" or a positive integer, got {word:?}"
        )),
    }
}

fn shard_ids(value: &str) -> Result<ShardIds, String> {
    if value == "all" {
        return Ok(ShardIds::All);
    }
    let parsed = value
        .split_once("..")
        .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((start, end)) if start < end => Ok(ShardIds::Range(start..end)),
        _ => Err(format!(
            "expected \"all\" or a half-open range \"A..B\" with A < B, got {value:?}"
        )),
    }
}

fn millis(value: i64, min: u64) -> Result<Duration, String> {
    u64::try_from(value)
        .ok()
        .filter(|v| *v >= min)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{value} is not a number of milliseconds ≥ {min}"))
}

fn sink(spec: &str) -> Result<SinkSpec, String> {
    match spec {
        "stdout" => Ok(SinkSpec::Stdout),
        "websocket" => Ok(SinkSpec::WebSocket),
        other => shardkeeper_cluster::sink_path(other)
            .map(SinkSpec::File)
            .ok_or_else(|| {
                format!(
                    "unknown sink {other:?}; expected \"stdout\", \"file:PATH\" or \"websocket\""
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use shardkeeper_cluster::{Auto, ShardIds};

    use super::{Config, RawConfig, SinkSpec};

    fn config_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
    }

    #[test]
    fn default_toml_equals_the_built_in_defaults() {
        let text =
            std::fs::read_to_string(config_dir().join("default.toml")).expect("default.toml");
        let parsed: RawConfig = toml::from_str(&text).expect("parses");
        assert_eq!(parsed, RawConfig::default());
    }

    #[test]
    fn every_shipped_config_loads() {
        for entry in std::fs::read_dir(config_dir())
            .expect("config dir")
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(Some(&path), [])
                    .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            }
        }
    }

    #[test]
    fn env_overrides_and_typed_values() {
        let env = [
            ("SHARDKEEPER_SHARDS__TOTAL".to_owned(), "16".to_owned()),
            ("SHARDKEEPER_SHARDS__IDS".to_owned(), "4..8".to_owned()),
            (
                "SHARDKEEPER_EVENTS__SINKS".to_owned(),
                r#"["file:out.ndjson", "websocket"]"#.to_owned(),
            ),
            (
                "SHARDKEEPER_ADMIN_TOKEN".to_owned(),
                "not an override".to_owned(),
            ),
        ];
        let config = Config::load(None, env).expect("loads");
        assert_eq!(config.total, Auto::Fixed(16));
        assert_eq!(config.ids, ShardIds::Range(4..8));
        assert_eq!(
            config.sinks,
            [SinkSpec::File("out.ndjson".into()), SinkSpec::WebSocket]
        );
    }

    #[test]
    fn errors_name_the_key_and_its_origin() {
        let cases = [
            ("SHARDKEEPER_SHARDS__TOTAL", "zero", "shards.total"),
            ("SHARDKEEPER_SHARDS__IDS", "8..4", "shards.ids"),
            (
                "SHARDKEEPER_DISCORD__INTENTS",
                r#"["GUILDS", "NOPE"]"#,
                "discord.intents",
            ),
            (
                "SHARDKEEPER_DISCORD__COMPRESSION",
                "gzip",
                "discord.compression",
            ),
            ("SHARDKEEPER_ADMIN__BIND", "localhost", "admin.bind"),
            ("SHARDKEEPER_EVENTS__SINKS", r#"["kafka"]"#, "events.sinks"),
            (
                "SHARDKEEPER_STORE__FLUSH_INTERVAL_MS",
                "-5",
                "store.flush_interval_ms",
            ),
            ("SHARDKEEPER_SHARDS__TOTL", "3", "shards"),
        ];
        for (var, value, key) in cases {
            let err = Config::load(None, [(var.to_owned(), value.to_owned())])
                .expect_err(var)
                .to_string();
            assert!(err.contains(key), "{err}");
            assert!(err.contains(var), "{err}");
        }
    }
}
