//! The processing loop: a group member on its own thread, polling raw records into the
//! [`Engine`], committing once caught up (at the latest after the commit interval), and finishing the open transaction before a
//! rebalance takes partitions away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use switchboard_schemas::Codec;
use tokio::runtime::Handle;

use crate::config::Config;
use crate::engine::Engine;
use crate::topology::Topology;
use crate::{kafka, metrics, restore};
use switchboard_kafka::Health;
use switchboard_kafka::txn::{
    self, BACKOFF_MAX, BACKOFF_START, CommittedOffset, LoopError, ProducerContext, Recovery, now_millis,
};
use switchboard_kafka::{TopicPartition, topic_partitions};
use switchboard_service::telemetry::chain;

/// How often lag and the dedup window are refreshed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

/// Routes rebalance events into the engine. Callbacks run inside `poll`, on the loop's thread,
/// while the loop holds no lock.
#[derive(Debug)]
pub(crate) struct RebalanceContext {
    engine: Arc<Mutex<Engine>>,
}

fn lock(engine: &Mutex<Engine>) -> MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            metrics::rebalance("revoke");
            let revoked = topic_partitions(partitions);
            tracing::info!(
                partitions = revoked.len(),
                "partitions revoked; finishing the open transaction"
            );
            lock(&self.engine).finish_before_revoke(consumer, &revoked);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                metrics::rebalance("assign");
                let assigned = topic_partitions(partitions);
                tracing::info!(
                    partitions = assigned.len(),
                    "partitions assigned; restoring their state"
                );
                // Nothing is fetched from a partition before its state is restored and its
                // position set from the same committed offset (`restore_assigned` resumes it):
                // librdkafka's own start position is not trusted with exactly-once state.
                if let Err(error) = consumer.pause(partitions) {
                    let failure = LoopError::fatal("pausing assigned partitions", error);
                    lock(&self.engine).failure = Some(failure);
                }
                let mut engine = lock(&self.engine);
                engine.to_restore.extend(assigned);
                engine.restore_retry = None;
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }
}

/// Runs the loop until `shutdown` is set (exit cleanly) or a fatal error (returned).
pub(crate) fn run(
    config: Arc<Config>,
    codec: Arc<Codec>,
    runtime: Handle,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    let producer = kafka::producer_config(&config).create_with_context(ProducerContext::default())?;
    let engine = Engine::new(
        &config,
        Arc::clone(&codec),
        runtime.clone(),
        producer,
        Topology::live(),
    )?;
    let engine = Arc::new(Mutex::new(engine));
    let consumer: BaseConsumer<RebalanceContext> =
        kafka::consumer_config(&config).create_with_context(RebalanceContext {
            engine: Arc::clone(&engine),
        })?;
    consumer.subscribe(&kafka::raw_topics())?;
    tracing::info!(transactional_id = %config.transactional_id(), guarantee = ?config.processing_guarantee, "processor started");

    let mut recovery = Recovery::new(BACKOFF_START, BACKOFF_MAX);
    let mut last_housekeeping = Instant::now();
    let result = loop {
        health.heartbeat_millis.store(now_millis(), Ordering::Relaxed);
        if shutdown.load(Ordering::Relaxed) {
            break lock(&engine).commit(&consumer).map_err(anyhow::Error::from);
        }
        let timeout = lock(&engine).time_to_commit().max(Duration::from_millis(1));
        let polled = consumer.poll(timeout);
        health.ready.store(true, Ordering::Relaxed);

        let step = step(&config, &codec, &runtime, &engine, &consumer, polled);
        if let Err(fatal) = recovery.after(step, || lock(&engine).abort_and_rewind(&consumer)) {
            break Err(anyhow::Error::from(fatal));
        }

        if last_housekeeping.elapsed() >= HOUSEKEEPING_INTERVAL {
            last_housekeeping = Instant::now();
            housekeeping(&config, &engine, &consumer, &health);
        }
    };
    health.ready.store(false, Ordering::Relaxed);
    // Dropping the consumer closes it: it leaves the group (its revoke callback finds no open
    // transaction), so the partitions move to other instances without waiting for a session
    // timeout.
    drop(consumer);
    result
}

/// One iteration: restore newly assigned tasks, process the polled record, commit when due (an
/// empty poll with records waiting means caught up).
fn step(
    config: &Config,
    codec: &Codec,
    runtime: &Handle,
    engine: &Mutex<Engine>,
    consumer: &BaseConsumer<RebalanceContext>,
    polled: Option<Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>>,
) -> Result<(), LoopError> {
    let mut engine = lock(engine);
    if let Some(failure) = engine.failure.take() {
        return Err(failure);
    }
    if !engine.to_restore.is_empty() {
        restore_assigned(config, codec, runtime, &mut engine, consumer)?;
    }
    let caught_up = polled.is_none();
    match polled {
        Some(Ok(message)) => {
            let task = TopicPartition::new(message.topic(), message.partition());
            if engine.to_restore.contains(&task) {
                // Read before its pause took effect: its restore seeks back to the committed
                // offset, so the record is read again then.
                tracing::debug!(%task, offset = message.offset(), "record of a partition not restored yet; read again later");
            } else {
                engine.process(&message)?;
            }
        }
        Some(Err(error)) => tracing::warn!(%error, "consumer error"),
        None => {}
    }
    if engine.due(caught_up) {
        engine.commit(consumer)?;
    }
    Ok(())
}

