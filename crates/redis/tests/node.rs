//! A node's seams against a real `redis-server` on a free port, in process: the test
//! plays the supervisor (it calls `released` when a shard leaves a node's set). Fast
//! checks of what the process tests in `crates/cli/tests` show end to end.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shardkeeper_cluster::{
    Change, Placement, RestClient, SessionBatch, ShardSet, StoredSession, client_config,
};
use shardkeeper_protocol::Token;
use shardkeeper_redis::server::RedisServer;
use shardkeeper_redis::{Node, NodeConfig};
use shardkeeper_sim::{Sim, SimConfig, SimHandle};

const TOKEN: &str = "node-test-token";
const WINDOW: Duration = Duration::from_millis(300);
const MARGIN: Duration = Duration::from_millis(50);

struct World {
    sim: SimHandle,
    buckets: u32,
    redis: Option<RedisServer>,
    url: String,
    _dir: tempfile::TempDir,
}

async fn world(total: u32) -> World {
    world_of(total, 1, 1000).await
}

/// A simulator of `total` shards in `buckets` buckets with `remaining` session starts,
/// and a `redis-server`.
async fn world_of(total: u32, buckets: u32, remaining: u32) -> World {
    let sim = Sim::start(SimConfig {
        token: TOKEN.into(),
        shards: total,
        max_concurrency: buckets,
        session_start_remaining: remaining,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(&dir.path().join("redis")).expect("redis-server");
    World {
        sim,
        buckets,
        url: redis.url(),
        redis: Some(redis),
        _dir: dir,
    }
}

async fn join(world: &World, id: &str, total: u32) -> Node {
    join_at(world, id, total, &world.url, Duration::from_millis(1500)).await
}

/// A node that reaches Redis at `url`, with leases of `lease`.
async fn join_at(world: &World, id: &str, total: u32, url: &str, lease: Duration) -> Node {
    let tls = client_config(None).expect("tls");
    let rest = RestClient::new(&world.sim.api_base(), Token::new(TOKEN), tls).expect("rest");
    let config = NodeConfig {
        url: url.to_owned(),
        namespace: "test".into(),
        node_id: id.into(),
        lease,
        capacity: 0,
        admin_url: String::new(),
        ids: None,
        total,
        max_concurrency: world.buckets,
        identify_window: WINDOW,
        identify_margin: MARGIN,
        reserve: Some(0),
    };
    Node::join(config, rest).await.expect("joins")
}

/// Plays the supervisor for `node`: runs every shard of its set at once, reports what
/// it runs, releases every shard that leaves the set, and returns the set's receiver.
fn supervise(node: &Node) -> tokio::sync::watch::Receiver<ShardSet> {
    supervise_only(node, |_| true)
}

/// Like [`supervise`], for a supervisor that starts only the shards `starts` accepts
/// (the others stay as if their start were still to come).
fn supervise_only(
    node: &Node,
    starts: impl Fn(u32) -> bool + Send + 'static,
) -> tokio::sync::watch::Receiver<ShardSet> {
    let placement: Arc<dyn Placement> = node.placement();
    let mut changes = placement.watch();
    let seen = changes.clone();
    tokio::spawn(async move {
        let mut previous = ShardSet::new();
        loop {
            let now = changes.borrow_and_update().clone();
            for &gone in previous.difference(&now) {
                if starts(gone) {
                    placement.released(gone);
                }
            }
            let running: ShardSet = now.iter().copied().filter(|&s| starts(s)).collect();
            placement.running(&running);
            previous = now;
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
    seen
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One node, supervised, once it runs every shard; with its set.
async fn alone(
    world: &World,
    id: &str,
    total: u32,
) -> (Node, tokio::sync::watch::Receiver<ShardSet>) {
    let node = join(world, id, total).await;
    let set = supervise(&node);
    until(&format!("{id} runs every shard"), || {
        set.borrow().len() == total as usize
    })
    .await;
    (node, set)
}

/// Two nodes, each running a share; returns their sets.
async fn pair(
    world: &World,
    total: u32,
) -> (
    Node,
    tokio::sync::watch::Receiver<ShardSet>,
    Node,
    tokio::sync::watch::Receiver<ShardSet>,
) {
    let (a, a_set) = alone(world, "a", total).await;
    let b = join(world, "b", total).await;
    let b_set = supervise(&b);
    until("both run a share, every shard once", || {
        let (x, y) = (a_set.borrow().clone(), b_set.borrow().clone());
        !x.is_empty() && !y.is_empty() && x.is_disjoint(&y) && x.len() + y.len() == total as usize
    })
    .await;
    (a, a_set, b, b_set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_split_the_shards_and_a_leaving_one_hands_them_all_over() {
    let total = 8;
    let world = world(total).await;
    let (a, a_set, b, _) = pair(&world, total).await;
    b.leave(Duration::from_secs(10)).await;
    until("a runs every shard again", || {
        a_set.borrow().len() == total as usize
    })
    .await;
    assert!(a.counters().claims.load(Ordering::Relaxed) > total.into());
}

fn session(seq: u64) -> StoredSession {
    StoredSession {
        session_id: "s".into(),
        resume_gateway_url: "ws://x".into(),
        seq,
        total: 2,
        updated: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_a_shard_cannot_write_its_session() {
    let total = 2;
    let world = world(total).await;
    let a = join(&world, "a", total).await;
    let a_set = supervise(&a);
    until("a runs both shards", || a_set.borrow().len() == 2).await;
    let store = a.store();
    let batch: SessionBatch = [(0, Change::Save(session(5)))].into_iter().collect();
    tokio::task::spawn_blocking({
        let store = Arc::clone(&store);
        move || store.write_sessions(&batch)
    })
    .await
    .expect("joined")
    .expect("written");
    // Someone else owns shard 0 now (as after a lapse and another node's claim).
    let client = redis::Client::open(world.url.as_str()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let _: () = redis::cmd("SET")
        .arg("test:owner:0")
        .arg("other:99")
        .query(&mut conn)
        .expect("set");
    let batch: SessionBatch = [(0, Change::Save(session(9)))].into_iter().collect();
    let loaded = tokio::task::spawn_blocking(move || {
        store
            .write_sessions(&batch)
            .expect("a refusal is not an error");
        store.load_sessions().expect("loads")
    })
    .await
    .expect("joined");
    assert_eq!(
        loaded.get(&0).map(|s| s.seq),
        Some(5),
        "the old owner's write was refused"
    );
    assert_eq!(a.counters().fenced_writes.load(Ordering::Relaxed), 1);
    until("a stops running the shard it lost", || {
        !a_set.borrow().contains(&0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_of_one_bucket_are_spaced_across_nodes_and_stop_without_redis() {
    let total = 4;
    let mut world = world(total).await;
    let (a, a_set, b, b_set) = pair(&world, total).await;
    let on_a = *a_set.borrow().iter().next().expect("a shard on a");
    let on_b = *b_set.borrow().iter().next().expect("a shard on b");
    let mut granted = Vec::new();
    for (node, shard) in [(&a, on_a), (&b, on_b)] {
        let permits = node.permits();
        let grant = tokio::time::timeout(Duration::from_secs(15), permits.ask(shard))
            .await
            .expect("a grant in time")
            .expect("granted");
        assert_eq!(grant.bucket, 0);
        granted.push(Instant::now());
        permits.written(shard, Instant::now());
    }
    let gap = granted[1] - granted[0];
    assert!(
        gap >= WINDOW + MARGIN,
        "two IDENTIFYs of one bucket {gap:?} apart"
    );

    // Redis gone: no grant at all (fail closed).
    drop(world.redis.take());
    let shard = *a_set.borrow().iter().last().expect("a shard");
    let asked = a.permits().ask(shard);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), asked)
            .await
            .is_err(),
        "a grant without Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fenced_store_keeps_the_session_store_contract() {
    let total = 16;
    let world = world(total).await;
    let (a, _set) = alone(&world, "a", total).await;
    let store = a.store();
    tokio::task::spawn_blocking(move || shardkeeper_cluster::contract::session_store(&store))
        .await
        .expect("the contract holds");
    assert_eq!(a.counters().fenced_writes.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_placement_keeps_the_placement_contract() {
    let total = 8;
    let world = world(total).await;
    let (a, _set) = alone(&world, "a", total).await;
    let joined = std::sync::Mutex::new(None);
    shardkeeper_cluster::contract::placement(a.placement().as_ref(), || async {
        let b = join(&world, "b", total).await;
        let b_set = supervise(&b);
        *joined.lock().expect("lock") = Some((b, b_set));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_schedule_keeps_the_permit_contract() {
    shardkeeper_cluster::contract::permits(
        |buckets, remaining| async move {
            let total = 8;
            let world = world_of(total, buckets, remaining).await;
            let (node, set) = alone(&world, "a", total).await;
            let source = node.permits();
            (
                source,
                Box::new((world, node, set)) as Box<dyn std::any::Any + Send>,
            )
        },
        WINDOW,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_stream_keeps_the_audit_contract() {
    let total = 2;
    let world = world(total).await;
    let a = join(&world, "a", total).await;
    let log = a.audit();
    shardkeeper_cluster::contract::audit_log(log.as_ref(), Duration::from_secs(5)).await;
    let entries = log.recent(1).await.expect("readable");
    assert_eq!(
        entries[0].node.as_deref(),
        Some("a"),
        "each entry names its node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_the_supervisor_has_not_started_is_not_handed_over_until_it_runs() {
    let total = 8;
    let world = world(total).await;
    let a = join(&world, "a", total).await;
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = Arc::clone(&started);
    // Shards 0..4 start at once, the others only once the gate opens.
    let a_set = supervise_only(&a, move |s| s < 4 || gate.load(Ordering::SeqCst));
    until("a holds every shard", || {
        a_set.borrow().len() == total as usize
    })
    .await;
    let b = join(&world, "b", total).await;
    let b_set = supervise(&b);
    until("b runs a share", || !b_set.borrow().is_empty()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let moved: ShardSet = b_set.borrow().clone();
    assert!(
        moved.iter().all(|&s| s < 4),
        "only shards a runs were handed over: {moved:?}"
    );
    assert!(
        (4..total).all(|s| a_set.borrow().contains(&s)),
        "a keeps the shards it has not started: {:?}",
        a_set.borrow()
    );
    // The rest start now: the supervisor says so, and the next rounds hand the rest
    // of b's share over.
    started.store(true, Ordering::SeqCst);
    let now_running = a_set.borrow().clone();
    a.placement().running(&now_running);
    until("every shard runs exactly once, b with its share", || {
        let (x, y) = (a_set.borrow().clone(), b_set.borrow().clone());
        x.is_disjoint(&y) && x.len() + y.len() == total as usize && y.iter().any(|&s| s >= 4)
    })
    .await;
}

/// Forwards TCP to `target`, each chunk of its answers `delay` late: a Redis far away.
async fn slow_path(target: &str, delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    let target = target.to_owned();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                let downstream = async {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n) = server_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let _ = tokio::join!(upstream, downstream);
            });
        }
    });
    format!("redis://{addr}/0")
}

/// The renewal round trip a node's metrics report, in microseconds.
fn renew_us(node: &Node) -> f64 {
    let name = "shardkeeper_cluster_lease_renew_microseconds ";
    node.peers()
        .render_metrics()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.parse().ok())
        .expect("the renewal gauge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_round_trips_fire_the_lease_renewal_alert() {
    let total = 2;
    let world = world(total).await;
    let redis = world
        .url
        .trim_start_matches("redis://")
        .trim_end_matches("/0")
        .to_owned();
    let far = slow_path(&redis, Duration::from_millis(600)).await;
    let slow = join_at(&world, "far", total, &far, Duration::from_secs(10)).await;
    let near = join(&world, "near", total).await;
    until("a renewal over the slow path", || {
        renew_us(&slow) > 500_000.0
    })
    .await;
    until("a renewal nearby", || renew_us(&near) > 0.0).await;
    let (slow_us, near_us) = (renew_us(&slow), renew_us(&near));
    assert!(near_us < 500_000.0, "{near_us}");

    // What each node reported, held for ten minutes.
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/prometheus/alerts.yml");
    let series = |instance: &str, value: f64| {
        format!(
            "      - series: 'shardkeeper_cluster_lease_renew_microseconds{{job=\"shardkeeper\", instance=\"{instance}\"}}'\n        values: '{value}x10'\n"
        )
    };
    let test = format!(
        r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
{far}{near}    alert_rule_test:
      - eval_time: 3m
        alertname: ShardkeeperClusterLeaseRenewalSlow
        exp_alerts: []
      - eval_time: 8m
        alertname: ShardkeeperClusterLeaseRenewalSlow
        exp_alerts:
          - exp_labels:
              severity: warning
              job: shardkeeper
              instance: far
            exp_annotations:
              summary: "Lease renewals of far take over 0.5 s"
              description: "The last lease renewal round trips of far have been above 500 ms for 5 minutes; a node stops its shards when a renewal is 0.9 x lease_ms overdue."
              runbook_url: "docs/operations.md#shardkeeperclusterleaserenewalslow"
"#,
        rules = rules.display(),
        far = series("far", slow_us),
        near = series("near", near_us),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("renewal.promtool.yml");
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
    assert_eq!(
        slow.counters().fenced_writes.load(Ordering::Relaxed),
        0,
        "slow, not fenced"
    );
}
