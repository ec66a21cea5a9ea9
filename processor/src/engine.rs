//! The consume-transform-produce engine: one open transaction at a time (a [`Transactor`])
//! holding the outputs of a batch of raw records, their state changelog entries, DLQ records, and
//! the consumed offsets; the in-memory state follows the transaction (committed with it, forgotten
//! when it aborts).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use switchboard_schemas::domain::CallState;
use switchboard_schemas::{Classify, Codec, DomainEvent, RawWebhook, topics};
use tokio::runtime::Handle;

use crate::config::{Config, Guarantee};
use crate::metrics;
use crate::normalize::{self, Poison, PoisonClass};
use crate::state::{Db, StoreError, Stores};
use crate::topology::Topology;
use switchboard_kafka::TopicPartition;
pub(crate) use switchboard_kafka::txn::LoopError;
use switchboard_kafka::txn::{Batching, MakeProducer, Transactor, now_millis};
use switchboard_schemas::call_state;
use switchboard_schemas::headers;

/// What processing one raw record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Processed {
    /// Its domain event (and state changes) were written.
    Emitted,
    /// Its event id was already seen: nothing written.
    Duplicate,
    /// It went to the DLQ.
    DeadLettered,
    /// Not selected: consumed, nothing written.
    Skipped,
}

/// Why processing a record failed; classified in one place ([`Engine::process`]).
#[derive(Debug)]
pub(crate) enum RecordFailure {
    /// The record can never be processed: DLQ, and the partition moves on.
    Poison(Poison),
    /// Something outside the record failed (registry unreachable …): what the loop does about it.
    Loop(LoopError),
}

/// A state store read failed: fatal (see [`crate::state::StoreError`]).
fn store_failure(error: StoreError) -> RecordFailure {
    RecordFailure::Loop(LoopError::fatal("reading the state store", error))
}

impl From<LoopError> for RecordFailure {
    fn from(error: LoopError) -> Self {
        RecordFailure::Loop(error)
    }
}

/// Processing state and the transaction, shared by the loop and the rebalance callbacks (which
/// run inside `poll` on the loop's thread).
pub(crate) struct Engine {
    codec: std::sync::Arc<Codec>,
    runtime: Handle,
    txn: Transactor,
    pub(crate) stores: Stores,
    /// Where outputs go.
    topology: Topology,
    /// Ingest's `received_at` of the domain events the open transaction holds (event age).
    received: Vec<i64>,
    /// Tasks assigned but not yet restored (paused until they are), and not being restored.
    pub(crate) to_restore: Vec<TopicPartition>,
    /// The restore running on the restore thread, if any.
    pub(crate) restoring: Option<crate::runner::Restoring>,
    /// Bumped by every rebalance: a restore started under an older one finds its tasks
    /// reassigned (and queued again) or gone.
    pub(crate) generation: u64,
    /// After a restore was deferred: when to try again, and the backoff that led there.
    pub(crate) restore_retry: Option<(std::time::Instant, Duration)>,
    /// Restores that failed in a row, and the last one's reason while it is retried.
    pub(crate) restore_failures: u32,
    pub(crate) restore_failure: Option<String>,
    /// A fatal error raised inside a rebalance callback, surfaced by the loop.
    pub(crate) failure: Option<LoopError>,
    /// Tracing: the consumer group named on record spans, whether records start new traces
    /// linked to theirs (replay), and the sampled record spans the open transaction links to.
    trace_group: String,
    trace_relink: bool,
    trace_links: Vec<opentelemetry::trace::SpanContext>,
    /// Fault injection for the tests ([`FAULT_ABORT_BEFORE_STORE_WRITE`]): transactions left to
    /// commit before the process aborts between a Kafka commit and its store write.
    abort_before_store_write: Option<u64>,
}

