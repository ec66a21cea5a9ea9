//! One action's loop, on a thread of its own: a consumer group member of its own group over the
//! domain topics its patterns can match and every retry topic, and a transactional producer.
//!
//! Records are read in batches of up to `max_in_flight` and delivered concurrently. Then, inside
//! one Kafka transaction with the consumed offsets: a transient failure moves the record one step
//! down the retry ladder, a permanent one (or the last step's) to the DLQ. So a record is never
//! both retried and lost, or retried twice: if the transaction aborts (or the process dies before
//! it commits), the batch is read and delivered again. Delivery itself is at-least-once — an HTTP
//! call cannot be rolled back — with the event id as a stable idempotency key.
//!
//! A retry record is delivered once its `not-before` has passed. Until then its partition is
//! paused and rewound to it, so waiting holds back nothing else: other partitions, other topics
//! and other actions go on. A retry partition is in append order, which is `not-before` order
//! except for records whose target asked for more than the step's delay (`Retry-After`, an open
//! breaker): those hold back the later retries of their partition until they are due, on purpose
//! (the README's actions section says why). A rebalance resumes what it revokes and assigns:
//! librdkafka keeps an application pause across both, and the holds are forgotten with the
//! revoked partitions.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::Instrument as _;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::BaseRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_schemas::{ActionAttempt, Classify, Codec, topics};
use tokio::runtime::Handle;

use super::config::ActionsConfig;
use super::events;
use super::ladder::{self, DeliveryFailure, Origin, RetryState, Route};
use super::metrics;
use crate::delivery::{OutboundEvent, Outcome, Target};
use switchboard_kafka::Health;
use switchboard_kafka::TopicPartition;
use switchboard_kafka::txn::{BACKOFF_MAX, BACKOFF_START};
use switchboard_kafka::txn::{
    Batching, LoopError, ProducerContext, Recovery, TXN_CALL_TIMEOUT, Transactor, make_producer, now_millis,
};
use switchboard_schemas::error_class;
use switchboard_schemas::topics::RETRY_TOPIC_PREFIX;

/// Longest poll, so that paused partitions are resumed on time.
const MAX_POLL: Duration = Duration::from_millis(200);

/// The transaction and the paused partitions, shared by the loop and the rebalance callback
/// (which runs inside `poll`, on the loop's thread).
struct State {
    txn: Transactor,
    /// Paused retry partitions and when (epoch ms) their next record is due.
    held: BTreeMap<TopicPartition, i64>,
    /// Bumped on every revocation: a batch read across one is dropped, not processed.
    generation: u64,
    failure: Option<LoopError>,
    /// The sampled spans of the records delivered in the open transaction: its span links to them.
    trace_links: Vec<opentelemetry::trace::SpanContext>,
}

struct WorkerContext {
    state: Arc<Mutex<State>>,
    generation: AtomicU64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientContext for WorkerContext {}

impl ConsumerContext for WorkerContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = partitions.count(), "partitions assigned");
                // librdkafka keeps an application pause across unassign and assign. A fresh
                // assignment starts at the committed offsets with nothing held, so nothing of it
                // may stay paused: a partition paused here would never be resumed.
                resume(consumer, partitions, "assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            tracing::info!(
                partitions = partitions.count(),
                "partitions revoked; committing the open transaction"
            );
            let revoked = switchboard_kafka::topic_partitions(partitions);
            let mut state = lock(&self.state);
            let revoke = state.txn.finish_before_revoke(consumer, &revoked);
            if let Some(failure) = revoke.failure {
                state.failure = Some(failure);
            }
            for task in &revoked {
                state.held.remove(task);
            }
            // Forgotten holds must not leave their partitions paused (see `post_rebalance`).
            resume(consumer, partitions, "revoked");
            state.generation += 1;
            self.generation.store(state.generation, Ordering::Relaxed);
        }
    }
}

/// Resumes `partitions` (a rebalance's); a failure is logged: the next assignment resumes again.
fn resume(consumer: &BaseConsumer<WorkerContext>, partitions: &TopicPartitionList, why: &str) {
    if let Err(error) = consumer.resume(partitions) {
        tracing::warn!(%error, why, "resuming the partitions of a rebalance failed");
    }
}

