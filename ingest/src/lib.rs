//! switchboard-ingest: verifies provider webhooks and makes them durable in Kafka.
//!
//! `main` is thin: [`Settings::load`](config::Settings::load), then [`run`]. Tests drive
//! [`app`] with a fake [`Publisher`](publish::Publisher), and the real [`KafkaPublisher`](publish::KafkaPublisher)
//! against the dev broker.

pub mod app;
pub mod config;
pub mod envelope;
pub mod error;
pub mod kafka;
pub mod metrics;
pub mod publish;
pub mod send;
pub mod tenants;
pub mod verify;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use switchboard_schemas::Codec;
use switchboard_service::http::{ServeOptions, serve};
use tokio::net::TcpListener;

pub use app::{AppState, app};
use config::Settings;
use publish::{KafkaPublisher, Publisher};

/// Runs ingest on `listener` until `shutdown` completes: stops accepting, lets in-flight requests
/// finish (each still waits for its delivery report), flushes the producer, returns.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let config = &settings.config;
    let codec =
        Arc::new(Codec::new(&config.schema_registry_url).context("creating the schema registry client")?);
    let producer_settings = Arc::clone(&settings);
    let publisher = Arc::new(
        KafkaPublisher::new(
            move || kafka::producer(&producer_settings.config),
            codec,
            config.publish_timeout,
        )
        .context("creating the Kafka producer")?,
    );

    if config.create_topics
        && let Err(error) = kafka::create_raw_topics(config).await
    {
        tracing::warn!(%error, "could not create the raw topics yet; publishing will fail until they exist");
    }
    if let Err(error) = publisher.register_schemas().await {
        tracing::warn!(%error, "could not register schemas yet; /readyz retries");
    }

    let sources = settings.enabled_sources();
    if sources.is_empty() {
        tracing::warn!("no source has secrets configured: every webhook route answers 404");
    }
    tracing::info!(listen = %listener.local_addr()?, sources = ?sources, "ingest listening");

    let options = ServeOptions {
        header_read_timeout: config.header_read_timeout,
        drain_timeout: config.drain_timeout,
    };
    let state = AppState::new(
        Arc::clone(&settings),
        Arc::clone(&publisher) as Arc<dyn Publisher>,
    );
    serve(listener, app(state), options, shutdown).await?;
    publisher.flush(config.publish_timeout).await;
    tracing::info!("ingest stopped");
    Ok(())
}
