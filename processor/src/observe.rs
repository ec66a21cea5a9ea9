//! Observability on the processor's admin port: what the pipeline is doing, for operators.
//!
//! - `GET /debug/webhooks` ([`debug`]): counts per source and type over a time window, processed
//!   vs DLQ vs retrying, success rate, the most common error reasons, the newest raw webhooks'
//!   metadata. Needs `Authorization: Bearer <admin_token>`; refused (403) without a configured
//!   token.
//! - `GET /` and `GET /dashboard.json` ([`page`], [`sample`]): a server-rendered dashboard of one
//!   periodic sample (rates, DLQ and retry depth, consumer lag, breakers, recent events), whose
//!   numbers are also exported as `switchboard_observed_*` gauges ([`metrics`]), and charts of the
//!   last hour of samples (`GET /trends`: the charts as HTML with inline SVG, `GET /trends.json`:
//!   their data; [`trend`]). Open like `/metrics`, unless `admin_token` is set.
//!
//! Kafka is read on blocking threads with time budgets; a failed read answers 503 without
//! internals. No topic is scanned whole: counts come from offsets, and records of the topics
//! written in transactions (whose markers take offsets too) are read only up to a bound (see
//! [`read`]).

mod debug;
mod events;
pub mod metrics;
mod page;
mod prom;
mod read;
mod sample;
mod stats;
mod trend;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use switchboard_schemas::Codec;

use crate::config::Config;
pub use sample::INTERVAL;
use switchboard_kafka::txn::now_millis;
use switchboard_service::auth::{self, Refusal};

/// What the observability routes share.
#[derive(Debug, Clone)]
pub struct Observe {
    config: Arc<Config>,
    codec: Arc<Codec>,
    latest: sample::Latest,
}

impl Observe {
    pub fn new(config: Arc<Config>, codec: Arc<Codec>) -> Self {
        Self {
            config,
            codec,
            latest: sample::Latest::default(),
        }
    }

    /// Samples for the dashboard every [`INTERVAL`] until `stop`. Blocking: run it on its own
    /// thread (`spawn_blocking`), off the processing loop.
    pub fn run_sampler(&self, runtime: tokio::runtime::Handle, stop: &AtomicBool) {
        sample::Sampler {
            config: Arc::clone(&self.config),
            codec: Arc::clone(&self.codec),
            runtime,
            latest: self.latest.clone(),
        }
        .run(stop, INTERVAL);
    }
}

/// `/debug/webhooks`, `/`, `/dashboard.json`, `/trends`, `/trends.json`.
pub fn router(observe: Observe) -> Router {
    Router::new()
        .route("/debug/webhooks", get(debug_webhooks))
        .route("/", get(dashboard))
        .route("/dashboard.json", get(dashboard_json))
        .route("/trends", get(trends_html))
        .route("/trends.json", get(trends_json))
        .with_state(observe)
}

/// `{"error": reason}` with `status`.
fn error(status: StatusCode, reason: &'static str) -> Response {
    switchboard_service::respond::json_error(status, reason)
}

fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Disabled => error(
            StatusCode::FORBIDDEN,
            "the debug endpoint is disabled: set SWITCHBOARD_ADMIN_TOKEN to enable it",
        ),
        Refusal::Unauthorized => error(StatusCode::UNAUTHORIZED, "unauthorized"),
    }
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn debug_webhooks(
    State(observe): State<Observe>,
    headers: HeaderMap,
    query: Result<Query<debug::RawParams>, QueryRejection>,
) -> Response {
    if let Err(refusal) = auth::require(observe.config.admin_token.as_ref(), &headers) {
        return refused(refusal);
    }
    let Ok(Query(raw)) = query else {
        return error(StatusCode::BAD_REQUEST, "invalid query string");
    };
    let params = match debug::Params::parse(raw) {
        Ok(params) => params,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let to_millis = now_millis();
    let from_millis = to_millis - i64::from(params.hours) * 3_600_000;
    let collected = {
        let (config, params) = (Arc::clone(&observe.config), params.clone());
        tokio::task::spawn_blocking(move || debug::collect(&config, &params, from_millis)).await
    };
    let collected = match collected {
        Ok(Ok(collected)) => collected,
        Ok(Err(error)) => {
            tracing::warn!(error = %format!("{error:#}"), "debug endpoint: Kafka reads failed");
            return self::error(StatusCode::SERVICE_UNAVAILABLE, "Kafka is unavailable, try again");
        }
        Err(_) => return self::error(StatusCode::SERVICE_UNAVAILABLE, "Kafka is unavailable, try again"),
    };
    let recent = tokio::time::timeout(
        debug::KAFKA_TIMEOUT,
        events::describe(&observe.codec, &collected.recent, params.include_body),
    )
    .await;
    let Ok(recent) = recent else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the schema registry is unavailable, try again",
        );
    };
    let report = debug::Report::new(&params, from_millis, to_millis, collected, recent);
    no_store(Json(report).into_response())
}

async fn dashboard(State(observe): State<Observe>, headers: HeaderMap) -> Response {
    if let Err(refusal) = auth::require_if_set(observe.config.admin_token.as_ref(), &headers) {
        return refused(refusal);
    }
    let (snapshot, trends) = observe.latest.with_trends();
    no_store(Html(page::render(&snapshot, &trends)).into_response())
}

/// The page's trends section alone (its script swaps it in at every poll).
async fn trends_html(State(observe): State<Observe>, headers: HeaderMap) -> Response {
    if let Err(refusal) = auth::require_if_set(observe.config.admin_token.as_ref(), &headers) {
        return refused(refusal);
    }
    no_store(Html(trend::section(&observe.latest.trends())).into_response())
}

/// The charts' data: per chart its sample numbers and a value per sample for each series.
async fn trends_json(State(observe): State<Observe>, headers: HeaderMap) -> Response {
    if let Err(refusal) = auth::require_if_set(observe.config.admin_token.as_ref(), &headers) {
        return refused(refusal);
    }
    no_store(Json(trend::charts(&observe.latest.trends())).into_response())
}

async fn dashboard_json(State(observe): State<Observe>, headers: HeaderMap) -> Response {
    if let Err(refusal) = auth::require_if_set(observe.config.admin_token.as_ref(), &headers) {
        return refused(refusal);
    }
    no_store(Json(&*observe.latest.get()).into_response())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    fn observe(token: Option<&str>) -> Observe {
        let config = Config {
            instance_id: Some("t".into()),
            admin_token: token.map(auth::AdminToken::new),
            // Nothing listens there: a request that got past auth would answer 503.
            kafka_bootstrap: "127.0.0.1:1".into(),
            ..Config::default()
        };
        Observe::new(
            Arc::new(config),
            Arc::new(Codec::new("http://127.0.0.1:1").unwrap()),
        )
    }

    async fn get(observe: Observe, uri: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = router(observe)
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn debug_endpoint_is_refused_without_a_token_and_checks_it() {
        let (status, body) = get(observe(None), "/debug/webhooks", Some("x")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("disabled"), "{body}");
        let (status, body) = get(observe(Some("tok")), "/debug/webhooks", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, r#"{"error":"unauthorized"}"#);
        let (status, _) = get(observe(Some("tok")), "/debug/webhooks", Some("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = get(observe(Some("tok")), "/debug/webhooks?hours=0", Some("tok")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }

    #[tokio::test]
    async fn dashboard_is_open_without_a_token_and_closed_with_one() {
        let (status, body) = get(observe(None), "/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
        let (status, body) = get(observe(None), "/dashboard.json", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["sample"],
            0
        );
        assert_eq!(
            get(observe(Some("tok")), "/", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(observe(Some("tok")), "/dashboard.json", Some("no")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(observe(Some("tok")), "/", Some("tok")).await.0,
            StatusCode::OK
        );
    }
}
