//! Monitoring: the alert rules (`config/prometheus/alerts.yml`) and the Grafana
//! dashboard (`config/grafana/shardkeeper.json`) against the real process.
//!
//! Every metric name the two files use must be one `shardkeeper run` exports (single
//! mode, and cluster mode beside a real `redis-server`). Each alert is then driven:
//! the test scrapes `/metrics` while the process is healthy and again around a
//! condition it causes for real (shards stopped through the admin API, op 7 storms,
//! zombies, a slow gateway, a full disk, a spent budget, dead nodes, Redis killed and
//! wiped), turns the scrapes into `promtool test rules` input series and asserts that
//! the expected alerts and no others fire on the driven data (a case may leave out
//! alerts its drive causes only sometimes), and none on the healthy data.
//! A few seconds of scrapes stand for over an hour of Prometheus time: in the input,
//! every counter keeps the rate it was seen growing at between the two scrapes of a
//! window, every gauge keeps its last value, and an age (`*_lag_seconds`) that grew
//! with the clock keeps growing with it.
//!
//! Two alerts are driven elsewhere, where their condition can be caused:
//! `ShardkeeperShardCrashes` in `tests/tests/e2e/alerts.rs` (no input from outside makes
//! a shard actor panic; the cluster's test hook does) and
//! `ShardkeeperClusterLeaseRenewalSlow` in `crates/redis/tests/node.rs` (a node whose
//! Redis answers 600 ms late).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shardkeeper_sim::{Fault, FaultTarget, Sim, SimConfig, SimHandle};

use crate::http::{admin_addr, get_json, request};
use crate::nodes::{LEASE_MS, RedisServer, node, sim};
use crate::support::{
    ADMIN_TOKEN, Running, SIM_TOKEN, ready_shards, runtime, single_mode_env, wait_for,
};

/// Eight shards in eight buckets behind a 200 ms identify window.
fn eight_shards() -> SimConfig {
    SimConfig {
        token: SIM_TOKEN.into(),
        shards: 8,
        max_concurrency: 8,
        identify_window: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

/// The scrape job every rule assumes (docs/operations.md, "Monitoring").
const JOB: &str = "shardkeeper";
/// Minutes of healthy samples in a promtool test, then minutes of driven ones.
const HEALTHY_MINUTES: u32 = 30;
const DRIVEN_MINUTES: u32 = 45;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn rules_file() -> PathBuf {
    std::fs::canonicalize(root().join("config/prometheus/alerts.yml")).expect("alerts.yml")
}

// ---------------------------------------------------------------------------------
// The rules, as alerts.yml writes them (its header names the format this reads).

#[derive(Debug, Clone, Default)]
struct Rule {
    alert: String,
    expr: String,
    severity: String,
    annotations: Vec<(&'static str, String)>,
}

const ANNOTATIONS: [&str; 3] = ["summary", "description", "runbook_url"];

fn rules() -> Vec<Rule> {
    let text = read("config/prometheus/alerts.yml");
    let mut rules: Vec<Rule> = Vec::new();
    // The indentation of `expr: |` while its block is being read.
    let mut block: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if let Some(key_indent) = block {
            if trimmed.is_empty() || indent > key_indent {
                if let Some(rule) = rules.last_mut() {
                    rule.expr.push_str(trimmed);
                    rule.expr.push('\n');
                }
                continue;
            }
            block = None;
        }
        if trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            rules.push(Rule {
                alert: name.trim().to_owned(),
                ..Rule::default()
            });
            continue;
        }
        let Some(rule) = rules.last_mut() else {
            continue;
        };
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            if rest.trim() == "|" {
                block = Some(indent);
            } else {
                rest.trim().clone_into(&mut rule.expr);
            }
        } else if let Some(value) = trimmed.strip_prefix("severity:") {
            value.trim().clone_into(&mut rule.severity);
        } else {
            for key in ANNOTATIONS {
                if let Some(value) = trimmed.strip_prefix(key).and_then(|v| v.strip_prefix(':')) {
                    rule.annotations.push((key, unquote(&rule.alert, value)));
                }
            }
        }
    }
    for rule in &rules {
        assert!(!rule.expr.trim().is_empty(), "{}: no expr", rule.alert);
        assert!(
            ["critical", "warning", "info"].contains(&rule.severity.as_str()),
            "{}: severity {:?}",
            rule.alert,
            rule.severity
        );
        let keys: Vec<&str> = rule.annotations.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ANNOTATIONS, "{}: annotations", rule.alert);
    }
    assert!(rules.len() > 10, "alerts.yml read as {rules:#?}");
    rules
}

/// A one-line annotation in double quotes, without escapes.
fn unquote(alert: &str, value: &str) -> String {
    let inner = value
        .trim()
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{alert}: annotation {value:?} is not one quoted line"));
    assert!(
        !inner.contains(['"', '\\']),
        "{alert}: keep annotations free of quotes and escapes: {value}"
    );
    inner.to_owned()
}

/// An annotation as Prometheus renders it for an alert with these labels.
fn render(template: &str, labels: &BTreeMap<&str, String>) -> String {
    let mut text = template.to_owned();
    for key in ["instance", "job"] {
        if let Some(value) = labels.get(key) {
            text = text.replace(&format!("{{{{ $labels.{key} }}}}"), value);
        }
    }
    assert!(
        !text.contains("{{"),
        "annotations may use only {{{{ $labels.instance }}}} and {{{{ $labels.job }}}} (those the labels have): {template}"
    );
    text
}

// ---------------------------------------------------------------------------------
// Metric names the files use, and what the process exports.

