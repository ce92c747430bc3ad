//! Compression, TLS, generated events and load.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use serde_json::json;
use shardkeeper_protocol::Compression;
use shardkeeper_sim::{SimConfig, TlsConfig};

use crate::client::{Client, TOKEN, assert_no_violations, config, sim};

#[tokio::test]
async fn zlib_and_zstd_stream_connections() {
    for compression in [Compression::ZlibStream, Compression::ZstdStream] {
        let sim = sim(SimConfig {
            events_per_sec: 100.0,
            ..config()
        })
        .await;
        let mut client = Client::connect_with(&sim.gateway_url(), compression, None).await;
        client.login(0, 4).await;
        let event = client.until(0, Some("MESSAGE_CREATE")).await;
        // The default body is about 512 bytes, padded in `content`.
        assert!(
            event["d"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
                && event["d"].to_string().len() > 480,
            "{compression}"
        );
        assert_no_violations(&sim.stats());
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn generated_events_have_contiguous_sequences_and_the_configured_rate() {
    let sim = sim(SimConfig {
        events_per_sec: 200.0,
        event_body_bytes: 512,
        ..config()
    })
    .await;
    let mut client = Client::connect(&sim.gateway_url()).await;
    let (_, mut last) = client.login(0, 4).await;
    let started = std::time::Instant::now();
    let mut bodies = 0;
    while started.elapsed() < Duration::from_secs(1) {
        let event = client.until(0, Some("MESSAGE_CREATE")).await;
        let seq = event["s"].as_u64().expect("seq");
        assert_eq!(seq, last + 1, "no gap");
        last = seq;
        bodies += 1;
        let size = event["d"].to_string().len();
        assert!((480..=560).contains(&size), "{size}");
        if bodies % 50 == 0 {
            client.send(&json!({"op": 1, "d": last})).await;
        }
    }
    assert!(
        (150..=260).contains(&bodies),
        "{bodies} events in a second at 200/s"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn tls_for_gateway_and_rest() {
    let tls = TlsConfig::self_signed().expect("certificate");
    let pem = tls.cert_pem.clone();
    let sim = sim(SimConfig {
        tls: Some(tls),
        ..config()
    })
    .await;
    assert!(sim.gateway_url().starts_with("wss://"));
    assert!(sim.api_base().starts_with("https://"));

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client_config = Arc::new(client_config);
    let url = sim.gateway_url().replace("127.0.0.1", "localhost");
    let mut client =
        Client::connect_with(&url, Compression::None, Some(Arc::clone(&client_config))).await;
    client.login(0, 4).await;

    let connector = tokio_rustls::TlsConnector::from(client_config);
    let tcp = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut stream = connector.connect(name, tcp).await.expect("tls handshake");
    let request = format!(
        "GET /api/v10/gateway/bot HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bot {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("written");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("wss://"));
    assert_no_violations(&sim.stats());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_hundred_concurrent_sessions() {
    let sim = sim(SimConfig {
        max_concurrency: 100,
        shards: 100,
        events_per_sec: 20.0,
        ..config()
    })
    .await;
    let url = sim.gateway_url();
    let tasks: Vec<_> = (0..100)
        .map(|shard| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut client = Client::connect(&url).await;
                client.login(shard, 100).await;
                for _ in 0..5 {
                    client.until(0, Some("MESSAGE_CREATE")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client finished");
    }
    let stats = sim.stats();
    assert_no_violations(&stats);
    assert_eq!(stats.identifies, 100);
    assert!(stats.events_sent >= 100 * (1 + 3 + 5));
    sim.shutdown().await;
}
