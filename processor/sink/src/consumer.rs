//! The sink's consumer: reads the domain topics with `read_committed` and writes each batch —
//! rows and consumed offsets together — in one database transaction.
//!
//! The database, not Kafka, is the source of truth for the offsets: on assignment the sink starts
//! each partition at the offset stored in the database (set on the assignment before it takes
//! effect), so a crash at any moment neither loses nor doubles a change, whatever the broker does
//! with aborted transactions. Rows are also idempotent by event id, so a replayed or duplicated
//! domain event changes nothing. A batch never outlives the partitions it came from: it is written
//! before partitions are revoked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_schemas::domain_event::DecodeError;
use switchboard_schemas::{ActionAttempt, Classify, Codec, DomainEvent, topics};
use tokio::runtime::Handle;

use super::config::SinkConfig;
use super::metrics;
use super::store::{ConsumedOffset, Store};
use switchboard_kafka::Health;
use switchboard_kafka::TopicPartition;
use switchboard_kafka::cadence::{Cadence, Open};
use switchboard_kafka::txn::{BACKOFF_MAX, BACKOFF_START, now_millis};

/// The topics the sink stores: the domain topics, and the actions' delivery attempts. The latter
/// as a pattern: a deployment without the actions service has no such topic, and a pattern is
/// not an error while nothing matches it (and matches the topic once the actions service creates
/// it, at the next metadata refresh).
pub(crate) const TOPICS: [&str; 5] = [
    topics::CALLS,
    topics::MESSAGES,
    topics::BILLING,
    topics::BOOKINGS,
    "^switchboard\\.actions\\.attempts$",
];

/// Longest pause before re-reading a record whose schema could not be fetched (short: the loop
/// does not poll meanwhile).
const REGISTRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the loop tells the progress monitor which partitions it owns.
const ASSIGNMENT_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Records decoded but not yet written, with the offsets they advance.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<DomainEvent>,
    attempts: Vec<ActionAttempt>,
    offsets: BTreeMap<TopicPartition, i64>,
    started: Option<Instant>,
    /// One span per record (when tracing), ended once its row is committed.
    spans: Vec<tracing::Span>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The batch for [`Cadence`]: open once it holds a record.
    fn open(&self) -> Option<Open> {
        self.started.map(|started| Open {
            started,
            records: self.events.len() + self.attempts.len(),
        })
    }

    fn consumed(&self) -> Vec<ConsumedOffset> {
        self.offsets
            .iter()
            .map(|(task, next)| ConsumedOffset {
                topic: task.topic.clone(),
                partition: task.partition,
                next_offset: *next,
            })
            .collect()
    }
}

/// Shared by the loop and the rebalance callback (which runs inside `poll`, on the loop's thread).
struct Shared {
    store: Store,
    group: String,
    runtime: Handle,
    batch: Mutex<Batch>,
    /// A failure inside a callback, surfaced by the loop (which then exits non-zero).
    failure: Mutex<Option<anyhow::Error>>,
}

impl Shared {
    fn batch(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the pending batch in one database transaction, retrying transient errors.
    fn flush(&self) -> anyhow::Result<()> {
        let mut batch = self.batch();
        if batch.is_empty() {
            return Ok(());
        }
        let offsets = batch.consumed();
        let links: Vec<_> = batch
            .spans
            .iter()
            .filter_map(switchboard_service::trace::sampled_context)
            .collect();
        let span = (!links.is_empty())
            .then(|| switchboard_service::trace::batch_span("database transaction", "database", &links));
        let _entered = span.as_ref().map(tracing::Span::enter);
        let mut backoff = BACKOFF_START;
        loop {
            let started = Instant::now();
            match self.runtime.block_on(self.store.apply_batch_with_attempts(
                &self.group,
                &batch.events,
                &batch.attempts,
                &offsets,
            )) {
                Ok(outcome) => {
                    metrics::batch(started.elapsed(), outcome.applied, outcome.duplicates);
                    metrics::event_ages(&batch.events);
                    *batch = Batch::default();
                    return Ok(());
                }
                Err(error) if error.is_transient() && backoff < BACKOFF_MAX => {
                    tracing::warn!(%error, ?backoff, "database write failed; retrying the batch");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
                Err(error) => return Err(anyhow::Error::new(error).context("database write failed")),
            }
        }
    }
}

/// Starts assigned partitions at the database's offsets, and writes the pending batch before
/// partitions are revoked.
struct SinkContext {
    shared: Arc<Shared>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                super::metrics::rebalance("assign");
                if let Err(error) = self.start_at_stored_offsets(partitions) {
                    // Never fall back to Kafka's offsets: stop, and let the orchestrator retry.
                    *self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(error.context("reading offsets from the database"));
                }
                log_result("assign", consumer.assign(partitions));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                super::metrics::rebalance("revoke");
                if let Err(error) = self.shared.flush() {
                    *self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    // Whatever was not written is read again by the partitions' next owner.
                    *self.shared.batch() = Batch::default();
                }
                log_result("unassign", consumer.unassign());
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error");
                log_result("unassign", consumer.unassign());
            }
        }
    }
}