/// `shardkeeper_*` names in a PromQL expression (quoted strings left out).
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut quote: Option<char> = None;
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if let Some(open) = quote {
            if c == open {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("shardkeeper_") {
            into.insert(std::mem::take(&mut word));
        }
        word.clear();
        if ['"', '\'', '`'].contains(&c) {
            quote = Some(c);
        }
    }
}

/// Every query string of the dashboard (panel targets, template variables).
fn dashboard_queries(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match value {
                    serde_json::Value::String(text)
                        if ["expr", "query", "definition"].contains(&key.as_str()) =>
                    {
                        into.push(text.clone());
                    }
                    other => dashboard_queries(other, into),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_queries(item, into);
            }
        }
        _ => {}
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("config/grafana/shardkeeper.json")).expect("dashboard is JSON")
}

/// Metric names used by the rules and the dashboard.
fn used_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for rule in rules() {
        metric_names(&rule.expr, &mut names);
    }
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    assert!(queries.len() > 20, "dashboard queries: {queries:?}");
    for query in &queries {
        metric_names(query, &mut names);
    }
    names
}

/// Whether a sample name belongs to a family of the exposition (`# TYPE` lines name
/// families: a counter's samples end in `_total`, a histogram's in
/// `_bucket`/`_sum`/`_count`).
fn exported(types: &BTreeMap<String, String>, name: &str) -> bool {
    if let Some(kind) = types.get(name) {
        return !["counter", "histogram", "summary"].contains(&kind.as_str());
    }
    let family = |suffix: &str| name.strip_suffix(suffix).and_then(|base| types.get(base));
    family("_total").is_some_and(|kind| kind == "counter")
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| family(suffix).is_some_and(|kind| kind == "histogram"))
        || ["_sum", "_count"]
            .iter()
            .any(|suffix| family(suffix).is_some_and(|kind| kind == "summary"))
}

/// Asserts that each used name of the mode (`cluster`: the `shardkeeper_cluster_*`
/// ones, else the rest) is in the families the scrapes saw.
fn assert_exported(scrapes: &[&Scrape], cluster: bool) {
    let mut types = BTreeMap::new();
    for scrape in scrapes {
        if let Some(exposition) = &scrape.exposition {
            types.extend(exposition.types.clone());
        }
    }
    let wanted: Vec<String> = used_names()
        .into_iter()
        .filter(|name| name.starts_with("shardkeeper_cluster_") == cluster)
        .collect();
    assert!(!wanted.is_empty(), "no names to check");
    let missing: Vec<&String> = wanted.iter().filter(|n| !exported(&types, n)).collect();
    assert!(
        missing.is_empty(),
        "used in alerts.yml or the dashboard but not exported: {missing:?}; families: {types:?}"
    );
}

// ---------------------------------------------------------------------------------
// Scrapes.

/// One Prometheus text exposition: family types and samples by series.
#[derive(Debug, Clone, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut exposition = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    exposition
                        .types
                        .insert(name.to_owned(), kind.trim().to_owned());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((series, value)) = line.rsplit_once(' ')
                && let Ok(value) = value.parse::<f64>()
            {
                exposition.samples.insert(series.to_owned(), value);
            }
        }
        exposition
    }

    /// Whether the series counts up (a counter, or a histogram's parts); `None` if
    /// this exposition has no family for it.
    fn counts(&self, series: &str) -> Option<bool> {
        let name = series.split('{').next().unwrap_or(series);
        if let Some(kind) = self.types.get(name) {
            return Some(kind == "counter");
        }
        ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).and_then(|b| self.types.get(b)))
            .map(|kind| ["counter", "histogram", "summary"].contains(&kind.as_str()))
    }
}

/// `/metrics` of one process at one instant; `None` when the scrape failed.
#[derive(Debug, Clone)]
struct Scrape {
    at: Instant,
    exposition: Option<Exposition>,
}

impl Scrape {
    fn value(&self, series: &str) -> Option<f64> {
        self.exposition.as_ref()?.samples.get(series).copied()
    }
}

fn scrape(addr: &str) -> Scrape {
    let at = Instant::now();
    Scrape {
        at,
        exposition: fetch_metrics(addr).map(|text| Exposition::parse(&text)),
    }
}

