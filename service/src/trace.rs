//! Distributed tracing: W3C Trace Context across HTTP and Kafka, exported with OpenTelemetry.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: then
//! no OpenTelemetry layer is installed, the spans made here are disabled at their call site (one
//! cached interest check each), nothing is injected into headers and nothing is exported. When
//! set: OTLP over HTTP/protobuf, the standard `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`(`_ARG`)
//! (default `parentbased_always_on`), `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_*` variables.
//!
//! The spans made here use the target [`TARGET`]: the log output never shows them (so logs read as
//! before), but JSON log lines written inside one carry its `trace_id` and `span_id` (sampled or
//! not: the ids still tie one webhook's lines together across services).
//!
//! Rejected requests (any 4xx answer of an HTTP server span) are exported at most
//! [`REJECTED_SPANS_PER_SECOND`] per second per process, whatever the caller's `traceparent` asks
//! for: a flood of forged webhooks with sampled `traceparent`s costs a bounded export.
//!
//! Never recorded: header values other than the trace context, query strings, bodies, secrets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanProcessor};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub mod log;

/// The `tracing` target of every span made here.
pub const TARGET: &str = "switchboard::trace";
/// The W3C Trace Context header names (HTTP headers and Kafka record headers alike).
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// Rejected-request spans exported per second per process, at most.
pub const REJECTED_SPANS_PER_SECOND: u32 = 10;

const ENDPOINT_ENVS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether an OTLP endpoint is configured (tracing is on).
pub fn configured() -> bool {
    ENDPOINT_ENVS
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Whether tracing was switched on in this process.
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// The OpenTelemetry layer, when an endpoint is configured; `service` names the service unless
/// `OTEL_SERVICE_NAME` does. Installs the W3C propagator and keeps the provider for [`shutdown`].
pub(crate) fn layer<S>(service: &str) -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    if !configured() || PROVIDER.get().is_some() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("tracing disabled: the OTLP exporter could not be built: {error}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_span_processor(RejectedBudget::new(BatchSpanProcessor::builder(exporter).build()))
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("switchboard");
    let _ = PROVIDER.set(provider);
    // Every span of TARGET is at INFO. No target here may be enabled above INFO: the filters'
    // most verbose level becomes the `log` crate's maximum, and at TRACE every `log::trace!` of a
    // dependency (rdkafka logs each native handle it frees: three per webhook) would be handed to
    // the subscriber to be turned down.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target(TARGET, tracing::Level::INFO)
        .with_target("switchboard_ingest", tracing::Level::INFO)
        .with_target("switchboard_processor", tracing::Level::INFO)
        .with_target("switchboard_service", tracing::Level::INFO);
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_location(false)
            // Per poll of an instrumented future: no clock reads for busy/idle time, and no
            // thread-local context stack (contexts are taken from the spans, never from
            // `Context::current`).
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(filter),
    )
}

/// Exports what is still buffered. Call at the end of `main`.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
    {
        tracing::debug!(%error, "trace provider shutdown");
    }
}

/// Calls [`shutdown`] when dropped: `let _trace = trace::ShutdownOnDrop;` in `main`.
#[derive(Debug)]
pub struct ShutdownOnDrop;

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        shutdown();
    }
}

/// The trace and span ids of the current span (sampled or not), when tracing is on.
pub fn current_ids() -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    let context = Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

// ---- HTTP -------------------------------------------------------------------------------------

/// The trace context an HTTP request carries (empty when it carries none, or tracing is off).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    if !enabled() {
        return Context::new();
    }
    propagator().extract(&HeaderExtractor(headers))
}

/// Writes `span`'s context as `traceparent`/`tracestate` into outgoing HTTP headers.
pub fn inject_http(span: &Span, headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    propagator().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// A server span for one HTTP request (`http.route` is the route template, never the path with
/// its ids); its parent is the request's `traceparent`. Record the status with [`record_status`].
pub fn http_server_span(method: &http::Method, route: &str, headers: &http::HeaderMap) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "http.server",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let _ = span.set_parent(extract_http(headers));
    }
    span
}

/// A client span for one outbound HTTP request. Only the host is recorded (a URL may hold tokens).
pub fn http_client_span(method: &http::Method, host: &str, port: Option<u16>) -> Span {
    tracing::info_span!(
        target: TARGET,
        "http.client",
        otel.name = %method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        server.address = host,
        server.port = port.map(i64::from),
        http.response.status_code = tracing::field::Empty,
    )
}

