//! The dashboard: one page for the person at the PC, its script and style
//! embedded in the binary (no CDN, nothing fetched or installed at run time).
//! The page talks only to the API it came from (its Content-Security-Policy
//! allows nothing else) and shows data with `textContent`, never as markup.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The page a refused login link shows.
pub(super) const LOGIN_FAILED: &str = include_str!("assets/login-failed.html");

/// Headers of every dashboard answer: only this origin, no framing, no
/// referrer, no caching, no type sniffing.
const SECURITY_HEADERS: [(header::HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut res = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    for (name, value) in SECURITY_HEADERS {
        res.headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    res
}

pub(super) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "app.css" => page("text/css; charset=utf-8", APP_CSS),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
