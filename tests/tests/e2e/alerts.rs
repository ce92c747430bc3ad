//! The alert only a crash inside the process can drive: a shard actor crashes (through
//! the cluster's test hook), and `promtool test rules` checks that
//! `ShardkeeperShardCrashes` fires on what `/metrics` then reports, and not before.
//! The other alerts are driven against the binary in `crates/cli/tests/binary/monitoring.rs`.

use std::path::Path;
use std::time::Duration;

use shardkeeper_cluster::StateKind;

use crate::harness::{Env, sim_config};

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

#[actix::test]
async fn a_crashed_shard_actor_fires_the_shard_crashes_alert() {
    let env = Env::start(sim_config(2, 2)).await;
    env.all_ready(Duration::from_secs(10)).await;
    let name = "shardkeeper_shard_restarts_total";
    let before = sample(&env.cluster.render_metrics(), name);
    env.cluster.crash_shard(0).expect("owned");
    env.wait_for("the shard restarted", Duration::from_secs(10), |env| {
        env.cluster
            .shard(0)
            .is_some_and(|s| s.restarts == 1 && s.state == StateKind::Ready)
    })
    .await;
    let after = sample(&env.cluster.render_metrics(), name);
    assert_eq!((before, after), (0.0, 1.0));

    // Half an hour at the first scrape, then half an hour at the second.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/prometheus/alerts.yml");
    let instance = "e2e:7878";
    let test = format!(
        r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: '{name}{{job="shardkeeper", instance="{instance}"}}'
        values: '{before}x30 {after}x30'
    alert_rule_test:
      - eval_time: 29m
        alertname: ShardkeeperShardCrashes
        exp_alerts: []
      - eval_time: 40m
        alertname: ShardkeeperShardCrashes
        exp_alerts:
          - exp_labels:
              severity: warning
              job: shardkeeper
              instance: "{instance}"
            exp_annotations:
              summary: "Shard actors crashed on {instance}"
              description: "The supervisor of {instance} restarted crashed shard actors in the last 15 minutes."
              runbook_url: "docs/operations.md#shardkeepershardcrashes"
      - eval_time: 55m
        alertname: ShardkeeperShardCrashes
        exp_alerts: []
"#,
        rules = rules.display(),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("crashes.promtool.yml");
    std::fs::write(&file, test).expect("test file");
    let output = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool is installed (./scripts/test installs Debian's prometheus)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    env.assert_clean().await;
    env.stop().await;
}