fn fetch_metrics(addr: &str) -> Option<String> {
    let socket: SocketAddr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of `series` on `addr` now (`None` if the scrape or the series is missing).
fn metric(addr: &str, series: &str) -> Option<f64> {
    scrape(addr).value(series)
}

/// Polls `series` on `addr` until `check` holds.
fn wait_metric(addr: &str, series: &str, timeout: Duration, check: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let value = metric(addr, series);
        if value.is_some_and(&check) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} on {addr} stayed at {value:?} for {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two scrapes around a state: rates come from their difference, levels from the
/// later one.
#[derive(Debug, Clone)]
struct Window {
    before: Scrape,
    after: Scrape,
}

impl Window {
    /// A scrape, `pause`, another scrape.
    fn over(addr: &str, pause: Duration) -> Self {
        let before = scrape(addr);
        std::thread::sleep(pause);
        Self {
            before,
            after: scrape(addr),
        }
    }

    fn seconds(&self) -> f64 {
        self.after
            .at
            .saturating_duration_since(self.before.at)
            .as_secs_f64()
            .max(0.001)
    }
}

/// One scraped process of a promtool test: how it looked healthy, then driven.
#[derive(Debug, Clone)]
struct Target {
    instance: String,
    healthy: Window,
    driven: Window,
}

// ---------------------------------------------------------------------------------
// promtool.

/// A promtool value list (`a+bxn` is n+1 samples, `_xn` and `axn` as promtool reads
/// them) for one series of `target`: healthy minutes 0..=30, driven minutes 31..=75.
fn values(target: &Target, series: &str) -> String {
    let scrapes = [
        &target.healthy.after,
        &target.healthy.before,
        &target.driven.after,
        &target.driven.before,
    ];
    let counts = scrapes
        .iter()
        .filter_map(|s| s.exposition.as_ref())
        .find_map(|e| e.counts(series))
        .unwrap_or(false);
    let age = series.ends_with("_lag_seconds");
    let per_minute = |delta: f64, window: &Window| (delta.max(0.0) / window.seconds()) * 60.0;
    // An age that kept growing with the clock for a second or more: nothing reset it
    // (the test processes flush every 50 ms).
    let grows_with_clock = |before: Option<f64>, after: f64, window: &Window| {
        age && window.seconds() >= 1.0
            && before.is_some_and(|b| after - b >= 0.9 * window.seconds())
    };
    let (n, m) = (HEALTHY_MINUTES, DRIVEN_MINUTES);
    let healthy = &target.healthy;
    let (hb, ha) = (healthy.before.value(series), healthy.after.value(series));
    let (healthy_values, last) = match (ha, hb) {
        (None, _) => (format!("_x{}", n + 1), None),
        (Some(a), Some(b)) if counts => {
            let slope = per_minute(a - b, healthy);
            (format!("{b}+{slope}x{n}"), Some(b + slope * f64::from(n)))
        }
        (Some(a), b) if grows_with_clock(b, a, healthy) => {
            (format!("{a}+60x{n}"), Some(a + 60.0 * f64::from(n)))
        }
        (Some(a), _) => (format!("{a}x{n}"), Some(a)),
    };
    let driven = &target.driven;
    let (db, da) = (driven.before.value(series), driven.after.value(series));
    let rest = m - 1;
    let driven_values = match da {
        None if last.is_some() => format!("stale _x{rest}"),
        None => format!("_x{m}"),
        Some(a) if counts => {
            let slope = per_minute(a - db.unwrap_or(0.0), driven);
            let first = match (last, db) {
                // What happened between the windows, once, then the driven rate.
                (Some(last), Some(b)) => last + (b - ha.unwrap_or(b)).max(0.0) + slope,
                (Some(last), None) => last + slope,
                (None, b) => b.unwrap_or(0.0),
            };
            format!("{first}+{slope}x{rest}")
        }
        Some(a) if grows_with_clock(db, a, driven) => format!("{a}+60x{rest}"),
        Some(a) => format!("{a}x{rest}"),
    };
    format!("{healthy_values} {driven_values}")
}

/// `name{labels}` with the labels Prometheus adds at scrape time.
fn with_target_labels(series: &str, instance: &str) -> String {
    let extra = format!("instance=\"{instance}\",job=\"{JOB}\"");
    match series.split_once('{') {
        Some((name, labels)) => {
            let labels = labels.trim_end_matches('}');
            format!("{name}{{{labels},{extra}}}")
        }
        None => format!("{series}{{{extra}}}"),
    }
}

fn input_series(targets: &[Target]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for target in targets {
        let scrapes = [
            &target.healthy.before,
            &target.healthy.after,
            &target.driven.before,
            &target.driven.after,
        ];
        let keys: BTreeSet<&String> = scrapes
            .iter()
            .filter_map(|s| s.exposition.as_ref())
            .flat_map(|e| e.samples.keys())
            .collect();
        for key in keys {
            out.push((
                with_target_labels(key, &target.instance),
                values(target, key),
            ));
        }
        let up = |scrape: &Scrape| u8::from(scrape.exposition.is_some());
        out.push((
            format!("up{{instance=\"{}\",job=\"{JOB}\"}}", target.instance),
            format!(
                "{}x{HEALTHY_MINUTES} {}x{}",
                up(&target.healthy.after),
                up(&target.driven.after),
                DRIVEN_MINUTES - 1
            ),
        ));
    }
    out
}

/// An alert a case expects at the end of the driven data: its name and the instance
/// it names (`None`: a cluster-wide alert, labelled with the job only).
#[derive(Debug, Clone)]
struct Fires {
    alert: &'static str,
    instance: Option<String>,
}

fn fires(alert: &'static str, instance: &str) -> Fires {
    Fires {
        alert,
        instance: Some(instance.to_owned()),
    }
}

fn fires_for_job(alert: &'static str) -> Fires {
    Fires {
        alert,
        instance: None,
    }
}

fn yaml_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Runs `promtool test rules`: no alert fires at the end of the healthy data; at the
/// end of the driven data exactly `expected` fire, leaving out the alerts in
/// `unchecked` (conditions the drive causes only sometimes).
fn assert_alerts(case: &str, targets: &[Target], expected: &[Fires], unchecked: &[&str]) {
    let rules = rules();
    for name in expected
        .iter()
        .map(|f| f.alert)
        .chain(unchecked.iter().copied())
    {
        assert!(
            rules.iter().any(|r| r.alert == name),
            "{case}: no alert {name} in alerts.yml"
        );
    }
    let mut yaml = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
        yaml_quote(&rules_file().display().to_string())
    );
    for (series, values) in input_series(targets) {
        let _ = write!(
            yaml,
            "      - series: {}\n        values: {}\n",
            yaml_quote(&series),
            yaml_quote(&values)
        );
    }
    yaml.push_str("    alert_rule_test:\n");
    let end = HEALTHY_MINUTES + DRIVEN_MINUTES;
    for rule in &rules {
        let _ = write!(
            yaml,
            "      - eval_time: {HEALTHY_MINUTES}m\n        alertname: {}\n        exp_alerts: []\n",
            rule.alert
        );
        if unchecked.contains(&rule.alert.as_str()) {
            continue;
        }
        let firing: Vec<&Fires> = expected.iter().filter(|f| f.alert == rule.alert).collect();
        let _ = write!(
            yaml,
            "      - eval_time: {end}m\n        alertname: {}\n        exp_alerts:{}\n",
            rule.alert,
            if firing.is_empty() { " []" } else { "" }
        );
        for fire in firing {
            let mut labels =
                BTreeMap::from([("job", JOB.to_owned()), ("severity", rule.severity.clone())]);
            if let Some(instance) = &fire.instance {
                labels.insert("instance", instance.clone());
            }
            yaml.push_str("          - exp_labels:\n");
            for (key, value) in &labels {
                let _ = writeln!(yaml, "              {key}: {}", yaml_quote(value));
            }
            yaml.push_str("            exp_annotations:\n");
            for (key, template) in &rule.annotations {
                let _ = writeln!(
                    yaml,
                    "              {key}: {}",
                    yaml_quote(&render(template, &labels))
                );
            }
        }
    }
    // Kept under target/ for `promtool test rules` by hand.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("monitoring");
    std::fs::create_dir_all(&kept).expect("target tmp dir");
    let file = kept.join(format!("{case}.promtool.yml"));
    std::fs::write(&file, yaml).expect("promtool test written");
    let output = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs (Debian package prometheus; scripts/test installs it)");
    assert!(
        output.status.success(),
        "{case}: promtool test rules {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------
// Processes and drivers.

/// A TCP forwarder that holds what the target sends for `delay` before passing it
/// on: a slow path from the gateway to the process, heartbeats still sent on time.
/// While refusing, it closes every new connection at once (a gateway that cannot be
/// reached).
struct SlowDownstream {
    delay_ms: Arc<AtomicU64>,
    refusing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowDownstream {
    /// Binds now (so the simulator can advertise it); forwards to the target set by
    /// `forward_to`.
    fn bind() -> (std::net::TcpListener, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        (listener, addr)
    }

    fn forward_to(
        runtime: &tokio::runtime::Runtime,
        listener: std::net::TcpListener,
        target: SocketAddr,
    ) -> Self {
        listener.set_nonblocking(true).expect("non-blocking");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        let refusing = Arc::new(AtomicBool::new(false));
        let refuse = Arc::clone(&refusing);
        let task = runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                if refuse.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let delay = Arc::clone(&delay);
                connections.spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, None),
                        pump(server_read, client_write, Some(delay)),
                    );
                });
            }
        });
        Self {
            delay_ms,
            refusing,
            task,
        }
    }

    fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::Relaxed);
    }

    fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for SlowDownstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Option<Arc<AtomicU64>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let ms = delay.as_ref().map_or(0, |d| d.load(Ordering::Relaxed));
            let due = tokio::time::Instant::now() + Duration::from_millis(ms);
            if tx.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// `shardkeeper run` in single mode against `sim`, events to `sinks` (a TOML list),
