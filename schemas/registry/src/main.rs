//! `switchboard-registry`: a small Confluent-compatible schema registry for development and tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use switchboard_registry::{Store, run};

/// A Confluent-compatible schema registry for development and tests. Production deployments use
/// Confluent Schema Registry, Karapace, Redpanda or Apicurio instead.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SWITCHBOARD_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Directory that holds the registry's state (created when missing).
    #[arg(long, env = "SWITCHBOARD_REGISTRY_DATA", default_value = ".dev/registry")]
    data: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let store = Store::open(&args.data).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, data = %args.data.display(), "schema registry listening");
    run(store, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
