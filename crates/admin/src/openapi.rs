//! The OpenAPI document, generated from the handlers' annotations.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{api, events, health, history, ops};

#[derive(OpenApi)]
#[openapi(
    info(title = "shardkeeper admin API", description = "Control and observe the shards of a shardkeeper cluster."),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        api::list_shards,
        api::get_shard,
        api::restart_shard,
        api::stop_shard,
        api::start_shard,
        api::restart_all,
        api::presence,
        api::voice_state,
        api::members,
        api::identify,
        api::list_nodes,
        ops::list_jobs,
        ops::get_job,
        ops::cancel_job,
        ops::audit,
        history::history,
        events::events,
        openapi_json,
    ),
    modifiers(&BearerAuth)
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "OpenAPI 3 document")))]
pub(crate) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