/// the store in `dir`. `file_limit_kib`: the most any file it writes may grow to
/// (writes beyond fail with EFBIG instead of SIGXFSZ), a disk that fills up.
fn single(sim: &SimHandle, dir: &Path, sinks: &str, file_limit_kib: u64) -> Running {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f \"$1\" && exec \"$0\" run")
        .arg(env!("CARGO_BIN_EXE_shardkeeper"))
        .arg(file_limit_kib.to_string())
        .env("RUST_LOG", "info")
        .env("SHARDKEEPER_SHARDS__QUARANTINE_AFTER", "2");
    single_mode_env(&mut command, sim, dir, 200).env("SHARDKEEPER_EVENTS__SINKS", sinks);
    Running::spawn(command, &dir.join("run.log"))
}

fn started_addr(running: &Running) -> String {
    wait_for("the start line", Duration::from_secs(15), || {
        running.log().contains("shardkeeper running")
    });
    admin_addr(running)
}

fn shards_in(addr: &str, state: &str) -> Option<f64> {
    metric(addr, &format!("shardkeeper_shards{{state=\"{state}\"}}"))
}

fn wait_shards(addr: &str, state: &str, count: u32, timeout: Duration) {
    wait_metric(
        addr,
        &format!("shardkeeper_shards{{state=\"{state}\"}}"),
        timeout,
        is(count),
    );
}

/// A check that a sample is `n` (the values waited on are counts).
fn is(n: u32) -> impl Fn(f64) -> bool {
    move |v| (v - f64::from(n)).abs() < 0.5
}

fn post(addr: &str, path: &str) {
    let (status, body) = request(addr, "POST", path);
    assert_eq!(status, 202, "POST {path}: {body}");
}

/// A request whose query string the admin API cannot parse: refused with 400.
fn malformed_request(addr: &str) {
    let (status, body) = request(addr, "POST", "/api/v1/shards/0/restart?fresh=perhaps");
    assert_eq!(status, 400, "{body}");
}

type Subscriber =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A subscriber of `/api/v1/events` that never reads, on a socket with a small
/// receive buffer (so the admin API's writes back up soon).
fn stalled_subscriber(runtime: &tokio::runtime::Runtime, addr: &str) -> Subscriber {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("receive buffer");
        let stream = socket
            .connect(addr.parse().expect("admin address"))
            .await
            .expect("admin API reachable");
        let mut request = format!("ws://{addr}/api/v1/events")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {ADMIN_TOKEN}").parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::client_async(
            request,
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        )
        .await
        .expect("subscribed");
        ws
    })
}

