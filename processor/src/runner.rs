//! The processing loop: a group member on its own thread, polling raw records into the
//! [`Engine`], committing on the commit interval, and finishing the open transaction before a
//! rebalance takes partitions away.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use switchboard_schemas::Codec;
use tokio::runtime::Handle;

use crate::config::Config;
use crate::engine::Engine;
use crate::state::Task;
use crate::topology::Topology;
use crate::txn::{LoopError, ProducerContext, now_millis};
use crate::{kafka, metrics, restore};

/// Backoff after an aborted transaction, doubled per consecutive failure (every loop of the
/// binary uses it).
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(500);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often lag and the dedup window are refreshed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);

/// Liveness, readiness and progress of a consuming loop (processor, sink, action worker), shared
/// with the admin server, the progress monitor ([`crate::progress`]) and the depth reporter.
#[derive(Debug, Default)]
pub struct Health {
    /// Milliseconds since the epoch of the loop's last iteration.
    pub heartbeat_millis: AtomicI64,
    /// The loop is running and has joined the group.
    pub ready: AtomicBool,
    /// Position (next offset to consume) of every owned partition that has one.
    pub positions: Mutex<BTreeMap<Task, i64>>,
    /// Every owned partition (the consumer's assignment), with or without a position.
    pub assignment: Mutex<BTreeSet<Task>>,
    /// Offsets committed outside Kafka (the sink's database), per partition; empty otherwise.
    pub committed: Mutex<BTreeMap<Task, i64>>,
    /// Owned partitions with lag and no committed progress for `stall_timeout` (set by the
    /// progress monitor).
    pub stalled: AtomicUsize,
}

impl Health {
    /// Records `consumer`'s assignment and positions (local: no network) for the progress
    /// monitor and the depth reporter.
    pub(crate) fn publish_positions<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        self.publish_assignment(consumer);
        let Ok(position) = consumer.position() else { return };
        let positions = position
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => Some((Task::new(e.topic(), e.partition()), next)),
                _ => None,
            })
            .collect();
        *self.positions.lock().unwrap_or_else(PoisonError::into_inner) = positions;
    }

    /// Records `consumer`'s assignment (local: no network) for the progress monitor.
    pub(crate) fn publish_assignment<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        *self.assignment.lock().unwrap_or_else(PoisonError::into_inner) =
            tasks(&assignment).into_iter().collect();
    }

    /// How many owned partitions are stalled (lag and no committed progress).
    pub fn stalled_partitions(&self) -> usize {
        self.stalled.load(Ordering::Relaxed)
    }
}

/// Routes rebalance events into the engine. Callbacks run inside `poll`, on the loop's thread,
/// while the loop holds no lock.
#[derive(Debug)]
pub struct RebalanceContext {
    engine: Arc<Mutex<Engine>>,
}

fn lock(engine: &Mutex<Engine>) -> MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn tasks(partitions: &TopicPartitionList) -> Vec<Task> {
    partitions
        .elements()
        .iter()
        .map(|e| Task::new(e.topic(), e.partition()))
        .collect()
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            metrics::rebalance("revoke");
            let revoked = tasks(partitions);
            tracing::info!(
                partitions = revoked.len(),
                "partitions revoked; finishing the open transaction"
            );
            lock(&self.engine).finish_before_revoke(consumer, &revoked);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                metrics::rebalance("assign");
                let assigned = tasks(partitions);
                tracing::info!(
                    partitions = assigned.len(),
                    "partitions assigned; restoring their state"
                );
                lock(&self.engine).to_restore.extend(assigned);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }
}

/// Runs the loop until `shutdown` is set (exit cleanly) or a fatal error (returned).
pub fn run(
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

    let mut backoff = BACKOFF_START;
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
        match step {
            Ok(()) => backoff = BACKOFF_START,
            Err(LoopError::Fatal(reason)) => break Err(anyhow::anyhow!("fatal: {reason}")),
            Err(LoopError::Retriable(reason)) => {
                tracing::warn!(%reason, backoff = ?backoff, "transaction aborted; rewinding to the committed offsets");
                if let Err(error) = lock(&engine).abort_and_rewind(&consumer) {
                    match error {
                        LoopError::Fatal(reason) => {
                            break Err(anyhow::anyhow!("fatal while aborting: {reason}"));
                        }
                        LoopError::Retriable(reason) => tracing::warn!(%reason, "rewind failed; retrying"),
                    }
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
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

/// One iteration: restore newly assigned tasks, process the polled record, commit when due.
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
    match polled {
        Some(Ok(message)) => {
            engine.process(&message)?;
        }
        Some(Err(error)) => tracing::warn!(%error, "consumer error"),
        None => {}
    }
    if engine.due() {
        engine.commit(consumer)?;
    }
    Ok(())
}

fn restore_assigned(
    config: &Config,
    codec: &Codec,
    runtime: &Handle,
    engine: &mut Engine,
    consumer: &BaseConsumer<RebalanceContext>,
) -> Result<(), LoopError> {
    let pending = std::mem::take(&mut engine.to_restore);
    let mut list = TopicPartitionList::new();
    for task in &pending {
        list.add_partition(&task.topic, task.partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(30))
        .map_err(|e| LoopError::Retriable(format!("reading committed offsets: {e}")))?;
    let cutoff = now_millis() - config.dedup_window.as_millis() as i64;
    let mut pending = pending.into_iter();
    while let Some(task) = pending.next() {
        let offset = committed
            .find_partition(&task.topic, task.partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
        let started = Instant::now();
        match restore::restore(config, engine.topology(), codec, runtime, &task, offset, cutoff) {
            Ok(state) => {
                tracing::info!(%task, dedup = state.dedup.len(), calls = state.calls.len(), elapsed = ?started.elapsed(), "state restored");
                engine.stores.install(task, state);
            }
            Err(error) => {
                // Not processed until restored: keep it (and the rest) pending and retry.
                let reason = format!("restoring {task}: {error:#}");
                engine.to_restore.push(task);
                engine.to_restore.extend(pending);
                return Err(LoopError::Retriable(reason));
            }
        }
    }
    Ok(())
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
