//! `switchboard-ingest`: with no arguments, serves; `send` signs and sends a sample webhook.

use clap::{Parser, Subcommand};
use switchboard_ingest::config::Settings;

/// jemalloc: a request allocates many small buffers (body, form, envelope, Avro); the ingest
/// profile (bench/PROFILE.md) showed glibc malloc/free at a quarter of the CPU, and jemalloc cut
/// CPU per request by 10–15 %. The workspace has it serve C's `malloc` too (librdkafka's
/// buffers), one allocator for the whole process (see the processor's `main.rs`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(version, about = "Verifies provider webhooks and makes them durable in Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve webhooks (the default). Configured by SWITCHBOARD_* env vars and SWITCHBOARD_CONFIG.
    Serve,
    /// Sign and send a realistic sample webhook to a running ingest, like `stripe trigger`.
    Send(Box<switchboard_ingest::send::SendArgs>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    switchboard_service::telemetry::init_logging();
    let _trace = switchboard_service::trace::ShutdownOnDrop;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = switchboard_service::shutdown::signal();
            let settings = Settings::load()?;
            let listener = tokio::net::TcpListener::bind(settings.config.listen).await?;
            let admin_listener = tokio::net::TcpListener::bind(settings.config.admin_listen).await?;
            switchboard_ingest::run(settings, listener, admin_listener, shutdown).await
        }
        Command::Send(args) => switchboard_ingest::send::run(*args).await,
    }
}
