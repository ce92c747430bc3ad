//! Configuration: TOML with exactly the design's keys, `SHARDKEEPER_<SECTION>__<KEY>`
//! overrides, parsed once into typed values ("parse, don't validate").
//!
//! Each key is written once: its default lives in the typed configuration it sets
//! ([`ClusterConfig::new`] for the cluster's keys, [`Config::default`] for the rest),
//! and its one entry in [`KEYS`] names it and parses its value. A test keeps
//! `config/default.toml` and `docs/configuration.md` in step with [`KEYS`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use shardkeeper_cluster::{Auto, ClusterConfig, ShardIds};
use shardkeeper_protocol::{Intents, Token};
use toml::Value;

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
    pub(crate) fn new(
        origin: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            origin: origin.into(),
            key: key.into(),
            message: message.into(),
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

/// The validated configuration: the cluster's (with an empty token until
/// [`Config::cluster`] adds the real one) and what only the process uses.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    cluster: ClusterConfig,
    pub(crate) token_env: String,
    pub(crate) store_path: PathBuf,
    pub(crate) admin_bind: SocketAddr,
    pub(crate) admin_token_env: String,
    /// "" = no read-only token.
    pub(crate) read_token_env: String,
    pub(crate) sinks: Vec<SinkSpec>,
    pub(crate) mode: Mode,
    /// The Redis URL; may hold a password, so it is kept like a token.
    pub(crate) redis_url: Token,
    pub(crate) namespace: String,
    /// "" = `<hostname>-<pid>`.
    pub(crate) node_id: String,
    pub(crate) lease: Duration,
    pub(crate) capacity: u32,
    /// "" = the admin bind address.
    pub(crate) advertise_admin: String,
}

/// Single process (sled) or several nodes sharing one bot through Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Single,
    Redis,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster: ClusterConfig::new(Token::new("")),
            token_env: "DISCORD_TOKEN".into(),
            store_path: PathBuf::from("data/shardkeeper.sled"),
            admin_bind: SocketAddr::from(([127, 0, 0, 1], 7878)),
            admin_token_env: "SHARDKEEPER_ADMIN_TOKEN".into(),
            read_token_env: "SHARDKEEPER_READ_TOKEN".into(),
            sinks: vec![SinkSpec::Stdout],
            mode: Mode::Single,
            redis_url: Token::new("redis://127.0.0.1:6379/0"),
            namespace: "shardkeeper".into(),
            node_id: String::new(),
            lease: Duration::from_secs(10),
            capacity: 0,
            advertise_admin: String::new(),
        }
    }
}

/// One key of the file: its `section.key` name and how its value sets the configuration.
struct Key {
    name: &'static str,
    set: fn(&mut Config, Value) -> Result<(), String>,
}

