//! HTTP handlers and responses every service's routers share: `/metrics` in the Prometheus text
//! format, and the JSON error body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `/metrics` in the Prometheus text format (the process-wide recorder of
/// [`crate::telemetry::prometheus`]).
pub async fn metrics_text() -> Response {
    let body = crate::telemetry::prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `{"error": reason}` with `status` (and `WWW-Authenticate: Bearer` on a 401): the error body of
/// every JSON route. Reasons are fixed texts, never internals.
pub fn json_error(status: StatusCode, reason: &str) -> Response {
    let mut response = (status, axum::Json(serde_json::json!({ "error": reason }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
