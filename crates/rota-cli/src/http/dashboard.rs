//! The dashboard at `/`: one HTML page with inline CSS and vanilla JS,
//! embedded in the binary. It reads the JSON API every few seconds and sends
//! the token typed into it (kept in the browser's localStorage) as a bearer
//! token for run-now, enable and disable. It loads nothing from elsewhere;
//! its Content-Security-Policy forbids it.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

/// The page.
pub(crate) const INDEX_HTML: &str = include_str!("index.html");

const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `GET /`.
pub(crate) async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        INDEX_HTML,
    )
}

/// `GET /favicon.ico`: nothing, without a 404 in the browser's console.
pub(crate) async fn favicon() -> StatusCode {
    StatusCode::NO_CONTENT
}
