//! One consume-transform-produce transaction at a time: the outputs of a batch of consumed
//! records and their offsets, committed together (`send_offsets_to_transaction` with the
//! consumer's group metadata) or not at all. Shared by every transactional loop of the processor
//! binary: the processor's [`Engine`](crate::engine::Engine) and the actions dispatcher.
//!
//! The error handling follows rust-rdkafka's transactional example: a retriable error retries the
//! call, an error that requires abort aborts the transaction and rewinds every owned partition to
//! its committed offset, a fatal error (e.g. fenced by a newer instance with the same
//! transactional id) stops the loop so the orchestrator restarts the instance.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext as RdProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::state::Task;

/// How long a single transactional call may take.
pub(crate) const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
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

pub(crate) fn classify(error: KafkaError) -> LoopError {
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

/// Hands `record` to `producer`, waiting for queue space (backpressure) up to
/// [`TXN_CALL_TIMEOUT`] rather than failing at once.
pub(crate) fn send_waiting<C, K, P>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, K, P>,
) -> Result<(), KafkaError>
where
    C: RdProducerContext<DeliveryOpaque = ()> + 'static,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    let deadline = Instant::now() + TXN_CALL_TIMEOUT;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                if Instant::now() < deadline =>
            {
                record = returned;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Remembers the first delivery failure (at-least-once mode checks it before committing offsets;
/// under exactly-once a failed delivery fails the commit by itself).
#[derive(Debug, Default)]
pub struct ProducerContext {
    delivery_error: Mutex<Option<String>>,
}

impl ProducerContext {
    pub fn take_delivery_error(&self) -> Option<String> {
        self.delivery_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl ClientContext for ProducerContext {}

impl RdProducerContext for ProducerContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((error, _)) = result {
            let mut slot = self.delivery_error.lock().unwrap_or_else(PoisonError::into_inner);
            slot.get_or_insert_with(|| error.to_string());
        }
    }
}

/// How a [`Transactor`] batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Kafka transactions (`true`), or idempotent producer + offsets committed after the outputs
    /// are acknowledged (`false`, at-least-once).
    pub exactly_once: bool,
    /// Longest time a transaction stays open collecting records.
    pub commit_interval: Duration,
    /// Most records in one transaction.
    pub max_records: usize,
}

/// A committed transaction, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    pub elapsed: Duration,
    pub records: usize,
}

/// The state of the open transaction.
#[derive(Debug)]
struct OpenTxn {
    started: Instant,
    records: usize,
}

/// The producer and the open transaction: outputs sent with [`Transactor::send`] and offsets
/// recorded with [`Transactor::consumed`] commit together in [`Transactor::commit`].
pub struct Transactor {
    producer: ThreadedProducer<ProducerContext>,
    batching: Batching,
    txn: Option<OpenTxn>,
    /// Next offset to commit per consumed partition, for records of the open transaction.
    offsets: BTreeMap<Task, i64>,
}

impl std::fmt::Debug for Transactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactor")
            .field("open", &self.txn)
            .field("offsets", &self.offsets)
            .finish_non_exhaustive()
    }
}

impl Transactor {
    /// Under exactly-once, fences any older instance with the same transactional id and aborts
    /// its open transaction.
    pub fn new(producer: ThreadedProducer<ProducerContext>, batching: Batching) -> Result<Self, LoopError> {
        if batching.exactly_once {
            producer.init_transactions(TXN_CALL_TIMEOUT).map_err(classify)?;
        }
        Ok(Self {
            producer,
            batching,
            txn: None,
            offsets: BTreeMap::new(),
        })
    }

    /// Opens a transaction unless one is open.
    pub fn begin(&mut self) -> Result<(), LoopError> {
        if self.txn.is_none() {
            if self.batching.exactly_once {
                self.producer.begin_transaction().map_err(classify)?;
            }
            self.txn = Some(OpenTxn {
                started: Instant::now(),
                records: 0,
            });
        }
        Ok(())
    }

    /// Whether a transaction is open.
    pub fn is_open(&self) -> bool {
        self.txn.is_some()
    }

    /// Records that the open transaction consumed `task` up to `next_offset` (exclusive).
    pub fn consumed(&mut self, task: Task, next_offset: i64) {
        self.offsets.insert(task, next_offset);
        if let Some(txn) = &mut self.txn {
            txn.records += 1;
        }
    }

    /// Whether the open transaction should commit now.
    pub fn due(&self) -> bool {
        self.txn.as_ref().is_some_and(|txn| {
            txn.started.elapsed() >= self.batching.commit_interval || txn.records >= self.batching.max_records
        })
    }