fn elapsed(since: Instant) -> String {
    format!("{:.1} s", since.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------
// Tests.

#[test]
fn the_rules_pass_promtool_and_every_alert_has_its_runbook() {
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules_file())
        .output()
        .expect("promtool runs (Debian package prometheus; scripts/test installs it)");
    assert!(
        output.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let operations = read("docs/operations.md");
    let rules = rules();
    let mut names = BTreeSet::new();
    for rule in &rules {
        assert!(names.insert(rule.alert.clone()), "{} twice", rule.alert);
        let runbook = &rule.annotations[2].1;
        assert_eq!(
            runbook,
            &format!("docs/operations.md#{}", rule.alert.to_lowercase()),
            "{}: runbook_url",
            rule.alert
        );
        assert!(
            operations
                .lines()
                .any(|l| l.trim() == format!("### {}", rule.alert)),
            "docs/operations.md has no section ### {}",
            rule.alert
        );
    }

    let dashboard = dashboard();
    assert_eq!(
        dashboard["__inputs"][0]["name"], "DS_PROMETHEUS",
        "the dashboard asks for its data source on import"
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("template variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains(&"instance"), "{variables:?}");
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        panels += 1;
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {}",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut used = BTreeSet::new();
            metric_names(expr, &mut used);
            assert!(!used.is_empty(), "{}: {expr}", panel["title"]);
        }
    }
    assert!(panels >= 20, "{panels} panels");
}

/// One process of a single-mode test: its healthy window, and every scrape taken.
struct Subject {
    addr: String,
    healthy: Window,
    scrapes: Vec<Scrape>,
}

impl Subject {
    /// Waits for the start and all `shards` Ready, then scrapes a healthy window.
    fn start(process: &Running, shards: u32) -> Self {
        let addr = started_addr(process);
        wait_shards(&addr, "ready", shards, Duration::from_secs(15));
        let healthy = Window::over(&addr, Duration::from_secs(2));
        Self {
            scrapes: vec![healthy.before.clone(), healthy.after.clone()],
            addr,
            healthy,
        }
    }

    /// A window from `before` to now.
    fn since(&self, before: Scrape) -> Window {
        Window {
            before,
            after: scrape(&self.addr),
        }
    }

    /// [`assert_alerts`] on the healthy window and `driven`.
    fn check(&mut self, case: &str, driven: Window, expected: &[&'static str]) {
        let fires: Vec<Fires> = expected.iter().map(|a| fires(a, &self.addr)).collect();
        let target = Target {
            instance: self.addr.clone(),
            healthy: self.healthy.clone(),
            driven,
        };
        assert_alerts(case, std::slice::from_ref(&target), &fires, &[]);
        self.scrapes
            .extend([target.driven.before, target.driven.after]);
    }
}

/// Single mode: a slow gateway, reconnect storms, zombies, malformed admin requests,
/// a 4008 close, a failed shard, stopped shards and a full disk, one after the other
/// on one process. Also checks every non-cluster metric name of the files against what
/// this process exports.
#[test]
fn alerts_fire_on_what_a_single_process_reports() {
    let started = Instant::now();
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let (listener, proxy_addr) = SlowDownstream::bind();
    let sim = runtime
        .block_on(Sim::start(SimConfig {
            heartbeat_interval: Duration::from_millis(1500),
            events_per_sec: 1.0,
            gateway_url: Some(format!("ws://{proxy_addr}")),
            ..eight_shards()
        }))
        .expect("simulator starts");
    let proxy = SlowDownstream::forward_to(&runtime, listener, sim.addr());
    // 192 KiB: many times what the store and the log hold at first; with events on
    // every shard each flush writes 8 sessions, which fills it in a few seconds.
    let process = single(&sim, dir.path(), r#"["stdout"]"#, 192);
    let mut subject = Subject::start(&process, 8);
    eprintln!("single: healthy after {}", elapsed(started));
    slow_gateway(&proxy, &mut subject);
    connection_faults(&sim, &mut subject);
    eprintln!(
        "single: latency, storm, zombies, 4008 after {}",
        elapsed(started)
    );
    shard_states(&sim, &mut subject);
    quarantine(&sim, &proxy, &mut subject);
    full_disk(&sim, &mut subject);
    assert!(
        process.log().contains("session store write failed"),
        "{}",
        process.log()
    );
    assert_exported(&subject.scrapes.iter().collect::<Vec<_>>(), false);
    assert_eq!(sim.stats().violations, Vec::new());
    assert!(!process.log().contains("panicked"), "{}", process.log());
    eprintln!(
        "single: done in {} (log {} bytes)",
        elapsed(started),
        process.log().len()
    );
    drop(process);
    drop(proxy);
    runtime.block_on(sim.shutdown());
}

/// Heartbeat ACKs 1.1 s late (the heartbeat interval is 1.5 s: no zombie).
fn slow_gateway(proxy: &SlowDownstream, subject: &mut Subject) {
    proxy.set_delay(Duration::from_millis(1100));
    std::thread::sleep(Duration::from_millis(1700));
    let slow = Window::over(&subject.addr, Duration::from_secs(3));
    proxy.set_delay(Duration::ZERO);
    // Until the ACKs held back have arrived and fast heartbeats follow.
    std::thread::sleep(Duration::from_millis(2500));
    subject.check("latency", slow, &["ShardkeeperHeartbeatLatencyHigh"]);
}

/// Op 7 storms, zombies, a 4008 close: connections end and shards resume.
fn connection_faults(sim: &SimHandle, subject: &mut Subject) {
    let addr = subject.addr.clone();
    let reconnects = "shardkeeper_reconnects_total";
    // Three rounds of op 7 to every shard, each once the last one is over.
    let before = scrape(&addr);
    let mut seen = before.value(reconnects).unwrap_or(0.0);
    for _ in 0..3 {
        sim.inject(FaultTarget::ALL, Fault::Reconnect);
        wait_metric(&addr, reconnects, Duration::from_secs(10), |v| {
            v >= seen + 8.0
        });
        wait_shards(&addr, "ready", 8, Duration::from_secs(10));
        seen += 8.0;
    }
    let storm = subject.since(before);
    subject.check("reconnect-storm", storm, &["ShardkeeperReconnectStorm"]);

    // Every connection stops acknowledging heartbeats.
    let before = scrape(&addr);
    let zombies = before.value("shardkeeper_zombies_total").unwrap_or(0.0);
    sim.inject(FaultTarget::ALL, Fault::Zombie);
    wait_metric(
        &addr,
        "shardkeeper_zombies_total",
        Duration::from_secs(15),
        |v| v >= zombies + 8.0,
    );
    wait_shards(&addr, "ready", 8, Duration::from_secs(10));
    let zombie = subject.since(before);
    subject.check(
        "zombies",
        zombie,
        &["ShardkeeperZombieConnections", "ShardkeeperReconnectStorm"],
    );

    // Discord closes a connection with 4008 (rate limited); the shard resumes.
    let before = scrape(&addr);
    sim.inject(FaultTarget::shard(0), Fault::Close { code: 4008 });
    wait_metric(
        &addr,
        "shardkeeper_close_codes_total{code=\"4008\"}",
        Duration::from_secs(10),
        is(1),
    );
    wait_shards(&addr, "ready", 8, Duration::from_secs(10));
    let limited = subject.since(before);
    subject.check(
        "rate-limited",
        limited,
        &["ShardkeeperGatewayRateLimited", "ShardkeeperReconnectStorm"],
    );
}

/// Malformed admin requests, a failed shard, stopped shards.
fn shard_states(sim: &SimHandle, subject: &mut Subject) {
    let addr = subject.addr.clone();
    // A client keeps sending requests the API cannot parse.
    let before = scrape(&addr);
    for _ in 0..30 {
        malformed_request(&addr);
    }
    std::thread::sleep(Duration::from_secs(1));
    let refused = subject.since(before);
    subject.check(
        "admin-refused",
        refused,
        &["ShardkeeperAdminRequestsRefused"],
    );

    // A fatal close (4014, disallowed intents): the shard fails and stays failed.
    let before = scrape(&addr);
    sim.inject(FaultTarget::shard(7), Fault::Close { code: 4014 });
    wait_shards(&addr, "failed", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let failed = subject.since(before);
    subject.check(
        "failed",
        failed,
        &[
            "ShardkeeperShardsFailed",
            "ShardkeeperShardsNotReady",
            "ShardkeeperManyShardsNotReady",
        ],
    );
    post(&addr, "/api/v1/shards/7/start");
    wait_shards(&addr, "ready", 8, Duration::from_secs(10));

    // Two shards stopped through the admin API.
    let before = scrape(&addr);
    post(&addr, "/api/v1/shards/0/stop");
    post(&addr, "/api/v1/shards/1/stop");
    wait_shards(&addr, "stopped", 2, Duration::from_secs(10));
    let stopped = subject.since(before);
    subject.check(
        "stopped",
        stopped,
        &["ShardkeeperShardsNotReady", "ShardkeeperManyShardsNotReady"],
    );
    post(&addr, "/api/v1/shards/0/start");
    post(&addr, "/api/v1/shards/1/start");
    wait_shards(&addr, "ready", 8, Duration::from_secs(10));
}

/// A shard's session ends while the gateway cannot be reached: its connection attempts
/// fail before READY and (at `shards.quarantine_after` = 2) it is quarantined.
fn quarantine(sim: &SimHandle, proxy: &SlowDownstream, subject: &mut Subject) {
    let addr = subject.addr.clone();
    let before = scrape(&addr);
    proxy.set_refusing(true);
    // 4009: the session timed out; the shard identifies anew at the gateway URL.
    sim.inject(FaultTarget::shard(6), Fault::Close { code: 4009 });
    wait_shards(&addr, "quarantined", 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let quarantined = subject.since(before);
    subject.check(
        "quarantined",
        quarantined,
        &[
            "ShardkeeperShardsQuarantined",
            "ShardkeeperShardsNotReady",
            "ShardkeeperManyShardsNotReady",
            "ShardkeeperReconnectStorm",
        ],
    );
    proxy.set_refusing(false);
    post(&addr, "/api/v1/shards/6/start");
    wait_shards(&addr, "ready", 8, Duration::from_secs(15));
}

/// The disk fills up: the store cannot write and the last flush ages.
fn full_disk(sim: &SimHandle, subject: &mut Subject) {
    let degraded = "shardkeeper_store_degraded";
    sim.set_events_per_sec(200.0);
    wait_metric(&subject.addr, degraded, Duration::from_secs(20), is(1));
    sim.set_events_per_sec(1.0);
    let full = Window::over(&subject.addr, Duration::from_secs(2));
    assert!(full.after.value(degraded).is_some_and(is(1)), "{full:?}");
    subject.check(
        "disk-full",
        full,
        &["ShardkeeperStoreDegraded", "ShardkeeperStoreFlushLagging"],
    );
    assert!(shards_in(&subject.addr, "ready").is_some_and(is(8)));
}

/// The session start budget runs low, then out with shards waiting (17 session
/// starts for 8 shards: 9 left after the start, 1 after fresh restarts of all, none
/// after forced ones, 7 shards queued until the reset). Before that, a WebSocket
/// subscriber falls behind.
#[test]
fn budget_alerts_fire_as_session_starts_run_out() {
    let started = Instant::now();
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = runtime
        .block_on(Sim::start(SimConfig {
            session_start_total: 17,
            session_start_remaining: 17,
            ..eight_shards()
        }))
        .expect("simulator starts");
    let sinks = r#"["stdout", "websocket"]"#;
    let process = single(&sim, dir.path(), sinks, 1 << 20);
    let remaining = "shardkeeper_session_starts_remaining";
    let addr = started_addr(&process);
    wait_metric(&addr, remaining, Duration::from_secs(15), is(9));
    let mut subject = Subject::start(&process, 8);
    slow_subscriber(&runtime, &sim, &mut subject);
    eprintln!("budget: subscriber dropped after {}", elapsed(started));

    for shard in 0..8 {
        post(&addr, &format!("/api/v1/shards/{shard}/restart?fresh=true"));
    }
    wait_metric(&addr, remaining, Duration::from_secs(10), is(1));
    wait_shards(&addr, "ready", 8, Duration::from_secs(10));
    let low = Window::over(&addr, Duration::from_secs(1));
    subject.check("budget-low", low, &["ShardkeeperSessionStartBudgetLow"]);

    for shard in 0..8 {
        post(
            &addr,
            &format!("/api/v1/shards/{shard}/restart?fresh=true&force=true"),
        );
    }
    let queue = "shardkeeper_identify_queue_depth";
    wait_metric(&addr, queue, Duration::from_secs(10), is(7));
    wait_metric(&addr, remaining, Duration::from_secs(5), is(0));
    let spent = Window::over(&addr, Duration::from_millis(1500));
    assert!(spent.after.value(queue).is_some_and(is(7)), "{spent:?}");
    subject.check(
        "budget-spent",
        spent,
        &[
            "ShardkeeperSessionStartBudgetLow",
            "ShardkeeperSessionStartBudgetExhausted",
            "ShardkeeperIdentifyQueueStuck",
            "ShardkeeperShardsNotReady",
            "ShardkeeperManyShardsNotReady",
        ],
    );
    let listed = get_json(&addr, "/api/v1/shards");
    let waiting = listed["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter(|s| s["state"] == "identifying")
        .count();
    assert_eq!(waiting, 7, "{listed}");
    assert_eq!(sim.stats().identifies, 17);
    assert_eq!(sim.stats().violations, Vec::new());
    eprintln!("budget: done in {}", elapsed(started));
    drop(process);
    runtime.block_on(sim.shutdown());
}

/// A WebSocket subscriber stops reading while events flow: it is dropped.
fn slow_subscriber(runtime: &tokio::runtime::Runtime, sim: &SimHandle, subject: &mut Subject) {
    let addr = subject.addr.clone();
    let before = scrape(&addr);
    let subscriber = stalled_subscriber(runtime, &addr);
    wait_metric(
        &addr,
        "shardkeeper_event_subscribers",
        Duration::from_secs(5),
        is(1),
    );
    sim.set_events_per_sec(1000.0);
    wait_metric(
        &addr,
        "shardkeeper_event_subscribers_dropped_total",
        Duration::from_secs(20),
        |v| v >= 1.0,
    );
    sim.set_events_per_sec(0.0);
    drop(subscriber);
    let behind = subject.since(before);
    subject.check(
        "subscriber-dropped",
        behind,
        &["ShardkeeperEventSubscribersDropped"],
    );
}

/// Three nodes of one cluster: their healthy windows, and every scrape taken.
struct Cluster {
    sim: SimHandle,
    redis: RedisServer,
    nodes: Vec<Running>,
    addrs: Vec<String>,
    healthy: Vec<Window>,
    scrapes: Vec<Scrape>,
}

impl Cluster {
    fn owned(addr: &str) -> f64 {
        metric(addr, "shardkeeper_cluster_owned_shards").unwrap_or(0.0)
    }

    /// Every shard Ready in the simulator and owned by some node.
    fn settled(&self) -> bool {
        let owned: f64 = self.addrs.iter().map(|a| Self::owned(a)).sum();
        ready_shards(&self.sim.stats()) == 8 && is(8)(owned)
    }

    fn scrape_all(&self) -> Vec<Scrape> {
        self.addrs.iter().map(|addr| scrape(addr)).collect()
    }

    /// Windows from `before` (one scrape per node) to now.
    fn since(&self, before: Vec<Scrape>) -> Vec<Window> {
        before
            .into_iter()
            .zip(&self.addrs)
            .map(|(before, addr)| Window {
                before,
                after: scrape(addr),
            })
            .collect()
    }

    fn check(&mut self, case: &str, driven: &[Window], expected: &[Fires], unchecked: &[&str]) {
        let targets: Vec<Target> = self
            .addrs
            .iter()
            .zip(&self.healthy)
            .zip(driven)
            .map(|((addr, healthy), driven)| Target {
                instance: addr.clone(),
                healthy: healthy.clone(),
                driven: driven.clone(),
            })
            .collect();
        assert_alerts(case, &targets, expected, unchecked);
        self.scrapes.extend(
            driven
                .iter()
                .flat_map(|w| [w.before.clone(), w.after.clone()]),
        );
    }
}

/// Cluster mode, three nodes of capacity 4 for 8 shards: a shard's owner key taken
/// from under its node, two nodes killed (the survivor cannot take every shard),
/// Redis killed, then restarted empty. Also checks every `shardkeeper_cluster_*`
/// name of the files against what a node exports.
#[test]
fn cluster_alerts_fire_on_what_the_nodes_report() {
    let started = Instant::now();
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let sim = sim(&runtime, 8, 4, 10.0, SimConfig::default());
    let capacity = [("SHARDKEEPER_CLUSTER__CAPACITY", "4")];
    let nodes: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|id| node(&sim, &redis.url(), dir.path(), id, &capacity))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(started_addr).collect();
    let mut cluster = Cluster {
        sim,
        redis,
        nodes,
        addrs,
        healthy: Vec::new(),
        scrapes: Vec::new(),
    };
    wait_for("every shard ready", Duration::from_secs(20), || {
        cluster.settled()
    });
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    wait_for("every shard ready again", Duration::from_secs(20), || {
        cluster.settled()
    });
    assert!(Cluster::owned(&cluster.addrs[0]) < 4.0, "a is full already");
    let before = cluster.scrape_all();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.healthy = cluster.since(before);
    cluster.scrapes = cluster
        .healthy
        .iter()
        .flat_map(|w| [w.before.clone(), w.after.clone()])
        .collect();
    eprintln!("cluster: healthy after {}", elapsed(started));
    owner_taken(&mut cluster);
    nodes_killed(&mut cluster);
    eprintln!(
        "cluster: owner taken, nodes dead after {}",
        elapsed(started)
    );
    redis_killed_then_wiped(&mut cluster);
    assert_exported(&cluster.scrapes.iter().collect::<Vec<_>>(), true);
    assert_eq!(cluster.sim.stats().violations, Vec::new());
    let log = cluster.nodes[0].log();
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("cluster: done in {}", elapsed(started));
}

/// A shard of node a gets another owner in Redis (as if another process had claimed
/// it): a's writes for it are refused and its renewal drops it.
fn owner_taken(cluster: &mut Cluster) {
    let a = cluster.addrs[0].clone();
    let listed = get_json(&a, "/api/v1/shards");
    let victim = listed["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .find(|s| s["node"] == "a")
        .and_then(|s| s["id"].as_u64())
        .expect("a runs a shard");
    let before = cluster.scrape_all();
    let key = format!("shardkeeper:owner:{victim}");
    cluster
        .redis
        .cli(&["SET", &key, "intruder:1", "PX", "3000"]);
    for counter in [
        "shardkeeper_cluster_lost_shards_total",
        "shardkeeper_cluster_fenced_writes_total",
    ] {
        wait_metric(&a, counter, Duration::from_secs(5), |v| v >= 1.0);
    }
    let taken = cluster.since(before);
    cluster.check(
        "owner-taken",
        &taken,
        &[
            fires("ShardkeeperClusterFencedWrites", &a),
            fires("ShardkeeperClusterShardsLost", &a),
            fires_for_job("ShardkeeperClusterShardsUnowned"),
        ],
        &[],
    );
    wait_for("the shard claimed again", Duration::from_secs(15), || {
        cluster.settled()
    });
}

/// Nodes b and c die: a takes what its capacity allows, 4 shards stay unowned.
fn nodes_killed(cluster: &mut Cluster) {
    let a = cluster.addrs[0].clone();
    let before = cluster.scrape_all();
    for victim in &mut cluster.nodes[1..] {
        victim.signal("KILL");
        victim.wait(Duration::from_secs(5));
    }
    wait_for(
        "a at its capacity, the rest unowned",
        Duration::from_millis(LEASE_MS + 8000),
        || is(4)(Cluster::owned(&a)) && shards_in(&a, "ready").is_some_and(is(4)),
    );
    let dead = cluster.since(before);
    let expected = [
        fires("ShardkeeperTargetDown", &cluster.addrs[1]),
        fires("ShardkeeperTargetDown", &cluster.addrs[2]),
        fires_for_job("ShardkeeperClusterShardsUnowned"),
        fires_for_job("ShardkeeperClusterFailover"),
    ];
    cluster.check("nodes-dead", &dead, &expected, &[]);
}

/// Redis dies: a's calls fail and it fences itself. Then it comes back empty.
fn redis_killed_then_wiped(cluster: &mut Cluster) {
    let a = cluster.addrs[0].clone();
    let dead_nodes = [
        fires("ShardkeeperTargetDown", &cluster.addrs[1]),
        fires("ShardkeeperTargetDown", &cluster.addrs[2]),
    ];
    let before = cluster.scrape_all();
    cluster.redis.kill9();
    wait_metric(
        &a,
        "shardkeeper_cluster_fences_total",
        Duration::from_secs(10),
        |v| v >= 1.0,
    );
    let down = cluster.since(before);
    let mut expected = dead_nodes.to_vec();
    expected.extend([
        fires("ShardkeeperClusterRedisErrors", &a),
        fires("ShardkeeperClusterFenced", &a),
        fires_for_job("ShardkeeperClusterShardsUnowned"),
    ]);
    // Writes in flight at the kill may or may not be refused or fail before the
    // fence drops the shards (and with them the writes the store still owed).
    let unchecked = [
        "ShardkeeperClusterFencedWrites",
        "ShardkeeperStoreDegraded",
        "ShardkeeperStoreFlushLagging",
        "ShardkeeperShardsNotReady",
        "ShardkeeperManyShardsNotReady",
    ];
    cluster.check("redis-down", &down, &expected, &unchecked);

    cluster.redis.wipe();
    cluster.redis.restart();
    let before = cluster.scrape_all();
    wait_metric(
        &a,
        "shardkeeper_cluster_redis_data_losses_total",
        Duration::from_secs(15),
        |v| v >= 1.0,
    );
    // The budget is unknown (and reads 0) until a node fetched it again.
    wait_metric(
        &a,
        "shardkeeper_session_starts_remaining",
        Duration::from_secs(15),
        |v| v > 0.0,
    );
    let lost = cluster.since(before);
    let mut expected = dead_nodes.to_vec();
    expected.extend([
        fires("ShardkeeperClusterRedisDataLoss", &a),
        fires("ShardkeeperClusterRedisRestarted", &a),
    ]);
    // The node is rejoining: still erring, claiming back, maybe fenced again.
    let mut unchecked = unchecked.to_vec();
    unchecked.extend([
        "ShardkeeperClusterRedisErrors",
        "ShardkeeperClusterFenced",
        "ShardkeeperClusterShardsLost",
        "ShardkeeperClusterShardsUnowned",
        "ShardkeeperClusterFailover",
    ]);
    cluster.check("redis-data-lost", &lost, &expected, &unchecked);
}