/// Records an HTTP status on a server or client span (5xx marks the span as an error; so does a
/// 4xx on a client span, per the semantic conventions).
pub fn record_status(span: &Span, status: u16, client: bool) {
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 || (client && status >= 400) {
        span.record("otel.status_code", "ERROR");
    }
}

/// Axum middleware: one server span per request, continuing the caller's `traceparent`.
pub async fn http_server_layer(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    if !enabled() {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let span = http_server_span(request.method(), &route, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    // An unsampled span is never exported: its attributes would be visited for nothing.
    if !is_unsampled(&span) {
        record_status(&span, response.status().as_u16(), false);
    }
    response
}

/// Whether `span` belongs to a trace the sampler dropped (its context is valid and not sampled).
/// Starts the span's OpenTelemetry side when it has not started yet: that is where the sampler
/// decides.
fn is_unsampled(span: &Span) -> bool {
    if !enabled() || span.is_disabled() {
        return false;
    }
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    span_context.is_valid() && !span_context.is_sampled()
}

// ---- Kafka ------------------------------------------------------------------------------------

struct KafkaExtractor<'a, H>(&'a H);

impl<H: Headers> Extractor for KafkaExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|header| header.key == key)
            .and_then(|header| header.value)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|header| header.key).collect()
    }
}

#[derive(Default)]
struct Pairs(Vec<(String, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// Whether a record header is trace context (replaced, never copied, when a record is re-sent).
pub fn is_trace_header(key: &str) -> bool {
    key == TRACEPARENT || key == TRACESTATE
}

/// The trace context a Kafka record carries.
pub fn extract_kafka<H: Headers>(headers: Option<&H>) -> Context {
    match headers {
        Some(headers) if enabled() => propagator().extract(&KafkaExtractor(headers)),
        _ => Context::new(),
    }
}

/// Adds the current span's context (`traceparent`, `tracestate`) to a record's headers.
pub fn inject_kafka(headers: OwnedHeaders) -> OwnedHeaders {
    inject_kafka_from(&Span::current(), headers)
}

/// Adds `span`'s context to a record's headers; a disabled span (the [`kafka_send_span`] of an
/// unsampled trace) adds the current span's.
pub fn inject_kafka_from(span: &Span, mut headers: OwnedHeaders) -> OwnedHeaders {
    if !enabled() {
        return headers;
    }
    let current;
    let span = if span.is_disabled() {
        current = Span::current();
        &current
    } else {
        span
    };
    if span.is_disabled() {
        return headers;
    }
    let mut pairs = Pairs::default();
    propagator().inject_context(&span.context(), &mut pairs);
    for (key, value) in &pairs.0 {
        headers = headers.insert(Header {
            key: key.as_str(),
            value: Some(value.as_str()),
        });
    }
    headers
}

/// A producer span for a record about to be sent to `topic`; inject it with [`inject_kafka_from`].
///
/// In a trace the sampler dropped (the current span's is) it is [`Span::none`]: a span of that
/// trace would never be exported, and the record carries the current span's context instead, so
/// that the services downstream know the trace and that it is not sampled. Most traces are
/// unsampled at a ratio sampler's rates, and each one saves a span's creation, recording and close.
pub fn kafka_send_span(topic: &str, key: Option<&str>) -> Span {
    if is_unsampled(&Span::current()) {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "kafka.send",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.kafka.message.key = key,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
    )
}

/// Records where the broker stored a produced record.
pub fn record_stored(span: &Span, partition: i32, offset: i64) {
    span.record("messaging.destination.partition.id", partition.to_string());
    span.record("messaging.kafka.offset", offset);
}

/// Marks a span as failed (the reason is the error's kind, never data).
pub fn record_error(span: &Span) {
    span.record("otel.status_code", "ERROR");
}

fn consume_span<M: Message>(operation: &'static str, message: &M, group: &str) -> Span {
    let key = message.key().and_then(|key| std::str::from_utf8(key).ok());
    tracing::info_span!(
        target: TARGET,
        "kafka.process",
        otel.name = %format_args!("{operation} {}", message.topic()),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = operation,
        messaging.destination.name = message.topic(),
        messaging.kafka.message.key = key,
        messaging.destination.partition.id = %message.partition(),
        messaging.kafka.offset = message.offset(),
        messaging.consumer.group.name = group,
    )
}

/// A consumer span for one record, continuing the trace the record carries. `operation` names
/// what is done with it (`process`, `write`, `deliver` …).
pub fn kafka_process_span<M: Message>(operation: &'static str, message: &M, group: &str) -> Span {
    let span = consume_span(operation, message, group);
    if !span.is_disabled() {
        let _ = span.set_parent(extract_kafka(message.headers()));
    }
    span
}

/// A consumer span for a record read again (replay, DLQ redrive): a new trace, linked to the one
/// the record carries (its original webhook's), so that the original trace stays as it was.
pub fn kafka_relink_span<M: Message>(operation: &'static str, message: &M, group: &str) -> Span {
    let span = consume_span(operation, message, group);
    if !span.is_disabled() {
        let _ = span.set_parent(Context::new());
        let original = extract_kafka(message.headers());
        let original = original.span().span_context().clone();
        if original.is_valid() {
            span.add_link_with_attributes(original, vec![KeyValue::new("switchboard.link", "original")]);
        }
    }
    span
}

/// A span for work done on many records at once (a Kafka transaction, a database batch): its own
/// trace, linked to each record's span instead of being the parent of all of them.
pub fn batch_span(name: &'static str, system: &'static str, links: &[SpanContext]) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "batch",
        otel.name = name,
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
        switchboard.batch.system = system,
        switchboard.batch.linked = links.len().min(MAX_LINKS),
    );
    if !span.is_disabled() {
        let _ = span.set_parent(Context::new());
        for link in links.iter().take(MAX_LINKS) {
            span.add_link(link.clone());
        }
    }
    span
}

