//! switchboard-processor: turns raw webhooks into typed domain events, exactly once.
//!
//! Every instance is a member of one consumer group over `switchboard.raw.*`. Each batch of raw
//! records is processed inside one Kafka transaction that holds the domain events, the state
//! changelog entries (dedup, call state), any DLQ records, and the consumed offsets; consumers
//! read with `read_committed`. See the README for the design and its limits.
//!
//! Pure part: [`normalize`] (provider payload -> domain event; the ordering rule is
//! `switchboard_schemas::call_state`). Kafka parts: `engine` (raw records in the open transaction
//! of `switchboard_kafka::txn`), `runner` (the loop and rebalances), `restore` (state from
//! changelogs), `state`, `topology`, `kafka` (client settings, topics). Operator tools: [`dlq`]
//! (list, show, redrive the DLQ), [`replay`] (backfills) and [`reset`] (rewinding a group).
//! Observability: [`observe`] (the debug endpoint and the dashboard on the admin port). The sink
//! and the actions service are the `switchboard-sink` and `switchboard-actions` crates; this
//! crate's binary runs them as subcommands.

pub mod config;
pub mod dlq;
mod engine;
pub use engine::FAULT_ABORT_BEFORE_STORE_WRITE;
mod kafka;
pub mod metrics;
pub mod normalize;
pub mod observe;
pub mod replay;
pub mod reset;
mod restore;
mod runner;
mod state;
mod topology;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use switchboard_schemas::Codec;
use switchboard_service::http::{ServeOptions, serve};
use tokio::net::TcpListener;

use config::Config;
use switchboard_kafka::Health;

/// Runs the processor until `shutdown` completes (then finishes the open transaction, leaves the
/// group, and returns `Ok`) or until a fatal error (returned; exit non-zero so the orchestrator
/// restarts the instance).
pub async fn run(
    config: Config,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let codec =
        Arc::new(Codec::new(&config.schema_registry_url).context("creating the schema registry client")?);
    if config.create_topics
        && let Err(error) = kafka::create_topics(&config).await
    {
        tracing::warn!(%error, "could not create the processor's topics");
    }
    {
        let config = Arc::clone(&config);
        tokio::task::spawn_blocking(move || kafka::check_copartitioning(&config)).await??;
    }

    let health = Arc::new(Health::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        drain_timeout: config.drain_timeout,
        ..ServeOptions::default()
    };
    tracing::info!(listen = %admin_listener.local_addr()?, "admin server listening");
    let observe = observe::Observe::new(Arc::clone(&config), Arc::clone(&codec));
    let admin = tokio::spawn(serve(
        admin_listener,
        switchboard_kafka::health::router(vec![Arc::clone(&health)]).merge(observe::router(observe.clone())),
        options,
        async {
            let _ = admin_stopped.await;
        },
    ));

    let lag_reporter = {
        let (config, health, stop) = (Arc::clone(&config), Arc::clone(&health), Arc::clone(&stop));
        tokio::task::spawn_blocking(move || {
            switchboard_kafka::progress::run(
                &kafka::consumer_config(&config),
                &health,
                &stop,
                config.stall_timeout,
                Some(metrics::LAG),
            )
        })
    };
    let sampler = {
        let (stop, runtime) = (Arc::clone(&stop), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || observe.run_sampler(runtime, &stop))
    };
    let mut processing = {
        let (config, codec, stop, health) =
            (Arc::clone(&config), codec, Arc::clone(&stop), Arc::clone(&health));
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || runner::run(config, codec, runtime, stop, health))
    };
    tokio::pin!(shutdown);
    let result = tokio::select! {
        () = &mut shutdown => {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            processing.await
        }
        ended = &mut processing => ended,
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = stop_admin.send(());
    let _ = admin.await;
    let _ = lag_reporter.await;
    let _ = sampler.await;
    let result = result.context("processing thread panicked")?;
    match &result {
        Ok(()) => tracing::info!("processor stopped"),
        Err(error) => tracing::error!(error = %format!("{error:#}"), "processor stopped by a fatal error"),
    }
    result
}
