//! One consume-transform-produce transaction at a time: the outputs of a batch of consumed
//! records and their offsets, committed together (`send_offsets_to_transaction` with the
//! consumer's group metadata) or not at all. Shared by every transactional loop of the processor
//! binary: the processor's engine and the actions service's workers.
//!
//! The error handling follows rust-rdkafka's transactional example, in one place for every loop
//! ([`Recovery`]): a retriable error retries the call, an error that requires abort aborts the
//! transaction and rewinds every owned partition to its committed offset, a fatal error (e.g.
//! fenced by a newer instance with the same transactional id) stops the loop so the orchestrator
//! restarts the instance.
//!
//! librdkafka keeps a `commit_transaction` that timed out *in progress*: the same call must be
//! made again until it completes, and every other transactional call fails with `__CONFLICT`
//! meanwhile. So the open transaction is forgotten only once its commit (or abort) has completed,
//! and a call that does not complete within [`Batching::resolve_within`] stops the loop: the
//! restarted instance's `init_transactions` fences the old producer and ends its transaction on
//! the broker.
//!
//! An abort is that same fencing, in place ([`Transactor::abort`]): the producer is replaced by a
//! new instance with the same transactional id, whose `init_transactions` has the coordinator
//! abort the open transaction and bump the producer epoch in one step, so that no request of the
//! aborted transaction still on its way (a produce that timed out in a stalled broker's socket)
//! can land after the abort.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext as RdProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use switchboard_service::telemetry::chain;

use crate::cadence::{Cadence, Open};
use crate::partition::TopicPartition;

/// Longest time one attempt of a transactional call may take.
pub const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Time elapsed since `millis` (epoch milliseconds, e.g. ingest's `received_at`); zero for a time
/// in the future (clocks of two hosts).
pub fn age_since(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_millis() - millis).unwrap_or(0))
}

/// Backoff after an aborted transaction, doubled per consecutive failure (every loop of the
/// binary uses it).
pub const BACKOFF_START: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The error a loop's step failed with (a Kafka error, a codec error …).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What the loop must do after an error: `context` says what failed, the error that made it fail
/// is the `source` (none when the failure is the loop's own finding).
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// Abort the open transaction, rewind, back off, continue.
    #[error("retriable: {context}")]
    Retriable {
        context: Cow<'static, str>,
        #[source]
        cause: Option<Cause>,
    },
    /// Stop with a non-zero exit; the orchestrator restarts the instance.
    #[error("fatal: {context}")]
    Fatal {
        context: Cow<'static, str>,
        #[source]
        cause: Option<Cause>,
    },
}

impl LoopError {
    /// A retriable failure of `context`, caused by `cause`.
    pub fn retriable(context: impl Into<Cow<'static, str>>, cause: impl Into<Cause>) -> Self {
        LoopError::Retriable {
            context: context.into(),
            cause: Some(cause.into()),
        }
    }

    /// A fatal failure of `context`, caused by `cause`.
    pub fn fatal(context: impl Into<Cow<'static, str>>, cause: impl Into<Cause>) -> Self {
        LoopError::Fatal {
            context: context.into(),
            cause: Some(cause.into()),
        }
    }
}

/// Classifies an error of `context` that is not (or no longer) retried: fatal errors stop the
/// loop, every other error aborts the transaction and rewinds.
pub fn classify(context: impl Into<Cow<'static, str>>, error: KafkaError) -> LoopError {
    let fatal = matches!(&error, KafkaError::Transaction(rd) if rd.is_fatal())
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal);
    if fatal {
        LoopError::fatal(context, error)
    } else {
        LoopError::retriable(context, error)
    }
}

/// Whether librdkafka asks for the same call to be made again (a timeout, a coordinator change).
fn is_retriable(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Transaction(rd) if rd.is_retriable() && !rd.is_fatal())
}

/// The error policy of every transactional loop of the binary (the processor's and each action
/// worker's), so that they cannot drift: after an iteration, nothing on success; on a retriable
/// error abort the open transaction, rewind to the committed offsets and back off (doubling per
/// consecutive failure); on a fatal error, or when the abort or the rewind fails, stop the loop
/// (non-zero exit, the orchestrator restarts the instance).
#[derive(Debug)]
pub struct Recovery {
    backoff: Duration,
    start: Duration,
    max: Duration,
}

