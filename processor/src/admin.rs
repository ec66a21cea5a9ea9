//! The processor's admin HTTP server: `/healthz`, `/readyz`, `/metrics`, and (processor only) the
//! observability routes of [`crate::observe`]: `/debug/webhooks`, `/`, `/dashboard.json`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::runner::Health;
use crate::txn::now_millis;

/// The loop counts as alive while its last iteration is this recent.
const STALL_LIMIT: Duration = Duration::from_secs(120);

pub fn router(health: Arc<Health>) -> Router {
    switchboard_service::telemetry::prometheus();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health)
}

/// The processor's admin routes: [`router`] and the observability routes.
pub fn processor_router(health: Arc<Health>, observe: crate::observe::Observe) -> Router {
    router(health).merge(crate::observe::router(observe))
}

async fn healthz(State(health): State<Arc<Health>>) -> Response {
    liveness([health.as_ref()])
}

/// Whether a loop whose last iteration was at `heartbeat_millis` (0: not started yet) is alive.
pub(crate) fn alive(heartbeat_millis: i64) -> bool {
    heartbeat_millis == 0 || now_millis() - heartbeat_millis < STALL_LIMIT.as_millis() as i64
}

/// Why loops are not healthy, in fixed words (no topics, hosts or client errors).
fn unhealthy<'a>(healths: impl IntoIterator<Item = &'a Health>) -> Option<String> {
    let mut stalled = 0;
    for health in healths {
        if !alive(health.heartbeat_millis.load(Ordering::Relaxed)) {
            return Some("processing loop stalled".to_owned());
        }
        stalled += health.stalled_partitions();
    }
    (stalled > 0).then(|| {
        format!("no committed progress: {stalled} owned partition(s) have lag and made no progress for stall_timeout")
    })
}

/// `/healthz`'s answer for the loops of a process (the processor's, the sink's, each action
/// worker's): 503 while one's loop has not turned for [`STALL_LIMIT`] or has stalled
/// partitions (the liveness probe then restarts the process).
pub(crate) fn liveness<'a>(healths: impl IntoIterator<Item = &'a Health>) -> Response {
    match unhealthy(healths) {
        None => (StatusCode::OK, "ok").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    readiness([health.as_ref()])
}

/// `{"error": reason}` with `status` (and `WWW-Authenticate: Bearer` on a 401): the error body of
/// every JSON route of the binary. Reasons are fixed texts, never internals.
pub(crate) fn json_error(status: StatusCode, reason: &str) -> Response {
    let mut response = (status, axum::Json(serde_json::json!({ "error": reason }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// `/readyz`'s answer for the loops of a process: 503 with the reason until every loop has
/// joined its group, and while [`liveness`] fails.
pub(crate) fn readiness<'a>(healths: impl IntoIterator<Item = &'a Health> + Clone) -> Response {
    if !healths
        .clone()
        .into_iter()
        .all(|h| h.ready.load(Ordering::Relaxed))
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: not consuming yet").into_response();
    }
    match unhealthy(healths) {
        None => (StatusCode::OK, "ready").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}")).into_response(),
    }
}

/// `/metrics` in the Prometheus text format, shared by the processor and the sink.
pub(crate) async fn metrics_text() -> Response {
    let body = switchboard_service::telemetry::prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
