//! switchboard-ingest: verifies provider webhooks and makes them durable in Kafka.
//!
//! `main` is thin: [`Settings::load`](config::Settings::load), then [`run`]. Tests drive
//! [`app`] with a fake [`Publisher`](publish::Publisher), and the real [`KafkaPublisher`](publish::KafkaPublisher)
//! against the dev broker.

pub mod admin;
pub mod app;
pub mod config;
pub mod envelope;
pub mod error;
pub mod kafka;
pub mod limits;
pub mod metrics;
pub mod publish;
pub mod replay;
pub mod samples;
pub mod send;
pub mod tenants;

/// The signature schemes: the `switchboard-verify` crate (pure verifiers and signers), under the
/// name ingest's modules and the crates that reach it through ingest use.
pub use switchboard_verify as verify;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use switchboard_schemas::Codec;
use switchboard_service::http::{ServeOptions, connection_cap, open_files_limit, serve};
use tokio::net::TcpListener;

pub use admin::admin_app;
pub use app::{AppState, app};
use config::Settings;
use publish::{KafkaPublisher, Publisher};

/// Admin connections served at once (probes and scrapes).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Runs ingest, the webhooks on `listener` and `/healthz`, `/readyz`, `/metrics` on
/// `admin_listener`, until `shutdown` completes: stops accepting webhooks, lets in-flight requests
/// finish (each still waits for its delivery report), flushes the producer, stops the admin server,
/// returns.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    admin_listener: TcpListener,
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
    let max_connections = connection_cap(config.max_connections + ADMIN_MAX_CONNECTIONS, open_files_limit())
        .map_err(|problem| anyhow::anyhow!("max_connections: {problem}"))?
        .saturating_sub(ADMIN_MAX_CONNECTIONS)
        .clamp(1, config.max_connections);
    if max_connections < config.max_connections {
        tracing::warn!(
            configured = config.max_connections,
            serving = max_connections,
            open_files_limit = open_files_limit(),
            "max_connections lowered to what the open files limit leaves; raise the limit (ulimit -n)"
        );
    }
    tracing::info!(
        listen = %listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        max_connections,
        sources = ?sources,
        "ingest listening"
    );

    let options = ServeOptions {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections,
        drain_timeout: config.drain_timeout,
    };
    let state = AppState::new(
        Arc::clone(&settings),
        Arc::clone(&publisher) as Arc<dyn Publisher>,
    );
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(serve(
        admin_listener,
        admin_app(state.clone()),
        ServeOptions {
            max_connections: ADMIN_MAX_CONNECTIONS,
            ..options
        },
        async {
            let _ = admin_stopped.await;
        },
    ));
    let served = serve(listener, app(state), options, shutdown).await;
    publisher.flush(config.publish_timeout).await;
    let _ = stop_admin.send(());
    let _ = admin.await;
    served?;
    tracing::info!("ingest stopped");
    Ok(())
}
