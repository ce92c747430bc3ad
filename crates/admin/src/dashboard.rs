//! `GET /`: a single static page embedded in the binary; it reads the admin token from
//! the URL fragment (never sent to the server) and calls the API with it.

use actix_web::HttpResponse;

const PAGE: &str = include_str!("../static/dashboard.html");

pub(crate) async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        ))
        .body(PAGE)
}
