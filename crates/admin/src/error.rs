//! `ApiError`: every failure becomes `{"error": "..."}` with a 4xx/5xx status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use shardkeeper_cluster::{ClusterError, MembersError};
use shardkeeper_session::CommandError;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong `Authorization: Bearer` token.
    #[error("missing or invalid admin token")]
    Unauthorized,
    /// The token may not do this (the read-only token on a route that changes things).
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request body is over the cap.
    #[error("request body is over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// No such route or shard.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the shard's state or the identify budget.
    #[error("{message}")]
    Conflict {
        /// What is wrong.
        message: String,
        /// Extra fields for the body (cost and budget of a refused restart).
        details: serde_json::Value,
    },
    /// Discord rate-limited the request.
    #[error("{message}")]
    RateLimited {
        /// What happened.
        message: String,
        /// Seconds to wait.
        retry_after: f64,
    },
    /// The cluster cannot serve the request right now.
    #[error("{0}")]
    Unavailable(String),
    /// No answer in time.
    #[error("{0}")]
    Timeout(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({"error": self.to_string()});
        match self {
            Self::Conflict { details, .. } => {
                if let (Some(body), Some(details)) = (body.as_object_mut(), details.as_object()) {
                    body.extend(details.clone());
                }
            }
            Self::RateLimited { retry_after, .. } => body["retry_after"] = json!(retry_after),
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(body)
    }
}

impl From<ClusterError> for ApiError {
    fn from(err: ClusterError) -> Self {
        match err {
            ClusterError::NotOwned(_) => Self::NotFound(err.to_string()),
            ClusterError::Command { ref source, .. } => match source {
                CommandError::NotRunning { .. } => Self::Conflict {
                    message: err.to_string(),
                    details: json!({}),
                },
                CommandError::Payload(_) => Self::BadRequest(err.to_string()),
                CommandError::OutboxFull { .. } => Self::Unavailable(err.to_string()),
            },
            ClusterError::Members(MembersError::RateLimited { retry_after }) => Self::RateLimited {
                message: err.to_string(),
                retry_after,
            },
            ClusterError::Timeout(_) => Self::Timeout(err.to_string()),
            ClusterError::JobRunning(ref id) => Self::Conflict {
                message: err.to_string(),
                details: json!({"job": id}),
            },
            ClusterError::Budget {
                cost,
                remaining,
                reserve,
                total,
                reset_in_ms,
            } => Self::Conflict {
                message: format!("{err}; add ?force=true to do it anyway"),
                details: json!({"cost": cost, "remaining": remaining, "reserve": reserve, "total": total, "reset_in_ms": reset_in_ms}),
            },
            other => Self::Unavailable(other.to_string()),
        }
    }
}
