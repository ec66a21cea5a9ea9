//! One delivery target (a resolved action): the shared HTTP client, the rate limiter, the
//! circuit breaker and the timeout around one POST per event, returning a classified
//! [`Outcome`].
//!
//! Order per call: the breaker (an open breaker answers [`Outcome::CircuitOpen`] at once, without
//! calling the target), then the rate limiter (waits for a slot, never fails), then the request
//! bounded by the action's timeout. Transient outcomes count toward opening the breaker;
//! delivered and permanent ones (the target answered) do not. A `deliver` future dropped
//! mid-call hands its breaker permit back as abandoned.

use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument as _;

use chrono::{DateTime, SecondsFormat};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::Serialize;

use super::breaker::{CircuitBreaker, Permit};
use super::classify::{self, MAX_REASON_CHARS, Outcome, classify_error, classify_status};
use super::config::{ResolvedAction, SecretString};
use super::metrics;
use super::sign::{SigningSecret, sign};

/// `User-Agent` of every request.
pub(crate) const USER_AGENT: &str = concat!("switchboard/", env!("CARGO_PKG_VERSION"));
/// The request header carrying the event id, for the target's dedup.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Standard Webhooks headers.
pub(crate) const WEBHOOK_ID: &str = "webhook-id";
pub(crate) const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub(crate) const WEBHOOK_SIGNATURE: &str = "webhook-signature";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const POOL_MAX_IDLE_PER_HOST: usize = 32;
/// Most response bytes read: enough for the failure snippet, or to let a small success body
/// finish so the connection goes back to the pool.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// The HTTP client shared by every target: no redirects (a 3xx is a permanent outcome), a connect
/// timeout, pooled keep-alive connections, `User-Agent: switchboard/<version>`. Fails only if the
/// TLS backend cannot be initialised.
pub(crate) fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .user_agent(USER_AGENT)
        .build()
}

/// A domain event to deliver.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutboundEvent {
    /// The domain event id: `webhook-id` and `Idempotency-Key`, identical on every attempt.
    pub event_id: String,
    /// The domain event type, such as `call.completed`.
    pub event_type: String,
    /// When the event happened, unix milliseconds.
    pub occurred_at_millis: i64,
    pub data: serde_json::Value,
}

/// The request body, Standard Webhooks payload structure.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: &'a serde_json::Value,
}

/// One configured action, ready to deliver. Calls on one target may run concurrently; targets
/// share nothing but the HTTP client's connection pool.
#[derive(Debug)]
pub(crate) struct Target {
    name: String,
    on: Vec<String>,
    url: reqwest::Url,
    client: reqwest::Client,
    bearer: Option<SecretString>,
    signing_secret: Option<SigningSecret>,
    limiter: Option<DefaultDirectRateLimiter>,
    breaker: Mutex<CircuitBreaker>,
    timeout: Duration,
}

