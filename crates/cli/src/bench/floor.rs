//! The transport floor of the throughput scenario: the same simulator load read by bare
//! tokio-tungstenite connections (default settings) that decode every message with
//! shardkeeper's decoder and do nothing else — no JSON check, no actor, no sink. What
//! they cost per message is what the WebSocket library, the socket reads and the inflate
//! take on this machine: the part of an event's cost no gateway client avoids.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use shardkeeper_protocol::{Compression, Decoder};
use tokio_tungstenite::tungstenite::Message;

use super::harness::{BenchSim, TOKEN, thread_cpu_seconds};

/// Half the simulator's heartbeat interval (41.25 s).
const HEARTBEAT: Duration = Duration::from_secs(20);

/// How long the readers may take to be Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `shards` readers on one thread against `sim` for `seconds`: messages read per second
/// and the thread's CPU seconds per million messages.
pub(crate) fn transport_once(
    sim: &BenchSim,
    shards: u32,
    compression: Compression,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = match compression {
        Compression::None => format!("{}/?v=10&encoding=json", sim.handle.gateway_url()),
        other => format!(
            "{}/?v=10&encoding=json&compress={}",
            sim.handle.gateway_url(),
            other.name()
        ),
    };
    let received = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        let readers: Vec<_> = (0..shards)
            .map(|shard| {
                let reader = Reader {
                    url: url.clone(),
                    shard: [shard, shards],
                    compression,
                    received: Arc::clone(&received),
                };
                tokio::spawn(reader.run())
            })
            .collect();
        let started = Instant::now();
        while sim.ready() < shards as usize {
            if let Some(failed) = readers.iter().find(|r| r.is_finished()) {
                failed.abort();
                anyhow::bail!("a transport-floor reader ended before it was Ready");
            }
            anyhow::ensure!(
                started.elapsed() < READY_TIMEOUT,
                "transport-floor readers not Ready after {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu0, count0, t0) = (
            thread_cpu_seconds(),
            received.load(Ordering::Relaxed),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu, count, elapsed) = (
            thread_cpu_seconds() - cpu0,
            received.load(Ordering::Relaxed) - count0,
            t0.elapsed().as_secs_f64(),
        );
        for reader in readers {
            reader.abort();
        }
        Ok((count as f64 / elapsed, cpu / (count.max(1) as f64 / 1e6)))
    })
}

/// One bare gateway connection.
struct Reader {
    url: String,
    shard: [u32; 2],
    compression: Compression,
    received: Arc<AtomicU64>,
}

impl Reader {
    async fn run(self) -> anyhow::Result<()> {
        let (mut ws, _) = tokio_tungstenite::connect_async(self.url.as_str()).await?;
        let identify = json!({"op": 2, "d": {
            "token": TOKEN,
            "properties": {"os": "linux", "browser": "shardkeeper-bench", "device": "shardkeeper-bench"},
            "shard": self.shard,
            "intents": 513,
        }});
        ws.send(Message::text(identify.to_string())).await?;
        let mut decoder = Decoder::new(self.compression);
        let mut beat = Instant::now();
        while let Some(message) = ws.next().await {
            match message? {
                Message::Text(text) => decoder.push(text.as_bytes())?,
                Message::Binary(data) => decoder.push(&data)?,
                _ => continue,
            };
            self.received.fetch_add(1, Ordering::Relaxed);
            if beat.elapsed() >= HEARTBEAT {
                beat = Instant::now();
                ws.send(Message::text(r#"{"op":1,"d":null}"#)).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shardkeeper_protocol::Compression;
    use shardkeeper_sim::SimConfig;

    use super::transport_once;
    use crate::bench::harness::BenchSim;

    #[test]
    fn bare_readers_decode_every_message_of_each_compression() {
        for compression in [
            Compression::None,
            Compression::ZlibStream,
            Compression::ZstdStream,
        ] {
            let sim = BenchSim::start(SimConfig {
                shards: 2,
                max_concurrency: 2,
                identify_window: Duration::from_millis(10),
                events_per_sec: 500.0,
                ..SimConfig::default()
            })
            .expect("simulator starts");
            let (rate, cost) = transport_once(&sim, 2, compression, 1).expect("measures");
            // Two shards at 500 events per second each; a reader that failed to decode
            // would have stopped counting.
            assert!((800.0..1_200.0).contains(&rate), "{compression}: {rate}/s");
            assert!(cost.is_finite() && cost >= 0.0, "{compression}: {cost}");
            assert!(sim.stats().violations.is_empty(), "{compression}");
        }
    }
}
