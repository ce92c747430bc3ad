//! The admin API of shardkeeper on actix-web, sharing the actix system with the cluster.
//!
//! Routes (design §6): `/healthz`, `/readyz` and `/metrics` are open; everything under
//! `/api/v1` needs `Authorization: Bearer <admin token>` (compared in constant time);
//! errors are `{"error": "..."}` with a 4xx/5xx status. `/api/v1/openapi.json` is
//! generated from the handlers; `/` serves the dashboard embedded in the binary.
//!
//! This crate holds no cluster logic: every route calls [`ClusterHandle`].
//!
//! Layout:
//! - `api.rs`: shard, presence, voice, member and identify routes
//! - `events.rs`: [`EventHub`], the WebSocket fan-out sink
//! - `health.rs`: liveness, readiness, metrics
//! - `auth.rs`: the bearer-token extractor; `error.rs`: [`ApiError`]
//! - `ops.rs`: jobs (rolling restarts) and the audit log; `history.rs`: the last
//!   hour in samples for the dashboard's charts
//! - `openapi.rs`: the OpenAPI document; `dashboard.rs` + `static/`: the page
//! - `wire.rs`: the JSON and schemas of the cluster's snapshots

mod api;
mod auth;
mod dashboard;
mod error;
mod events;
mod health;
mod history;
mod openapi;
mod ops;
mod state;
mod wire;

use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::error::JsonPayloadError;
use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shardkeeper_cluster::ClusterHandle;
use shardkeeper_protocol::Token;

pub use error::ApiError;
pub use events::EventHub;

use crate::state::AdminState;

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024;

/// Where and how the admin API listens.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Listen address (127.0.0.1:7878 by default).
    pub bind: SocketAddr,
    /// The admin token; the API does not start without one.
    pub token: Token,
    /// An optional read-only token: lists, identify, metrics and events, 403 on every
    /// route that changes something.
    pub read_token: Option<Token>,
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No admin token.
    #[error("the admin API needs a non-empty admin token")]
    NoToken,
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// A running admin API.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    handle: ServerHandle,
    sampler: actix_web::rt::task::JoinHandle<()>,
}

impl AdminServer {
    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests and finishes the ones in flight.
    pub async fn stop(&self) {
        self.sampler.abort();
        self.handle.stop(true).await;
    }
}

/// Starts the admin API on the current actix system.
pub fn start(
    config: AdminConfig,
    cluster: ClusterHandle,
    hub: EventHub,
) -> Result<AdminServer, AdminError> {
    if config.token.is_empty() {
        return Err(AdminError::NoToken);
    }
    let refused = Counter::default();
    let subscribers = Gauge::default();
    let metrics = cluster.metrics();
    metrics.register(
        "admin_requests_refused",
        "Admin requests refused as malformed or unauthorized",
        refused.clone(),
    );
    metrics.register(
        "event_subscribers",
        "WebSocket event subscribers connected",
        subscribers.clone(),
    );
    metrics.register(
        "event_subscribers_dropped",
        "WebSocket event subscribers disconnected for falling behind",
        hub.dropped(),
    );
    let state = web::Data::new(AdminState {
        cluster,
        token: config.token,
        read_token: config.read_token.filter(|token| !token.is_empty()),
        hub,
        requests_refused: refused,
        subscribers,
        history: history::History::default(),
    });
    let sampler = actix_web::rt::spawn(history::sample(state.clone()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(json_config(&state))
            .app_data(query_config(&state))
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(config.bind)
    .map_err(|source| AdminError::Bind {
        addr: config.bind,
        source,
    })?;
    let addr = server.addrs().first().copied().unwrap_or(config.bind);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    tracing::info!(%addr, "admin API listening");
    Ok(AdminServer {
        addr,
        handle,
        sampler,
    })
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(dashboard::page))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::scope("/api/v1")
                .route("/shards", web::get().to(api::list_shards))
                .route("/shards/restart", web::post().to(api::restart_all))
                .route("/shards/{id}", web::get().to(api::get_shard))
                .route("/shards/{id}/restart", web::post().to(api::restart_shard))
                .route("/shards/{id}/stop", web::post().to(api::stop_shard))
                .route("/shards/{id}/start", web::post().to(api::start_shard))
                .route("/presence", web::post().to(api::presence))
                .route("/voice-state", web::post().to(api::voice_state))
                .route("/guilds/{guild_id}/members", web::post().to(api::members))
                .route("/identify", web::get().to(api::identify))
                .route("/nodes", web::get().to(api::list_nodes))
                .route("/jobs", web::get().to(ops::list_jobs))
                .route("/jobs/{id}", web::get().to(ops::get_job))
                .route("/jobs/{id}/cancel", web::post().to(ops::cancel_job))
                .route("/audit", web::get().to(ops::audit))
                .route("/history", web::get().to(history::history))
                .route("/events", web::get().to(events::events))
                .route("/openapi.json", web::get().to(openapi::openapi_json)),
        );
}

fn json_config(state: &web::Data<AdminState>) -> web::JsonConfig {
    let state = state.clone();
    web::JsonConfig::default()
        .limit(MAX_BODY)
        .error_handler(move |err, _| {
            state.requests_refused.inc();
            match err {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => {
                    ApiError::PayloadTooLarge { limit: MAX_BODY }
                }
                other => ApiError::BadRequest(format!("invalid JSON body: {other}")),
            }
            .into()
        })
}

fn query_config(state: &web::Data<AdminState>) -> web::QueryConfig {
    let state = state.clone();
    web::QueryConfig::default().error_handler(move |err, _| {
        state.requests_refused.inc();
        ApiError::BadRequest(format!("invalid query: {err}")).into()
    })
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}