impl Target {
    /// Builds the target for `action`, sharing `client` (from [`http_client`]).
    pub(crate) fn new(action: ResolvedAction, client: reqwest::Client) -> Self {
        let limiter = action.rate_limit.map(|limit| {
            let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(limit.burst()).unwrap_or(NonZeroU32::MIN);
            RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))
        });
        let breaker = CircuitBreaker::new(&action.name, action.breaker.failures, action.breaker.cool_down);
        // Exported from the start, not only after the first change.
        metrics::breaker_state(&action.name, breaker.state().gauge_value());
        Self {
            name: action.name,
            on: action.on,
            url: action.url,
            client,
            bearer: action.bearer,
            signing_secret: action.signing_secret,
            limiter,
            breaker: Mutex::new(breaker),
            timeout: action.timeout,
        }
    }

    /// The action's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The event type patterns of the action (`on = […]`).
    pub(crate) fn patterns(&self) -> &[String] {
        &self.on
    }

    /// Whether events of `event_type` go to this target.
    pub(crate) fn matches(&self, event_type: &str) -> bool {
        super::config::matches(&self.on, event_type)
    }

    /// The breaker's state now.
    #[cfg(test)]
    pub(crate) fn breaker_state(&self) -> super::breaker::BreakerState {
        self.lock_breaker().state()
    }

    /// Delivers `event` once and classifies the result. Never panics, never retries: the caller
    /// routes the outcome (retry topic or DLQ).
    pub(crate) async fn deliver(&self, event: &OutboundEvent) -> Outcome {
        let permit = match self.lock_breaker().try_acquire(Instant::now()) {
            Ok(permit) => permit,
            Err(open) => {
                let outcome = Outcome::CircuitOpen {
                    retry_after: open.retry_in,
                };
                metrics::outcome(&self.name, outcome.class());
                return outcome;
            }
        };
        let mut report = Report {
            target: self,
            permit: Some(permit),
        };
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let started = Instant::now();
        let outcome = self.send(event).await;
        metrics::request_seconds(&self.name, started.elapsed());
        metrics::outcome(&self.name, outcome.class());
        report.finish(&outcome);
        if let Some(reason) = outcome.reason() {
            tracing::debug!(action = %self.name, outcome = outcome.class(), reason, "delivery failed");
        }
        outcome
    }

    async fn send(&self, event: &OutboundEvent) -> Outcome {
        let Some(occurred_at) = DateTime::from_timestamp_millis(event.occurred_at_millis) else {
            return Outcome::Permanent {
                reason: format!("occurred_at {} is out of range", event.occurred_at_millis),
            };
        };
        let payload = Payload {
            event_type: &event.event_type,
            timestamp: occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            data: &event.data,
        };
        let body = match serde_json::to_vec(&payload) {
            Ok(body) => body,
            Err(error) => {
                return Outcome::Permanent {
                    reason: format!("serializing the payload: {error}"),
                };
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as i64);

        let mut request = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY, &event.event_id)
            .header(WEBHOOK_ID, &event.event_id)
            .header(WEBHOOK_TIMESTAMP, now.to_string());
        if let Some(secret) = &self.signing_secret {
            request = request.header(WEBHOOK_SIGNATURE, sign(secret, &event.event_id, now, &body));
        }
        if let Some(token) = &self.bearer {
            // Checked when the action was resolved.
            if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
        }

        let span = switchboard_service::trace::http_client_span(
            &reqwest::Method::POST,
            self.url.host_str().unwrap_or_default(),
            self.url.port_or_known_default(),
        );
        let mut trace_headers = reqwest::header::HeaderMap::new();
        switchboard_service::trace::inject_http(&span, &mut trace_headers);
        let sent = request
            .headers(trace_headers)
            .body(body)
            .send()
            .instrument(span.clone());
        let mut response = match sent.await {
            Ok(response) => response,
            Err(error) => {
                switchboard_service::trace::record_error(&span);
                return classify_error(&error);
            }
        };
        let status = response.status();
        switchboard_service::trace::record_status(&span, status.as_u16(), true);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let outcome = classify_status(status.as_u16(), retry_after.as_deref());
        let snippet = read_prefix(&mut response).await;
        match outcome {
            Outcome::Delivered | Outcome::CircuitOpen { .. } => outcome,
            Outcome::Transient { reason, retry_after } => Outcome::Transient {
                reason: with_snippet(reason, &snippet),
                retry_after,
            },
            Outcome::Permanent { reason } => Outcome::Permanent {
                reason: with_snippet(reason, &snippet),
            },
        }
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands the breaker permit back exactly once: with the outcome, or as abandoned if the
/// `deliver` future is dropped first.
struct Report<'a> {
    target: &'a Target,
    permit: Option<Permit>,
}

impl Report<'_> {
    fn finish(&mut self, outcome: &Outcome) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut breaker = self.target.lock_breaker();
        match outcome {
            Outcome::Transient { .. } => breaker.on_failure(permit, Instant::now()),
            Outcome::Delivered | Outcome::Permanent { .. } | Outcome::CircuitOpen { .. } => {
                breaker.on_success(permit)
            }
        }
    }
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.target.lock_breaker().on_abandon(permit);
        }
    }
}

/// Up to [`MAX_RESPONSE_BYTES`] of the body, as lossy text; a read error ends it early (the
/// status already decided the outcome).
async fn read_prefix(response: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `reason: <snippet>`, the snippet on one line and the whole cut to [`MAX_REASON_CHARS`].
fn with_snippet(reason: String, snippet: &str) -> String {
    let snippet: String = snippet
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let snippet = snippet.trim();
    if snippet.is_empty() {
        reason
    } else {
        classify::truncate(&format!("{reason}: {snippet}"), MAX_REASON_CHARS)
    }
}