/// Restores the state of newly assigned partitions and positions each at the committed offset
/// its state was restored from, then resumes it. A partition whose committed offset cannot be
/// read (an error, an unstable offset held by another producer's open transaction), whose
/// position cannot be set yet, or whose state does not restore stays paused and pending: it is
/// tried again after a backoff, said in a WARN and counted, and never started from the beginning
/// with empty state (which would emit its records a second time).
fn restore_assigned(
    config: &Config,
    codec: &Codec,
    runtime: &Handle,
    engine: &mut Engine,
    consumer: &BaseConsumer<RebalanceContext>,
) -> Result<(), LoopError> {
    if engine.restore_retry.is_some_and(|(at, _)| Instant::now() < at) {
        return Ok(());
    }
    let pending = std::mem::take(&mut engine.to_restore);
    let committed = match txn::committed_offsets(consumer, &pending, RESTORE_OFFSETS_TIMEOUT) {
        Ok(committed) => committed,
        Err(error @ LoopError::Retriable { .. }) => {
            let reason = chain(&error).to_string();
            pending
                .iter()
                .map(|task| (task.clone(), CommittedOffset::Unknown(reason.clone())))
                .collect()
        }
        Err(fatal) => {
            engine.to_restore = pending;
            return Err(fatal);
        }
    };
    let cutoff = now_millis() - config.dedup_window.as_millis() as i64;
    let mut deferred = Vec::new();
    for (task, committed) in committed {
        let started = Instant::now();
        match restore_one(
            config, codec, runtime, engine, consumer, &task, &committed, cutoff,
        ) {
            Ok(state) => {
                tracing::info!(%task, ?committed, dedup = state.0, calls = state.1, elapsed = ?started.elapsed(), "state restored");
            }
            Err(deferral) => {
                metrics::restore_deferred(deferral.kind());
                match &deferral {
                    // Normal right after an assignment: librdkafka is still fetching the
                    // committed offset itself.
                    Deferral::NotStarted(reason) => {
                        tracing::debug!(%task, %reason, "partition not fetching yet; restoring it later")
                    }
                    _ => {
                        tracing::warn!(%task, reason = %deferral, "partition not processed until it can be restored; retrying")
                    }
                }
                deferred.push(task);
            }
        }
    }
    engine.restore_retry = if deferred.is_empty() {
        None
    } else {
        let backoff = engine
            .restore_retry
            .map_or(RESTORE_BACKOFF_START, |(_, backoff)| {
                (backoff * 2).min(RESTORE_BACKOFF_MAX)
            });
        Some((Instant::now() + backoff, backoff))
    };
    engine.to_restore = deferred;
    Ok(())
}

/// How long reading the committed offsets of assigned partitions may take.
const RESTORE_OFFSETS_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff between attempts to restore deferred partitions.
const RESTORE_BACKOFF_START: Duration = Duration::from_millis(100);
const RESTORE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a partition was not restored this time.
#[derive(Debug, thiserror::Error)]
enum Deferral {
    #[error("committed offset unknown: {0}")]
    OffsetUnknown(String),
    #[error("consumer not fetching it yet: {0}")]
    NotStarted(String),
    #[error("restore failed: {0}")]
    Restore(String),
}

impl Deferral {
    fn kind(&self) -> &'static str {
        match self {
            Deferral::OffsetUnknown(_) => "offset_unknown",
            Deferral::NotStarted(_) => "not_started",
            Deferral::Restore(_) => "restore_failed",
        }
    }
}

/// Positions `task` at `committed`, restores its state from there, installs it and resumes the
/// partition. The sizes of the restored state (dedup entries, calls).
#[allow(clippy::too_many_arguments)]
fn restore_one(
    config: &Config,
    codec: &Codec,
    runtime: &Handle,
    engine: &mut Engine,
    consumer: &BaseConsumer<RebalanceContext>,
    task: &TopicPartition,
    committed: &CommittedOffset,
    cutoff: i64,
) -> Result<(usize, usize), Deferral> {
    let (position, offset) = match committed {
        CommittedOffset::At(offset) => (Offset::Offset(*offset), Some(*offset)),
        CommittedOffset::Nothing => (Offset::Beginning, None),
        CommittedOffset::Unknown(reason) => return Err(Deferral::OffsetUnknown(reason.clone())),
    };
    txn::seek(consumer, &[(task.clone(), position)], false)
        .map_err(|e| Deferral::NotStarted(chain(&e).to_string()))?;
    let state = restore::restore(config, engine.topology(), codec, runtime, task, offset, cutoff)
        .map_err(|error| Deferral::Restore(format!("{error:#}")))?;
    let sizes = (state.dedup.len(), state.calls.len());
    engine.stores.install(task.clone(), state);
    let mut list = TopicPartitionList::new();
    list.add_partition(&task.topic, task.partition);
    consumer
        .resume(&list)
        .map_err(|error| Deferral::Restore(format!("resuming: {error}")))?;
    Ok(sizes)
}

/// Applies the dedup window and publishes the assignment and positions for the progress monitor.
/// Never blocks on the network: the processing loop must not stall behind metadata requests.
fn housekeeping(
    config: &Config,
    engine: &Mutex<Engine>,
    consumer: &BaseConsumer<RebalanceContext>,
    health: &Health,
) {
    let cutoff = now_millis() - config.dedup_window.as_millis() as i64;
    let mut engine = lock(engine);
    let evicted = engine.stores.evict(cutoff);
    if evicted > 0 {
        tracing::debug!(evicted, "dedup window applied");
    }
    metrics::dedup_entries(engine.stores.dedup_entries());
    drop(engine);
    health.publish_positions(consumer);
}