/// Links kept per batch span (the SDK's default limit).
pub const MAX_LINKS: usize = 128;

/// The span context of `span` when it is sampled: what a batch span links to.
pub fn sampled_context(span: &Span) -> Option<SpanContext> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_sampled().then_some(span_context)
}

// ---- Export budget for rejected requests ------------------------------------------------------

/// Drops server spans of rejected requests (4xx) beyond [`REJECTED_SPANS_PER_SECOND`].
#[derive(Debug)]
struct RejectedBudget<P> {
    inner: P,
    window: Mutex<(Instant, u32)>,
    dropped: AtomicU64,
}

impl<P> RejectedBudget<P> {
    fn new(inner: P) -> Self {
        Self {
            inner,
            window: Mutex::new((Instant::now(), 0)),
            dropped: AtomicU64::new(0),
        }
    }

    fn admit(&self, span: &SpanData) -> bool {
        let rejected = span.span_kind == opentelemetry::trace::SpanKind::Server
            && span.attributes.iter().any(|kv| {
                kv.key.as_str() == "http.response.status_code"
                    && matches!(kv.value, opentelemetry::Value::I64(status) if (400..500).contains(&status))
            });
        if !rejected {
            return true;
        }
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if window.0.elapsed() >= Duration::from_secs(1) {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        let admitted = window.1 <= REJECTED_SPANS_PER_SECOND;
        if !admitted {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("switchboard_trace_rejected_spans_dropped_total").increment(1);
        }
        admitted
    }
}

impl<P: SpanProcessor> SpanProcessor for RejectedBudget<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.admit(&span) {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    #[derive(Debug, Default)]
    struct Count(std::sync::atomic::AtomicU32);

    impl SpanProcessor for Count {
        fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &Context) {}
        fn on_end(&self, _: SpanData) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn server_span(status: i64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1),
                SpanId::from(1),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "POST /webhooks/stripe".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: vec![KeyValue::new("http.response.status_code", status)],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn rejected_request_spans_are_exported_at_a_bounded_rate_and_others_always() {
        let budget = RejectedBudget::new(Count::default());
        for _ in 0..1_000 {
            budget.on_end(server_span(401));
        }
        for _ in 0..100 {
            budget.on_end(server_span(200));
        }
        let exported = budget.inner.0.load(Ordering::Relaxed);
        assert_eq!(exported, REJECTED_SPANS_PER_SECOND + 100);
        assert_eq!(
            budget.dropped.load(Ordering::Relaxed),
            1_000 - u64::from(REJECTED_SPANS_PER_SECOND)
        );
    }

    #[test]
    fn kafka_headers_carry_the_context_both_ways() {
        let headers = OwnedHeaders::new().insert(Header {
            key: TRACEPARENT,
            value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        });
        let context = propagator().extract(&KafkaExtractor(&headers));
        let span = context.span();
        assert_eq!(
            span.span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span.span_context().is_sampled());
        assert!(is_trace_header("traceparent") && !is_trace_header("event-id"));
    }
}