fn log_result(what: &str, result: KafkaResult<()>) {
    if let Err(error) = result {
        tracing::warn!(%error, "{what} failed");
    }
}

impl SinkContext {
    fn start_at_stored_offsets(&self, partitions: &mut TopicPartitionList) -> anyhow::Result<()> {
        let wanted: Vec<(String, i32)> = partitions
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let stored = self
            .shared
            .runtime
            .block_on(self.shared.store.offsets(&self.shared.group, &wanted))?;
        for (topic, partition) in &wanted {
            let offset = stored
                .get(&(topic.clone(), *partition))
                .map_or(Offset::Beginning, |next| Offset::Offset(*next));
            partitions.set_partition_offset(topic, *partition, offset)?;
        }
        tracing::info!(
            partitions = wanted.len(),
            "partitions assigned; starting at the database's offsets"
        );
        Ok(())
    }
}

/// The group member: read_committed, no auto-commit (offsets live in the database; they are also
/// committed to Kafka after each batch, for lag tools only).
pub(crate) fn consumer_config(config: &SinkConfig) -> ClientConfig {
    let mut client = base_config(config);
    switchboard_kafka::client::group_member(&mut client, &config.sink_group_id, config.session_timeout);
    client
}

/// Settings shared by every sink client (bootstrap and `[kafka]` pass-through).
pub(crate) fn base_config(config: &SinkConfig) -> ClientConfig {
    switchboard_kafka::client::base(&config.kafka_bootstrap, "switchboard-sink", &config.kafka)
}

/// What a record of [`TOPICS`] carries.
enum Record {
    Event(DomainEvent),
    Attempt(ActionAttempt),
}

/// The domain event or delivery attempt a record carries. A transient error (the registry cannot
/// serve the record's writer schema now, whatever it answered) reads the same record again after a
/// pause, and no offset moves past it; a permanent one (not a record of its topic's schema) stops
/// the sink before it.
fn decode(codec: &Codec, runtime: &Handle, message: &BorrowedMessage<'_>) -> Result<Record, DecodeError> {
    if message.topic() == topics::ACTIONS_ATTEMPTS {
        let payload = message.payload().ok_or(DecodeError::NoValue)?;
        return Ok(Record::Attempt(
            runtime.block_on(codec.decode(ActionAttempt::schema_def(), payload))?,
        ));
    }
    runtime
        .block_on(DomainEvent::decode(codec, message.topic(), message.payload()))
        .map(Record::Event)
}

