//! The consume-transform-produce engine: one open transaction at a time holding the outputs of a
//! batch of raw records, their state changelog entries, DLQ records, and the consumed offsets.
//!
//! The error handling follows rust-rdkafka's transactional example: a retriable error retries the
//! call, an error that requires abort aborts the transaction and rewinds every owned partition to
//! its committed offset, a fatal error (e.g. fenced by a newer instance with the same
//! transactional id) stops the processor so the orchestrator restarts it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use switchboard_schemas::domain::CallState;
use switchboard_schemas::{Codec, RawWebhook, topics};
use tokio::runtime::Handle;

use crate::call_state;
use crate::config::{Config, Guarantee};
use crate::kafka::headers;
use crate::metrics;
use crate::normalize::{self, DomainEvent, Poison, PoisonClass};
use crate::state::{Stores, Task};

/// How long a single transactional call may take.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why processing a record failed; classified in one place ([`Engine::process`]).
#[derive(Debug)]
pub enum Failure {
    /// The record can never be processed: DLQ, and the partition moves on.
    Poison(Poison),
    /// Something outside the record failed (registry unreachable …): abort, rewind, retry later.
    /// This is the seam for the retry-topic ladder.
    Transient(String),
}

/// What the loop must do after an error.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// Abort the open transaction, rewind, back off, continue.
    #[error("retriable: {0}")]
    Retriable(String),
    /// Stop with a non-zero exit; the orchestrator restarts the instance.
    #[error("fatal: {0}")]
    Fatal(String),
}

fn classify(error: KafkaError) -> LoopError {
    match &error {
        KafkaError::Transaction(rd) if rd.is_fatal() => LoopError::Fatal(error.to_string()),
        _ if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) => {
            LoopError::Fatal(error.to_string())
        }
        _ => LoopError::Retriable(error.to_string()),
    }
}

/// Retries a transactional call while librdkafka says it is retriable.
fn with_retries(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), LoopError> {
    for _ in 0..5 {
        match call() {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(rd)) if rd.is_retriable() => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(error) => return Err(classify(error)),
        }
    }
    call().map_err(classify)
}

pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The state of the open transaction.
#[derive(Debug)]
struct OpenTxn {
    started: Instant,
    records: usize,
}

/// Processing state and the producer, shared by the loop and the rebalance callbacks (which run
/// inside `poll` on the loop's thread).
pub struct Engine {
    config: std::sync::Arc<Config>,
    codec: std::sync::Arc<Codec>,
    runtime: Handle,
    producer: ThreadedProducer<crate::runner::ProducerContext>,
    txn: Option<OpenTxn>,
    /// Next offset to commit per raw partition, for records processed in the open transaction.
    offsets: BTreeMap<Task, i64>,
    pub(crate) stores: Stores,
    /// Tasks assigned but not yet restored.
    pub(crate) to_restore: Vec<Task>,
    /// A fatal error raised inside a rebalance callback, surfaced by the loop.
    pub(crate) failure: Option<LoopError>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("open", &self.txn)
            .field("offsets", &self.offsets)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(
        config: std::sync::Arc<Config>,
        codec: std::sync::Arc<Codec>,
        runtime: Handle,
        producer: ThreadedProducer<crate::runner::ProducerContext>,
    ) -> Result<Self, LoopError> {
        if config.processing_guarantee == Guarantee::ExactlyOnce {
            // Fences any older instance with the same transactional id and aborts its open
            // transaction.
            producer.init_transactions(TXN_CALL_TIMEOUT).map_err(classify)?;
        }
        Ok(Self {
            config,
            codec,
            runtime,
            producer,
            txn: None,
            offsets: BTreeMap::new(),
            stores: Stores::default(),
            to_restore: Vec::new(),
            failure: None,
        })
    }

    fn exactly_once(&self) -> bool {
        self.config.processing_guarantee == Guarantee::ExactlyOnce
    }

    /// Whether the open transaction should commit now.
    pub fn due(&self) -> bool {
        self.txn.as_ref().is_some_and(|txn| {
            txn.started.elapsed() >= self.config.commit_interval
                || txn.records >= self.config.max_batch_records
        })
    }

    /// Time until the open transaction is due (the loop's poll timeout).
    pub fn time_to_commit(&self) -> Duration {
        match &self.txn {
            Some(txn) => self.config.commit_interval.saturating_sub(txn.started.elapsed()),
            None => self.config.commit_interval,
        }
    }

