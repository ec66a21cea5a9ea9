//! The HTTP surface: one route per provider (served only when its secrets are configured), the
//! shared request pipeline, and the operational endpoints.
//!
//! The pipeline, in order: content type (415), request head size (431), size (413), body read with
//! a deadline (408), signature (401, or 400 for a body that contradicts its signed hash), per-source
//! rate limit (429; counted after verification so forged traffic cannot use up a provider's
//! budget), envelope (400 for a body that is not the JSON the provider sends), publish (2xx only
//! once Kafka stored it, 503 otherwise; 413 if the broker refuses the record as too large, which
//! retrying cannot fix).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use switchboard_schemas::{Source, media_type};

use crate::config::{GenericScheme, Settings};
use crate::envelope::{self, Envelope, Extract, HeadTooLarge, InvalidJson, Request as EnvelopeRequest};
use crate::error::Rejection;
use crate::metrics;
use crate::publish::{PublishError, Publisher};
use crate::verify::{self, Verified, VerifyError};

/// The empty TwiML document Twilio expects in answer to a status callback.
pub const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#;

const FORM: &str = media_type::FORM;
const JSON: &str = media_type::JSON;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    settings: Arc<Settings>,
    publisher: Arc<dyn Publisher>,
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("sources", &self.settings.enabled_sources())
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(settings: Arc<Settings>, publisher: Arc<dyn Publisher>) -> Self {
        // Install the recorder before the first request records anything.
        switchboard_service::telemetry::prometheus();
        let limiter = settings.rate_limit.map(|(per_second, burst)| {
            Arc::new(RateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ))
        });
        Self {
            settings,
            publisher,
            limiter,
        }
    }
}

/// The router. Provider routes exist only for sources whose secrets are configured (fail closed).
pub fn app(state: AppState) -> Router {
    let settings = &state.settings;
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text));
    if settings.twilio_enabled() {
        router = router.route("/webhooks/twilio/{*rest}", post(twilio));
    }
    if !settings.stripe_secrets.is_empty() {
        router = router.route("/webhooks/stripe", post(stripe));
    }
    if !settings.calendly_keys.is_empty() {
        router = router.route("/webhooks/calendly", post(calendly));
    }
    if !settings.generic.is_empty() {
        router = router.route("/webhooks/generic/{name}", post(generic));
    }
    router
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({ "error": "not found" }))) })
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.publisher.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": reason }))).into_response(),
    }
}

async fn metrics_text() -> Response {
    let body = switchboard_service::telemetry::prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The request as the pipeline hands it to a verifier once its body is read.
struct Incoming<'a> {
    headers: &'a HeaderMap,
    url: &'a str,
    content_type: &'a str,
    body: &'a [u8],
}

async fn twilio(State(state): State<AppState>, request: Request) -> Response {
    let settings = &state.settings;
    let route = Route {
        source: Source::Twilio,
        name: None,
        accepts: &[FORM, JSON],
        extract: Extract::Twilio {
            tenants: &settings.config.tenants,
        },
    };
    let reply = |_: &Envelope| ([(header::CONTENT_TYPE, "text/xml")], EMPTY_TWIML).into_response();
    pipeline(&state, route, request, reply, |req| {
        verify::twilio::verify(
            &settings.twilio_auth_tokens,
            &settings.twilio_shared_keys,
            req.headers,
            req.url,
            req.content_type,
            req.body,
        )
    })
    .await
}

async fn stripe(State(state): State<AppState>, request: Request) -> Response {
    let settings = &state.settings;
    let route = Route {
        source: Source::Stripe,
        name: None,
        accepts: &[JSON],
        extract: Extract::Stripe {
            tenants: &settings.config.tenants,
        },
    };
    pipeline(&state, route, request, json_reply, |req| {
        let tolerance = settings.config.stripe_tolerance;
        verify::stripe::verify(
            &settings.stripe_secrets,
            req.headers,
            req.body,
            unix_now(),
            tolerance,
        )
    })
    .await
}

async fn calendly(State(state): State<AppState>, request: Request) -> Response {
    let settings = &state.settings;
    let extract = Extract::Calendly {
        tenants: &settings.config.tenants,
        phone_id_pointer: &settings.config.calendly_phone_id_pointer,
    };
    let route = Route {
        source: Source::Calendly,
        name: None,
        accepts: &[JSON],
        extract,
    };
    pipeline(&state, route, request, json_reply, |req| {
        let tolerance = settings.config.calendly_tolerance;
        verify::calendly::verify(
            &settings.calendly_keys,
            req.headers,
            req.body,
            unix_now(),
            tolerance,
        )
    })
    .await
}