impl Recovery {
    pub fn new(start: Duration, max: Duration) -> Self {
        Self {
            backoff: start,
            start,
            max,
        }
    }

    /// Handles one iteration's `outcome`; `abort_and_rewind` aborts the open transaction and
    /// rewinds. `Err` (always [`LoopError::Fatal`]) means the loop must stop.
    pub fn after(
        &mut self,
        outcome: Result<(), LoopError>,
        abort_and_rewind: impl FnOnce() -> Result<(), LoopError>,
    ) -> Result<(), LoopError> {
        let error = match outcome {
            Ok(()) => {
                self.backoff = self.start;
                return Ok(());
            }
            Err(fatal @ LoopError::Fatal { .. }) => return Err(fatal),
            Err(retriable @ LoopError::Retriable { .. }) => retriable,
        };
        tracing::warn!(reason = %chain(&error), backoff = ?self.backoff, "transaction aborted; rewinding to the committed offsets");
        // Nothing may run before the abort and the rewind have completed (both retry what can be
        // retried): a transaction left in progress refuses every other transactional call, and a
        // partition left past records of the aborted transaction would skip them.
        if let Err(error) = abort_and_rewind() {
            return Err(LoopError::fatal("aborting and rewinding", error));
        }
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(self.max);
        Ok(())
    }
}

/// A partition's committed offset as the group coordinator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommittedOffset {
    /// The next offset to process.
    At(i64),
    /// The group never committed an offset for it (and no error): start from its beginning.
    Nothing,
    /// Not known: a partition error (e.g. `UNSTABLE_OFFSET_COMMIT` while another producer's
    /// transaction holds pending offsets, a coordinator error, a timeout). The partition must not
    /// be processed, from the beginning or anywhere else, until it is known.
    Unknown(String),
}

impl CommittedOffset {
    /// Where to position the consumer; `None` while unknown.
    pub fn position(&self) -> Option<Offset> {
        match self {
            CommittedOffset::At(offset) => Some(Offset::Offset(*offset)),
            CommittedOffset::Nothing => Some(Offset::Beginning),
            CommittedOffset::Unknown(_) => None,
        }
    }
}

/// Reads the committed offsets of `tasks`, checking each partition's own error: librdkafka
/// returns per-partition errors inside `Ok`, with an `Invalid` offset that must not be taken for
/// "nothing committed".
pub fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tasks: &[TopicPartition],
    timeout: Duration,
) -> Result<Vec<(TopicPartition, CommittedOffset)>, LoopError> {
    let mut list = TopicPartitionList::new();
    for task in tasks {
        list.add_partition(&task.topic, task.partition);
    }
    let committed = consumer
        .committed_offsets(list, timeout)
        .map_err(|e| LoopError::retriable("reading committed offsets", e))?;
    Ok(tasks
        .iter()
        .map(|task| {
            let offset = match committed.find_partition(&task.topic, task.partition) {
                None => CommittedOffset::Unknown("missing from the coordinator's answer".into()),
                Some(element) => committed_offset(element.error(), element.offset()),
            };
            (task.clone(), offset)
        })
        .collect())
}

/// One partition of a committed-offsets answer: its error first, then its offset.
pub fn committed_offset(error: KafkaResult<()>, offset: Offset) -> CommittedOffset {
    match (error, offset) {
        (Err(error), _) => CommittedOffset::Unknown(error.to_string()),
        (Ok(()), Offset::Offset(offset)) if offset >= 0 => CommittedOffset::At(offset),
        (Ok(()), Offset::Invalid) => CommittedOffset::Nothing,
        (Ok(()), other) => CommittedOffset::Unknown(format!("unexpected committed offset {other:?}")),
    }
}

/// Positions the consumer at `positions` with one `seek_partitions`, checking each partition's
/// own error (returned inside `Ok`). With `accept_not_started`, a partition whose fetcher has not
/// started yet (`__STATE`: librdkafka is still fetching its committed offset, and will start
/// there) is not an error.
pub fn seek<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    positions: &[(TopicPartition, Offset)],
    accept_not_started: bool,
) -> Result<(), LoopError> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for (task, offset) in positions {
        list.add_partition_offset(&task.topic, task.partition, *offset)
            .map_err(|e| LoopError::retriable(format!("seeking {task}"), e))?;
    }
    let sought = consumer
        .seek_partitions(list, TXN_CALL_TIMEOUT)
        .map_err(|e| LoopError::retriable("seeking", e))?;
    seek_errors(&sought, accept_not_started)
}

