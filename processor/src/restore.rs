//! Brings a task's stored state (see [`crate::state`]) up to its committed offset from the
//! changelogs before any of its records is processed: nothing when the store's checkpoint is
//! current ([`plan`]), the changelog tail after the checkpoint when it is behind, everything when
//! there is no checkpoint or one past the committed offset.
//!
//! Entries are filtered by their origin: only those written for this task's raw partition at an
//! offset below the partition's committed offset (and, for a tail, at or above the checkpoint's)
//! count. A committed transaction always moves the committed offset past the records it
//! processed, so this admits exactly the entries of committed transactions — on any broker,
//! including one whose `read_committed` consumers still see records of aborted transactions
//! (Tansu). Without the filter, a crash mid-transaction could leave an aborted dedup entry that
//! makes the retried record look like a duplicate: a lost event.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use switchboard_schemas::domain::CallState;
use switchboard_schemas::topics;
use switchboard_schemas::{Classify, Codec};
use tokio::runtime::Handle;

use crate::config::Config;
use crate::kafka;
use crate::state::{Changes, Checkpoint, Db, StoreError};
use crate::topology::Topology;
use switchboard_kafka::TopicPartition;
use switchboard_kafka::end::{Budget, EndReader, Read, ReadError, Targets};
use switchboard_kafka::txn::{BACKOFF_START, now_millis};
use switchboard_schemas::headers;

/// How long reading a changelog partition may go without a record before its end before the
/// restore fails (and is retried; see the runner).
const RESTORE_STALL: Duration = Duration::from_secs(60);
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

/// One task to restore, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRestore {
    pub(crate) task: TopicPartition,
    /// The raw partition's committed offset: entries of records below it count.
    pub(crate) committed: i64,
    /// The checkpoint the stored state reflects: only entries of records at or above its `raw`
    /// are read, from its changelog positions. `None`: the state is rebuilt from the beginning of
    /// the changelogs (the task's stored state is deleted first).
    pub(crate) from: Option<Checkpoint>,
    /// Dedup entries first seen before this (ms) have left the dedup window.
    pub(crate) cutoff_millis: i64,
}

/// What a task needs before its records may be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Its stored state is exactly that of its committed offset (or nothing is committed).
    Ready,
    /// Its stored state must be brought up to its committed offset.
    Restore(TaskRestore),
}

/// Decides what `task` needs, from its checkpoint and its committed offset (`None`: nothing
/// committed). A checkpoint past the committed offset (the group was rewound with `reset`, or
/// the topics were recreated) claims state the changelog no longer backs: the task is rebuilt.
pub(crate) fn plan(
    db: &Db,
    task: &TopicPartition,
    committed: Option<i64>,
    cutoff_millis: i64,
) -> Result<Plan, StoreError> {
    let checkpoint = db.checkpoint(task)?;
    let Some(committed) = committed else {
        // No changelog entry can be committed either.
        if checkpoint.is_some() {
            db.wipe(task)?;
        }
        return Ok(Plan::Ready);
    };
    let from = match checkpoint {
        Some(checkpoint) if checkpoint.raw == committed => return Ok(Plan::Ready),
        Some(checkpoint) if checkpoint.raw < committed => Some(checkpoint),
        _ => None,
    };
    Ok(Plan::Restore(TaskRestore {
        task: task.clone(),
        committed,
        from,
        cutoff_millis,
    }))
}

/// Changes read but not yet written to the store, per task; written every [`FLUSH_EVERY`].
const FLUSH_EVERY: usize = 10_000;
/// Restored entries between durable store writes.
const DURABLE_EVERY: usize = 100_000;

/// Restored changes not yet written to the store: written every [`FLUSH_EVERY`] entries, durably
/// every [`DURABLE_EVERY`] (until then redb holds what non-durable writes changed in memory, which
/// would grow with the changelog).
struct Pending<'a> {
    db: &'a Db,
    changes: BTreeMap<TopicPartition, Changes>,
    buffered: usize,
    since_durable: usize,
    /// Entries added, in all.
    entries: u64,
}

impl<'a> Pending<'a> {
    fn new(db: &'a Db) -> Self {
        Self {
            db,
            changes: BTreeMap::new(),
            buffered: 0,
            since_durable: 0,
            entries: 0,
        }
    }

    fn changes(&mut self, task: &TopicPartition) -> &mut Changes {
        self.changes.entry(task.clone()).or_default()
    }

