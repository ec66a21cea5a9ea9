//! switchboard-sink: the database sink, started as `switchboard-processor sink`: an exactly-once
//! store of calls, messages, payments and bookings, and the calls API on its admin port.
//!
//! [`consumer`] reads the domain topics and writes rows plus consumed offsets in one database
//! transaction per batch; [`store`] owns the schema, the idempotent writes and the queries;
//! [`api`] serves them.

mod api;
mod config;
mod consumer;
mod metrics;
mod retention;
mod store;

pub use config::SinkConfig;
pub use store::{ConsumedOffset, Store, StoreError};

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use switchboard_schemas::Codec;
use switchboard_service::http::{ServeOptions, serve};
use tokio::net::TcpListener;

use switchboard_kafka::Health;

/// Runs the sink until `shutdown` completes (writes the pending batch, leaves the group, returns
/// `Ok`) or until a fatal error (returned: exit non-zero).
pub async fn run(
    config: SinkConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url)
        .await
        .context("opening the database")?;
    let codec =
        Arc::new(Codec::new(&config.schema_registry_url).context("creating the schema registry client")?);
    let health = Arc::new(Health::default());
    let stop = Arc::new(AtomicBool::new(false));

    let router = api::router(store.clone(), config.api_token.clone())
        .merge(switchboard_kafka::health::router(vec![Arc::clone(&health)]));
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        drain_timeout: config.drain_timeout,
        ..ServeOptions::default()
    };
    tracing::info!(listen = %listener.local_addr()?, "sink admin and calls API listening");
    let server = tokio::spawn(serve(listener, router, options, async {
        let _ = admin_stopped.await;
    }));

    let lag_reporter = {
        let (client, health, stop) = (
            consumer::consumer_config(&config),
            Arc::clone(&health),
            Arc::clone(&stop),
        );
        let stall_timeout = config.stall_timeout;
        tokio::task::spawn_blocking(move || {
            switchboard_kafka::progress::run(&client, &health, &stop, stall_timeout, Some(metrics::LAG))
        })
    };
    let retention = tokio::spawn(retention::run(store.clone(), config.attempts_retention));
    let mut processing = {
        let (config, stop, health, runtime) = (
            config.clone(),
            Arc::clone(&stop),
            Arc::clone(&health),
            tokio::runtime::Handle::current(),
        );
        tokio::task::spawn_blocking(move || consumer::run(&config, store, &codec, runtime, &stop, &health))
    };
    tokio::pin!(shutdown);
    let result = tokio::select! {
        () = &mut shutdown => {
            stop.store(true, Ordering::Relaxed);
            processing.await
        }
        ended = &mut processing => ended,
    };
    stop.store(true, Ordering::Relaxed);
    retention.abort();
    let _ = stop_admin.send(());
    let _ = server.await;
    let _ = lag_reporter.await;
    let result = result.context("sink thread panicked")?;
    match &result {
        Ok(()) => tracing::info!("sink stopped"),
        Err(error) => tracing::error!(error = %format!("{error:#}"), "sink stopped by a fatal error"),
    }
    result
}
