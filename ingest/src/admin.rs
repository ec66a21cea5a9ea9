//! The admin listener's routes: `/healthz`, `/readyz`, `/metrics`. They live apart from the webhook
//! listener so that metrics are not served to the internet and probes keep answering while the
//! webhook listener is flooded (its connection cap and budgets do not apply here).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::{AppState, json_errors};
use crate::limits::LogSampler;

/// Why ingest is not ready is logged at most this often (probes ask every few seconds).
const NOT_READY_LOG_WINDOW: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct AdminState {
    app: AppState,
    not_ready_logs: Arc<LogSampler>,
}

/// The admin router.
pub fn admin_app(state: AppState) -> Router {
    switchboard_service::telemetry::prometheus();
    let state = AdminState {
        app: state,
        not_ready_logs: Arc::new(LogSampler::new(1, NOT_READY_LOG_WINDOW)),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(switchboard_service::respond::metrics_text))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({ "error": "not found" }))) })
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// 200 `ready`, or 503 naming what is not ready in fixed words; the internal detail (hosts,
/// transport errors) goes to the log only.
async fn readyz(State(state): State<AdminState>) -> Response {
    match state.app.publisher.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(not_ready) => {
            if let Some(suppressed) = state.not_ready_logs.admit() {
                tracing::warn!(error = %not_ready, suppressed, "not ready");
            }
            let body = json!({ "error": format!("not ready: {}", not_ready.summary()) });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}