    /// One entry was added to [`Pending::changes`].
    fn added(&mut self) -> Result<(), StoreError> {
        self.entries += 1;
        self.buffered += 1;
        if self.buffered >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.since_durable += self.buffered;
        self.buffered = 0;
        let durable = self.since_durable >= DURABLE_EVERY;
        if durable {
            self.since_durable = 0;
        }
        for (task, changes) in std::mem::take(&mut self.changes) {
            self.db.apply_restored(&task, &changes, durable)?;
        }
        Ok(())
    }
}

/// What a restore did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Restored {
    /// Changelog entries applied.
    pub(crate) entries: u64,
    /// Changelog records read.
    pub(crate) read: u64,
}

/// Brings the stored state of `tasks` up to their committed offsets from the changelogs of
/// `topology`, reading each changelog partition once for every task of that partition number
/// (the raw topics are co-partitioned with the changelogs), and writes each task's new
/// checkpoint. Blocking: runs on the restore thread, while the processing loop goes on polling.
pub(crate) fn restore(
    config: &Config,
    topology: &Topology,
    codec: &Codec,
    runtime: &Handle,
    db: &Db,
    tasks: &[TaskRestore],
) -> anyhow::Result<Restored> {
    let mut restored = Restored::default();
    for task in tasks.iter().filter(|t| t.from.is_none()) {
        db.wipe(&task.task)?;
    }
    let mut partitions: BTreeMap<i32, Vec<&TaskRestore>> = BTreeMap::new();
    for task in tasks {
        partitions.entry(task.task.partition).or_default().push(task);
    }
    for (partition, group) in partitions {
        let find = |origin: &Origin<'_>| {
            group.iter().copied().find(|t| {
                t.task.topic == origin.topic
                    && t.task.partition == origin.partition
                    && origin.offset >= t.from.map_or(0, |c| c.raw)
                    && origin.offset < t.committed
            })
        };
        let mut pending = Pending::new(db);
        let start = group
            .iter()
            .map(|t| {
                t.from
                    .map_or(Offset::Beginning, |c| Offset::Offset(c.dedup_changelog))
            })
            .min_by_key(|offset| match offset {
                Offset::Offset(offset) => *offset,
                _ => -1,
            })
            .unwrap_or(Offset::Beginning);
        let dedup_end = read_partition(
            config,
            &topology.topic(topics::DEDUP_CHANGELOG),
            partition,
            start,
            |message| {
                restored.read += 1;
                let Some(task) = origin(message).and_then(|o| find(&o)) else {
                    return Ok(());
                };
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
                if seen_at >= task.cutoff_millis {
                    pending
                        .changes(&task.task)
                        .dedup
                        .insert(event_id.to_owned(), seen_at);
                    pending.added()?;
                }
                Ok(())
            },
        )?;
        pending.flush()?;

        let twilio = group
            .iter()
            .copied()
            .find(|t| t.task.topic == switchboard_schemas::Source::Twilio.raw_topic());
        let mut call_end = None;
        if let Some(twilio) = twilio.filter(|_| topology.call_state()) {
            let start = twilio
                .from
                .map_or(Offset::Beginning, |c| Offset::Offset(c.call_changelog));
            call_end = Some(read_partition(
                config,
                &topology.topic(topics::CALL_STATE),
                partition,
                start,
                |message| {
                    restored.read += 1;
                    if origin(message)
                        .and_then(|o| find(&o))
                        .is_none_or(|t| t.task != twilio.task)
                    {
                        return Ok(());
                    }
                    let Some(value) = message.payload() else {
                        return Ok(());
                    };
                    let call = decode_call_state(codec, runtime, value)?;
                    let written_at = message.timestamp().to_millis().unwrap_or_else(now_millis);
                    if written_at < twilio.cutoff_millis {
                        return Ok(());
                    }
                    // Later offsets are later states of the same call.
                    pending
                        .changes(&twilio.task)
                        .calls
                        .insert(call.call_sid.clone(), (call, written_at));
                    pending.added()?;
                    Ok(())
                },
            )?);
            pending.flush()?;
        }

        restored.entries += pending.entries;
        for task in group {
            let previous = task.from;
            db.finish_restore(
                &task.task,
                Checkpoint {
                    raw: task.committed,
                    dedup_changelog: dedup_end,
                    call_changelog: call_end
                        .or(previous.map(|c| c.call_changelog))
                        .unwrap_or_default(),
                },
            )?;
        }
    }
    Ok(restored)
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