/// Test hook: `SWITCHBOARD_FAULT_ABORT_BEFORE_STORE_WRITE=N` makes the process abort (as a
/// SIGKILL would) right after its Nth transaction has committed in Kafka, before that
/// transaction's state reaches the store: the crash the checkpoints must survive. Read once at
/// start; never set it outside tests.
pub const FAULT_ABORT_BEFORE_STORE_WRITE: &str = "SWITCHBOARD_FAULT_ABORT_BEFORE_STORE_WRITE";

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("txn", &self.txn)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn new(
        config: &Config,
        codec: std::sync::Arc<Codec>,
        runtime: Handle,
        make_producer: MakeProducer,
        topology: Topology,
        db: Db,
    ) -> Result<Self, LoopError> {
        let batching = Batching {
            exactly_once: config.processing_guarantee == Guarantee::ExactlyOnce,
            commit_interval: config.commit_interval,
            max_records: config.max_batch_records,
            resolve_within: Batching::resolve_within(config.transaction_timeout),
            wait_for_deliveries: true,
        };
        Ok(Self {
            codec,
            runtime,
            txn: Transactor::new(make_producer, batching)?,
            stores: Stores::new(db),
            topology,
            received: Vec::new(),
            to_restore: Vec::new(),
            restoring: None,
            generation: 0,
            restore_retry: None,
            restore_failures: 0,
            restore_failure: None,
            failure: None,
            trace_group: config.group_id.clone(),
            trace_relink: false,
            trace_links: Vec::new(),
            abort_before_store_write: std::env::var(FAULT_ABORT_BEFORE_STORE_WRITE)
                .ok()
                .and_then(|n| n.parse().ok()),
        })
    }

    /// Records read by `group` start new traces, each linked to the trace its record carries
    /// (a replay: the original webhook's trace stays as it was).
    pub(crate) fn trace_as_relinked(&mut self, group: &str) {
        self.trace_group = group.to_owned();
        self.trace_relink = true;
    }

    /// Whether the open transaction should commit now.
    /// `caught_up`: the last poll returned nothing (see `switchboard_kafka::cadence`).
    pub(crate) fn due(&self, caught_up: bool) -> bool {
        self.txn.due(caught_up)
    }

    /// How long the loop's next poll may wait (see `switchboard_kafka::cadence`).
    pub(crate) fn time_to_commit(&self) -> Duration {
        self.txn.time_to_commit()
    }

    /// Where this engine's outputs go.
    pub(crate) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Processes one raw record inside the open transaction.
    pub(crate) fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<Processed, LoopError> {
        self.process_selected(message, |_| true)
    }

    /// Processes one raw record inside the open transaction if `select` keeps its envelope;
    /// otherwise only consumes it. (A record that does not decode has no envelope to select by: it
    /// goes to the DLQ.)
    pub(crate) fn process_selected(
        &mut self,
        message: &BorrowedMessage<'_>,
        select: impl Fn(&RawWebhook) -> bool,
    ) -> Result<Processed, LoopError> {
        let task = TopicPartition::new(message.topic(), message.partition());
        let span = if self.trace_relink {
            switchboard_service::trace::kafka_relink_span("process", message, &self.trace_group)
        } else {
            switchboard_service::trace::kafka_process_span("process", message, &self.trace_group)
        };
        let _entered = span.enter();
        if self.trace_links.len() < switchboard_service::trace::MAX_LINKS
            && let Some(link) = switchboard_service::trace::sampled_context(&span)
        {
            self.trace_links.push(link);
        }
        self.txn.begin()?;
        metrics::counter_consumed(message.topic());
        let processed = match self.transform(&task, message, select) {
            Ok(processed) => processed,
            Err(RecordFailure::Poison(poison)) => {
                self.dead_letter(message, &poison)?;
                Processed::DeadLettered
            }
            Err(RecordFailure::Loop(error)) => return Err(error),
        };
        self.txn.consumed(task, message.offset() + 1);
        Ok(processed)
    }

    fn transform(
        &mut self,
        task: &TopicPartition,
        message: &BorrowedMessage<'_>,
        select: impl Fn(&RawWebhook) -> bool,
    ) -> Result<Processed, RecordFailure> {
        let payload = message.payload().ok_or_else(|| {
            RecordFailure::Poison(Poison::new(PoisonClass::Undecodable, "record has no value"))
        })?;
        let raw: RawWebhook = self
            .runtime
            .block_on(self.codec.decode(RawWebhook::schema_def(), payload))
            .map_err(|e| {
                if e.is_transient() {
                    RecordFailure::Loop(LoopError::retriable("decoding a raw record", e))
                } else {
                    RecordFailure::Poison(Poison::new(PoisonClass::Undecodable, e.to_string()))
                }
            })?;
        if !select(&raw) {
            return Ok(Processed::Skipped);
        }
        if self.stores.seen(task, &raw.event_id).map_err(store_failure)? {
            metrics::counter_duplicate(&raw.source);
            return Ok(Processed::Duplicate);
        }
        let event = normalize::normalize(&raw).map_err(RecordFailure::Poison)?;
        self.emit(&event, &raw)?;
        let now = now_millis();
        if let DomainEvent::Call(call) = &event
            && self.topology.call_state()
        {
            let current = self.stores.call(task, &call.call_sid).map_err(store_failure)?;
            if let Some(next) = call_state::apply(current.as_ref(), call) {
                self.emit_call_state(task, message.offset(), &next)?;
                self.stores.put_call(task, next, now);
            }
        }
        let seen_at = now;
        self.emit_dedup(task, message.offset(), &raw, seen_at)?;
        self.stores.mark_seen(task, &raw.event_id, seen_at);
        self.received.push(raw.received_at);
        Ok(Processed::Emitted)
    }

    /// Encodes one of the processor's own outputs. A failure is never the raw record's fault (it
    /// decoded and normalized): it is transient — abort, retry — and never dead-letters the
    /// record. Dead-lettering it would also commit what the transaction already holds for the
    /// record (its domain event, when the call state or the dedup entry fails to encode), so a
    /// redrive would emit the event a second time. A failure that persists (a schema the
    /// registry refuses) stalls the partition, which `/healthz` reports.
    fn encode<T: serde::Serialize>(
        &self,
        topic: &str,
        def: &'static switchboard_schemas::SchemaDef,
        value: &T,
    ) -> Result<Vec<u8>, LoopError> {
        self.runtime
            .block_on(self.codec.encode(topic, def, value))
            .map_err(|e| LoopError::retriable(format!("encoding a record for {topic}"), e))
    }

    fn emit(&mut self, event: &DomainEvent, raw: &RawWebhook) -> Result<(), LoopError> {
        let topic = self.topology.topic(event.topic());
        let payload = match event {
            DomainEvent::Call(e) => self.encode(&topic, event.schema_def(), e)?,
            DomainEvent::Message(e) => self.encode(&topic, event.schema_def(), e)?,
            DomainEvent::Billing(e) => self.encode(&topic, event.schema_def(), e)?,
            DomainEvent::Booking(e) => self.encode(&topic, event.schema_def(), e)?,
            DomainEvent::Generic(e) => self.encode(&topic, event.schema_def(), e)?,
        };
        let record_headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: headers::EVENT_ID,
                value: Some(raw.event_id.as_str()),
            })
            .insert(Header {
                key: headers::SOURCE,
                value: Some(raw.source.as_str()),
            });
        let record_headers = switchboard_service::trace::inject_kafka(record_headers);
        self.send(
            BaseRecord::to(&topic)
                .key(event.key())
                .payload(&payload)
                .headers(record_headers),
        )
    }

    fn origin_headers(task: &TopicPartition, offset: i64) -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: headers::ORIGIN_TOPIC,
                value: Some(task.topic.as_str()),
            })
            .insert(Header {
                key: headers::ORIGIN_PARTITION,
                value: Some(&task.partition.to_string()),
            })
            .insert(Header {
                key: headers::ORIGIN_OFFSET,
                value: Some(&offset.to_string()),
            })
    }

    fn emit_call_state(
        &mut self,
        task: &TopicPartition,
        offset: i64,
        state: &CallState,
    ) -> Result<(), LoopError> {
        let topic = self.topology.topic(topics::CALL_STATE);
        let payload = self.encode(&topic, CallState::schema_def(), state)?;
        // Co-partitioned with the raw partition, so that restoring a task reads one partition.
        let record = BaseRecord::to(&topic)
            .partition(task.partition)
            .key(state.call_sid.as_str())
            .payload(&payload)
            .headers(Self::origin_headers(task, offset));
        self.send(record)
    }

    fn emit_dedup(
        &mut self,
        task: &TopicPartition,
        offset: i64,
        raw: &RawWebhook,
        seen_at: i64,
    ) -> Result<(), LoopError> {
        let key = format!("{}:{}", raw.source, raw.event_id);
        let value = seen_at.to_string();
        let topic = self.topology.topic(topics::DEDUP_CHANGELOG);
        let record = BaseRecord::to(&topic)
            .partition(task.partition)
            .key(key.as_str())
            .payload(value.as_str())
            .headers(Self::origin_headers(task, offset));
        self.send(record)
    }

    /// Copies a poison record to the DLQ with its original key, value and headers, plus why.
    fn dead_letter(&mut self, message: &BorrowedMessage<'_>, poison: &Poison) -> Result<(), LoopError> {
        let source = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == headers::SOURCE).and_then(|h| h.value))
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or("unknown")
            .to_owned();
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            class = poison.class.as_str(),
            reason = %poison.reason,
            "record sent to the DLQ"
        );
        metrics::counter_dlq(&source, poison.class.as_str());
        let mut dlq_headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                dlq_headers = dlq_headers.insert(header);
            }
        }
        let task = TopicPartition::new(message.topic(), message.partition());
        let failed_at = now_millis().to_string();
        for (key, value) in [
            (headers::ERROR_CLASS, poison.class.as_str()),
            (headers::ERROR_REASON, poison.reason.as_str()),
            (headers::FAILED_AT, failed_at.as_str()),
        ] {
            dlq_headers = dlq_headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        for header in Self::origin_headers(&task, message.offset()).iter() {
            dlq_headers = dlq_headers.insert(header);
        }
        let dlq = self.topology.topic(topics::DLQ);
        let mut record = BaseRecord::<[u8], [u8]>::to(&dlq).headers(dlq_headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.txn.send(record)?;
        metrics::counter_produced(&dlq);
        Ok(())
    }

    /// Hands an output record to the open transaction.
    fn send<K, P>(&self, record: BaseRecord<'_, K, P>) -> Result<(), LoopError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let topic = record.topic;
        self.txn.send(record)?;
        metrics::counter_produced(topic);
        Ok(())
    }

    /// Commits the open transaction: outputs, state changes and consumed offsets together.
    pub(crate) fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), LoopError> {
        let span = self.transaction_span();
        let _entered = span.as_ref().map(tracing::Span::enter);
        if let Some(committed) = self.txn.commit(consumer)? {
            self.store_committed(&committed)?;
            metrics::commit(committed.elapsed, committed.records);
            metrics::event_ages(&std::mem::take(&mut self.received));
        }
        Ok(())
    }

    /// Commits the open transaction and makes the state store durable: the last step of a clean
    /// shutdown, so that the next start finds every checkpoint current.
    pub(crate) fn commit_and_persist<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), LoopError> {
        self.commit(consumer)?;
        self.stores
            .persist()
            .map_err(|e| LoopError::fatal("making the state store durable", e))
    }

    /// Aborts the open transaction, forgets its state changes, and rewinds every owned partition
    /// to its committed offset so that its records are processed again (partitions still to
    /// restore are paused at no position yet: their restore positions them).
    pub(crate) fn abort_and_rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), LoopError> {
        self.received.clear();
        self.stores.abort();
        self.trace_links.clear();
        let mut not_started = self.to_restore.clone();
        if let Some(restoring) = &self.restoring {
            not_started.extend(restoring.tasks().cloned());
        }
        if self.txn.abort_and_rewind(consumer, &not_started)? {
            metrics::aborted();
        }
        Ok(())
    }

    /// Finishes the open transaction before partitions are revoked (commit, or abort when the
    /// commit fails: the partitions' next owner then processes those records again), and drops
    /// the revoked partitions' state.
    pub(crate) fn finish_before_revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &[TopicPartition],
    ) {
        let span = self.transaction_span();
        let _entered = span.as_ref().map(tracing::Span::enter);
        let revoke = self.txn.finish_before_revoke(consumer, revoked);
        let mut failure = revoke.failure;
        match revoke.committed {
            Some(committed) => {
                if let Err(error) = self.store_committed(&committed) {
                    failure.get_or_insert(error);
                }
                metrics::commit(committed.elapsed, committed.records);
                metrics::event_ages(&self.received);
            }
            None => self.stores.abort(),
        }
        self.received.clear();
        if let Err(error) = self.stores.persist() {
            failure.get_or_insert(LoopError::fatal("making the state store durable", error));
        }
        if let Some(failure) = failure {
            self.failure = Some(failure);
        }
        for task in revoked {
            self.stores.remove(task);
            self.to_restore.retain(|t| t != task);
        }
        self.generation += 1;
    }

    /// Hands what a transaction that committed in Kafka changed, with the new checkpoints, to the
    /// state store's writer. A failure (of this write or an earlier one) is fatal: the store is
    /// left behind Kafka (never ahead), and a restart brings it up to date from the changelogs.
    fn store_committed(&mut self, committed: &switchboard_kafka::txn::Committed) -> Result<(), LoopError> {
        if let Some(left) = &mut self.abort_before_store_write {
            *left = left.saturating_sub(1);
            if *left == 0 {
                tracing::error!(
                    "{FAULT_ABORT_BEFORE_STORE_WRITE}: aborting between the Kafka commit and the store write"
                );
                std::process::abort();
            }
        }
        let delivered = self.txn.take_delivered();
        let changelogs = (
            self.topology.topic(topics::DEDUP_CHANGELOG),
            self.topology.topic(topics::CALL_STATE),
        );
        self.stores
            .commit(&committed.offsets, delivered, (&changelogs.0, &changelogs.1))
            .map_err(|e| LoopError::fatal("writing a committed transaction to the state store", e))
    }

    /// The span of the commit of the open transaction, linked to its sampled records' spans.
    fn transaction_span(&mut self) -> Option<tracing::Span> {
        if self.trace_links.is_empty() {
            return None;
        }
        let links = std::mem::take(&mut self.trace_links);
        Some(switchboard_service::trace::batch_span(
            "kafka transaction",
            "kafka",
            &links,
        ))
    }
}
