//! `/api/v1`: shards, restarts, presence, voice, members, identify.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use shardkeeper_cluster::ShardAction;
use shardkeeper_protocol::Snowflake;
use shardkeeper_protocol::payload::{PresenceUpdate, RequestGuildMembers, VoiceStateUpdate};
use utoipa::ToSchema;

use crate::ApiError;
use crate::auth::{Authorized, Operator};
use crate::state::AdminState;
use crate::wire::{IdentifyWire, NodeWire, ShardView};

/// `{"error": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    error: String,
}

/// `GET /api/v1/shards`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ShardList {
    shards: Vec<ShardView>,
}

/// Options of a restart.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestartQuery {
    /// Drop the session and IDENTIFY (spends session starts).
    #[serde(default)]
    fresh: bool,
    /// Restart even if the session-start budget cannot afford it.
    #[serde(default)]
    force: bool,
}

/// Which shard a presence goes to.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PresenceQuery {
    /// One shard; all owned shards when absent.
    shard: Option<u32>,
}

/// `POST /api/v1/guilds/{guild_id}/members` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembersBody {
    /// Username prefix; `""` with `limit` 0 asks for everyone.
    #[serde(default)]
    query: String,
    /// Maximum members (0: no limit, full list only).
    #[serde(default)]
    limit: u32,
    /// Include presences.
    #[serde(default)]
    presences: bool,
    /// Specific members (at most 100); replaces `query`.
    #[serde(default)]
    user_ids: Option<Vec<Snowflake>>,
}

/// `{"chunks": [...]}`: every GUILD_MEMBERS_CHUNK `d`, in order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MembersResponse {
    #[schema(value_type = Vec<Object>)]
    chunks: Vec<Box<serde_json::value::RawValue>>,
}

/// Accepted commands answer with what they did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// The shards the command went to.
    shards: Vec<u32>,
}

fn parse_shard(raw: &str) -> Result<u32, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::BadRequest(format!("shard id {raw:?} is not a non-negative integer"))
    })
}

fn parse_guild(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("guild id {raw:?} is not a snowflake")))
}

fn accepted(shards: Vec<u32>) -> HttpResponse {
    HttpResponse::Accepted().json(Accepted { shards })
}