/// What to do with one record of a batch.
enum Work {
    /// Not for this action (another event type, another action's retry): just consume it.
    Skip,
    /// Deliver, then route the outcome.
    Deliver {
        event: OutboundEvent,
        previous: Option<RetryState>,
        origin: Origin,
    },
    /// Straight to the DLQ.
    DeadLetter {
        class: &'static str,
        reason: String,
        origin: Origin,
    },
    /// A retry record not yet due (at `not_before`, epoch ms): pause its partition until then.
    Hold { not_before: i64 },
}

/// One action's consumer group, producer and loop.
pub(crate) struct Worker<'a> {
    config: &'a ActionsConfig,
    target: &'a Target,
    codec: &'a Codec,
    runtime: Handle,
    consumer: BaseConsumer<WorkerContext>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Worker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("action", &self.target.name())
            .finish_non_exhaustive()
    }
}

fn client(config: &ActionsConfig) -> ClientConfig {
    switchboard_kafka::client::base(
        &config.kafka_bootstrap,
        &format!("switchboard-actions-{}", config.instance_id()),
        &config.kafka,
    )
}

/// A client for watermarks and metadata (the depth reporter).
pub(crate) fn reader_config(config: &ActionsConfig) -> ClientConfig {
    client(config)
}

impl<'a> Worker<'a> {
    pub(crate) fn new(
        config: &'a ActionsConfig,
        target: &'a Target,
        codec: &'a Codec,
        runtime: Handle,
    ) -> anyhow::Result<Self> {
        let name = target.name();
        let mut producer_config = client(config);
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random")
            .set("transactional.id", config.transactional_id(name))
            .set(
                "transaction.timeout.ms",
                config.transaction_timeout.as_millis().to_string(),
            );
        let producer = make_producer(producer_config, ProducerContext::default);
        let batching = Batching {
            exactly_once: true,
            commit_interval: config.commit_interval,
            max_records: config.max_in_flight * 16,
            resolve_within: Batching::resolve_within(config.transaction_timeout),
            // Not yet: see `Batching::wait_for_deliveries`.
            wait_for_deliveries: false,
        };
        let state = Arc::new(Mutex::new(State {
            txn: Transactor::new(producer, batching)?,
            held: BTreeMap::new(),
            generation: 0,
            trace_links: Vec::new(),
            failure: None,
        }));
        let mut consumer_config = client(config);
        switchboard_kafka::client::group_member(
            &mut consumer_config,
            &config.group_id(name),
            config.session_timeout,
        );
        let consumer: BaseConsumer<WorkerContext> = consumer_config.create_with_context(WorkerContext {
            state: Arc::clone(&state),
            generation: AtomicU64::new(0),
        })?;
        let mut subscription: Vec<String> = events::topics_for(target.patterns())
            .into_iter()
            .map(str::to_owned)
            .collect();
        subscription.extend(config.retry_topics());
        subscription.push(topics::ACTIONS_REDRIVE.to_owned());
        let subscription: Vec<&str> = subscription.iter().map(String::as_str).collect();
        consumer.subscribe(&subscription)?;
        tracing::info!(action = name, group = %config.group_id(name), topics = ?subscription, "action worker started");
        Ok(Self {
            config,
            target,
            codec,
            runtime,
            consumer,
            state,
        })
    }

    /// Runs until `stop` is set (commits the open transaction, leaves the group) or a fatal error.
    pub(crate) fn run(self, stop: &AtomicBool, health: &Health) -> anyhow::Result<()> {
        let _span = tracing::info_span!("action", action = self.target.name()).entered();
        let mut recovery = Recovery::new(BACKOFF_START, BACKOFF_MAX);
        let result = loop {
            health.heartbeat_millis.store(now_millis(), Ordering::Relaxed);
            if let Some(failure) = lock(&self.state).failure.take() {
                break Err(failure.into());
            }
            if stop.load(Ordering::Relaxed) {
                break self.commit().map_err(anyhow::Error::from);
            }
            self.resume_due();
            let step = self.step().and_then(|caught_up| {
                if lock(&self.state).txn.due(caught_up) {
                    self.commit()
                } else {
                    Ok(())
                }
            });
            health.ready.store(true, Ordering::Relaxed);
            if matches!(step, Err(LoopError::Retriable { .. })) {
                metrics::aborted(self.target.name());
            }
            let recovered = recovery.after(step, || {
                let mut state = lock(&self.state);
                state.trace_links.clear();
                state.txn.abort_and_rewind(&self.consumer, &[]).map(drop)
            });
            if let Err(fatal) = recovered {
                break Err(anyhow::Error::new(fatal).context(format!("action {}", self.target.name())));
            }
            health.publish_positions(&self.consumer);
        };
        health.ready.store(false, Ordering::Relaxed);
        result
    }

