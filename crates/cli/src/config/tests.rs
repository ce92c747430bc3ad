use std::path::{Path, PathBuf};

use shardkeeper_cluster::{Auto, ShardIds};

use super::{Config, KEYS, SinkSpec};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

#[test]
fn default_toml_equals_the_built_in_defaults() {
    let parsed = Config::parse(&read("config/default.toml"), "default.toml", []).expect("parses");
    assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
}

#[test]
fn default_toml_and_the_docs_name_every_key_in_order() {
    let table: toml::Table = read("config/default.toml").parse().expect("parses");
    let written: Vec<String> = table
        .iter()
        .flat_map(|(section, keys)| {
            let keys = keys.as_table().expect("a section");
            keys.keys().map(move |key| format!("{section}.{key}"))
        })
        .collect();
    let mut known: Vec<String> = KEYS.iter().map(|k| k.name.to_owned()).collect();
    let mut sorted = written.clone();
    sorted.sort();
    known.sort();
    assert_eq!(sorted, known, "config/default.toml and KEYS differ");
    let docs = read("docs/configuration.md");
    for key in &known {
        assert!(
            docs.contains(&format!("| `{key}` |")),
            "docs/configuration.md has no row for {key}"
        );
    }
}

#[test]
fn every_shipped_config_loads() {
    for entry in std::fs::read_dir(root().join("config"))
        .expect("config dir")
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(Some(&path), []).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
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
        ("SHARDKEEPER_DISCORD__INTENTS".to_owned(), "513".to_owned()),
        (
            "SHARDKEEPER_DISCORD__CA_FILE".to_owned(),
            "ca.pem".to_owned(),
        ),
        (
            "SHARDKEEPER_ADMIN_TOKEN".to_owned(),
            "not an override".to_owned(),
        ),
    ];
    let config = Config::load(None, env).expect("loads");
    let cluster = config.cluster(shardkeeper_protocol::Token::new("t"));
    assert_eq!(cluster.total, Auto::Fixed(16));
    assert_eq!(cluster.ids, ShardIds::Range(4..8));
    assert_eq!(cluster.session.intents.bits(), 513);
    assert_eq!(cluster.ca_file, Some(PathBuf::from("ca.pem")));
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
        (
            "SHARDKEEPER_DISCORD__LARGE_THRESHOLD",
            "20",
            "discord.large_threshold",
        ),
        ("SHARDKEEPER_ADMIN__BIND", "localhost", "admin.bind"),
        ("SHARDKEEPER_EVENTS__SINKS", r#"["kafka"]"#, "events.sinks"),
        (
            "SHARDKEEPER_STORE__FLUSH_INTERVAL_MS",
            "-5",
            "store.flush_interval_ms",
        ),
        ("SHARDKEEPER_STORE__PATH", "\" \"", "store.path"),
        ("SHARDKEEPER_SHARDS__TOTL", "3", "shards.totl"),
        (
            "SHARDKEEPER_CLUSTER__URL",
            "rediss://cache.example:6380",
            "cluster.url",
        ),
        ("SHARDKEEPER_CLUSTER__MODE", "raft", "cluster.mode"),
        ("SHARDKEEPER_CLUSTER__LEASE_MS", "10", "cluster.lease_ms"),
    ];
    for (var, value, key) in cases {
        let err = Config::load(None, [(var.to_owned(), value.to_owned())])
            .expect_err(var)
            .to_string();
        assert!(err.contains(key), "{err}");
        assert!(err.contains(var), "{err}");
    }
}

#[test]
fn file_errors_name_the_file_and_the_key() {
    let err = Config::parse("[shards]\ntotal = \"many\"\n", "bot.toml", [])
        .expect_err("bad total")
        .to_string();
    assert_eq!(
        err,
        "bot.toml: shards.total: expected \"auto\" or a positive integer, got \"many\""
    );
    let err = Config::parse("shards = 3\n", "bot.toml", [])
        .expect_err("not a section")
        .to_string();
    assert_eq!(err, "bot.toml: shards: is not a section");
}
