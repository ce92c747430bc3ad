//! `GET /api/v1/events`: WebSocket fan-out of event lines. A subscriber that falls a
//! bounded buffer behind is disconnected and counted; it never slows a shard.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::{HttpRequest, HttpResponse, web};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use shardkeeper_cluster::{Delivery, Event, EventSink};
use tokio::sync::mpsc;

use crate::auth::Authorized;
use crate::error::ApiError;
use crate::state::AdminState;

/// Event lines a subscriber may be behind before it is disconnected.
const SUBSCRIBER_BUFFER: usize = 4096;

struct Subscriber {
    id: u64,
    filter: Option<HashSet<String>>,
    tx: mpsc::Sender<Arc<str>>,
}

/// The WebSocket sink: every event line to every matching subscriber.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
    dropped: Counter,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// A hub with no subscribers.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(HubInner {
                subscribers: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                dropped: Counter::default(),
            }),
        }
    }

    /// Subscribers disconnected for falling behind.
    #[must_use]
    pub fn dropped(&self) -> Counter {
        self.inner.dropped.clone()
    }

    /// Subscribers connected now.
    #[must_use]
    pub fn subscriber_count(&self) -> usize {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn subscribe(&self, filter: Option<HashSet<String>>) -> (u64, mpsc::Receiver<Arc<str>>) {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Subscriber { id, filter, tx });
        (id, rx)
    }

    fn unsubscribe(&self, id: u64) {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|s| s.id != id);
    }
}

impl EventSink for EventHub {
    fn name(&self) -> &'static str {
        "websocket"
    }

    fn deliver(&self, event: &Event) -> Delivery {
        let mut subscribers = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if subscribers.is_empty() {
            return Delivery::Accepted;
        }
        let mut line: Option<Arc<str>> = None;
        subscribers.retain(|subscriber| {
            if subscriber
                .filter
                .as_ref()
                .is_some_and(|f| !f.contains(&*event.t))
            {
                return true;
            }
            let line = line.get_or_insert_with(|| event.to_line().into());
            match subscriber.tx.try_send(Arc::clone(line)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        subscriber = subscriber.id,
                        "event subscriber fell behind; disconnecting it"
                    );
                    self.inner.dropped.inc();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        Delivery::Accepted
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    /// Comma-separated event names.
    t: Option<String>,
}

/// Upgrades to a WebSocket that receives event lines (optionally only of `?t=A,B`).
#[utoipa::path(
    get,
    path = "/api/v1/events",
    params(("t" = Option<String>, Query, description = "Comma-separated event names to receive")),
    responses(
        (status = 101, description = "WebSocket of NDJSON event lines"),
        (status = 400, description = "Not a WebSocket upgrade request, or a malformed query", body = crate::api::ErrorBody),
        (status = 401, description = "Missing or invalid admin token", body = crate::api::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn events(
    _: Authorized,
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<EventsQuery>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, actix_web::Error> {
    let filter = query.t.as_deref().map(|t| {
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let (response, mut session, mut incoming) = actix_ws::handle(&req, body).map_err(|err| {
        ApiError::BadRequest(format!(
            "this endpoint speaks WebSocket only (send an Upgrade request): {err}"
        ))
    })?;
    let hub = state.hub.clone();
    let (id, mut lines) = hub.subscribe(filter);
    state.subscribers.inc();
    let state = state.into_inner();
    actix_web::rt::spawn(async move {
        loop {
            tokio::select! {
                line = lines.recv() => {
                    let Some(line) = line else {
                        let _ = session.close(Some(actix_ws::CloseCode::Again.into())).await;
                        break;
                    };
                    if session.text(&*line).await.is_err() {
                        break;
                    }
                }
                message = incoming.recv() => match message {
                    Some(Ok(actix_ws::Message::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() { break }
                    }
                    Some(Ok(actix_ws::Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        hub.unsubscribe(id);
        state.subscribers.dec();
    });
    Ok(response)
}