    fn commit(&self) -> Result<(), LoopError> {
        let mut state = lock(&self.state);
        let links = std::mem::take(&mut state.trace_links);
        let span = (!links.is_empty())
            .then(|| switchboard_service::trace::batch_span("kafka transaction", "kafka", &links));
        let _entered = span.as_ref().map(tracing::Span::enter);
        if let Some(committed) = state.txn.commit(&self.consumer)? {
            metrics::committed(self.target.name(), committed.elapsed);
        }
        Ok(())
    }

    /// Resumes paused partitions whose next record is due.
    fn resume_due(&self) {
        let now = now_millis();
        let mut state = lock(&self.state);
        let due: Vec<TopicPartition> = state
            .held
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(task, _)| task.clone())
            .collect();
        for task in due {
            state.held.remove(&task);
            let mut list = TopicPartitionList::new();
            list.add_partition(&task.topic, task.partition);
            if let Err(error) = self.consumer.resume(&list) {
                tracing::warn!(%task, %error, "resuming a retry partition failed");
            }
        }
    }

    fn poll_timeout(&self) -> Duration {
        let state = lock(&self.state);
        let until_resume = state
            .held
            .values()
            .min()
            .map(|at| Duration::from_millis(u64::try_from(at - now_millis()).unwrap_or(0)));
        [Some(state.txn.time_to_commit()), until_resume, Some(MAX_POLL)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(MAX_POLL)
            .max(Duration::from_millis(1))
    }

    /// Reads up to `max_in_flight` records (waiting at most the poll timeout for the first).
    fn read_batch(&self) -> Vec<OwnedMessage> {
        let generation = self.consumer.context().generation.load(Ordering::Relaxed);
        let mut batch = Vec::new();
        let mut timeout = self.poll_timeout();
        while batch.len() < self.config.max_in_flight {
            match self.consumer.poll(timeout) {
                Some(Ok(message)) => batch.push(message.detach()),
                Some(Err(error)) => {
                    tracing::warn!(action = self.target.name(), %error, "consumer error");
                    break;
                }
                None => break,
            }
            timeout = Duration::ZERO;
        }
        if self.consumer.context().generation.load(Ordering::Relaxed) != generation {
            // Partitions were revoked while reading: what was read is the new owner's (or ours
            // again, from the committed offsets, after the next assignment).
            batch.clear();
        }
        batch
    }

    /// One batch: read, plan, deliver concurrently, then route every outcome inside the open
    /// transaction. `true` when caught up: the read stopped short of `max_in_flight`.
    fn step(&self) -> Result<bool, LoopError> {
        let batch = self.read_batch();
        if batch.is_empty() {
            return Ok(true);
        }
        let caught_up = batch.len() < self.config.max_in_flight;
        let mut planned: Vec<(&OwnedMessage, Work)> = Vec::with_capacity(batch.len());
        let mut held_now: HashSet<TopicPartition> = HashSet::new();
        for message in &batch {
            let task = TopicPartition::new(message.topic(), message.partition());
            if held_now.contains(&task) {
                continue; // rewound: read again when the partition resumes
            }
            match self.plan(message)? {
                Work::Hold { not_before } => {
                    self.hold(&task, message.offset(), not_before)?;
                    held_now.insert(task);
                }
                work => planned.push((message, work)),
            }
        }
        // Each outcome with the moment it became known: the ladder's delays (and a target's
        // `Retry-After`) count from the failure, not from when the batch was read, so that a
        // slow or timing-out target still gets the whole delay.
        let group = self.config.group_id(self.target.name());
        let mut links = Vec::new();
        let deliveries: Vec<_> = planned
            .iter()
            .filter_map(|(message, work)| match work {
                Work::Deliver { event, .. } => {
                    let span = switchboard_service::trace::kafka_process_span("deliver", *message, &group);
                    links.extend(switchboard_service::trace::sampled_context(&span));
                    Some(
                        async move {
                            let started = std::time::Instant::now();
                            let outcome = self.target.deliver(event).await;
                            (outcome, now_millis(), started.elapsed())
                        }
                        .instrument(span),
                    )
                }
                _ => None,
            })
            .collect();
        let mut outcomes = self
            .runtime
            .block_on(futures::future::join_all(deliveries))
            .into_iter();

        let mut state = lock(&self.state);
        state.txn.begin()?;
        let room = switchboard_service::trace::MAX_LINKS.saturating_sub(state.trace_links.len());
        state.trace_links.extend(links.into_iter().take(room));
        for (message, work) in planned {
            match work {
                Work::Skip | Work::Hold { .. } => {}
                Work::Deliver {
                    event,
                    previous,
                    origin,
                } => {
                    let (outcome, failed_at, latency) = outcomes
                        .next()
                        .unwrap_or_else(|| (Outcome::Delivered, now_millis(), Duration::ZERO));
                    let mut routed_to = None;
                    if let Some(failure) = failure(&outcome) {
                        let route = ladder::route(
                            &self.config.retry_delays,
                            self.target.name(),
                            previous.as_ref(),
                            origin,
                            failure,
                            failed_at,
                        );
                        routed_to = Some(match &route {
                            Route::Retry { topic, .. } => topic.clone(),
                            Route::DeadLetter { .. } => topics::DLQ.to_owned(),
                        });
                        self.send_route(&state.txn, message, route, previous.as_ref())?;
                    }
                    let attempt = ActionAttempt {
                        attempt_id: format!(
                            "{}/{}/{}/{}",
                            self.target.name(),
                            message.topic(),
                            message.partition(),
                            message.offset()
                        ),
                        action: self.target.name().to_owned(),
                        event_id: event.event_id.clone(),
                        event_type: event.event_type.clone(),
                        attempt: previous.as_ref().map_or(1, |p| p.attempt.saturating_add(1)) as i32,
                        outcome: outcome.class().to_owned(),
                        status_code: outcome.status_code().map(i32::from),
                        reason: outcome.reason().map(str::to_owned),
                        routed_to,
                        latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
                        attempted_at: failed_at,
                    };
                    self.send_attempt(&state.txn, &attempt)?;
                }
                Work::DeadLetter {
                    class,
                    reason,
                    origin,
                } => {
                    self.send_dead_letter(
                        &state.txn,
                        message,
                        Route::DeadLetter {
                            class,
                            reason,
                            attempt: 0,
                        },
                        &origin,
                    )?;
                }
            }
            state.txn.consumed(
                TopicPartition::new(message.topic(), message.partition()),
                message.offset() + 1,
            );
        }
        Ok(caught_up)
    }

    fn plan(&self, message: &OwnedMessage) -> Result<Work, LoopError> {
        let here = Origin {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let (previous, origin) = if message.topic().starts_with(RETRY_TOPIC_PREFIX) {
            match RetryState::from_headers(message.headers()) {
                Err(reason) => return Ok(self.malformed(message, &reason)),
                Ok(state) if state.action != self.target.name() => return Ok(Work::Skip),
                Ok(state) if state.not_before > now_millis() => {
                    return Ok(Work::Hold {
                        not_before: state.not_before,
                    });
                }
                Ok(state) => {
                    let origin = state.origin.clone();
                    (Some(state), origin)
                }
            }
        } else if message.topic() == topics::ACTIONS_REDRIVE {
            // Put back by `dlq redrive` for one action: a fresh start on the ladder.
            match ladder::redriven(message.headers()) {
                Err(reason) => return Ok(self.malformed(message, &reason)),
                Ok((action, _)) if action != self.target.name() => return Ok(Work::Skip),
                Ok((_, origin)) => (None, origin),
            }
        } else {
            (None, here)
        };
        let event_topic = origin.topic.clone();
        let targeted = previous.is_some() || message.topic() == topics::ACTIONS_REDRIVE;
        match events::event(self.codec, &self.runtime, &event_topic, message.payload()) {
            Ok(event) if targeted || self.target.matches(&event.event_type) => Ok(Work::Deliver {
                event,
                previous,
                origin,
            }),
            Ok(_) => Ok(Work::Skip),
            Err(error) if error.is_transient() => Err(LoopError::retriable("decoding the event", error)),
            Err(error) => Ok(Work::DeadLetter {
                class: error_class::UNDECODABLE,
                reason: error.to_string(),
                origin,
            }),
        }
    }

    /// Retry and redrive records are written by switchboard: a malformed one is a bug, not an
    /// event to deliver. Skipped, loudly.
    fn malformed(&self, message: &OwnedMessage, reason: &str) -> Work {
        tracing::error!(action = self.target.name(), topic = message.topic(), offset = message.offset(), %reason, "malformed retry record skipped");
        metrics::malformed_retry(self.target.name());
        Work::Skip
    }

    /// Pauses `task` and rewinds it to `offset`: its record is due at `not_before`.
    fn hold(&self, task: &TopicPartition, offset: i64, not_before: i64) -> Result<(), LoopError> {
        let mut list = TopicPartitionList::new();
        list.add_partition(&task.topic, task.partition);
        self.consumer
            .pause(&list)
            .map_err(|e| LoopError::retriable(format!("pausing {task}"), e))?;
        self.consumer
            .seek(
                &task.topic,
                task.partition,
                Offset::Offset(offset),
                TXN_CALL_TIMEOUT,
            )
            .map_err(|e| LoopError::retriable(format!("rewinding {task} to {offset}"), e))?;
        lock(&self.state).held.insert(task.clone(), not_before);
        Ok(())
    }

    fn send_route(
        &self,
        txn: &Transactor,
        message: &OwnedMessage,
        route: Route,
        previous: Option<&RetryState>,
    ) -> Result<(), LoopError> {
        match route {
            Route::Retry { topic, state } => {
                let headers = ladder::retry_headers(message.headers(), &state);
                let mut record = BaseRecord::<[u8], [u8]>::to(&topic).headers(headers);
                if let Some(key) = message.key() {
                    record = record.key(key);
                }
                if let Some(payload) = message.payload() {
                    record = record.payload(payload);
                }
                txn.send(record)?;
                metrics::retried(self.target.name(), &topic);
                Ok(())
            }
            Route::DeadLetter { .. } => {
                let origin = previous.map_or_else(
                    || Origin {
                        topic: message.topic().to_owned(),
                        partition: message.partition(),
                        offset: message.offset(),
                    },
                    |p| p.origin.clone(),
                );
                self.send_dead_letter(txn, message, route, &origin)
            }
        }
    }

    /// Records `attempt` on [`topics::ACTIONS_ATTEMPTS`] in the open transaction: it commits
    /// exactly when the attempt's routing and consumed offset do.
    fn send_attempt(&self, txn: &Transactor, attempt: &ActionAttempt) -> Result<(), LoopError> {
        let value = self
            .runtime
            .block_on(
                self.codec
                    .encode(topics::ACTIONS_ATTEMPTS, ActionAttempt::schema_def(), attempt),
            )
            .map_err(|error| match error.is_transient() {
                true => LoopError::retriable("encoding the attempt record", error),
                false => LoopError::fatal("encoding the attempt record", error),
            })?;
        let record = BaseRecord::<str, [u8]>::to(topics::ACTIONS_ATTEMPTS)
            .key(&attempt.event_id)
            .payload(&value);
        txn.send(record)?;
        Ok(())
    }

    fn send_dead_letter(
        &self,
        txn: &Transactor,
        message: &OwnedMessage,
        route: Route,
        origin: &Origin,
    ) -> Result<(), LoopError> {
        let Route::DeadLetter {
            class,
            reason,
            attempt,
        } = route
        else {
            return Ok(());
        };
        tracing::warn!(action = self.target.name(), class, %reason, attempt, topic = %origin.topic, partition = origin.partition, offset = origin.offset, "event sent to the DLQ");
        let headers = ladder::dead_letter_headers(
            message.headers(),
            self.target.name(),
            class,
            &reason,
            attempt,
            origin,
            now_millis(),
        );
        let mut record = BaseRecord::<[u8], [u8]>::to(topics::DLQ).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        txn.send(record)?;
        metrics::dead_lettered(self.target.name(), class);
        Ok(())
    }
}

/// The routing view of a delivery outcome; `None` when delivered.
fn failure(outcome: &Outcome) -> Option<DeliveryFailure> {
    match outcome {
        Outcome::Delivered => None,
        Outcome::Permanent { reason } => Some(DeliveryFailure::Permanent {
            reason: reason.clone(),
        }),
        transient => Some(DeliveryFailure::Transient {
            reason: transient.reason().unwrap_or(transient.class()).to_owned(),
            retry_after: transient.retry_after(),
        }),
    }
}
