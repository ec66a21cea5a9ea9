//! A tiny OTLP/HTTP trace sink for the tracing overhead run: accepts every export and answers an
//! empty (full success) response without decoding it, so that the sink, which shares the machine
//! with ingest, takes as little CPU as it can. `GET /stats` answers `<exports> <bytes>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use tokio::net::TcpListener;

#[derive(Debug, Default)]
struct Counts {
    exports: AtomicU64,
    bytes: AtomicU64,
}

async fn export(State(counts): State<Arc<Counts>>, body: Bytes) -> http::StatusCode {
    counts.exports.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
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
                    counts.bytes.load(Ordering::Relaxed)
                )
            }),
        )
        .with_state(Arc::<Counts>::default());
    axum::serve(listener, app).await?;
    Ok(())
}
