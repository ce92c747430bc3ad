//! The tokio side: accept loop, TLS, routing and the per-connection WebSocket loop.

mod framing;
mod http;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::conn::{Conn, Entry, Out};
use crate::rules;
use crate::world::World;

use self::framing::Encoder;

/// How long a closing connection may take to finish the close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` flips, then ends every connection.
pub(crate) async fn serve(
    listener: TcpListener,
    world: Arc<World>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let world = Arc::clone(&world);
                    let tls = tls.clone();
                    tasks.spawn(async move {
                        match tls {
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(stream) => handle(stream, world).await,
                                Err(err) => tracing::debug!(%err, "tls handshake failed"),
                            },
                            None => handle(stream, world).await,
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    tasks.shutdown().await;
}

pub(crate) async fn handle<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    world: Arc<World>,
) {
    let Some(request) = http::read_request(&mut stream).await else {
        return;
    };
    let Some(key) = request.websocket_key.clone() else {
        return http::serve_rest(&mut stream, request, &world).await;
    };
    let entry = match request.path.as_str() {
        "/" | "" => Entry::Gateway,
        "/resume" => Entry::Resume,
        _ => return http::serve_rest(&mut stream, request, &world).await,
    };
    if http::accept_upgrade(&mut stream, &key).await.is_err() {
        return;
    }
    let config = WebSocketConfig::default().max_message_size(Some(1 << 20));
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    run_connection(ws, entry, &request.query, world).await;
}

/// Whether the socket stays open after delivering a batch.
enum Flow {
    Open,
    Closing,
    Dropped,
}

async fn run_connection<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocketStream<S>,
    entry: Entry,
    query: &str,
    world: Arc<World>,
) {
    let params = rules::connect_params(query);
    let mut encoder = Encoder::new(params.compression);
    let mut faults = world.faults.subscribe();
    world.connections.fetch_add(1, Ordering::Relaxed);
    world.open_connections.fetch_add(1, Ordering::Relaxed);
    let (mut conn, hello) = Conn::open(Arc::clone(&world), entry, params.version, Instant::now());
    let (mut sink, mut stream) = ws.split();
    let mut flow = deliver(&mut sink, &mut encoder, hello).await;
    while matches!(flow, Flow::Open) {
        let deadline = conn.next_deadline();
        let out = tokio::select! {
            biased;
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => conn.on_frame(Instant::now(), text.as_bytes()),
                Some(Ok(Message::Binary(bytes))) => conn.on_frame(Instant::now(), &bytes),
                Some(Ok(Message::Close(frame))) => {
                    world.client_closed(frame.map_or(1005, |f| u16::from(f.code)));
                    let _ = sink.flush().await;
                    flow = Flow::Closing;
                    Vec::new()
                }
                Some(Ok(_)) => Vec::new(),
                Some(Err(_)) | None => break,
            },
            fault = faults.recv() => match fault {
                Ok((target, fault)) if target.hits(conn.served_shard()) => conn.on_fault(&fault),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => Vec::new(),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = tokio::time::sleep_until(deadline.into()) => conn.on_tick(Instant::now()),
        };
        if matches!(flow, Flow::Open) {
            flow = deliver(&mut sink, &mut encoder, out).await;
        }
    }
    conn.finish(Instant::now());
    if matches!(flow, Flow::Closing) {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }
    world.open_connections.fetch_sub(1, Ordering::Relaxed);
}

async fn deliver<K>(sink: &mut K, encoder: &mut Encoder, out: Vec<Out>) -> Flow
where
    K: futures_util::Sink<Message> + Unpin,
{
    if out.is_empty() {
        return Flow::Open;
    }
    for item in out {
        let message = match item {
            Out::Frame(json) => match encoder.encode(&json) {
                Ok(message) => message,
                Err(err) => {
                    tracing::error!(%err, "cannot compress a frame");
                    return Flow::Dropped;
                }
            },
            Out::Close(code) => {
                let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: code.into(),
                    reason: "".into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                return Flow::Closing;
            }
            Out::Drop => return Flow::Dropped,
        };
        if sink.feed(message).await.is_err() {
            return Flow::Dropped;
        }
    }
    if sink.flush().await.is_err() {
        return Flow::Dropped;
    }
    Flow::Open
}