/// Every shard: this process's, and in cluster mode every other node's with `node`.
#[utoipa::path(get, path = "/api/v1/shards",
    responses((status = 200, body = ShardList), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_shards(
    _: Authorized,
    state: web::Data<AdminState>,
) -> Result<web::Json<ShardList>, ApiError> {
    let clustered = state.cluster.peers().is_some();
    let shards = state.cluster.placed_shards().await?;
    Ok(web::Json(ShardList {
        shards: shards
            .into_iter()
            .map(|shard| ShardView::placed(shard, clustered))
            .collect(),
    }))
}

/// One shard.
#[utoipa::path(get, path = "/api/v1/shards/{id}",
    params(("id" = u32, Path, description = "Shard id")),
    responses((status = 200, body = ShardView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_shard(
    _: Authorized,
    id: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<web::Json<ShardView>, ApiError> {
    let id = parse_shard(&id)?;
    let clustered = state.cluster.peers().is_some();
    state
        .cluster
        .placed_shards()
        .await?
        .into_iter()
        .find(|shard| shard.snapshot.id == id)
        .map(|shard| web::Json(ShardView::placed(shard, clustered)))
        .ok_or_else(|| ApiError::NotFound(format!("shard {id} is not run by this process")))
}

/// Every node of the cluster (cluster mode).
#[utoipa::path(get, path = "/api/v1/nodes",
    responses((status = 200, body = NodeList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_nodes(
    _: Authorized,
    state: web::Data<AdminState>,
) -> Result<web::Json<NodeList>, ApiError> {
    let Some(peers) = state.cluster.peers() else {
        return Err(ApiError::NotFound(
            "not in cluster mode: this process runs alone".into(),
        ));
    };
    let nodes = peers.nodes().await?;
    Ok(web::Json(NodeList {
        nodes: nodes.into_iter().map(NodeWire::from).collect(),
    }))
}

/// `GET /api/v1/nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeList {
    nodes: Vec<NodeWire>,
}

/// Carries out an operator action on one shard, wherever it runs, and records it in
/// the cluster's audit log.
async fn act(
    state: &AdminState,
    who: &Operator,
    route: &str,
    id: u32,
    action: ShardAction,
) -> Result<HttpResponse, ApiError> {
    let result = state.cluster.act(id, action).await;
    who.record(state, route, &id.to_string(), &result);
    result?;
    Ok(accepted(vec![id]))
}

/// Reconnects a shard now: RESUME, or with `fresh=true` a new session.
#[utoipa::path(post, path = "/api/v1/shards/{id}/restart",
    params(("id" = u32, Path, description = "Shard id"), RestartQuery),
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn restart_shard(
    who: Operator,
    id: web::Path<String>,
    query: web::Query<RestartQuery>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_shard(&id)?;
    let action = ShardAction::Restart {
        fresh: query.fresh,
        force: query.force,
    };
    act(&state, &who, "POST /api/v1/shards/{id}/restart", id, action).await
}

/// Closes a shard with 4000 (the session stays resumable) and keeps it stopped.
#[utoipa::path(post, path = "/api/v1/shards/{id}/stop",
    params(("id" = u32, Path, description = "Shard id")),
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn stop_shard(
    who: Operator,
    id: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_shard(&id)?;
    act(
        &state,
        &who,
        "POST /api/v1/shards/{id}/stop",
        id,
        ShardAction::Stop,
    )
    .await
}

/// Starts a stopped, quarantined or failed shard.
#[utoipa::path(post, path = "/api/v1/shards/{id}/start",
    params(("id" = u32, Path, description = "Shard id")),
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn start_shard(
    who: Operator,
    id: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_shard(&id)?;
    act(
        &state,
        &who,
        "POST /api/v1/shards/{id}/start",
        id,
        ShardAction::Start,
    )
    .await
}

/// Rolling restart of every shard of the bot as a job: a step of one shard per identify
/// bucket at a time, each Ready again before the next step. `Location` names the job.
#[utoipa::path(post, path = "/api/v1/shards/restart",
    params(RestartQuery),
    responses((status = 202, body = JobStarted, headers(("Location" = String, description = "The job: /api/v1/jobs/{id}"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn restart_all(
    who: Operator,
    query: web::Query<RestartQuery>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let action = if query.fresh {
        "POST /api/v1/shards/restart?fresh=true"
    } else {
        "POST /api/v1/shards/restart"
    };
    let result = state
        .cluster
        .start_rolling_restart(query.fresh, query.force);
    let target = result
        .as_ref()
        .map_or_else(|_| "all".to_owned(), |job| format!("all (job {})", job.id));
    who.record(&state, action, &target, &result);
    let job = result?;
    let shards = state.cluster.every_shard();
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/api/v1/jobs/{}", job.id)))
        .json(JobStarted {
            shards,
            job: job.id,
        }))
}

/// `POST /api/v1/shards/restart`: the shards the job restarts and its id.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobStarted {
    shards: Vec<u32>,
    job: String,
}

/// Sends op 3 to every owned shard, or to `?shard=N`.
#[utoipa::path(post, path = "/api/v1/presence",
    params(PresenceQuery),
    request_body = PresenceUpdate,
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn presence(
    who: Operator,
    query: web::Query<PresenceQuery>,
    body: web::Json<PresenceUpdate>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let shards = match query.shard {
        Some(id) => vec![id],
        None => state.cluster.ids(),
    };
    let result = state.cluster.presence(query.shard, body.into_inner()).await;
    let target = query
        .shard
        .map_or_else(|| "all".to_owned(), |id| id.to_string());
    who.record(&state, "POST /api/v1/presence", &target, &result);
    result?;
    Ok(accepted(shards))
}

/// Sends op 4 on the shard that owns the guild.
#[utoipa::path(post, path = "/api/v1/voice-state",
    request_body = VoiceStateUpdate,
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn voice_state(
    who: Operator,
    body: web::Json<VoiceStateUpdate>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let guild = body.guild_id.to_string();
    let result = state.cluster.voice_state(body.into_inner()).await;
    who.record(&state, "POST /api/v1/voice-state", &guild, &result);
    Ok(accepted(vec![result?]))
}

/// Sends op 8 on the shard that owns the guild and returns every chunk.
#[utoipa::path(post, path = "/api/v1/guilds/{guild_id}/members",
    params(("guild_id" = String, Path, description = "Guild snowflake")),
    request_body = MembersBody,
    responses((status = 200, body = MembersResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn members(
    who: Operator,
    guild: web::Path<String>,
    body: web::Json<MembersBody>,
    state: web::Data<AdminState>,
) -> Result<web::Json<MembersResponse>, ApiError> {
    let guild = parse_guild(&guild)?;
    let body = body.into_inner();
    let request = match body.user_ids {
        Some(ids) => RequestGuildMembers {
            guild_id: Snowflake(guild),
            query: None,
            limit: None,
            presences: body.presences,
            user_ids: Some(ids),
            nonce: None,
        },
        None => RequestGuildMembers {
            guild_id: Snowflake(guild),
            query: Some(body.query),
            limit: Some(body.limit),
            presences: body.presences,
            user_ids: None,
            nonce: None,
        },
    };
    request.validate().map_err(ApiError::BadRequest)?;
    let result = state.cluster.request_members(request).await;
    who.record(
        &state,
        "POST /api/v1/guilds/{guild_id}/members",
        &guild.to_string(),
        &result,
    );
    let chunks = result?;
    Ok(web::Json(MembersResponse { chunks }))
}

/// Buckets, next grant times and the session start budget.
#[utoipa::path(get, path = "/api/v1/identify",
    responses((status = 200, body = IdentifyWire), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn identify(
    _: Authorized,
    state: web::Data<AdminState>,
) -> Result<web::Json<IdentifyWire>, ApiError> {
    state
        .cluster
        .identify_status()
        .map(|status| web::Json(status.into()))
        .ok_or_else(|| {
            ApiError::Unavailable("the identify coordinator has not reported yet".into())
        })
}