/// Reads one partition of `topic` from `from` to the end it had when the read started
/// ([`switchboard_kafka::end`]: on the dev broker, past its reported end). Returns where a later
/// read may resume: an offset no record appended after this read can lie below (the partition's
/// reported end, or past the last record read).
///
/// If retention removes the segment being read (the position falls below the log's start), the
/// read starts over from the earliest record, with a warning: the entries removed are gone
/// anyway, and applying the rest again in offset order rebuilds the same state. (librdkafka's
/// default would jump to the end, silently skipping every entry in between, which loses state:
/// dedup entries, so duplicates; call state, so wrong transitions.)
pub(crate) fn read_partition(
    config: &Config,
    topic: &str,
    partition: i32,
    from: Offset,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<i64> {
    let reader = EndReader::new(
        kafka::reader_config(config)
            .set("auto.offset.reset", "error")
            // Prefetch at most 10,000 records or 4 MiB, fetch at most 2 MiB at once (librdkafka's
            // defaults: 100,000 records or 64 MiB, 50 MiB): the store's writes, not the fetches,
            // set a restore's pace. The byte limits count compressed bytes, so a fetch of small
            // entries holds many more records than that: on the dev broker a full restore's
            // peak still had 50 MiB of fetched records and 35 MiB of decompression buffers
            // (heaptrack), bounded by the fetch, not by the changelog's length.
            .set("queued.min.messages", "10000")
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.max.bytes", "2097152"),
        METADATA_TIMEOUT,
    )?;
    let (low, high) = reader.watermarks(topic, partition, METADATA_TIMEOUT)?;
    if high <= low {
        return Ok(high.max(0));
    }
    let mut resume = high;
    let read = Read {
        spans: [((topic.to_owned(), partition), (from, high))].into(),
        targets: Targets::Reported,
        poll: Duration::from_millis(200),
        grace: None,
        budget: Budget::Stall(RESTORE_STALL),
    };
    let result: anyhow::Result<()> = reader.read(read, |polled| {
        match polled {
            Ok(message) => {
                resume = resume.max(message.offset() + 1);
                each(message)?
            }
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                tracing::warn!(
                    topic,
                    partition,
                    "changelog records removed by retention while restoring; reading again from the earliest record"
                );
                let mut assignment = TopicPartitionList::new();
                assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
                reader.consumer().assign(&assignment)?;
            }
            Err(error) => return Err(error.into()),
        }
        Ok(ControlFlow::Continue(()))
    });
    match result {
        Err(error) if matches!(error.downcast_ref::<ReadError>(), Some(ReadError::OutOfTime)) => {
            anyhow::bail!("restoring {topic}[{partition}]: no record for {RESTORE_STALL:?} before the end")
        }
        result => result
            .map(|()| resume)
            .with_context(|| format!("restoring from {topic}[{partition}]")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::message::Message;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{ClientConfig, Offset};
    use switchboard_tests::broker::PrivateBroker;

    use super::read_partition;
    use crate::config::Config;

    const TOPIC: &str = "restore.changelog";

    /// A private broker with `TOPIC` holding 4 records, one batch each.
    async fn changelog() -> (PrivateBroker, Config) {
        let broker = PrivateBroker::start().unwrap();
        let client = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .clone();
        let admin: AdminClient<DefaultClientContext> = client.create().unwrap();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1));
        for result in admin.create_topics([&topic], &options).await.unwrap() {
            result.unwrap();
        }
        let producer: ThreadedProducer<DefaultProducerContext> = client.create().unwrap();
        for i in 0..4 {
            let payload = format!("entry {i}");
            producer
                .send(
                    BaseRecord::<str, str>::to(TOPIC)
                        .partition(0)
                        .key("k")
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            producer.flush(Duration::from_secs(10)).unwrap();
        }
        let config = Config {
            kafka_bootstrap: broker.bootstrap(),
            instance_id: Some("restore-test".into()),
            ..Config::default()
        };
        (broker, config)
    }

    async fn offsets_read(config: Config, from: Offset) -> Vec<i64> {
        tokio::task::spawn_blocking(move || {
            let mut offsets = Vec::new();
            read_partition(&config, TOPIC, 0, from, |message| {
                offsets.push(message.offset());
                Ok(())
            })
            .unwrap();
            offsets
        })
        .await
        .unwrap()
    }

    /// A position librdkafka must reset (here: the reader group's committed offset, of which there
    /// is none; the same reset as for a position below the log's start after retention removed
    /// the segment being read) starts the read over from the earliest record. librdkafka's
    /// default (`latest`) would reset to the end and return nothing, silently.
    ///
    /// The dev broker cannot produce the retention case itself: it does not implement
    /// DeleteRecords, and answers a fetch past the end with no records instead of
    /// OFFSET_OUT_OF_RANGE.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_position_to_reset_reads_again_from_the_earliest_record() {
        let (_broker, config) = changelog().await;
        assert_eq!(offsets_read(config, Offset::Stored).await, [0, 1, 2, 3]);
    }
}
