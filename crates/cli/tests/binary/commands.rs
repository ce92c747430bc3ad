//! The CLI contract: help, configuration errors, `demo` and `sim`.

use std::time::Duration;

use crate::support::{Running, binary};

#[test]
fn help_lists_every_subcommand() {
    let output = binary().arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["run", "demo", "sim", "shards"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn a_bad_config_key_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[shards]\ntotl = 3\n").expect("written");
    let output = binary()
        .args(["run", "--config"])
        .arg(&config)
        .env("DISCORD_TOKEN", "x")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("shards") && stderr.contains("totl"),
        "{stderr}"
    );

    std::fs::write(&config, "[identify]\nwindow_ms = \"soon\"\n").expect("written");
    let output = binary()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("identify.window_ms"));
}

#[test]
fn a_missing_token_exits_2_naming_the_variable() {
    let output = binary().arg("run").output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DISCORD_TOKEN"), "{stderr}");

    let output = binary()
        .arg("run")
        .env("DISCORD_TOKEN", "bot-secret-value")
        .env("SHARDKEEPER_DISCORD__TOKEN_ENV", "MY_BOT_TOKEN")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MY_BOT_TOKEN"), "{stderr}");

    let output = binary()
        .arg("run")
        .env("DISCORD_TOKEN", "bot-secret-value")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SHARDKEEPER_ADMIN_TOKEN"), "{stderr}");
    assert!(
        !stderr.contains("bot-secret-value"),
        "the token never appears in output"
    );
}

#[test]
fn demo_reaches_all_shards_ready_and_exits_0_on_sigint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = binary();
    command.args(["demo", "--shards", "8", "--admin", "127.0.0.1:0"]);
    let mut demo = Running::spawn(command, &dir.path().join("demo.log"));
    let dashboard = demo.line_with("dashboard", Duration::from_secs(30));
    assert!(
        dashboard.contains("http://127.0.0.1:") && dashboard.contains("#token="),
        "{dashboard}"
    );
    let ready = demo.line_with("all shards ready", Duration::from_secs(30));
    assert!(ready.contains("8 shards"), "{ready}");

    // `shards …` talks to the demo's admin API.
    let url = dashboard.split_whitespace().last().expect("url");
    let (base, token) = url.split_once("/#token=").expect("token in the fragment");
    let shards = |args: &[&str]| {
        binary()
            .arg("shards")
            .arg("--admin")
            .arg(base)
            .args(args)
            .env("SHARDKEEPER_ADMIN_TOKEN", token)
            .output()
            .expect("runs")
    };
    let list = shards(&["list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let table = String::from_utf8_lossy(&list.stdout);
    assert_eq!(
        table.lines().filter(|l| l.contains("ready")).count(),
        8,
        "{table}"
    );
    let restart = shards(&["restart", "1"]);
    assert!(String::from_utf8_lossy(&restart.stdout).contains("accepted"));
    let rolling = shards(&["restart", "--all"]);
    let (out, err) = (
        String::from_utf8_lossy(&rolling.stdout),
        String::from_utf8_lossy(&rolling.stderr),
    );
    assert!(rolling.status.success(), "{out}\n{err}");
    assert!(out.contains("completed, 8 shards restarted"), "{out}");
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.contains("[##############################]") && l.contains("8/8")),
        "the progress ends full: {err}"
    );
    let cancel = shards(&["cancel", "no-such-job"]);
    assert_eq!(cancel.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&cancel.stderr).contains("404"));
    let missing = shards(&["stop", "42"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    demo.signal("INT");
    assert_eq!(demo.wait(Duration::from_secs(15)).code(), Some(0));
    assert!(!demo.log().contains("panicked"));
}

#[test]
fn sim_serves_until_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = binary();
    command.args(["sim", "--shards", "4", "--token", "sim-cli-token"]);
    let mut sim = Running::spawn(command, &dir.path().join("sim.log"));
    let api = sim.line_with("api ", Duration::from_secs(10));
    let base = api.split_whitespace().last().expect("url").to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(format!("{base}/gateway/bot"))
        .header("Authorization", "Bot sim-cli-token")
        .call()
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let body = response.body_mut().read_to_string().expect("body");
    assert!(body.contains("\"shards\":4"), "{body}");
    sim.signal("TERM");
    assert_eq!(sim.wait(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn demo_with_three_nodes_runs_redis_and_the_nodes_then_stops_them_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = binary();
    command.args([
        "demo",
        "--nodes",
        "3",
        "--shards",
        "6",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut demo = Running::spawn(command, &dir.path().join("demo.log"));
    let dashboards: Vec<String> = (0..3)
        .map(|_| demo.line_with("dashboard", Duration::from_secs(30)))
        .collect();
    demo.line_with("all shards ready", Duration::from_secs(60));
    let hint = demo.line_with("kill -9", Duration::from_secs(5));
    assert!(hint.contains("RESUME"), "{hint}");
    let pids: Vec<String> = dashboards
        .iter()
        .map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "pid");
            words.next().expect("a pid").to_owned()
        })
        .collect();
    let url = dashboards[0].split_whitespace().last().expect("url");
    let (base, token) = url.split_once("/#token=").expect("token in the fragment");
    let list = binary()
        .args(["shards", "--admin", base, "list"])
        .env("SHARDKEEPER_ADMIN_TOKEN", token)
        .output()
        .expect("runs");
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(
        table.lines().next().is_some_and(|h| h.contains("node")),
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.contains("node-")).count(),
        6,
        "{table}"
    );
    // A rolling restart through one node restarts every node's shards.
    let rolling = binary()
        .args(["shards", "--admin", base, "restart", "--all"])
        .env("SHARDKEEPER_ADMIN_TOKEN", token)
        .output()
        .expect("runs");
    let out = String::from_utf8_lossy(&rolling.stdout);
    assert!(
        rolling.status.success() && out.contains("completed, 6 shards restarted"),
        "{out}\n{}",
        String::from_utf8_lossy(&rolling.stderr)
    );
    demo.signal("INT");
    assert_eq!(
        demo.wait(Duration::from_secs(30)).code(),
        Some(0),
        "{}",
        demo.log()
    );
    for pid in pids {
        let alive = std::path::Path::new("/proc").join(&pid).exists();
        assert!(!alive, "node process {pid} outlived the demo");
    }
}
