//! A tiny OTLP/HTTP trace sink for the tracing overhead run: decodes each
//! `ExportTraceServiceRequest`, counts its spans, answers an empty (full success) response.
//! `GET /stats` answers `<exports> <spans>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio::net::TcpListener;

#[derive(Debug, Default)]
struct Counts {
    exports: AtomicU64,
    spans: AtomicU64,
}

async fn export(State(counts): State<Arc<Counts>>, body: Bytes) -> http::StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return http::StatusCode::BAD_REQUEST;
    };
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    counts.exports.fetch_add(1, Ordering::Relaxed);
    counts.spans.fetch_add(spans as u64, Ordering::Relaxed);
    http::StatusCode::OK
}

/// Serves the sink on `listener` until the process is stopped.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/v1/traces", post(export))
        .route(
            "/stats",
            get(|State(counts): State<Arc<Counts>>| async move {
                format!(
                    "{} {}\n",
                    counts.exports.load(Ordering::Relaxed),
                    counts.spans.load(Ordering::Relaxed)
                )
            }),
        )
        .with_state(Arc::<Counts>::default());
    axum::serve(listener, app).await?;
    Ok(())
}