/// The first partition error of a `seek_partitions` answer.
pub fn seek_errors(sought: &TopicPartitionList, accept_not_started: bool) -> Result<(), LoopError> {
    for element in sought.elements() {
        if let Err(error) = element.error() {
            if accept_not_started && error.rdkafka_error_code() == Some(RDKafkaErrorCode::State) {
                continue;
            }
            return Err(LoopError::retriable(
                format!(
                    "seeking {}[{}] to {:?}",
                    element.topic(),
                    element.partition(),
                    element.offset()
                ),
                error,
            ));
        }
    }
    Ok(())
}

/// Hands `record` to `producer`, waiting for queue space (backpressure) up to
/// [`TXN_CALL_TIMEOUT`] rather than failing at once.
pub fn send_waiting<C, K, P>(
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

/// How often [`await_deliveries`] looks at the producer's queue.
const DELIVERY_CHECK: Duration = Duration::from_millis(1);

/// How long a commit waits for its delivery reports itself before it leaves them to
/// `commit_transaction` (or, at least once, `flush`): a broker that does not answer then meets
/// the commit's own timeouts and retries, exactly as without this wait.
const DELIVERY_WAIT: Duration = Duration::from_secs(1);

/// Waits until every record handed to `producer` has its delivery report (served by the
/// producer's own polling thread), for up to `within`. `true` when nothing is left in flight.
///
/// An optimization, never a decision: rust-rdkafka's `Producer::flush` (and `commit_transaction`,
/// which calls it first) checks librdkafka's queue, then, while anything is in flight, polls for a
/// whole 100 ms before it checks again, however soon the last report arrives. Every transaction
/// would commit at least 100 ms after its last record was sent, whatever the broker's latency
/// (`make bench`'s `txn-steps` shows the broker's own share: a few milliseconds). Called first,
/// this leaves the flush nothing to wait for.
pub fn await_deliveries<C, P>(producer: &ThreadedProducer<C, P>, within: Duration) -> bool
where
    C: RdProducerContext<P> + 'static,
    P: rdkafka::producer::Partitioner,
{
    let deadline = Instant::now() + within;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(DELIVERY_CHECK);
    }
    true
}

/// Remembers the first delivery failure (at-least-once mode checks it before committing offsets;
/// under exactly-once a failed delivery fails the commit by itself), and the highest offset
/// delivered per partition of the topics it is asked to watch (the processor's state changelogs:
/// where a checkpoint of its local store resumes reading).
#[derive(Debug, Default)]
pub struct ProducerContext {
    delivery_error: Mutex<Option<KafkaError>>,
    watched: Vec<String>,
    delivered: Mutex<BTreeMap<TopicPartition, i64>>,
}

impl ProducerContext {
    /// A context that also records the highest offset delivered per partition of `topics`.
    pub fn watching(topics: Vec<String>) -> Self {
        Self {
            watched: topics,
            ..Self::default()
        }
    }

    pub fn take_delivery_error(&self) -> Option<KafkaError> {
        self.delivery_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The offset after the highest one delivered per watched partition since the last call.
    /// Once a transaction's commit (or an at-least-once flush) has returned, every report of its
    /// records has been served, so this covers them (a report still being served at that instant
    /// can only make a value lower, which a reader of the offset must accept anyway).
    pub fn take_delivered(&self) -> BTreeMap<TopicPartition, i64> {
        std::mem::take(&mut *self.delivered.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ClientContext for ProducerContext {}

impl RdProducerContext for ProducerContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Err((error, _)) => {
                let mut slot = self.delivery_error.lock().unwrap_or_else(PoisonError::into_inner);
                slot.get_or_insert_with(|| error.clone());
            }
            Ok(message) if self.watched.iter().any(|t| t == message.topic()) => {
                let mut delivered = self.delivered.lock().unwrap_or_else(PoisonError::into_inner);
                let next = delivered
                    .entry(TopicPartition::new(message.topic(), message.partition()))
                    .or_default();
                *next = (*next).max(message.offset() + 1);
            }
            Ok(_) => {}
        }
    }
}

/// How a [`Transactor`] batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Kafka transactions (`true`), or idempotent producer + offsets committed after the outputs
    /// are acknowledged (`false`, at-least-once).
    pub exactly_once: bool,
    /// Longest time a transaction stays open collecting records (it commits sooner once the
    /// consumer is caught up: [`crate::cadence`]).
    pub commit_interval: Duration,
    /// Most records in one transaction.
    pub max_records: usize,
    /// How long a commit, an abort or a rewind that keeps failing with a retriable error (a
    /// broker or coordinator out of reach) is retried, the same call each time, before the loop
    /// stops (fatal, non-zero exit). Each attempt may take a quarter of it (at most
    /// [`TXN_CALL_TIMEOUT`]).
    pub resolve_within: Duration,
    /// Wait for the delivery reports before committing ([`await_deliveries`]) rather than in
    /// rust-rdkafka's flush, which adds up to 100 ms to every commit. On for the processor; off
    /// for the actions workers, where it made a retry-timing test stall now and then (2 runs in 5)
    /// for reasons not found yet.
    pub wait_for_deliveries: bool,
}

