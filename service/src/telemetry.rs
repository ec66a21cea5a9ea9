//! Logs and metrics set-up shared by every service.
//!
//! Logs: `tracing` to stderr, human-readable by default, one JSON object per line with
//! `SWITCHBOARD_LOG_FORMAT=json`; the filter comes from `SWITCHBOARD_LOG` (or `RUST_LOG`), default
//! `info`; JSON lines written inside a span carry its `trace_id` and `span_id` (with tracing on,
//! see [`crate::trace`]). Metrics: one process-wide Prometheus recorder, rendered by each
//! service's `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Env var choosing the log format: `json` or `text` (default).
pub const LOG_FORMAT_ENV: &str = "SWITCHBOARD_LOG_FORMAT";
/// Env var holding the log filter, e.g. `info,switchboard_ingest=debug`.
pub const LOG_FILTER_ENV: &str = "SWITCHBOARD_LOG";

/// Installs the global `tracing` subscriber. Call once, first thing in `main`. With an OTLP
/// endpoint configured it also installs the trace exporter ([`crate::trace`]); call
/// [`crate::trace::shutdown`] before exiting.
pub fn init_logging() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = std::env::var(LOG_FILTER_ENV)
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // The trace module's spans are for the exporter only: logs read the same with tracing on.
    // The closure keeps the filter's most verbose level as its hint: with none, the subscriber's
    // maximum would be TRACE, which also becomes the `log` crate's, and every `log::trace!` of a
    // dependency (rdkafka logs each native handle it frees) would reach the subscriber to be
    // turned down.
    let hint = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let filter = filter.and(
        tracing_subscriber::filter::filter_fn(|meta| meta.target() != crate::trace::TARGET)
            .with_max_level_hint(hint),
    );
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json()
            .flatten_event(true)
            .event_format(crate::trace::log::WithTraceIds(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
            .with_filter(filter)
            .boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let result = tracing_subscriber::registry()
        .with(fmt)
        .with(crate::trace::layer(&service_name()))
        .try_init();
    // A second call (tests) keeps the first subscriber.
    drop(result);
}

/// The service's name for traces when `OTEL_SERVICE_NAME` is unset: the executable's name, or
/// `switchboard-<subcommand>` for the processor's `sink`, `actions`, `replay` and `dlq`.
fn service_name() -> String {
    let mut args = std::env::args();
    let exe = args
        .next()
        .and_then(|path| {
            std::path::Path::new(&path)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "switchboard".into());
    match args.next().as_deref() {
        Some(sub @ ("sink" | "actions" | "replay" | "dlq")) if exe == "switchboard-processor" => {
            format!("switchboard-{sub}")
        }
        _ => exe,
    }
}

/// An error with its causes, `error: source: source's source`, for a log field
/// (`error = %chain(&error)`): errors keep their cause as `source` rather than in their own text,
/// and a log line should still say it.
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> impl std::fmt::Display + 'a {
    struct Chain<'a>(&'a (dyn std::error::Error + 'static));
    impl std::fmt::Display for Chain<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)?;
            let mut cause = self.0.source();
            while let Some(error) = cause {
                write!(f, ": {error}")?;
                cause = error.source();
            }
            Ok(())
        }
    }
    Chain(error)
}

/// The process-wide Prometheus recorder, installed on first use. Every histogram is exported
/// with the same buckets (0.5 ms to 10 s).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("static bucket list is not empty")
            .set_buckets_for_metric(Matcher::Suffix(EVENT_AGE_SUFFIX.into()), EVENT_AGE_BUCKETS)
            .expect("static bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then its handle would be wrong, so
        // fail loudly at start-up rather than export nothing.
        metrics::set_global_recorder(recorder).expect("no other metrics recorder is installed");
        handle
    })
}

/// Histograms whose name ends with this are event ages (end-to-end freshness): [`prometheus`]
/// exports them with [`EVENT_AGE_BUCKETS`] instead of the common buckets, fine around the latency
/// goal (250 ms) so that a p50 and p99 read from the buckets mean something, and up to 5 minutes
/// (a backlog).
pub const EVENT_AGE_SUFFIX: &str = "_event_age_seconds";
/// Bucket bounds of the event-age histograms, seconds.
pub const EVENT_AGE_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
    10.0, 30.0, 60.0, 300.0,
];

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_shows_every_cause() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(super::chain(&error).to_string(), "outer: inner");
    }
}