async fn generic(State(state): State<AppState>, Path(name): Path<String>, request: Request) -> Response {
    let settings = &state.settings;
    let Some(source) = settings.generic.get(&name) else {
        metrics::request(Source::Generic.as_str(), Rejection::UnknownSource.outcome());
        return Rejection::UnknownSource.into_response();
    };
    let extract = Extract::Generic {
        phone_id_pointer: source.phone_id_pointer.as_deref(),
    };
    let route = Route {
        source: Source::Generic,
        name: Some(&source.name),
        accepts: &[JSON],
        extract,
    };
    pipeline(&state, route, request, json_reply, |req| match source.scheme {
        GenericScheme::StandardWebhooks => verify::standard_webhooks::verify(
            &source.secrets,
            req.headers,
            req.body,
            unix_now(),
            settings.config.standard_webhooks_tolerance,
        ),
        GenericScheme::Github => verify::github::verify(&source.secrets, req.headers, req.body),
    })
    .await
}

/// What a provider route accepts and how its envelope is built.
struct Route<'a> {
    source: Source,
    /// The generic source's configured name.
    name: Option<&'a str>,
    /// Accepted media types (essence only, parameters such as `charset` are ignored).
    accepts: &'static [&'static str],
    extract: Extract<'a>,
}

/// Runs one request through the pipeline and records its outcome.
async fn pipeline(
    state: &AppState,
    route: Route<'_>,
    request: Request,
    reply: impl FnOnce(&Envelope) -> Response,
    verify: impl FnOnce(&Incoming<'_>) -> Result<Verified, VerifyError>,
) -> Response {
    let _in_flight = metrics::InFlight::start();
    let source = route.source;
    let label = route.name.unwrap_or(source.as_str()).to_owned();
    match accept(state, route, request, verify).await {
        Ok(envelope) => {
            metrics::request(&label, "accepted");
            reply(&envelope)
        }
        Err(rejection) => {
            metrics::request(&label, rejection.outcome());
            if let Rejection::Verification(error) = &rejection {
                metrics::verification_failure(&label, error.reason());
                tracing::info!(%source, reason = error.reason(), "webhook rejected");
            }
            rejection.into_response()
        }
    }
}

async fn accept(
    state: &AppState,
    route: Route<'_>,
    request: Request,
    verify: impl FnOnce(&Incoming<'_>) -> Result<Verified, VerifyError>,
) -> Result<Envelope, Rejection> {
    let config = &state.settings.config;
    let (parts, body) = request.into_parts();
    let raw_content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let content_type = media_type::essence(raw_content_type);
    if !route.accepts.contains(&content_type.as_str()) {
        return Err(Rejection::UnsupportedMediaType(route.accepts));
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = match &state.settings.public_url {
        Some(base) => format!("{}{path_and_query}", base.as_str().trim_end_matches('/')),
        None => path_and_query.to_owned(),
    };
    envelope::check_head(&url, &parts.headers)?;
    let body = read_body(
        body,
        &parts.headers,
        config.max_body_bytes,
        config.body_read_timeout,
    )
    .await?;
    let incoming = Incoming {
        headers: &parts.headers,
        url: &url,
        content_type: raw_content_type,
        body: &body,
    };
    let verified = verify(&incoming)?;

    let label = route.name.unwrap_or(route.source.as_str());
    if let Some(limiter) = &state.limiter
        && let Err(not_until) = limiter.check_key(&label.to_owned())
    {
        return Err(Rejection::RateLimited {
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        });
    }

    let envelope_request = EnvelopeRequest {
        source: route.source,
        url: &url,
        content_type: raw_content_type,
        headers: &parts.headers,
        body: &body,
        received_at_millis: millis_now(),
        source_name: route.name,
        dropped_headers: &state.settings.dropped_headers,
    };
    let envelope = Envelope::new(verified, &envelope_request, route.extract)?;
    let event_id = envelope.event_id().to_owned();
    let started = Instant::now();
    match state.publisher.publish(&envelope).await {
        Ok(()) => {
            metrics::produced(route.source.as_str(), started.elapsed());
            tracing::debug!(source = %route.source, %event_id, "webhook stored");
            Ok(envelope)
        }
        Err(error) => {
            tracing::warn!(source = %route.source, %event_id, %error, "webhook not stored; answered with an error");
            Err(match error {
                PublishError::Encode(_) => Rejection::Internal,
                PublishError::TooLarge(_) => Rejection::Unstorable,
                PublishError::Timeout(_) | PublishError::Unavailable(_) | PublishError::Registry(_) => {
                    Rejection::Unavailable
                }
            })
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes (413) or a body slower than `timeout` (408).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, Rejection> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Rejection::TooLarge(limit));
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_elapsed) => Err(Rejection::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Rejection::TooLarge(limit))
        }
        Ok(Err(_)) => Err(Rejection::BodyUnreadable),
    }
}

fn json_reply(envelope: &Envelope) -> Response {
    Json(json!({ "status": "stored", "event_id": envelope.event_id() })).into_response()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl From<VerifyError> for Rejection {
    fn from(error: VerifyError) -> Self {
        Rejection::Verification(error)
    }
}

impl From<HeadTooLarge> for Rejection {
    fn from(error: HeadTooLarge) -> Self {
        Rejection::HeadTooLarge(error)
    }
}

impl From<InvalidJson> for Rejection {
    fn from(_: InvalidJson) -> Self {
        Rejection::InvalidJson
    }
}