impl Batching {
    /// [`Batching::resolve_within`] for a `transaction.timeout.ms` of `transaction_timeout`:
    /// twice the timeout (by then a broker has aborted the transaction itself, and only a new
    /// instance's `init_transactions` reliably clears the producer's state), at least a minute so
    /// that a broker restart or a leader election is waited out in place rather than by a
    /// restart (which restores every partition's state again).
    pub fn resolve_within(transaction_timeout: Duration) -> Duration {
        (transaction_timeout * 2).max(Duration::from_secs(60))
    }
}

/// A committed transaction: for metrics, and what it committed.
#[derive(Debug, Clone)]
pub struct Committed {
    pub elapsed: Duration,
    pub records: usize,
    /// The next offset committed per consumed partition.
    pub offsets: BTreeMap<TopicPartition, i64>,
}

/// The state of the open transaction.
#[derive(Debug)]
struct OpenTxn {
    started: Instant,
    records: usize,
    /// The consumed offsets were handed to the transaction (`send_offsets_to_transaction`):
    /// a commit retried after a timeout must not send them again.
    offsets_sent: bool,
}

/// Creates a loop's producer: at the start, and again for every abort ([`Transactor::abort`]).
pub type MakeProducer = Box<dyn Fn() -> KafkaResult<ThreadedProducer<ProducerContext>> + Send + Sync>;

/// A [`MakeProducer`] creating producers from `config`, each with a context from `context`.
pub fn make_producer(
    config: ClientConfig,
    context: impl Fn() -> ProducerContext + Send + Sync + 'static,
) -> MakeProducer {
    Box::new(move || config.create_with_context(context()))
}

/// The producer and the open transaction: outputs sent with [`Transactor::send`] and offsets
/// recorded with [`Transactor::consumed`] commit together in [`Transactor::commit`].
pub struct Transactor {
    producer: ThreadedProducer<ProducerContext>,
    make_producer: MakeProducer,
    batching: Batching,
    /// The open transaction: forgotten only once its commit or its abort has completed.
    txn: Option<OpenTxn>,
    /// Next offset to commit per consumed partition, for records of the open transaction.
    offsets: BTreeMap<TopicPartition, i64>,
    /// A transactional call failed fatally: the producer's transaction state is unknown (a call
    /// may be left in progress), so every later begin, commit or abort fails at once. Without
    /// this, closing the consumer after the loop stopped ran the revoke's commit, which conflicts
    /// with the abort left in progress, for another minute before the process could exit.
    failed: bool,
    /// A record was sent in the open transaction (see [`Transactor::commit_offsets`]).
    produced: AtomicBool,
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
    /// Creates the producer with `make_producer`; under exactly-once, fences any older instance
    /// with the same transactional id and aborts its open transaction.
    pub fn new(make_producer: MakeProducer, batching: Batching) -> Result<Self, LoopError> {
        let producer = make_producer().map_err(|e| LoopError::fatal("creating the producer", e))?;
        let transactor = Self {
            producer,
            make_producer,
            batching,
            txn: None,
            offsets: BTreeMap::new(),
            failed: false,
            produced: AtomicBool::new(false),
        };
        if batching.exactly_once {
            transactor.retrying("init_transactions", LoopError::fatal, |timeout| {
                transactor.producer.init_transactions(timeout)
            })?;
        }
        Ok(transactor)
    }

