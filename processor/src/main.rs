//! `switchboard-processor`: with no arguments, runs the processor; `sink` runs the database sink;
//! `actions` the outbound actions; `replay` and `reset` rewind; `dlq list|show|redrive` inspects
//! and redrives the dead-letter queue.

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_processor::config::Config;

/// jemalloc, as in ingest: every record allocates many small, short-lived buffers (the Avro
/// envelope, the provider payload, the domain event and its encoding), the allocation pattern for
/// which jemalloc cut ingest's CPU per request by 10–15 % (bench/PROFILE.md; not measured for
/// the processor's own loops). It also serves librdkafka's `malloc` (the workspace enables
/// `unprefixed_malloc_on_supported_platforms`): under glibc's per-thread arenas, the fetch
/// buffers of a full state restore (1 M changelog entries) left 185 MiB resident after 95 MiB
/// of peak use; with one allocator the restore peaked at 254 MiB instead of 400–500.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Run a time range of the raw topics through the processor again, into the live topics or a
    /// prefixed copy (a backfill). Resumable: run the same command again. Same configuration as
    /// the processor.
    Replay(switchboard_processor::replay::ReplayArgs),
    /// Rewind a stopped consumer group to a point in time (refused while it has members).
    Reset(switchboard_processor::reset::ResetArgs),
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
    let _trace = switchboard_service::trace::ShutdownOnDrop;
    match cli.command.unwrap_or(Command::Process) {
        Command::Process => {
            let shutdown = switchboard_service::shutdown::signal();
            let config = Config::load()?;
            let listener = tokio::net::TcpListener::bind(config.admin_listen).await?;
            switchboard_processor::run(config, listener, shutdown).await
        }
        Command::Actions => {
            let shutdown = switchboard_service::shutdown::signal();
            let config = switchboard_actions::ActionsConfig::load()?;
            let listener = tokio::net::TcpListener::bind(config.admin_listen).await?;
            switchboard_actions::run(config, listener, shutdown).await
        }
        Command::Sink => {
            let shutdown = switchboard_service::shutdown::signal();
            let config = switchboard_sink::SinkConfig::load()?;
            let listener = tokio::net::TcpListener::bind(config.admin_listen).await?;
            switchboard_sink::run(config, listener, shutdown).await
        }
        Command::Replay(args) => {
            let config = Config::load().context("loading the configuration")?;
            let codec = std::sync::Arc::new(switchboard_schemas::Codec::new(&config.schema_registry_url)?);
            let runtime = tokio::runtime::Handle::current();
            let summary = tokio::task::spawn_blocking(move || {
                switchboard_processor::replay::run(&config, &args, codec, runtime)
            })
            .await??;
            println!("{summary}");
            Ok(())
        }
        Command::Reset(args) => {
            let config = Config::load().context("loading the configuration")?;
            let runtime = tokio::runtime::Handle::current();
            let dry_run = args.dry_run;
            let rewinds = tokio::task::spawn_blocking(move || {
                switchboard_processor::reset::run(&config, &args, &runtime)
            })
            .await??;
            for rewind in &rewinds {
                let from = rewind.from.map_or_else(|| "-".to_owned(), |o| o.to_string());
                println!("{}  {from} -> {}", rewind.task, rewind.to);
            }
            println!(
                "{} partitions {}",
                rewinds.len(),
                if dry_run {
                    "would be rewound (dry run)"
                } else {
                    "rewound"
                }
            );
            Ok(())
        }
        Command::Dlq { command } => {
            let config = Config::load().context("loading the configuration")?;
            switchboard_processor::dlq::run(config, command).await
        }
    }
}
