//! Operator tools for the dead-letter queue (`switchboard-processor dlq list|show|redrive`).
//!
//! The processor copies poison records to `switchboard.dlq` with their original key, value and
//! headers plus why and where they failed ([`switchboard_schemas::headers`]). These commands read it as a
//! bounded run (to the end it had when the command started, `read_committed`, assigned partitions,
//! no consumer group), filter by source, error class and failure time, and republish matching
//! records to their raw topic at most once per DLQ position ([`redrive`]).
//!
//! Pure parts: [`record`] (headers, positions), [`filter`], [`table`], [`show`] rendering.
//! Kafka parts: `read` (bounded reads) and `redrive` (the transactional copy).

pub mod filter;
mod read;
pub mod record;
mod redrive;
pub mod show;
pub mod table;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_kafka::end::{EndOffsets, EndReader};
use switchboard_schemas::{Classify, Codec, CodecError, RawWebhook, topics};

use crate::config::Config;
use crate::kafka;

pub use filter::Filter;
pub use record::{DlqHeaders, Position, REDRIVEN_FROM};
pub use redrive::Summary;
pub use show::{Selector, Shown};
pub use table::Row;

/// The `transactional.id` of `dlq redrive`: one for every run, so a run fences any earlier one
/// still running.
pub const REDRIVE_TRANSACTIONAL_ID: &str = "switchboard-dlq-redrive";
/// `client.id` of the dlq commands' clients.
const CLIENT_ID: &str = "switchboard-dlq";
/// How long `dlq show <partition>/<offset>` waits for the record.
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The `dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List DLQ records as a table, newest last.
    List {
        #[command(flatten)]
        filter: Filter,
    },
    /// Print DLQ records in full: headers, the RawWebhook envelope, the body.
    Show {
        /// The record's DLQ position, <partition>/<offset>, as `dlq list` prints it.
        #[arg(required_unless_present = "event_id", conflicts_with = "event_id")]
        position: Option<Position>,
        /// Every DLQ record with this event id instead.
        #[arg(long)]
        event_id: Option<String>,
    },
    /// Republish matching DLQ records to their original raw topic, each DLQ position at most once.
    Redrive {
        #[command(flatten)]
        filter: Filter,
        /// Count what would be redriven; publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a `dlq` subcommand, printing its result to stdout.
pub async fn run(config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::List { filter } => {
            let rows = list(&config, &filter).await?;
            print!("{}", table::format_table(&rows));
            eprintln!("{} matching DLQ records", rows.len());
        }
        Command::Show { position, event_id } => {
            let selector = match (position, event_id) {
                (Some(position), _) => Selector::Position(position),
                (None, Some(event_id)) => Selector::EventId(event_id),
                (None, None) => anyhow::bail!("name a record: <partition>/<offset> or --event-id"),
            };
            let shown = show(&config, &selector).await?;
            for (i, record) in shown.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{record}");
            }
        }
        Command::Redrive { filter, dry_run } => {
            let summary = redrive(&config, &filter, dry_run).await?;
            println!("{summary}");
        }
    }
    Ok(())
}

/// A reader of the processor's cluster: `read_committed`, no commits, from the earliest record
/// when a start offset is gone.
fn reader_config(config: &Config) -> ClientConfig {
    let mut client = kafka::reader_config(config);
    client
        .set("group.id", CLIENT_ID)
        .set("client.id", CLIENT_ID)
        .set("auto.offset.reset", "earliest");
    client
}

/// The redrive's transactional producer.
fn producer_config(config: &Config) -> ClientConfig {
    let mut client = kafka::producer_config(config);
    client
        .set("client.id", CLIENT_ID)
        .set("transactional.id", REDRIVE_TRANSACTIONAL_ID)
        .set(
            "transaction.timeout.ms",
            config.transaction_timeout.as_millis().to_string(),
        );
    client
}

fn admin_config(config: &Config) -> ClientConfig {
    let mut client = kafka::producer_config(config);
    client
        .remove("transactional.id")
        .remove("transaction.timeout.ms")
        .set("client.id", CLIENT_ID);
    client
}

/// Creates `switchboard.dlq.redriven` (compacted) when missing.
async fn create_redriven_topic(config: &Config) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = admin_config(config)
        .create()
        .context("creating a Kafka admin client")?;
    let topic = NewTopic::new(
        topics::DLQ_REDRIVEN,
        config.topic_partitions,
        TopicReplication::Fixed(config.topic_replication_factor),
    )
    .set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .with_context(|| format!("creating {}", topics::DLQ_REDRIVEN))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create {topic}: {code}"),
        }
    }
    Ok(())
}

/// Runs blocking Kafka work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("the Kafka thread panicked")?
}

fn dlq_headers(message: &impl Message) -> DlqHeaders {
    DlqHeaders::parse(
        message
            .headers()
            .into_iter()
            .flat_map(|h| h.iter().map(|h| (h.key, h.value))),
    )
}

/// The DLQ records matching `filter`, oldest first (newest last); with `--limit N` the newest N,
/// holding no more than N rows while the DLQ is read.
pub async fn list(config: &Config, filter: &Filter) -> anyhow::Result<Vec<Row>> {
    filter.validate()?;
    let reader = reader_config(config);
    let filter = filter.clone();
    blocking(move || {
        let start = filter.since.map_or(read::Start::Beginning, |since| {
            read::Start::Time(since.timestamp_millis())
        });
        let mut rows = table::Newest::new(filter.limit);
        if let Some(read) = read::BoundedRead::open(&reader, topics::DLQ, start)? {
            read.for_each(|message| {
                let headers = dlq_headers(message);
                let position = Position {
                    partition: message.partition(),
                    offset: message.offset(),
                };
                if filter.matches(position, &headers) {
                    rows.push(Row { position, headers });
                }
                Ok(ControlFlow::Continue(()))
            })
            .context("reading the DLQ")?;
        }
        Ok(rows.into_rows())
    })
    .await
}

/// The DLQ positions earlier `redrive` runs (the CLI's or the console's) republished.
pub async fn redriven(config: &Config) -> anyhow::Result<HashSet<Position>> {
    let reader = reader_config(config);
    blocking(move || redrive::redriven_positions(&reader)).await
}

/// Republishes the DLQ records matching `filter` that no earlier run redrove (see the module
/// `redrive`); with `dry_run`, only counts them.
pub async fn redrive(config: &Config, filter: &Filter, dry_run: bool) -> anyhow::Result<Summary> {
    filter.validate()?;
    if !dry_run {
        create_redriven_topic(config).await?;
    }
    let (reader, producer, filter) = (reader_config(config), producer_config(config), filter.clone());
    blocking(move || redrive::run(&reader, &producer, &filter, dry_run)).await
}

/// The DLQ records `selector` names, decoded. Fails when there is none.
pub async fn show(config: &Config, selector: &Selector) -> anyhow::Result<Vec<Shown>> {
    let reader = reader_config(config);
    let messages = {
        let selector = selector.clone();
        blocking(move || match selector {
            Selector::Position(position) => read_at(&reader, position).map(|m| vec![m]),
            Selector::EventId(event_id) => read_event(&reader, &event_id),
        })
        .await?
    };
    let codec = Codec::new(&config.schema_registry_url).context("creating the schema registry client")?;
    let mut shown = Vec::with_capacity(messages.len());
    for message in messages {
        let envelope = match message.payload() {
            None => Err("the record has no value".to_owned()),
            Some(value) => match codec.decode::<RawWebhook>(RawWebhook::schema_def(), value).await {
                Ok(raw) => Ok(raw),
                // Registry errors may quote the registry's address: never printed.
                Err(error) if error.is_transient() => {
                    anyhow::bail!("the schema registry is unavailable; try again")
                }
                Err(CodecError::Decode(reason)) => Err(reason),
                Err(_) => Err(match switchboard_schemas::codec::schema_id(value) {
                    Some(id) => format!("the schema registry does not know schema id {id}"),
                    None => "not a Confluent-framed record".to_owned(),
                }),
            },
        };
        shown.push(Shown {
            position: Position {
                partition: message.partition(),
                offset: message.offset(),
            },
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            dlq: dlq_headers(&message),
            value: message.payload().map(<[u8]>::to_vec),
            envelope,
        });
    }
    Ok(shown)
}

/// The DLQ record at `position`.
fn read_at(reader: &ClientConfig, position: Position) -> anyhow::Result<OwnedMessage> {
    let ends = EndReader::new(reader, METADATA_TIMEOUT).context("creating a Kafka consumer")?;
    let consumer = ends.consumer();
    let Position { partition, offset } = position;
    anyhow::ensure!(
        read::partitions(consumer, topics::DLQ)?.contains(&partition),
        "{} has no partition {partition}",
        topics::DLQ
    );
    let (low, high) = ends
        .watermarks(topics::DLQ, partition, METADATA_TIMEOUT)
        .with_context(|| format!("fetching the watermarks of {}[{partition}]", topics::DLQ))?;
    anyhow::ensure!(
        offset >= low,
        "no record at {position}: partition {partition} starts at offset {low} (older records were deleted)"
    );
    // Past the reported end there may still be records where the broker under-reports it (the
    // dev broker): wait briefly rather than not at all. Elsewhere there is none.
    let timeout = match ends.capability() {
        _ if offset < high => SHOW_TIMEOUT,
        EndOffsets::LowerBound => Duration::from_secs(3),
        EndOffsets::Exact => Duration::ZERO,
    };
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topics::DLQ, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(300)) {
            Some(Ok(message)) if message.offset() == offset => return Ok(message.detach()),
            // Past the end the consumer resets to the earliest record.
            Some(Ok(message)) if message.offset() < offset => {
                anyhow::bail!("no record at {position}: partition {partition} ends before offset {offset}")
            }
            Some(Ok(message)) => anyhow::bail!(
                "no record at {position} (the next record is at {partition}/{}; the offset may be a transaction marker)",
                message.offset()
            ),
            Some(Err(error)) => return Err(error).context("reading the DLQ"),
            None => {}
        }
    }
    anyhow::bail!(
        "no record at {position}: partition {partition} ends before offset {offset} (high watermark {high})"
    )
}

/// Every DLQ record whose `event-id` header is `event_id`.
fn read_event(reader: &ClientConfig, event_id: &str) -> anyhow::Result<Vec<OwnedMessage>> {
    let mut found = Vec::new();
    if let Some(read) = read::BoundedRead::open(reader, topics::DLQ, read::Start::Beginning)? {
        read.for_each(|message| {
            if dlq_headers(message).event_id.as_deref() == Some(event_id) {
                found.push(message.detach());
            }
            Ok(ControlFlow::Continue(()))
        })
        .context("reading the DLQ")?;
    }
    anyhow::ensure!(!found.is_empty(), "no DLQ record has event id {event_id:?}");
    Ok(found)
}
