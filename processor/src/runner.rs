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
use crate::restore::{self, Plan, TaskRestore};
use crate::state::Db;
use crate::topology::Topology;
use crate::{kafka, metrics};
use switchboard_kafka::Health;
use switchboard_kafka::txn::{
    self, BACKOFF_MAX, BACKOFF_START, CommittedOffset, LoopError, ProducerContext, Recovery, now_millis,
};
use switchboard_kafka::{TopicPartition, topic_partitions};
use switchboard_schemas::topics;
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
                engine.generation += 1;
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
    let topology = Topology::live();
    let db = Db::open(
        &config.state_dir,
        config.state_cache,
        &store_owner(&config, &topology),
    )?;
    let changelogs = vec![
        topology.topic(topics::DEDUP_CHANGELOG),
        topology.topic(topics::CALL_STATE),
    ];
    let producer = txn::make_producer(kafka::producer_config(&config), move || {
        ProducerContext::watching(changelogs.clone())
    });
    let engine = Engine::new(
        &config,
        Arc::clone(&codec),
        runtime.clone(),
        producer,
        topology,
        db,
    )?;
    let engine = Arc::new(Mutex::new(engine));
    let consumer: BaseConsumer<RebalanceContext> =
        kafka::consumer_config(&config).create_with_context(RebalanceContext {
            engine: Arc::clone(&engine),
        })?;
    consumer.subscribe(&kafka::raw_topics())?;
    tracing::info!(transactional_id = %config.transactional_id(), guarantee = ?config.processing_guarantee, state_dir = %config.state_dir.display(), "processor started");

    let mut recovery = Recovery::new(BACKOFF_START, BACKOFF_MAX);
    let mut last_housekeeping = Instant::now();
    let result = loop {
        health.heartbeat_millis.store(now_millis(), Ordering::Relaxed);
        if shutdown.load(Ordering::Relaxed) {
            break lock(&engine)
                .commit_and_persist(&consumer)
                .map_err(anyhow::Error::from);
        }
        let timeout = lock(&engine).time_to_commit().max(Duration::from_millis(1));
        let polled = consumer.poll(timeout);
        health.ready.store(true, Ordering::Relaxed);

        let step = step(&config, &codec, &runtime, &engine, &consumer, &health, polled);
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

/// Who a state store belongs to: a store of another group, topology or cluster describes other
/// offsets.
fn store_owner(config: &Config, topology: &Topology) -> String {
    format!(
        "group={} topology={} bootstrap={}",
        config.group_id,
        topology.topic(""),
        config.kafka_bootstrap
    )
}

/// One iteration: take over a finished restore, start restoring newly assigned tasks, process
/// the polled record, commit when due (an empty poll with records waiting means caught up).
fn step(
    config: &Arc<Config>,
    codec: &Arc<Codec>,
    runtime: &Handle,
    engine: &Mutex<Engine>,
    consumer: &BaseConsumer<RebalanceContext>,
    health: &Health,
    polled: Option<Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>>,
) -> Result<(), LoopError> {
    let mut engine = lock(engine);
    if let Some(failure) = engine.failure.take() {
        return Err(failure);
    }
    finish_restore(&mut engine, consumer, health)?;
    if !engine.to_restore.is_empty() && engine.restoring.is_none() {
        start_restore(config, codec, runtime, &mut engine, consumer)?;
    }
    publish_readiness(&engine, health);
    let caught_up = polled.is_none();
    match polled {
        Some(Ok(message)) => {
            let task = TopicPartition::new(message.topic(), message.partition());
            if engine.stores.is_installed(&task) {
                engine.process(&message)?;
            } else {
                // Read before its pause took effect: its restore seeks back to the committed
                // offset, so the record is read again then.
                tracing::debug!(%task, offset = message.offset(), "record of a partition not restored yet; read again later");
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

/// A restore running on its own thread while the loop goes on polling (so the group keeps the
/// member, and the other partitions are processed).
pub(crate) struct Restoring {
    generation: u64,
    tasks: Vec<TaskRestore>,
    started: Instant,
    thread: std::thread::JoinHandle<anyhow::Result<restore::Restored>>,
}

impl std::fmt::Debug for Restoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restoring")
            .field("generation", &self.generation)
            .field("tasks", &self.tasks)
            .finish_non_exhaustive()
    }
}

impl Restoring {
    /// The tasks being restored.
    pub(crate) fn tasks(&self) -> impl Iterator<Item = &TopicPartition> {
        self.tasks.iter().map(|t| &t.task)
    }
}

/// Consecutive failed restores after which the processor gives up (non-zero exit; its
/// orchestrator restarts it, and `/readyz` said why meanwhile).
const MAX_RESTORE_FAILURES: u32 = 5;

/// Positions newly assigned tasks at their committed offsets and brings their stored state up to
/// them: at once when the store's checkpoint already matches (a restart, a rebalance that gave
/// back the same partitions), otherwise on the restore thread. A task whose committed offset
/// cannot be read (an error, an unstable offset held by another producer's open transaction) or
/// whose position cannot be set yet stays paused and pending: it is tried again after a backoff,
/// said in a WARN and counted, and never started from the beginning with empty state (which would
/// emit its records a second time).
fn start_restore(
    config: &Arc<Config>,
    codec: &Arc<Codec>,
    runtime: &Handle,
    engine: &mut Engine,
    consumer: &BaseConsumer<RebalanceContext>,
) -> Result<(), LoopError> {
    if engine.restore_retry.is_some_and(|(at, _)| Instant::now() < at) {
        return Ok(());
    }
    // The checkpoints read below, and the restore's writes, follow every write queued so far.
    let db = engine
        .stores
        .settled()
        .map_err(|e| LoopError::fatal("writing the state store", e))?
        .clone();
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
    let mut deferred = Vec::new();
    let mut jobs = Vec::new();
    for (task, committed) in committed {
        let cutoff = now_millis() - config.dedup_window_of_topic(&task.topic).as_millis() as i64;
        match position(consumer, &task, &committed) {
            Ok(offset) => {
                engine.stores.claim(&task);
                let plan = restore::plan(&db, &task, offset, cutoff)
                    .map_err(|e| LoopError::fatal(format!("reading the checkpoint of {task}"), e))?;
                match plan {
                    Plan::Ready => {
                        tracing::info!(%task, ?committed, "stored state is current");
                        install(engine, consumer, &task)?;
                    }
                    Plan::Restore(job) => jobs.push(job),
                }
            }
            Err(deferral) => {
                metrics::restore_deferred(deferral.kind());
                match &deferral {
                    // Normal right after an assignment: librdkafka is still fetching the
                    // committed offset itself.
                    Deferral::NotStarted(reason) => {
                        tracing::debug!(%task, %reason, "partition not fetching yet; restoring it later")
                    }
                    Deferral::OffsetUnknown(_) => {
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
    if !jobs.is_empty() {
        for job in &jobs {
            tracing::info!(task = %job.task, committed = job.committed, from = ?job.from, "restoring state from the changelogs");
        }
        let (config, codec, runtime) = (Arc::clone(config), Arc::clone(codec), runtime.clone());
        let (topology, tasks) = (engine.topology().clone(), jobs.clone());
        let thread = std::thread::Builder::new()
            .name("restore".into())
            .spawn(move || restore::restore(&config, &topology, &codec, &runtime, &db, &tasks))
            .map_err(|e| LoopError::fatal("starting the restore thread", e))?;
        engine.restoring = Some(Restoring {
            generation: engine.generation,
            tasks: jobs,
            started: Instant::now(),
            thread,
        });
    }
    Ok(())
}

/// Takes over a restore that has finished: its tasks are installed and resumed, unless a
/// rebalance has happened since (they are queued again, or gone). A failed restore is retried
/// after a backoff, [`MAX_RESTORE_FAILURES`] times in a row at most: then fatal.
fn finish_restore(
    engine: &mut Engine,
    consumer: &BaseConsumer<RebalanceContext>,
    health: &Health,
) -> Result<(), LoopError> {
    if !engine.restoring.as_ref().is_some_and(|r| r.thread.is_finished()) {
        return Ok(());
    }
    let restoring = engine.restoring.take().expect("checked above");
    let elapsed = restoring.started.elapsed();
    let outcome = restoring
        .thread
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the restore thread panicked")));
    let current = restoring.generation == engine.generation;
    match outcome {
        Ok(restored) => {
            engine.restore_failures = 0;
            engine.restore_failure = None;
            metrics::restored(restored.entries, elapsed);
            tracing::info!(
                partitions = restoring.tasks.len(),
                entries = restored.entries,
                read = restored.read,
                ?elapsed,
                per_second = (restored.read as f64 / elapsed.as_secs_f64().max(1e-3)) as u64,
                current,
                "state restored"
            );
            if current {
                for job in &restoring.tasks {
                    install(engine, consumer, &job.task)?;
                }
            }
        }
        Err(error) => {
            engine.restore_failures += 1;
            metrics::restore_deferred("restore_failed");
            let attempt = engine.restore_failures;
            let reason = format!("{error:#}");
            if attempt >= MAX_RESTORE_FAILURES {
                set_not_ready(
                    health,
                    Some(format!("restoring state failed {attempt} times: {reason}")),
                );
                return Err(LoopError::Fatal {
                    context: format!("restoring state failed {attempt} times in a row").into(),
                    cause: Some(error.into()),
                });
            }
            tracing::warn!(attempt, max = MAX_RESTORE_FAILURES, %reason, "restoring state failed; retrying");
            engine.restore_failure = Some(format!(
                "restoring state failed (attempt {attempt} of {MAX_RESTORE_FAILURES}): {reason}"
            ));
            if current {
                engine
                    .to_restore
                    .extend(restoring.tasks.into_iter().map(|t| t.task));
                let backoff = RESTORE_BACKOFF_START * 2u32.pow(attempt);
                engine.restore_retry = Some((Instant::now() + backoff.min(RESTORE_BACKOFF_MAX), backoff));
            }
        }
    }
    Ok(())
}

/// `/readyz` is 503 while assigned partitions wait for their state, saying why (the last restore
/// failure, if the restore is being retried).
fn publish_readiness(engine: &Engine, health: &Health) {
    let waiting = engine.to_restore.len() + engine.restoring.as_ref().map_or(0, |r| r.tasks.len());
    let reason = match &engine.restore_failure {
        Some(failure) => Some(failure.clone()),
        None if waiting > 0 => Some(format!("restoring the state of {waiting} partition(s)")),
        None => None,
    };
    set_not_ready(health, reason);
}

fn set_not_ready(health: &Health, reason: Option<String>) {
    *health.not_ready.lock().unwrap_or_else(PoisonError::into_inner) = reason;
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
}

impl Deferral {
    fn kind(&self) -> &'static str {
        match self {
            Deferral::OffsetUnknown(_) => "offset_unknown",
            Deferral::NotStarted(_) => "not_started",
        }
    }
}

/// Positions `task` at `committed` (the beginning when nothing is committed); the committed
/// offset, `None` when nothing is.
fn position(
    consumer: &BaseConsumer<RebalanceContext>,
    task: &TopicPartition,
    committed: &CommittedOffset,
) -> Result<Option<i64>, Deferral> {
    let (position, offset) = match committed {
        CommittedOffset::At(offset) => (Offset::Offset(*offset), Some(*offset)),
        CommittedOffset::Nothing => (Offset::Beginning, None),
        CommittedOffset::Unknown(reason) => return Err(Deferral::OffsetUnknown(reason.clone())),
    };
    txn::seek(consumer, &[(task.clone(), position)], false)
        .map_err(|e| Deferral::NotStarted(chain(&e).to_string()))?;
    Ok(offset)
}

/// Starts processing `task`, whose stored state is that of its committed offset.
fn install(
    engine: &mut Engine,
    consumer: &BaseConsumer<RebalanceContext>,
    task: &TopicPartition,
) -> Result<(), LoopError> {
    engine.stores.install(task.clone());
    let mut list = TopicPartitionList::new();
    list.add_partition(&task.topic, task.partition);
    consumer
        .resume(&list)
        .map_err(|error| LoopError::fatal(format!("resuming {task}"), error))
}

/// Applies each source's dedup window and publishes the assignment and positions for the
/// progress monitor. Never blocks on the network: the processing loop must not stall behind
/// metadata requests.
fn housekeeping(
    config: &Config,
    engine: &Mutex<Engine>,
    consumer: &BaseConsumer<RebalanceContext>,
    health: &Health,
) {
    let now = now_millis();
    let mut engine = lock(engine);
    if let Err(error) = engine
        .stores
        .evict(|task| now - config.dedup_window_of_topic(&task.topic).as_millis() as i64)
    {
        // The store's writer failed: the loop stops at its next step.
        engine
            .failure
            .get_or_insert(LoopError::fatal("writing the state store", error));
    }
    match engine.stores.dedup_entries() {
        Ok(entries) => metrics::dedup_entries(entries as usize),
        Err(error) => tracing::warn!(%error, "counting dedup entries failed"),
    }
    drop(engine);
    health.publish_positions(consumer);
}
