//! Bearer-token authorization, compared in constant time.

use std::future::{Ready, ready};

use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::ApiError;
use crate::state::AdminState;

/// Proof that the request carried the admin token. Add it to a handler's arguments to
/// protect the route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authorized;

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AdminState>>() else {
            return ready(Err(ApiError::Unauthorized));
        };
        let presented = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        ready(match presented {
            Some(token) if state.token.matches(token) => Ok(Self),
            _ => Err(ApiError::Unauthorized),
        })
    }
}
