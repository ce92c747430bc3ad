//! Bearer-token authorization, compared in constant time.

use std::future::{Ready, ready};

use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use shardkeeper_cluster::AuditEntry;

use crate::ApiError;
use crate::state::AdminState;

/// What a request's bearer token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The admin token: everything.
    Operator,
    /// The read-only token: lists, metrics, events.
    Reader,
}

/// The role of the token `req` carries, compared in constant time against each
/// configured token.
fn role(req: &HttpRequest) -> Result<Role, ApiError> {
    let Some(state) = req.app_data::<web::Data<AdminState>>() else {
        return Err(ApiError::Unauthorized);
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        state.requests_refused.inc();
        return Err(ApiError::Unauthorized);
    };
    let operator = state.token.matches(presented);
    let reader = state
        .read_token
        .as_ref()
        .is_some_and(|token| token.matches(presented));
    match (operator, reader) {
        (true, _) => Ok(Role::Operator),
        (false, true) => Ok(Role::Reader),
        (false, false) => {
            state.requests_refused.inc();
            Err(ApiError::Unauthorized)
        }
    }
}

/// Proof that the request carried the admin or the read-only token: add it to a
/// reading handler's arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authorized;

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(role(req).map(|_| Self))
    }
}

/// Proof that the request carried the admin token: add it to a handler that changes
/// something, and record what it did with [`Operator::record`]. The read-only token
/// gets 403, and the refusal is recorded too.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    /// The client's address.
    from: String,
}

impl Operator {
    /// The label of the admin token in the audit log.
    const ACTOR: &'static str = "admin";

    /// Records what this operator did in the cluster's audit log.
    pub(crate) fn record<T, E: std::fmt::Display>(
        &self,
        state: &AdminState,
        action: &str,
        target: &str,
        result: &Result<T, E>,
    ) {
        let result = match result {
            Ok(_) => "ok".to_owned(),
            Err(err) => err.to_string(),
        };
        state.cluster.audit().record(AuditEntry::now(
            Self::ACTOR,
            &self.from,
            action,
            target,
            &result,
        ));
    }
}

/// The client's address as the connection shows it (no forwarding header is trusted).
fn client(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string())
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match role(req) {
            Ok(Role::Operator) => Ok(Self { from: client(req) }),
            Ok(Role::Reader) => {
                let refused =
                    ApiError::Forbidden("the read-only token may not change anything".into());
                if let Some(state) = req.app_data::<web::Data<AdminState>>() {
                    state.requests_refused.inc();
                    let route = req.match_pattern().unwrap_or_else(|| req.path().to_owned());
                    state.cluster.audit().record(AuditEntry::now(
                        "read-only",
                        &client(req),
                        &format!("{} {route}", req.method()),
                        &target_of(req),
                        &refused.to_string(),
                    ));
                }
                Err(refused)
            }
            Err(err) => Err(err),
        })
    }
}

/// What a refused request was aimed at: its path's last parameter, else the path.
fn target_of(req: &HttpRequest) -> String {
    let info = req.match_info();
    ["id", "guild_id"]
        .iter()
        .find_map(|name| info.get(name))
        .map_or_else(|| req.path().to_owned(), str::to_owned)
}