    fn begin(&mut self) -> Result<(), LoopError> {
        if self.txn.is_none() {
            if self.exactly_once() {
                self.producer.begin_transaction().map_err(classify)?;
            }
            self.txn = Some(OpenTxn {
                started: Instant::now(),
                records: 0,
            });
        }
        Ok(())
    }

    /// Processes one raw record inside the open transaction.
    pub fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), LoopError> {
        let task = Task::new(message.topic(), message.partition());
        self.begin()?;
        metrics::counter_consumed(message.topic());
        match self.transform(&task, message) {
            Ok(()) => {}
            Err(Failure::Poison(poison)) => self.dead_letter(message, &poison)?,
            Err(Failure::Transient(reason)) => return Err(LoopError::Retriable(reason)),
        }
        self.offsets.insert(task, message.offset() + 1);
        if let Some(txn) = &mut self.txn {
            txn.records += 1;
        }
        Ok(())
    }

    fn transform(&mut self, task: &Task, message: &BorrowedMessage<'_>) -> Result<(), Failure> {
        let payload = message
            .payload()
            .ok_or_else(|| Failure::Poison(Poison::new(PoisonClass::Undecodable, "record has no value")))?;
        let raw: RawWebhook = self
            .runtime
            .block_on(self.codec.decode(RawWebhook::schema_def(), payload))
            .map_err(|e| {
                if e.is_transient() {
                    Failure::Transient(e.to_string())
                } else {
                    Failure::Poison(Poison::new(PoisonClass::Undecodable, e.to_string()))
                }
            })?;
        if self.stores.seen(task, &raw.event_id) {
            metrics::counter_duplicate(&raw.source);
            return Ok(());
        }
        let event = normalize::normalize(&raw).map_err(Failure::Poison)?;
        self.emit(&event, &raw)?;
        if let DomainEvent::Call(call) = &event {
            let current = self.stores.call(task, &call.call_sid).cloned();
            if let Some(next) = call_state::apply(current.as_ref(), call) {
                self.emit_call_state(task, message.offset(), &next)?;
                self.stores.put_call(task, next);
            }
        }
        let seen_at = now_millis();
        self.emit_dedup(task, message.offset(), &raw, seen_at)?;
        self.stores.mark_seen(task, &raw.event_id, seen_at);
        Ok(())
    }

    fn encode<T: serde::Serialize>(
        &self,
        topic: &str,
        def: &switchboard_schemas::SchemaDef,
        value: &T,
    ) -> Result<Vec<u8>, Failure> {
        self.runtime
            .block_on(self.codec.encode(topic, def, value))
            .map_err(|e| {
                if e.is_transient() {
                    Failure::Transient(e.to_string())
                } else {
                    Failure::Poison(Poison::new(PoisonClass::Undecodable, e.to_string()))
                }
            })
    }

    fn emit(&mut self, event: &DomainEvent, raw: &RawWebhook) -> Result<(), Failure> {
        let payload = match event {
            DomainEvent::Call(e) => self.encode(event.topic(), event.schema_def(), e)?,
            DomainEvent::Message(e) => self.encode(event.topic(), event.schema_def(), e)?,
            DomainEvent::Billing(e) => self.encode(event.topic(), event.schema_def(), e)?,
            DomainEvent::Booking(e) => self.encode(event.topic(), event.schema_def(), e)?,
            DomainEvent::Generic(e) => self.encode(event.topic(), event.schema_def(), e)?,
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
        self.send(
            BaseRecord::to(event.topic())
                .key(event.key())
                .payload(&payload)
                .headers(record_headers),
        )
    }

    fn origin_headers(task: &Task, offset: i64) -> OwnedHeaders {
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

    fn emit_call_state(&mut self, task: &Task, offset: i64, state: &CallState) -> Result<(), Failure> {
        let payload = self.encode(topics::CALL_STATE, CallState::schema_def(), state)?;
        // Co-partitioned with the raw partition, so that restoring a task reads one partition.
        let record = BaseRecord::to(topics::CALL_STATE)
            .partition(task.partition)
            .key(state.call_sid.as_str())
            .payload(&payload)
            .headers(Self::origin_headers(task, offset));
        self.send(record)
    }

    fn emit_dedup(
        &mut self,
        task: &Task,
        offset: i64,
        raw: &RawWebhook,
        seen_at: i64,
    ) -> Result<(), Failure> {
        let key = format!("{}:{}", raw.source, raw.event_id);
        let value = seen_at.to_string();
        let record = BaseRecord::to(topics::DEDUP_CHANGELOG)
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
        let task = Task::new(message.topic(), message.partition());
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
        let mut record = BaseRecord::<[u8], [u8]>::to(topics::DLQ).headers(dlq_headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.send(record).map_err(|failure| match failure {
            Failure::Transient(reason) => LoopError::Retriable(reason),
            Failure::Poison(poison) => LoopError::Retriable(poison.reason),
        })
    }

    /// Hands a record to the producer, waiting for queue space (backpressure) rather than failing.
    fn send<K, P>(&self, mut record: BaseRecord<'_, K, P>) -> Result<(), Failure>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let deadline = Instant::now() + TXN_CALL_TIMEOUT;
        let topic = record.topic;
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    metrics::counter_produced(topic);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if Instant::now() < deadline =>
                {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => return Err(Failure::Transient(error.to_string())),
            }
        }
    }

    /// Commits the open transaction: outputs and consumed offsets together.
    pub fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), LoopError> {
        let Some(txn) = self.txn.take() else { return Ok(()) };
        let started = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for (task, next) in &self.offsets {
            offsets
                .add_partition_offset(&task.topic, task.partition, Offset::Offset(*next))
                .map_err(|e| LoopError::Fatal(e.to_string()))?;
        }
        let result = if self.exactly_once() {
            let metadata = consumer
                .group_metadata()
                .ok_or_else(|| LoopError::Retriable("no consumer group metadata yet".into()));
            metadata.and_then(|metadata| {
                if offsets.count() > 0 {
                    with_retries(|| {
                        self.producer
                            .send_offsets_to_transaction(&offsets, &metadata, TXN_CALL_TIMEOUT)
                    })?;
                }
                with_retries(|| self.producer.commit_transaction(TXN_CALL_TIMEOUT))
            })
        } else {
            self.flush_and_commit_offsets(consumer, &offsets)
        };
        match result {
            Ok(()) => {
                self.stores.commit();
                self.offsets.clear();
                metrics::commit(started.elapsed(), txn.records);
                Ok(())
            }
            Err(error) => {
                self.txn = Some(txn);
                Err(error)
            }
        }
    }

    fn flush_and_commit_offsets<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
    ) -> Result<(), LoopError> {
        self.producer.flush(TXN_CALL_TIMEOUT).map_err(classify)?;
        if let Some(error) = self.producer.context().take_delivery_error() {
            return Err(LoopError::Retriable(format!(
                "a record was not delivered: {error}"
            )));
        }
        if offsets.count() > 0 {
            consumer.commit(offsets, CommitMode::Sync).map_err(classify)?;
        }
        Ok(())
    }

    /// Aborts the open transaction, forgets its state changes, and rewinds every owned partition
    /// to its committed offset so that its records are processed again.
    pub fn abort_and_rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), LoopError> {
        if self.txn.take().is_some() {
            if self.exactly_once() {
                self.producer
                    .abort_transaction(TXN_CALL_TIMEOUT)
                    .map_err(classify)?;
            }
            metrics::aborted();
        }
        self.stores.abort();
        self.offsets.clear();
        let assignment = consumer.assignment().map_err(classify)?;
        if assignment.count() == 0 {
            return Ok(());
        }
        let committed = consumer
            .committed_offsets(assignment, TXN_CALL_TIMEOUT)
            .map_err(classify)?;
        let mut rewind = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(offset) => Offset::Offset(offset),
                _ => Offset::Beginning,
            };
            rewind
                .add_partition_offset(element.topic(), element.partition(), offset)
                .map_err(classify)?;
        }
        consumer
            .seek_partitions(rewind, TXN_CALL_TIMEOUT)
            .map_err(classify)?;
        Ok(())
    }

    /// Finishes the open transaction before partitions are revoked: commit, or abort when the
    /// commit fails (the partitions' next owner then processes those records again).
    pub fn finish_before_revoke<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, revoked: &[Task]) {
        if let Err(error) = self.commit(consumer) {
            tracing::warn!(%error, "commit before revoke failed; aborting");
            if self.txn.take().is_some()
                && self.exactly_once()
                && let Err(error) = self.producer.abort_transaction(TXN_CALL_TIMEOUT)
            {
                self.failure = Some(classify(error));
            }
            self.stores.abort();
            self.offsets.clear();
            if let LoopError::Fatal(_) = error {
                self.failure = Some(error);
            }
        }
        for task in revoked {
            self.stores.remove(task);
            self.offsets.remove(task);
            self.to_restore.retain(|t| t != task);
        }
    }
}