    /// Makes a transactional call, and makes it again while librdkafka answers with a retriable
    /// error (the same call, as librdkafka requires after a timeout), for up to
    /// [`Batching::resolve_within`]; then `stuck` says what that means.
    fn retrying(
        &self,
        what: &'static str,
        stuck: fn(String, KafkaError) -> LoopError,
        mut call: impl FnMut(Duration) -> KafkaResult<()>,
    ) -> Result<(), LoopError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let remaining = self.batching.resolve_within.saturating_sub(started.elapsed());
            let attempt = (self.batching.resolve_within / 4).clamp(Duration::from_secs(1), TXN_CALL_TIMEOUT);
            let error = match call(attempt.min(remaining).max(Duration::from_secs(1))) {
                Ok(()) => return Ok(()),
                Err(error) if is_retriable(&error) => error,
                Err(error) => return Err(classify(what, error)),
            };
            if started.elapsed() >= self.batching.resolve_within {
                return Err(stuck(
                    format!(
                        "{what} has not completed within {:?}",
                        self.batching.resolve_within
                    ),
                    error,
                ));
            }
            tracing::warn!(call = what, %error, elapsed = ?started.elapsed(), "transactional call not completed; calling it again");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Fails at once once a transactional call has failed fatally (see [`Transactor::failed`]).
    fn usable(&self) -> Result<(), LoopError> {
        if self.failed {
            return Err(LoopError::Fatal {
                context: "a transactional call failed earlier: the producer is not called again".into(),
                cause: None,
            });
        }
        Ok(())
    }

    /// Remembers a fatal `result` (see [`Transactor::failed`]).
    fn noted<T>(&mut self, result: Result<T, LoopError>) -> Result<T, LoopError> {
        if matches!(result, Err(LoopError::Fatal { .. })) {
            self.failed = true;
        }
        result
    }

    /// Opens a transaction unless one is open.
    pub fn begin(&mut self) -> Result<(), LoopError> {
        self.usable()?;
        if self.txn.is_none() {
            if self.batching.exactly_once {
                let begun = self.producer.begin_transaction().map_err(|error| match error {
                    // With every other call resolved first, a failing begin means a producer
                    // that nothing but a restart can repair.
                    error if is_retriable(&error) => classify("beginning a transaction", error),
                    error => LoopError::fatal("beginning a transaction", error),
                });
                self.noted(begun)?;
            }
            self.produced.store(false, Ordering::Relaxed);
            self.txn = Some(OpenTxn {
                started: Instant::now(),
                records: 0,
                offsets_sent: false,
            });
        }
        Ok(())
    }

    /// The producer's [`ProducerContext::take_delivered`].
    pub fn take_delivered(&self) -> BTreeMap<TopicPartition, i64> {
        self.producer.context().take_delivered()
    }

    /// Whether a transaction is open.
    pub fn is_open(&self) -> bool {
        self.txn.is_some()
    }

    /// Records that the open transaction consumed `task` up to `next_offset` (exclusive).
    pub fn consumed(&mut self, task: TopicPartition, next_offset: i64) {
        self.offsets.insert(task, next_offset);
        if let Some(txn) = &mut self.txn {
            txn.records += 1;
        }
    }

    /// Whether the open transaction should commit now; `caught_up`: the last poll (waiting at most
    /// [`Transactor::time_to_commit`]) returned nothing ([`Cadence::due`]).
    pub fn due(&self, caught_up: bool) -> bool {
        self.cadence().due(self.open(), caught_up)
    }

    /// How long the loop's next poll may wait ([`Cadence::poll_timeout`]): briefly while the open
    /// transaction holds records, so that it commits as soon as the consumer is caught up.
    pub fn time_to_commit(&self) -> Duration {
        self.cadence().poll_timeout(self.open())
    }

    fn cadence(&self) -> Cadence {
        Cadence {
            interval: self.batching.commit_interval,
            max_records: self.batching.max_records,
        }
    }

    fn open(&self) -> Option<Open> {
        self.txn.as_ref().map(|txn| Open {
            started: txn.started,
            records: txn.records,
        })
    }

    /// Hands a record to the producer inside the open transaction, waiting for queue space
    /// (backpressure) rather than failing. A failure is retriable: abort and process again.
    pub fn send<K, P>(&self, record: BaseRecord<'_, K, P>) -> Result<(), LoopError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        self.produced.store(true, Ordering::Relaxed);
        send_waiting(&self.producer, record).map_err(|error| LoopError::retriable("sending a record", error))
    }

