//! Load benchmark of the simulator: many concurrent sessions, each read by a trivial
//! client that only counts frames.
//!
//! `cargo bench -p shardkeeper-sim --bench load -- [--connections N] [--rate R] [--seconds S] [--bytes B]`
//!
//! `--rate` is dispatches per second per connection; `--rate 0` asks for as many as the
//! simulator can produce (it is capped at 100,000 per connection).
#![allow(clippy::expect_used, reason = "a benchmark fails loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use shardkeeper_sim::{Sim, SimConfig};
use tokio_tungstenite::tungstenite::Message;

struct Options {
    connections: u32,
    rate: f64,
    seconds: u64,
    bytes: usize,
}

fn options() -> Options {
    let mut options = Options {
        connections: 1000,
        rate: 100.0,
        seconds: 10,
        bytes: 512,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--connections" => options.connections = pair[1].parse().expect("--connections N"),
            "--rate" => options.rate = pair[1].parse().expect("--rate R"),
            "--seconds" => options.seconds = pair[1].parse().expect("--seconds S"),
            "--bytes" => options.bytes = pair[1].parse().expect("--bytes B"),
            _ => {}
        }
    }
    options
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(options));
}

async fn run(options: Options) {
    let rate = if options.rate > 0.0 {
        options.rate
    } else {
        100_000.0
    };
    let sim = Sim::start(SimConfig {
        shards: options.connections,
        max_concurrency: options.connections,
        identify_window: Duration::from_millis(1),
        events_per_sec: rate,
        event_body_bytes: options.bytes,
        guilds_per_shard: 1,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let url = format!("{}/?v=10&encoding=json", sim.gateway_url());
    let clients: Vec<_> = (0..options.connections)
        .map(|shard| {
            let (url, received, bytes, ready) = (url.clone(), Arc::clone(&received), Arc::clone(&bytes), Arc::clone(&ready));
            let total = options.connections;
            tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
                let identify = format!(
                    r#"{{"op":2,"d":{{"token":"sim-token","properties":{{"os":"linux","browser":"bench","device":"bench"}},"shard":[{shard},{total}],"intents":513}}}}"#
                );
                ws.send(Message::text(identify)).await.expect("identify");
                ready.fetch_add(1, Ordering::Relaxed);
                let mut last_beat = Instant::now();
                while let Some(Ok(message)) = ws.next().await {
                    received.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(message.len() as u64, Ordering::Relaxed);
                    if last_beat.elapsed() > Duration::from_secs(20) {
                        last_beat = Instant::now();
                        let _ = ws.send(Message::text(r#"{"op":1,"d":null}"#)).await;
                    }
                }
            })
        })
        .collect();
    while ready.load(Ordering::Relaxed) < u64::from(options.connections) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (count0, bytes0, t0) = (
        received.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let events = received.load(Ordering::Relaxed) - count0;
    let volume = bytes.load(Ordering::Relaxed) - bytes0;
    let stats = sim.stats();
    println!(
        "| connections | requested/s per conn | all connected after | received events/s | MiB/s | open connections | violations |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.2} s | {:.0} | {:.1} | {} | {} |",
        options.connections,
        if options.rate > 0.0 {
            format!("{rate}")
        } else {
            "max".into()
        },
        connect_time.as_secs_f64(),
        events as f64 / elapsed,
        volume as f64 / elapsed / 1_048_576.0,
        stats.open_connections,
        stats.violations.len(),
    );
    for client in clients {
        client.abort();
    }
    sim.shutdown().await;
}
