//! `switchboard-processor`: with no arguments, runs the processor; `sink` runs the database sink;
//! `dlq list|show|redrive` inspects and redrives the dead-letter queue.

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_processor::config::Config;

#[derive(Debug, Parser)]
#[command(version, about = "Turns raw webhooks into exactly-once domain events")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the processor (the default). Configured by SWITCHBOARD_* env vars and SWITCHBOARD_CONFIG.
    Process,
    /// Run the database sink and the calls API (deployable on its own).
    Sink,
    /// Run the outbound actions dispatcher: `[[action]]` tables of SWITCHBOARD_CONFIG, with
    /// retry topics and the DLQ (deployable on its own).
    Actions,
    /// Inspect the dead-letter queue and redrive its records. Same configuration as the processor.
    Dlq {
        #[command(subcommand)]
        command: switchboard_processor::dlq::Command,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    switchboard_service::telemetry::init_logging();
    match cli.command.unwrap_or(Command::Process) {
        Command::Process => {
            let config = Config::load()?;
            let listener = tokio::net::TcpListener::bind(config.admin_listen).await?;
            switchboard_processor::run(config, listener, switchboard_service::shutdown::signal()).await
        }
        Command::Actions => {
            let config = switchboard_processor::dispatch::config::DispatchConfig::load()?;
            let listener = tokio::net::TcpListener::bind(config.admin_listen).await?;
            switchboard_processor::dispatch::run(config, listener, switchboard_service::shutdown::signal())
                .await
        }
        Command::Sink => {
            let config = switchboard_processor::sink::config::SinkConfig::load()?;
            let listener = tokio::net::TcpListener::bind(config.admin_listen).await?;
            switchboard_processor::sink::run(config, listener, switchboard_service::shutdown::signal()).await
        }
        Command::Dlq { command } => {
            let config = Config::load().context("loading the configuration")?;
            switchboard_processor::dlq::run(config, command).await
        }
    }
}
