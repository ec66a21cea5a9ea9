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
//! - The console's other pages ([`console`]: navigation, access, the script that carries the admin
//!   token): `GET /search` and `GET /calls/{call_sid}` ([`search`], from the sink's calls API),
//!   `GET /dead-letters`, `GET /dead-letters/{partition}/{offset}` and
//!   `POST /dead-letters/redrive` ([`dead_letters`], the `dlq` command's operations),
//!   `GET /deliveries` ([`deliveries`]: breakers, retry depth, the attempts the sink stored). Reads are
//!   open like the dashboard; the redrive always needs the admin token (403 while none is
//!   configured: the console is then read-only).
//!
//! Kafka is read on blocking threads with time budgets; a failed read answers 503 without
//! internals. No topic is scanned whole: counts come from offsets, and records of the topics
//! written in transactions (whose markers take offsets too) are read only up to a bound (see
//! [`read`]).

mod calls_api;
mod console;
mod dead_letters;
mod debug;
mod deliveries;
mod events;
pub mod metrics;
mod page;
mod prom;
mod read;
mod sample;
mod search;
mod stats;
mod trend;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use switchboard_schemas::Codec;

use crate::config::Config;
use crate::dlq::{self, Position, Selector};
use console::Access;
pub use sample::INTERVAL;
use switchboard_kafka::txn::now_millis;
use switchboard_service::auth::{self, Refusal};

/// What the observability routes share.
#[derive(Debug, Clone)]
pub struct Observe {
    config: Arc<Config>,
    codec: Arc<Codec>,
    latest: sample::Latest,
    /// The console's client of the sink's calls API.
    http: reqwest::Client,
}

impl Observe {
    pub fn new(config: Arc<Config>, codec: Arc<Codec>) -> Self {
        Self {
            config,
            codec,
            latest: sample::Latest::default(),
            http: calls_api::client(),
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

/// `/debug/webhooks`, the dashboard (`/`, `/dashboard.json`, `/trends`, `/trends.json`) and the
/// console's pages.
pub fn router(observe: Observe) -> Router {
    Router::new()
        .route("/debug/webhooks", get(debug_webhooks))
        .route("/", get(dashboard))
        .route("/dashboard.json", get(dashboard_json))
        .route("/trends", get(trends_html))
        .route("/trends.json", get(trends_json))
        .route("/search", get(search_page))
        .route("/calls/{call_sid}", get(call_page))
        .route("/dead-letters", get(dead_letters_page))
        .route("/dead-letters/{partition}/{offset}", get(dead_letter_page))
        .route("/dead-letters/redrive", post(redrive))
        .route("/deliveries", get(deliveries_page))
        .with_state(observe)
}

/// What a console read may do, or [`SignIn`] where reads need the admin token and the request
/// did not carry it.
fn read_access(observe: &Observe, headers: &HeaderMap) -> Result<Access, SignIn> {
    match &observe.config.admin_token {
        None => Ok(Access::ReadOnly),
        Some(token) if auth::bearer_matches(headers, token) => Ok(Access::Admin),
        Some(_) => Err(SignIn {
            refused: auth::presented_bearer(headers).is_some(),
        }),
    }
}

/// A console page's extractor: who may read it, or the sign-in page.
impl FromRequestParts<Observe> for Access {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, observe: &Observe) -> Result<Self, SignIn> {
        read_access(observe, &parts.headers)
    }
}

/// The sign-in page (401); `refused`: the request carried a wrong token.
pub(crate) struct SignIn {
    refused: bool,
}

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        no_store((StatusCode::UNAUTHORIZED, Html(console::sign_in(self.refused))).into_response())
    }
}

/// A console page (200).
fn console_page(title: &str, nav: console::Nav, access: Access, body: &str) -> Response {
    no_store(Html(console::page(title, nav, access, body, "")).into_response())
}

/// The reason a Kafka read of the console failed, for its page: logged in full, shown without
/// internals.
fn kafka_failed(what: &str, error: &anyhow::Error) -> String {
    tracing::warn!(error = %format!("{error:#}"), "console: {what} failed");
    "Kafka is unavailable, try again".to_owned()
}

