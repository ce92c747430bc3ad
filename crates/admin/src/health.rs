//! Open routes: liveness, readiness, metrics.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::json;
use shardkeeper_cluster::{StateKind, StoreHealth};
use utoipa::ToSchema;

use crate::state::AdminState;
use crate::wire::WireState;

/// `GET /readyz` body.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// Every owned shard is Ready.
    ready: bool,
    /// Shards that are not Ready, with their state.
    not_ready: Vec<NotReady>,
    /// `healthy`, or why sessions do not reach the store.
    store: String,
    /// Cluster mode only: whether Redis answered lately (`reachable`/`unreachable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct NotReady {
    id: u32,
    state: WireState,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Every owned shard is Ready (503 with the ones that are not).
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub(crate) async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    let not_ready: Vec<NotReady> = state
        .cluster
        .shards()
        .into_iter()
        .filter(|s| s.state != StateKind::Ready)
        .map(|s| NotReady {
            id: s.id,
            state: WireState(s.state),
        })
        .collect();
    let store = match state.cluster.store_health() {
        StoreHealth::Healthy => "healthy".to_owned(),
        StoreHealth::Degraded(err) => format!("degraded: {err}"),
    };
    let reachable = state.cluster.peers().map(|peers| peers.reachable());
    let ready = not_ready.is_empty() && reachable != Some(false);
    let body = Readiness {
        ready,
        not_ready,
        store,
        cluster: reachable.map(|ok| if ok { "reachable" } else { "unreachable" }.to_owned()),
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    state
        .subscribers
        .set(i64::try_from(state.hub.subscriber_count()).unwrap_or(i64::MAX));
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(render(&state))
}

/// The cluster's metrics, then in cluster mode the node's own, before the end marker.
fn render(state: &AdminState) -> String {
    let text = state.cluster.render_metrics();
    let Some(peers) = state.cluster.peers() else {
        return text;
    };
    let body = text.strip_suffix("# EOF\n").unwrap_or(&text);
    format!("{body}{}# EOF\n", peers.render_metrics())
}