/// Every key of the file, in the order `config/default.toml` lists them.
const KEYS: &[Key] = &[
    Key {
        name: "discord.token_env",
        set: |c, v| {
            c.token_env = env_name(v)?;
            Ok(())
        },
    },
    Key {
        name: "discord.api_base",
        set: |c, v| {
            c.cluster.api_base = http_url(v)?;
            Ok(())
        },
    },
    Key {
        name: "discord.intents",
        set: |c, v| {
            c.cluster.session.intents = intents(v)?;
            Ok(())
        },
    },
    Key {
        name: "discord.compression",
        set: |c, v| {
            c.cluster.session.compression = string(v)?.parse()?;
            Ok(())
        },
    },
    Key {
        name: "discord.large_threshold",
        set: |c, v| {
            c.cluster.session.large_threshold = Some(within(v, 50, 250)?);
            Ok(())
        },
    },
    Key {
        name: "discord.ca_file",
        set: |c, v| {
            c.cluster.ca_file = Some(string(v)?)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from);
            Ok(())
        },
    },
    Key {
        name: "shards.total",
        set: |c, v| {
            c.cluster.total = auto(v)?;
            Ok(())
        },
    },
    Key {
        name: "shards.ids",
        set: |c, v| {
            c.cluster.ids = shard_ids(&string(v)?)?;
            Ok(())
        },
    },
    Key {
        name: "shards.quarantine_after",
        set: |c, v| {
            let n = integer(v)?;
            c.cluster.session.quarantine.failures =
                u32::try_from(n).map_err(|_| format!("{n} is not a count ≥ 0"))?;
            Ok(())
        },
    },
    Key {
        name: "shards.quarantine_window_ms",
        set: |c, v| {
            c.cluster.session.quarantine.window = millis(v, 1000)?;
            Ok(())
        },
    },
    Key {
        name: "identify.max_concurrency",
        set: |c, v| {
            c.cluster.max_concurrency = auto(v)?;
            Ok(())
        },
    },
    Key {
        name: "identify.window_ms",
        set: |c, v| {
            c.cluster.identify_window = millis(v, 1)?;
            Ok(())
        },
    },
    Key {
        name: "store.path",
        set: |c, v| {
            c.store_path = non_empty(v)?.into();
            Ok(())
        },
    },
    Key {
        name: "store.flush_interval_ms",
        set: |c, v| {
            c.cluster.flush_interval = millis(v, 10)?;
            Ok(())
        },
    },
    Key {
        name: "admin.bind",
        set: |c, v| {
            c.admin_bind = socket_addr(v)?;
            Ok(())
        },
    },
    Key {
        name: "admin.token_env",
        set: |c, v| {
            c.admin_token_env = env_name(v)?;
            Ok(())
        },
    },
    Key {
        name: "admin.read_token_env",
        set: |c, v| {
            string(v)?.trim().clone_into(&mut c.read_token_env);
            Ok(())
        },
    },
    Key {
        name: "events.sinks",
        set: |c, v| {
            c.sinks = typed::<Vec<String>>(v)?
                .iter()
                .map(|s| sink(s))
                .collect::<Result<_, _>>()?;
            Ok(())
        },
    },
    Key {
        name: "cluster.mode",
        set: |c, v| {
            c.mode = match string(v)?.as_str() {
                "single" => Mode::Single,
                "redis" => Mode::Redis,
                other => return Err(format!("expected \"single\" or \"redis\", got {other:?}")),
            };
            Ok(())
        },
    },
    Key {
        name: "cluster.url",
        set: |c, v| {
            let url = string(v)?;
            if url.starts_with("rediss://") {
                return Err(
                    "rediss:// (TLS to Redis) is not built in; reach Redis over a private network \
                     or a TLS tunnel and use redis://"
                        .into(),
                );
            }
            if !(url.starts_with("redis://") || url.starts_with("unix://")) {
                return Err("expected a redis:// or unix:// URL".into());
            }
            c.redis_url = Token::new(&url);
            Ok(())
        },
    },
    Key {
        name: "cluster.namespace",
        set: |c, v| {
            c.namespace = non_empty(v)?;
            Ok(())
        },
    },
    Key {
        name: "cluster.node_id",
        set: |c, v| {
            string(v)?.trim().clone_into(&mut c.node_id);
            Ok(())
        },
    },
    Key {
        name: "cluster.lease_ms",
        set: |c, v| {
            c.lease = millis(v, 1000)?;
            Ok(())
        },
    },
    Key {
        name: "cluster.capacity",
        set: |c, v| {
            let n = integer(v)?;
            c.capacity = u32::try_from(n).map_err(|_| format!("{n} is not a shard count ≥ 0"))?;
            Ok(())
        },
    },
    Key {
        name: "cluster.advertise_admin",
        set: |c, v| {
            c.advertise_admin = string(v)?;
            Ok(())
        },
    },
];

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
        let mut table = text
            .parse::<toml::Table>()
            .map_err(|err| ConfigError::new(origin, "(syntax)", err.message().to_owned()))?;
        let overrides = apply_env(&mut table, env)?;
        let mut config = Self::default();
        for (section, keys) in table {
            let origin_of = |key: &str| overrides.get(key).map_or(origin, String::as_str);
            let Value::Table(keys) = keys else {
                return Err(ConfigError::new(
                    origin_of(&section),
                    &section,
                    "is not a section",
                ));
            };
            for (key, value) in keys {
                let name = format!("{section}.{key}");
                let fail = |message: String| ConfigError::new(origin_of(&name), &name, message);
                let key = KEYS
                    .iter()
                    .find(|k| k.name == name)
                    .ok_or_else(|| fail(format!("unknown key; known keys: {}", known_keys())))?;
                (key.set)(&mut config, value).map_err(fail)?;
            }
        }
        Ok(config)
    }

    /// The cluster's configuration for this file and `token`.
    pub(crate) fn cluster(&self, token: Token) -> ClusterConfig {
        let mut cluster = self.cluster.clone();
        cluster.session.token = token;
        cluster
    }

    /// The shard count the file asks for.
    pub(crate) fn total(&self) -> Auto {
        self.cluster.total
    }

    /// The identify window the file asks for.
    pub(crate) fn identify_window(&self) -> Duration {
        self.cluster.identify_window
    }

    /// The read-only token, when the variable `admin.read_token_env` names is set.
    pub(crate) fn read_token(&self) -> Option<Token> {
        if self.read_token_env.is_empty() {
            return None;
        }
        std::env::var(&self.read_token_env)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .map(|value| Token::new(&value))
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

fn known_keys() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
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
            .unwrap_or(Value::String(value));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| Value::Table(toml::Table::new()));
        let Value::Table(section_table) = entry else {
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

/// A value of any type serde reads from TOML, with TOML's message when it is not one.
fn typed<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    value
        .try_into()
        .map_err(|err: toml::de::Error| err.message().to_owned())
}

