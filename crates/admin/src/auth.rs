//! Bearer-token authorization, compared in constant time.

use std::future::{Ready, ready};

use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

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
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    let operator = state.token.matches(presented);
    let reader = state
        .read_token
        .as_ref()
        .is_some_and(|token| token.matches(presented));
    match (operator, reader) {
        (true, _) => Ok(Role::Operator),
        (false, true) => Ok(Role::Reader),
        (false, false) => Err(ApiError::Unauthorized),
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
/// something. The read-only token gets 403.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operator;

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match role(req) {
            Ok(Role::Operator) => Ok(Self),
            Ok(Role::Reader) => Err(ApiError::Forbidden(
                "the read-only token may not change anything".into(),
            )),
            Err(err) => Err(err),
        })
    }
}