/// Runs the sink loop until `stop` is set (writes the pending batch, leaves the group) or a fatal
/// error (returned).
pub(crate) fn run(
    config: &SinkConfig,
    store: Store,
    codec: &Codec,
    runtime: Handle,
    stop: &AtomicBool,
    health: &Health,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        store,
        group: config.sink_group_id.clone(),
        runtime: runtime.clone(),
        batch: Mutex::new(Batch::default()),
        failure: Mutex::new(None),
    });
    let consumer: BaseConsumer<SinkContext> = consumer_config(config).create_with_context(SinkContext {
        shared: Arc::clone(&shared),
    })?;
    consumer.subscribe(&TOPICS)?;
    tracing::info!(group = %config.sink_group_id, "sink started");

    // Written as soon as the consumer is caught up, at the latest after `batch_interval`.
    let cadence = Cadence {
        interval: config.batch_interval,
        max_records: config.batch_max_records,
    };
    let mut registry_backoff = BACKOFF_START;
    let mut assignment_published = Instant::now();
    let result = loop {
        health.heartbeat_millis.store(now_millis(), Ordering::Relaxed);
        if assignment_published.elapsed() >= ASSIGNMENT_PUBLISH_INTERVAL {
            assignment_published = Instant::now();
            health.publish_assignment(&consumer);
        }
        if let Some(failure) = shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            break Err(failure);
        }
        if stop.load(Ordering::Relaxed) {
            break shared.flush();
        }
        let timeout = cadence.poll_timeout(shared.batch().open());
        let polled = consumer.poll(timeout.max(Duration::from_millis(1)));
        let caught_up = polled.is_none();
        match polled {
            Some(Ok(message)) => {
                let task = TopicPartition::new(message.topic(), message.partition());
                let offset = message.offset();
                let event = match decode(codec, &runtime, &message) {
                    Ok(event) => event,
                    Err(error) if !error.is_transient() => {
                        // Domain topics are written by the processor with registered schemas: a
                        // record that does not decode means a sink older than the schema it reads,
                        // or a corrupted topic. Skipping it would leave the database wrong for
                        // good, so the sink stores what came before it and stops, exiting
                        // non-zero, without storing an offset past it: an operator deploys a sink
                        // that reads it (or, to give the record up deliberately, moves the
                        // partition's `sink_offsets` row past it), and the sink resumes there.
                        metrics::undecodable(&task.topic);
                        drop(message);
                        if let Err(error) = shared.flush() {
                            break Err(error);
                        }
                        tracing::error!(topic = %task.topic, partition = task.partition, offset, reason = %error, "undecodable domain record; the sink stops before it rather than skip it");
                        break Err(anyhow::Error::new(error).context(format!(
                            "undecodable domain record {}[{}] at offset {offset}",
                            task.topic, task.partition
                        )));
                    }
                    Err(error) => {
                        // Keep what came before it and read this record again after a pause.
                        tracing::warn!(reason = %error, ?registry_backoff, "schema registry unavailable; retrying the record");
                        drop(message);
                        if let Err(error) = shared.flush() {
                            break Err(error);
                        }
                        if let Err(error) =
                            consumer.seek(&task.topic, task.partition, Offset::Offset(offset), SEEK_TIMEOUT)
                        {
                            break Err(
                                anyhow::Error::new(error).context(format!("rewinding {task:?} to {offset}"))
                            );
                        }
                        std::thread::sleep(registry_backoff);
                        registry_backoff = (registry_backoff * 2).min(REGISTRY_BACKOFF_MAX);
                        continue;
                    }
                };
                registry_backoff = BACKOFF_START;
                let span =
                    switchboard_service::trace::kafka_process_span("write", &message, &config.sink_group_id);
                let mut batch = shared.batch();
                if !span.is_disabled() {
                    batch.spans.push(span);
                }
                match event {
                    Record::Event(event) => batch.events.push(event),
                    Record::Attempt(attempt) => batch.attempts.push(attempt),
                }
                batch.offsets.insert(task, offset + 1);
                batch.started.get_or_insert_with(Instant::now);
            }
            Some(Err(error)) => tracing::warn!(%error, "consumer error"),
            None => {}
        }
        health.ready.store(true, Ordering::Relaxed);
        let due = cadence.due(shared.batch().open(), caught_up);
        if due {
            let offsets = shared.batch().consumed();
            if let Err(error) = shared.flush() {
                break Err(error);
            }
            publish_progress(&consumer, &offsets, health);
        }
    };
    health.ready.store(false, Ordering::Relaxed);
    drop(consumer);
    result
}

/// After a batch is in the database: its offsets for the progress monitor (the database is the
/// sink's committed progress), and committed to Kafka as well so that `kafka-consumer-groups`
/// shows the sink's progress.
fn publish_progress(consumer: &BaseConsumer<SinkContext>, offsets: &[ConsumedOffset], health: &Health) {
    let mut list = TopicPartitionList::new();
    let mut positions = health.positions.lock().unwrap_or_else(PoisonError::into_inner);
    let mut committed = health.committed.lock().unwrap_or_else(PoisonError::into_inner);
    for offset in offsets {
        let task = TopicPartition::new(&offset.topic, offset.partition);
        positions.insert(task.clone(), offset.next_offset);
        committed.insert(task, offset.next_offset);
        let _ = list.add_partition_offset(
            &offset.topic,
            offset.partition,
            Offset::Offset(offset.next_offset),
        );
    }
    drop((positions, committed));
    if list.count() > 0
        && let Err(error) = consumer.commit(&list, CommitMode::Async)
    {
        tracing::debug!(%error, "informational Kafka offset commit failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempts_pattern_names_exactly_the_attempts_topic() {
        let escaped = topics::ACTIONS_ATTEMPTS.replace('.', "\\.");
        assert_eq!(TOPICS[4], format!("^{escaped}$"));
        assert!(
            TOPICS[..4]
                .iter()
                .all(|topic| topics::DOMAIN_TOPICS.contains(topic))
        );
    }
}
