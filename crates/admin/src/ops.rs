//! `/api/v1/jobs` and `/api/v1/audit`: long actions and who did what.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use shardkeeper_cluster::{AUDIT_KEPT, AuditEntry, Job, JobKind};
use utoipa::ToSchema;

use crate::ApiError;
use crate::api::ErrorBody;
use crate::auth::{Authorized, Operator};
use crate::state::AdminState;

/// Entries `GET /api/v1/audit` returns without `limit`.
const AUDIT_DEFAULT: usize = 100;

/// A long action and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobWire {
    /// Job id.
    id: String,
    /// What it does: `rolling_restart`.
    kind: &'static str,
    /// Whether each shard drops its session and IDENTIFYs.
    fresh: bool,
    /// `running`, `completed`, `cancelled` or `failed` (done, with errors).
    state: &'static str,
    /// Shards to handle.
    total: u32,
    /// Shards handled.
    done: u32,
    /// The first shard of the step in flight.
    current: Option<u32>,
    /// Every shard of the step in flight.
    in_flight: Vec<u32>,
    /// Shards that could not be handled, and why.
    errors: Vec<JobErrorWire>,
    /// Unix milliseconds.
    started_at_ms: u64,
    /// Unix milliseconds, once it ended.
    finished_at_ms: Option<u64>,
}

/// A shard a job could not handle.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobErrorWire {
    shard: u32,
    error: String,
}

impl From<Job> for JobWire {
    fn from(job: Job) -> Self {
        let JobKind::RollingRestart { fresh } = job.kind;
        Self {
            id: job.id,
            kind: "rolling_restart",
            fresh,
            state: job.state.api_name(),
            total: job.total,
            done: job.done,
            current: job.current.first().copied(),
            in_flight: job.current,
            errors: job
                .errors
                .into_iter()
                .map(|e| JobErrorWire {
                    shard: e.shard,
                    error: e.error,
                })
                .collect(),
            started_at_ms: job.started_at_ms,
            finished_at_ms: job.finished_at_ms,
        }
    }
}

/// `GET /api/v1/jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobList {
    jobs: Vec<JobWire>,
}

fn unknown_job(id: &str) -> ApiError {
    ApiError::NotFound(format!("no job {id:?} on this node"))
}

/// The jobs this node started, newest first.
#[utoipa::path(get, path = "/api/v1/jobs",
    responses((status = 200, body = JobList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_jobs(_: Authorized, state: web::Data<AdminState>) -> web::Json<JobList> {
    web::Json(JobList {
        jobs: state
            .cluster
            .jobs()
            .into_iter()
            .map(JobWire::from)
            .collect(),
    })
}

/// One job's progress.
#[utoipa::path(get, path = "/api/v1/jobs/{id}",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobWire), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_job(
    _: Authorized,
    id: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<web::Json<JobWire>, ApiError> {
    state
        .cluster
        .job(&id)
        .map(|job| web::Json(job.into()))
        .ok_or_else(|| unknown_job(&id))
}

/// Stops a job after the step in flight; answers with the job as it is now.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 202, body = JobWire), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn cancel_job(
    who: Operator,
    id: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let result = state
        .cluster
        .cancel_job(&id)
        .ok_or_else(|| unknown_job(&id));
    who.record(&state, "POST /api/v1/jobs/{id}/cancel", &id, &result);
    Ok(HttpResponse::Accepted().json(JobWire::from(result?)))
}

/// How many audit entries to read.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Newest entries to return: 1 to 10000 (default 100).
    limit: Option<usize>,
}

/// One operator action.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditWire {
    /// Unix milliseconds.
    at_ms: u64,
    /// The credential's label: `admin`, or `read-only` for a refused attempt.
    actor: String,
    /// The client's address.
    from: String,
    /// Method and route.
    action: String,
    /// The shard, guild, job or `all`.
    target: String,
    /// `ok` or the error.
    result: String,
    /// Cluster mode: the node that took the request.
    node: Option<String>,
}

impl From<AuditEntry> for AuditWire {
    fn from(entry: AuditEntry) -> Self {
        Self {
            at_ms: entry.at_ms,
            actor: entry.actor,
            from: entry.from,
            action: entry.action,
            target: entry.target,
            result: entry.result,
            node: entry.node,
        }
    }
}

/// `GET /api/v1/audit`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditList {
    entries: Vec<AuditWire>,
}

/// The newest operator actions (every mutating call, refused ones included), newest
/// first; in cluster mode, every node's.
#[utoipa::path(get, path = "/api/v1/audit",
    params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn audit(
    _: Authorized,
    query: web::Query<AuditQuery>,
    state: web::Data<AdminState>,
) -> Result<web::Json<AuditList>, ApiError> {
    let limit = query.limit.unwrap_or(AUDIT_DEFAULT);
    if !(1..=AUDIT_KEPT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {AUDIT_KEPT}, not {limit}"
        )));
    }
    let entries = state
        .cluster
        .audit()
        .recent(limit)
        .await
        .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    Ok(web::Json(AuditList {
        entries: entries.into_iter().map(AuditWire::from).collect(),
    }))
}
