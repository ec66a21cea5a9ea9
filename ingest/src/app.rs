//! The webhook surface: one route per provider (served only when its secrets are configured) and
//! the shared request pipeline. The operational endpoints are on the admin listener
//! ([`crate::admin`]).
//!
//! The pipeline, in order: content type (415), request head size (431), size (413), room in the
//! in-flight body budget (503 with `Retry-After`, at once), body read with a deadline (408),
//! parameter count of a form body (413), signature (401, or 400 for a body that contradicts its
//! signed hash), envelope (400 for a body that is not the JSON the provider sends), recent-events
//! cache (a replay of an event Kafka already acknowledged: 200, nothing published, no rate limit
//! spent), per-source rate limit (429; counted after verification so forged traffic cannot use up
//! a provider's budget), publish (2xx only once Kafka stored it, 503 otherwise; 413 if the broker
//! refuses the record as too large, which retrying cannot fix).
//!
//! Every error answer, axum's own rejections included, has the JSON body `{"error": "<reason>"}`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::HeaderValue;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use switchboard_schemas::{Classify, Source, media_type};
use switchboard_service::telemetry::chain;

use crate::config::{GenericScheme, Settings};
use crate::envelope::{self, Envelope, Extract, HeadTooLarge, InvalidJson, Request as EnvelopeRequest};
use crate::error::Rejection;
use crate::limits::{BodyBudget, LogSampler, form_param_count};
use crate::metrics;
use crate::publish::{PublishError, Publisher};
use crate::replay::{Claim, Pending, RecentEvents};
use crate::verify::{self, Verified, VerifyError};

mod twilio_events;

/// The empty TwiML document Twilio expects in answer to a status callback.
pub const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#;

const FORM: &str = media_type::FORM;
const JSON: &str = media_type::JSON;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) settings: Arc<Settings>,
    pub(crate) publisher: Arc<dyn Publisher>,
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    recent: Option<Arc<RecentEvents>>,
    budget: BodyBudget,
    rejection_logs: Arc<LogSampler>,
}

/// Log lines about refused requests allowed per [`REJECTION_LOG_WINDOW`]; the rest are counted and
/// reported as `suppressed` on the next line (the metrics count every request).
const REJECTION_LOGS: u32 = 10;
const REJECTION_LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

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
        let config = &settings.config;
        let recent = (config.replay_cache_entries > 0).then(|| {
            Arc::new(RecentEvents::new(
                config.replay_cache_entries,
                config.replay_cache_ttl,
            ))
        });
        let budget = BodyBudget::new(config.max_in_flight_body_bytes);
        Self {
            settings,
            publisher,
            limiter,
            recent,
            budget,
            rejection_logs: Arc::new(LogSampler::new(REJECTION_LOGS, REJECTION_LOG_WINDOW)),
        }
    }
}

/// The webhook router. Provider routes exist only for sources whose secrets are configured (fail
/// closed).
pub fn app(state: AppState) -> Router {
    let settings = &state.settings;
    let mut router = Router::new();
    if settings.twilio_enabled() {
        router = router
            .route("/webhooks/twilio/{*rest}", post(twilio))
            .route("/webhooks/twilio-events", post(twilio_events::handle));
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
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(
            switchboard_service::trace::http_server_layer,
        ))
        .with_state(state)
}

/// Gives every error answer the JSON body `{"error": "<reason>"}`: the pipeline's own answers
/// already have it; axum's rejections (a path segment that is not UTF-8, a wrong method, …) answer
/// plain text or nothing, which becomes the status's reason phrase. Headers such as `Allow` stay.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let reason = status.canonical_reason().unwrap_or("error").to_ascii_lowercase();
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    let body = serde_json::to_vec(&json!({ "error": reason })).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
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
        Ok((envelope, outcome)) => {
            metrics::request(&label, outcome.label());
            reply(&envelope)
        }
        Err(rejection) => refuse(state, source, &label, rejection),
    }
}

/// Records a refused request (metrics, a sampled log line) and answers it.
fn refuse(state: &AppState, source: Source, label: &str, rejection: Rejection) -> Response {
    metrics::request(label, rejection.outcome());
    if let Rejection::Verification(error) = &rejection {
        metrics::verification_failure(label, error.reason());
    }
    // Refusals are the attacker's lever on the log: a few lines a second, the rest counted.
    if !matches!(rejection, Rejection::Unavailable | Rejection::Internal)
        && let Some(suppressed) = state.rejection_logs.admit()
    {
        let reason = match &rejection {
            Rejection::Verification(error) => error.reason(),
            other => other.outcome(),
        };
        tracing::info!(%source, source_name = %label, reason, suppressed, "webhook rejected");
    }
    rejection.into_response()
}

/// How an accepted request ended.
#[derive(Debug, Clone, Copy)]
enum Accepted {
    /// Published now.
    Stored,
    /// A replay of an event this instance stored recently: answered as stored, not published.
    Duplicate,
}

impl Accepted {
    fn label(self) -> &'static str {
        match self {
            Accepted::Stored => "accepted",
            Accepted::Duplicate => "duplicate",
        }
    }
}