    /// Time until the open transaction is due (a loop's poll timeout).
    pub fn time_to_commit(&self) -> Duration {
        match &self.txn {
            Some(txn) => self
                .batching
                .commit_interval
                .saturating_sub(txn.started.elapsed()),
            None => self.batching.commit_interval,
        }
    }

    /// Hands a record to the producer inside the open transaction, waiting for queue space
    /// (backpressure) rather than failing. A failure is retriable: abort and process again.
    pub fn send<K, P>(&self, record: BaseRecord<'_, K, P>) -> Result<(), LoopError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        send_waiting(&self.producer, record).map_err(|error| LoopError::Retriable(error.to_string()))
    }

    /// Commits the open transaction: outputs and consumed offsets together. `None` when no
    /// transaction was open. On error the transaction stays open: abort it.
    pub fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<Option<Committed>, LoopError> {
        let Some(txn) = self.txn.take() else {
            return Ok(None);
        };
        let started = Instant::now();
        let result = self.commit_offsets(consumer);
        match result {
            Ok(()) => {
                self.offsets.clear();
                Ok(Some(Committed {
                    elapsed: started.elapsed(),
                    records: txn.records,
                }))
            }
            Err(error) => {
                self.txn = Some(txn);
                Err(error)
            }
        }
    }

    fn commit_offsets<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) -> Result<(), LoopError> {
        let mut offsets = TopicPartitionList::new();
        for (task, next) in &self.offsets {
            offsets
                .add_partition_offset(&task.topic, task.partition, Offset::Offset(*next))
                .map_err(|e| LoopError::Fatal(e.to_string()))?;
        }
        if !self.batching.exactly_once {
            self.producer.flush(TXN_CALL_TIMEOUT).map_err(classify)?;
            if let Some(error) = self.producer.context().take_delivery_error() {
                return Err(LoopError::Retriable(format!(
                    "a record was not delivered: {error}"
                )));
            }
            if offsets.count() > 0 {
                consumer.commit(&offsets, CommitMode::Sync).map_err(classify)?;
            }
            return Ok(());
        }
        let metadata = consumer
            .group_metadata()
            .ok_or_else(|| LoopError::Retriable("no consumer group metadata yet".into()))?;
        if offsets.count() > 0 {
            with_retries(|| {
                self.producer
                    .send_offsets_to_transaction(&offsets, &metadata, TXN_CALL_TIMEOUT)
            })?;
        }
        with_retries(|| self.producer.commit_transaction(TXN_CALL_TIMEOUT))
    }

    /// Aborts the open transaction (if any) and forgets its offsets. `true` when one was open.
    pub fn abort(&mut self) -> Result<bool, LoopError> {
        self.offsets.clear();
        if self.txn.take().is_none() {
            return Ok(false);
        }
        if self.batching.exactly_once {
            self.producer
                .abort_transaction(TXN_CALL_TIMEOUT)
                .map_err(classify)?;
        }
        Ok(true)
    }

    /// Aborts the open transaction and rewinds every owned partition to its committed offset so
    /// that its records are processed again. `true` when a transaction was open.
    pub fn abort_and_rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<bool, LoopError> {
        let aborted = self.abort()?;
        let assignment = consumer.assignment().map_err(classify)?;
        if assignment.count() == 0 {
            return Ok(aborted);
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
        Ok(aborted)
    }

    /// Finishes the open transaction before partitions are revoked: commit, or abort when the
    /// commit fails (the partitions' next owner then processes those records again). Offsets of
    /// the revoked partitions are never committed afterwards.
    pub fn finish_before_revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &[Task],
    ) -> Revoke {
        let outcome = match self.commit(consumer) {
            Ok(committed) => Revoke {
                committed,
                failure: None,
            },
            Err(error) => {
                tracing::warn!(%error, "commit before revoke failed; aborting");
                let abort_failure = self.abort().err();
                let failure = match error {
                    LoopError::Fatal(_) => Some(error),
                    LoopError::Retriable(_) => abort_failure,
                };
                Revoke {
                    committed: None,
                    failure,
                }
            }
        };
        for task in revoked {
            self.offsets.remove(task);
        }
        outcome
    }
}

/// What [`Transactor::finish_before_revoke`] did.
#[derive(Debug)]
pub struct Revoke {
    /// The transaction that committed, if one was open and its commit succeeded. When `None`
    /// after an open transaction, it was aborted.
    pub committed: Option<Committed>,
    /// A failure that must stop the loop (fatal commit or abort error).
    pub failure: Option<LoopError>,
}