/// A page's parameters and what the calls API answered for them (`fetch`); an unreadable query
/// string is refused as the API refuses one, with the form empty.
async fn from_calls_api<P: Default>(
    query: Result<Query<P>, QueryRejection>,
    fetch: impl AsyncFnOnce(&P) -> Result<serde_json::Value, calls_api::SinkError>,
) -> (P, Result<serde_json::Value, calls_api::SinkError>) {
    match query {
        Ok(Query(params)) => {
            let result = fetch(&params).await;
            (params, result)
        }
        Err(_) => (
            P::default(),
            Err(calls_api::SinkError::Refused("invalid query string".into())),
        ),
    }
}

async fn search_page(
    State(observe): State<Observe>,
    access: Access,
    query: Result<Query<search::SearchParams>, QueryRejection>,
) -> Response {
    let (params, result) = from_calls_api(query, async |params| {
        search::search(&observe.http, &observe.config, params).await
    })
    .await;
    console_page(
        "Search",
        console::Nav::Search,
        access,
        &search::render_search(&params, &result),
    )
}

async fn call_page(
    State(observe): State<Observe>,
    access: Access,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(call_sid)) = path else {
        return error(StatusCode::BAD_REQUEST, "invalid path");
    };
    let result = search::call(&observe.http, &observe.config, &call_sid).await;
    let title = format!("Call {call_sid}");
    console_page(
        &title,
        console::Nav::Search,
        access,
        &search::render_call(&call_sid, &result),
    )
}

async fn deliveries_page(
    State(observe): State<Observe>,
    access: Access,
    query: Result<Query<deliveries::AttemptParams>, QueryRejection>,
) -> Response {
    let (params, result) = from_calls_api(query, async |params| {
        deliveries::attempts(&observe.http, &observe.config, params).await
    })
    .await;
    let body = deliveries::render(&observe.latest.get(), &params, &result);
    console_page("Deliveries", console::Nav::Deliveries, access, &body)
}

async fn dead_letters_page(
    State(observe): State<Observe>,
    access: Access,
    query: Result<Query<dead_letters::FilterForm>, QueryRejection>,
) -> Response {
    let form = query.map(|Query(form)| form).unwrap_or_default();
    let result = match form.filter() {
        Err(reason) => Err(reason),
        Ok(mut filter) => {
            filter.limit = filter.limit.or(Some(dead_letters::DEFAULT_LIMIT));
            let config = &observe.config;
            match tokio::try_join!(dlq::list(config, &filter), dlq::redriven(config)) {
                Ok(found) => Ok(found),
                Err(error) => Err(kafka_failed("reading the DLQ", &error)),
            }
        }
    };
    console_page(
        "Dead letters",
        console::Nav::DeadLetters,
        access,
        &dead_letters::render_list(&form, &result, access),
    )
}

async fn dead_letter_page(
    State(observe): State<Observe>,
    access: Access,
    path: Result<Path<(i32, i64)>, PathRejection>,
) -> Response {
    let Ok(Path((partition, offset))) = path else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid DLQ position: expected /dead-letters/<partition>/<offset>",
        );
    };
    let position = Position { partition, offset };
    let (config, selector) = (&observe.config, Selector::Position(position));
    let result = match tokio::try_join!(dlq::show(config, &selector), dlq::redriven(config)) {
        Ok((mut shown, redriven)) if !shown.is_empty() => {
            Ok((shown.swap_remove(0), redriven.contains(&position)))
        }
        Ok(_) => Err(format!("no record at {position}")),
        // `dlq show`'s errors name the position and the partition's bounds, never an address.
        Err(error) => Err(format!("{error:#}")),
    };
    console_page(
        &format!("Dead letter {position}"),
        console::Nav::DeadLetters,
        access,
        &dead_letters::render_record(position, &result, access),
    )
}