async fn accept(
    state: &AppState,
    route: Route<'_>,
    request: Request,
    verify: impl FnOnce(&Incoming<'_>) -> Result<Verified, VerifyError>,
) -> Result<(Envelope, Accepted), Rejection> {
    let received = receive(state, route.accepts, request, verify).await?;
    let label = route.name.unwrap_or(route.source.as_str());
    let envelope = received.envelope(
        state,
        route.source,
        route.name,
        route.extract,
        &received.body,
        &received.content_type,
    )?;

    // A replay of an event already stored costs neither a record nor the source's rate limit.
    let claim = match &state.recent {
        Some(recent) => match recent.claim(label, envelope.event_id()).await {
            Claim::Seen => return Ok((envelope, Accepted::Duplicate)),
            Claim::Claimed(pending) => Some(pending),
        },
        None => None,
    };
    check_rate_limit(state, label)?;
    publish(state, &envelope, claim).await?;
    Ok((envelope, Accepted::Stored))
}

/// A request whose body is read and whose signature is verified.
struct Received {
    parts: axum::http::request::Parts,
    /// The public URL the provider called.
    url: String,
    /// The request's `Content-Type`, as sent.
    content_type: String,
    body: Bytes,
    verified: Verified,
    /// The body's share of the in-flight budget, held until the request is answered.
    _reservation: crate::limits::Reservation,
}

impl Received {
    /// The envelope of `body` (the request's body, or one event of it) under `content_type`.
    fn envelope(
        &self,
        state: &AppState,
        source: Source,
        source_name: Option<&str>,
        extract: Extract<'_>,
        body: &[u8],
        content_type: &str,
    ) -> Result<Envelope, InvalidJson> {
        let request = EnvelopeRequest {
            source,
            url: &self.url,
            content_type,
            headers: &self.parts.headers,
            body,
            received_at_millis: millis_now(),
            source_name,
            dropped_headers: &state.settings.dropped_headers,
        };
        Envelope::new(&self.verified, &request, extract)
    }
}

/// The pipeline up to and including the signature check.
async fn receive(
    state: &AppState,
    accepts: &'static [&'static str],
    request: Request,
    verify: impl FnOnce(&Incoming<'_>) -> Result<Verified, VerifyError>,
) -> Result<Received, Rejection> {
    let config = &state.settings.config;
    let (parts, body) = request.into_parts();
    let raw_content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let content_type = media_type::essence(&raw_content_type);
    if !accepts.contains(&content_type.as_str()) {
        return Err(Rejection::UnsupportedMediaType(accepts));
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = match &state.settings.public_url {
        Some(base) => format!("{}{path_and_query}", base.as_str().trim_end_matches('/')),
        None => path_and_query.to_owned(),
    };
    envelope::check_head(&url, &parts.headers)?;
    // Room for the body in the global budget, before reading a byte of it: the declared length, or
    // the largest body allowed when none is declared; given back down to the actual size once read.
    let mut reservation = state
        .budget
        .try_reserve(
            declared_length(&parts.headers).map_or(config.max_body_bytes, |length| {
                length.min(config.max_body_bytes as u64) as usize
            }),
        )
        .ok_or(Rejection::Overloaded)?;
    let body = read_body(
        body,
        &parts.headers,
        config.max_body_bytes,
        config.body_read_timeout,
    )
    .await?;
    reservation.shrink_to(body.len());
    // Parsing and sorting a form grows with its parameter count: refuse absurd ones unparsed.
    if content_type == FORM && form_param_count(&body) > config.max_form_params {
        return Err(Rejection::TooManyParameters(config.max_form_params));
    }
    let incoming = Incoming {
        headers: &parts.headers,
        url: &url,
        content_type: &raw_content_type,
        body: &body,
    };
    let verified = verify(&incoming)?;
    Ok(Received {
        parts,
        url,
        content_type: raw_content_type,
        body,
        verified,
        _reservation: reservation,
    })
}

/// 429 when `label` is over its rate limit.
fn check_rate_limit(state: &AppState, label: &str) -> Result<(), Rejection> {
    if let Some(limiter) = &state.limiter
        && let Err(not_until) = limiter.check_key(&label.to_owned())
    {
        return Err(Rejection::RateLimited {
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        });
    }
    Ok(())
}

/// Publishes `envelope` and, once Kafka acknowledged it, marks its replay-cache claim stored.
async fn publish(state: &AppState, envelope: &Envelope, claim: Option<Pending<'_>>) -> Result<(), Rejection> {
    let source = envelope.source();
    let event_id = envelope.event_id();
    let started = Instant::now();
    match state.publisher.publish(envelope).await {
        Ok(()) => {
            metrics::produced(source.as_str(), started.elapsed());
            tracing::debug!(%source, %event_id, "webhook stored");
            if let Some(pending) = claim {
                pending.stored();
            }
            Ok(())
        }
        Err(error) => {
            tracing::warn!(%source, %event_id, error = %chain(&error), "webhook not stored; answered with an error");
            Err(match error {
                PublishError::Encode(error) if !error.is_transient() => Rejection::Internal,
                PublishError::TooLarge(_) => Rejection::Unstorable,
                PublishError::Timeout(_) | PublishError::Unavailable(_) | PublishError::Encode(_) => {
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
    let declared = declared_length(headers);
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

/// The `Content-Length` header's value, if it is a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
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