fn string(value: Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(format!("expected a string, got {other}")),
    }
}

fn integer(value: Value) -> Result<i64, String> {
    match value {
        Value::Integer(n) => Ok(n),
        other => Err(format!("expected an integer, got {other}")),
    }
}

fn non_empty(value: Value) -> Result<String, String> {
    Some(string(value)?)
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| "must not be empty".to_owned())
}

fn env_name(value: Value) -> Result<String, String> {
    non_empty(value).map_err(|_| "must name an environment variable".to_owned())
}

fn http_url(value: Value) -> Result<String, String> {
    let url = string(value)?;
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(url)
    } else {
        Err(format!("{url:?} is not an http(s) URL"))
    }
}

fn socket_addr(value: Value) -> Result<SocketAddr, String> {
    let text = string(value)?;
    text.parse()
        .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:7878"))
}

fn within(value: Value, min: u16, max: u16) -> Result<u16, String> {
    let n = integer(value)?;
    u16::try_from(n)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| format!("{n} is not between {min} and {max}"))
}

fn intents(value: Value) -> Result<Intents, String> {
    match value {
        Value::Integer(bits) => u64::try_from(bits)
            .ok()
            .and_then(Intents::from_bits)
            .ok_or_else(|| format!("{bits} is not a valid intents bitfield")),
        other => {
            let names: Vec<String> = typed(other)
                .map_err(|_| "expected a list of intent names or an integer".to_owned())?;
            Intents::from_names(names.iter().map(String::as_str)).map_err(|err| err.to_string())
        }
    }
}

fn auto(value: Value) -> Result<Auto, String> {
    match value {
        Value::String(word) if word == "auto" => Ok(Auto::Auto),
        Value::Integer(n) => u32::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .map(Auto::Fixed)
            .ok_or_else(|| format!("{n} is not a positive integer")),
        other => Err(format!(
            "expected \"auto\" or a positive integer, got {other}"
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

fn millis(value: Value, min: u64) -> Result<Duration, String> {
    let n = integer(value)?;
    u64::try_from(n)
        .ok()
        .filter(|v| *v >= min)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{n} is not a number of milliseconds ≥ {min}"))
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
mod tests;