/// `POST /dead-letters/redrive`: `dlq redrive` over the form's filter (or one position), with
/// the admin token only.
async fn redrive(
    State(observe): State<Observe>,
    headers: HeaderMap,
    form: Result<Form<dead_letters::FilterForm>, FormRejection>,
) -> Response {
    match auth::require(observe.config.admin_token.as_ref(), &headers) {
        Ok(()) => {}
        Err(Refusal::Disabled) => {
            return error(
                StatusCode::FORBIDDEN,
                "the console is read-only: set SWITCHBOARD_ADMIN_TOKEN to enable redrive",
            );
        }
        Err(Refusal::Unauthorized) => return error(StatusCode::UNAUTHORIZED, "unauthorized"),
    }
    let Ok(Form(form)) = form else {
        return error(StatusCode::BAD_REQUEST, "invalid form");
    };
    let filter = match form.filter() {
        Ok(filter) => filter,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let dry_run = form.dry_run();
    match dlq::redrive(&observe.config, &filter, dry_run).await {
        Ok(summary) => {
            if !dry_run {
                tracing::info!(%summary, "console: redrive");
            }
            no_store(Json(dead_letters::RedriveAnswer::from(summary)).into_response())
        }
        Err(failure) => {
            tracing::warn!(error = %format!("{failure:#}"), "console: redrive failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the redrive failed and its open transaction was aborted (records already committed stay marked); try again",
            )
        }
    }
}

/// `{"error": reason}` with `status`.
fn error(status: StatusCode, reason: &str) -> Response {
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

async fn dashboard(State(observe): State<Observe>, access: Access) -> Response {
    let html = observe
        .latest
        .with_trends(|snapshot, trends| page::render(snapshot, trends, access));
    no_store(Html(html).into_response())
}

/// The page's trends section alone (its script swaps it in at every poll).
async fn trends_html(State(observe): State<Observe>, headers: HeaderMap) -> Response {
    if let Err(refusal) = auth::require_if_set(observe.config.admin_token.as_ref(), &headers) {
        return refused(refusal);
    }
    no_store(Html(observe.latest.with_trends(|_, trends| trend::section(trends))).into_response())
}

/// The charts' data: per chart its sample numbers and a value per sample for each series.
async fn trends_json(State(observe): State<Observe>, headers: HeaderMap) -> Response {
    if let Err(refusal) = auth::require_if_set(observe.config.admin_token.as_ref(), &headers) {
        return refused(refusal);
    }
    no_store(Json(observe.latest.with_trends(|_, trends| trend::charts(trends))).into_response())
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

    async fn post(observe: Observe, uri: &str, form: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request =
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = router(observe)
            .oneshot(request.body(Body::from(form.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_browser_without_the_token_gets_the_sign_in_page_and_never_the_token() {
        for uri in ["/", "/search", "/calls/CA1", "/dead-letters", "/dead-letters/0/1"] {
            let (status, body) = get(observe(Some("tok-secret")), uri, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
            assert!(body.contains("id=\"sign-in\""), "{uri}: {body}");
            assert!(body.contains("<body data-sign-in>"), "{uri}");
            let (status, body) = get(observe(Some("tok-secret")), uri, Some("wrong")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
            assert!(body.contains("That token was not accepted"), "{uri}: {body}");
            assert!(!body.contains("tok-secret"), "{uri}");
        }
        let (status, body) = get(observe(Some("tok-secret")), "/", Some("tok-secret")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("data-access=\"admin\""), "{body}");
        assert!(!body.contains("tok-secret"), "a page never holds the token");
    }

    #[tokio::test]
    async fn redrive_needs_a_configured_token_and_checks_the_form_first() {
        let (status, body) = post(observe(None), "/dead-letters/redrive", "dry_run=true", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("read-only"), "{body}");
        let (status, _) = post(observe(Some("tok")), "/dead-letters/redrive", "", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = post(observe(Some("tok")), "/dead-letters/redrive", "", Some("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = post(
            observe(Some("tok")),
            "/dead-letters/redrive",
            "position=x",
            Some("tok"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("<partition>/<offset>"), "{body}");
        // A GET is not a redrive.
        let (status, _) = get(observe(Some("tok")), "/dead-letters/redrive", Some("tok")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn search_without_the_sink_says_what_to_configure_and_the_console_is_read_only() {
        let (status, body) = get(observe(None), "/search?call_sid=CA1", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("set sink_api_url"), "{body}");
        assert!(body.contains("data-access=\"read-only\""), "{body}");
        assert!(body.contains("value=\"CA1\""), "{body}");
    }
}
