//! Rebuilds a task's state from the changelogs before any of its records is processed.
//!
//! Entries are filtered by their origin: only those written for this task's raw partition at an
//! offset below the partition's committed offset count. A committed transaction always moves the
//! committed offset past the records it processed, so this admits exactly the entries of committed
//! transactions — on any broker, including one whose `read_committed` consumers still see records
//! of aborted transactions (Tansu). Without the filter, a crash mid-transaction could leave an
//! aborted dedup entry that makes the retried record look like a duplicate: a lost event.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use switchboard_schemas::Codec;
use switchboard_schemas::domain::CallState;
use switchboard_schemas::topics;
use tokio::runtime::Handle;

use crate::config::Config;
use crate::kafka::{self, headers};
use crate::runner::BACKOFF_START;
use crate::state::{Task, TaskState};
use crate::topology::Topology;

/// How long restoring one changelog partition may take before the processor gives up (and the
/// orchestrator restarts it).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one restore waits, in place, for a schema registry that cannot serve a changelog
/// entry's schema (retrying the entry with backoff) before it fails and the loop retries the
/// restore later (polling meanwhile, so the group keeps the member).
const REGISTRY_WAIT: Duration = Duration::from_secs(30);
const REGISTRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where a changelog entry came from.
#[derive(Debug, PartialEq, Eq)]
struct Origin<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

fn header<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

fn origin<'a>(message: &'a BorrowedMessage<'_>) -> Option<Origin<'a>> {
    Some(Origin {
        topic: header(message, headers::ORIGIN_TOPIC)?,
        partition: header(message, headers::ORIGIN_PARTITION)?.parse().ok()?,
        offset: header(message, headers::ORIGIN_OFFSET)?.parse().ok()?,
    })
}

/// Restores `task` from the changelogs of `topology`, where the raw partition's committed offset
/// is `committed` (`None`: nothing committed yet, so no changelog entry can be committed either).
pub fn restore(
    config: &Config,
    topology: &Topology,
    codec: &Codec,
    runtime: &Handle,
    task: &Task,
    committed: Option<i64>,
    dedup_cutoff_millis: i64,
) -> anyhow::Result<TaskState> {
    let mut state = TaskState::default();
    let Some(committed) = committed else {
        return Ok(state);
    };
    let counts = |origin: &Origin<'_>| {
        origin.topic == task.topic && origin.partition == task.partition && origin.offset < committed
    };

    read_partition(
        config,
        &topology.topic(topics::DEDUP_CHANGELOG),
        task.partition,
        |message| {
            if !origin(message).is_some_and(|o| counts(&o)) {
                return Ok(());
            }
            let (Some(key), Some(value)) = (message.key(), message.payload()) else {
                return Ok(());
            };
            let Some(event_id) = std::str::from_utf8(key)
                .ok()
                .and_then(|k| k.split_once(':'))
                .map(|(_, id)| id)
            else {
                return Ok(());
            };
            let seen_at: i64 = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_default();
            if seen_at >= dedup_cutoff_millis {
                state.dedup.insert(event_id.to_owned(), seen_at);
            }
            Ok(())
        },
    )?;

    if topology.call_state() && task.topic == switchboard_schemas::Source::Twilio.raw_topic() {
        read_partition(
            config,
            &topology.topic(topics::CALL_STATE),
            task.partition,
            |message| {
                if !origin(message).is_some_and(|o| counts(&o)) {
                    return Ok(());
                }
                let Some(value) = message.payload() else {
                    return Ok(());
                };
                let call = decode_call_state(codec, runtime, value)?;
                // Later offsets are later states of the same call.
                state.calls.insert(call.call_sid.clone(), call);
                Ok(())
            },
        )?;
    }
    Ok(state)
}

/// Decodes a call-state changelog entry, retrying it while the registry cannot serve its schema
/// (a cold cache after a restart meets a registry flap): never cached, never skipped. An entry
/// that does not decode fails the restore, which the loop retries.
fn decode_call_state(codec: &Codec, runtime: &Handle, value: &[u8]) -> anyhow::Result<CallState> {
    let give_up = Instant::now() + REGISTRY_WAIT;
    let mut backoff = BACKOFF_START;
    loop {
        match runtime.block_on(codec.decode(CallState::schema_def(), value)) {
            Ok(call) => return Ok(call),
            Err(error) if error.is_transient() && Instant::now() + backoff < give_up => {
                tracing::warn!(%error, ?backoff, "restoring: schema registry unavailable; retrying the entry");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(REGISTRY_BACKOFF_MAX);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Reads one partition of `topic` from the beginning to its current end.
fn read_partition(
    config: &Config,
    topic: &str,
    partition: i32,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = kafka::reader_config(config).create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
    if high <= low {
        return Ok(());
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "restoring {topic}[{partition}] took longer than {RESTORE_TIMEOUT:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => each(&message)?,
            Some(Err(error)) => return Err(error.into()),
            // The end: nothing more to fetch, and past the high watermark taken at the start. (The
            // watermark alone is not enough: transaction markers take offsets but are never
            // delivered, and some brokers (Tansu) report the base offset of the last batch + 1.)
            None => {
                let position = consumer.position()?;
                let reached = position
                    .elements_for_topic(topic)
                    .iter()
                    .any(|e| matches!(e.offset(), Offset::Offset(next) if next >= high));
                if reached {
                    return Ok(());
                }
            }
        }
    }
}