    /// Commits the open transaction: outputs and consumed offsets together. `None` when no
    /// transaction was open. On error the transaction stays open: abort it.
    pub fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<Option<Committed>, LoopError> {
        self.usable()?;
        if self.txn.is_none() {
            return Ok(None);
        }
        let started = Instant::now();
        let committed = self.commit_offsets(consumer);
        self.noted(committed)?;
        let offsets = std::mem::take(&mut self.offsets);
        let txn = self.txn.take().expect("checked above");
        Ok(Some(Committed {
            elapsed: started.elapsed(),
            records: txn.records,
            offsets,
        }))
    }

    fn commit_offsets<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), LoopError> {
        let mut offsets = TopicPartitionList::new();
        for (task, next) in &self.offsets {
            offsets
                .add_partition_offset(&task.topic, task.partition, Offset::Offset(*next))
                .map_err(|e| LoopError::fatal(format!("adding the offset of {task}"), e))?;
        }
        if !self.batching.exactly_once {
            if self.batching.wait_for_deliveries {
                await_deliveries(&self.producer, DELIVERY_WAIT);
            }
            self.producer
                .flush(TXN_CALL_TIMEOUT)
                .map_err(|e| classify("flushing the producer", e))?;
            if let Some(error) = self.producer.context().take_delivery_error() {
                return Err(LoopError::retriable("a record was not delivered", error));
            }
            if offsets.count() > 0 {
                consumer
                    .commit(&offsets, CommitMode::Sync)
                    .map_err(|e| classify("committing offsets", e))?;
            }
            return Ok(());
        }
        let offsets_sent = self.txn.as_ref().is_some_and(|txn| txn.offsets_sent);
        if !offsets_sent && !self.produced.load(Ordering::Relaxed) {
            // Nothing was written in this transaction (it consumed only duplicates, or records
            // a replay skips): its one effect, the consumed offsets, is committed to the group
            // coordinator directly, which is atomic by itself and refuses a member a rebalance
            // has fenced; the transaction, with nothing registered, then ends without a request
            // to the broker. One request instead of three, and correct on the dev broker too,
            // which drops the offsets of a transaction that wrote no record: the group's offsets
            // stopped short of the end by the duplicates at a partition's tail, and lag never
            // reached zero.
            if offsets.count() > 0 {
                consumer
                    .commit(&offsets, CommitMode::Sync)
                    .map_err(|e| classify("committing offsets", e))?;
            }
            return self.retrying("commit_transaction", LoopError::fatal, |timeout| {
                self.producer.commit_transaction(timeout)
            });
        }
        if !offsets_sent && offsets.count() > 0 {
            let metadata = consumer.group_metadata().ok_or(LoopError::Retriable {
                context: "no consumer group metadata yet".into(),
                cause: None,
            })?;
            // Not resumable in librdkafka: a retriable failure is simply called again, and one
            // that cannot complete aborts (not fatal: no call is left in progress).
            self.retrying("send_offsets_to_transaction", LoopError::retriable, |timeout| {
                self.producer
                    .send_offsets_to_transaction(&offsets, &metadata, timeout)
            })?;
        }
        if let Some(txn) = &mut self.txn {
            txn.offsets_sent = true;
        }
        // `commit_transaction` flushes first, and rust-rdkafka's flush sleeps in 100 ms polls
        // while anything is in flight: wait for the delivery reports here first, so that it
        // (normally) finds nothing to wait for.
        if self.batching.wait_for_deliveries {
            await_deliveries(&self.producer, DELIVERY_WAIT);
        }
        self.retrying("commit_transaction", LoopError::fatal, |timeout| {
            self.producer.commit_transaction(timeout)
        })
    }

    /// Aborts the open transaction (if any) and forgets its offsets. `true` when one was open.
    /// The transaction is forgotten only once the abort has completed; an abort that cannot
    /// complete is fatal.
    ///
    /// Under exactly-once the abort is a fencing ([`Transactor::fence`]), not
    /// `abort_transaction`: after a broker stall, librdkafka's EndTxn can reach the coordinator
    /// before produce requests of the same transaction that timed out but still sat in the
    /// broker's socket; a produce handled after the abort marker opens the transaction again on
    /// its partition (a "hanging transaction", KIP-890), whose last stable offset then never
    /// moves again. librdkafka's remedy, bumping the epoch before the abort (KIP-360), is not
    /// available on every broker (the dev broker refuses it, and the abort then never completed).
    /// On the dev broker this wedged a partition for good about once in ten long broker pauses:
    /// every later transaction there stayed prepared, its records unreadable and its offsets
    /// uncommitted.
    pub fn abort(&mut self) -> Result<bool, LoopError> {
        self.offsets.clear();
        if self.txn.is_none() {
            return Ok(false);
        }
        self.usable()?;
        if self.batching.exactly_once {
            let aborted = self
                .fence()
                .map_err(|error| LoopError::fatal("aborting the transaction", error));
            self.noted(aborted)?;
        }
        self.txn = None;
        Ok(true)
    }

    /// Replaces the producer by a new instance with the same transactional id: its
    /// `init_transactions` has the coordinator abort the open transaction and bump the producer
    /// epoch in one step, which fences every request of the old instance still on its way. The
    /// old instance is dropped before the new one sends anything (rust-rdkafka purges its queued
    /// and in-flight records), so it sends nothing more.
    fn fence(&mut self) -> Result<(), LoopError> {
        let fresh = (self.make_producer)().map_err(|e| LoopError::fatal("creating the producer again", e))?;
        drop(std::mem::replace(&mut self.producer, fresh));
        self.retrying("init_transactions", LoopError::fatal, |timeout| {
            self.producer.init_transactions(timeout)
        })
    }

    /// Aborts the open transaction and rewinds every owned partition but `except` (partitions
    /// the caller has not started yet: nothing was consumed from them) to its committed offset
    /// so that its records are processed again. `true` when a transaction was open. A rewind
    /// that cannot complete (committed offsets unreadable, seek refused) is retried, then fatal:
    /// a partition left past records of the aborted transaction would skip them.
    pub fn abort_and_rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        except: &[TopicPartition],
    ) -> Result<bool, LoopError> {
        let aborted = self.abort()?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let error = match self.rewind(consumer, except) {
                Ok(()) => return Ok(aborted),
                Err(fatal @ LoopError::Fatal { .. }) => return Err(fatal),
                Err(retriable @ LoopError::Retriable { .. }) => retriable,
            };
            if started.elapsed() >= self.batching.resolve_within {
                return Err(LoopError::fatal(
                    format!(
                        "rewinding to the committed offsets has not completed within {:?}",
                        self.batching.resolve_within
                    ),
                    error,
                ));
            }
            tracing::warn!(error = %chain(&error), "rewinding to the committed offsets failed; retrying");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    fn rewind<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        except: &[TopicPartition],
    ) -> Result<(), LoopError> {
        let assignment = consumer
            .assignment()
            .map_err(|e| classify("reading the assignment", e))?;
        let owned: Vec<TopicPartition> = crate::partition::topic_partitions(&assignment)
            .into_iter()
            .filter(|task| !except.contains(task))
            .collect();
        if owned.is_empty() {
            return Ok(());
        }
        let mut positions = Vec::with_capacity(owned.len());
        for (task, committed) in committed_offsets(consumer, &owned, TXN_CALL_TIMEOUT)? {
            match committed.position() {
                Some(offset) => positions.push((task, offset)),
                None => {
                    return Err(LoopError::Retriable {
                        context: format!("committed offset of {task} unknown: {committed:?}").into(),
                        cause: None,
                    });
                }
            }
        }
        // A partition whose fetcher has not started has consumed nothing: librdkafka starts it
        // at its committed offset.
        seek(consumer, &positions, true)
    }

    /// Finishes the open transaction before partitions are revoked: commit, or abort when the
    /// commit fails (the partitions' next owner then processes those records again). Offsets of
    /// the revoked partitions are never committed afterwards.
    pub fn finish_before_revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &[TopicPartition],
    ) -> Revoke {
        let outcome = match self.commit(consumer) {
            Ok(committed) => Revoke {
                committed,
                failure: None,
            },
            // The loop stops; the next instance with this transactional id ends the
            // transaction (and nothing else may be called while a commit is in progress).
            Err(error @ LoopError::Fatal { .. }) => Revoke {
                committed: None,
                failure: Some(error),
            },
            Err(error) => {
                tracing::warn!(error = %chain(&error), "commit before revoke failed; aborting");
                Revoke {
                    committed: None,
                    failure: self.abort().err(),
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

#[cfg(test)]
mod tests;
