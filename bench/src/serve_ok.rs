//! Baseline (a), the HTTP ceiling: a bare axum server that reads each request's body and answers
//! 200 with the TwiML ingest answers, without verifying anything or touching Kafka.

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use http::header::CONTENT_TYPE;
use tokio::net::TcpListener;

const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#;

/// The bare router: `POST /webhooks/twilio/{*path}` answers 200.
pub fn app() -> Router {
    Router::new().route(
        "/webhooks/twilio/{*path}",
        post(|_body: Bytes| async { ([(CONTENT_TYPE, "text/xml")], EMPTY_TWIML) }),
    )
}

/// Serves [`app`] on `listener` until the process is stopped.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    axum::serve(listener, app()).await?;
    Ok(())
}
