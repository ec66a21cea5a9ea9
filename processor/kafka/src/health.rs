//! The health of a consuming loop and the routes that report it: [`Health`] (shared by the
//! processor's, the sink's and each action worker's loop with the admin server and the progress
//! monitor), `/healthz`, `/readyz`, and the admin router with `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

use crate::partition::{TopicPartition, topic_partitions};
use crate::txn::now_millis;

/// Liveness, readiness and progress of a consuming loop (processor, sink, action worker), shared
/// with the admin server, the progress monitor ([`crate::progress`]) and the depth reporter.
#[derive(Debug, Default)]
pub struct Health {
    /// Milliseconds since the epoch of the loop's last iteration.
    pub heartbeat_millis: AtomicI64,
    /// The loop is running and has joined the group.
    pub ready: AtomicBool,
    /// Position (next offset to consume) of every owned partition that has one.
    pub positions: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Every owned partition (the consumer's assignment), with or without a position.
    pub assignment: Mutex<BTreeSet<TopicPartition>>,
    /// Offsets committed outside Kafka (the sink's database), per partition; empty otherwise.
    pub committed: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Owned partitions with lag and no committed progress for `stall_timeout` (set by the
    /// progress monitor).
    pub stalled: AtomicUsize,
    /// Why the loop, though running, is not ready yet (e.g. its state is being restored, or
    /// its restore keeps failing): `/readyz` answers 503 with it.
    pub not_ready: Mutex<Option<String>>,
}

impl Health {
    /// Records `consumer`'s assignment and positions (local: no network) for the progress
    /// monitor and the depth reporter.
    pub fn publish_positions<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        self.publish_assignment(consumer);
        let Ok(position) = consumer.position() else { return };
        let positions = position
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => Some((TopicPartition::new(e.topic(), e.partition()), next)),
                _ => None,
            })
            .collect();
        *self.positions.lock().unwrap_or_else(PoisonError::into_inner) = positions;
    }

    /// Records `consumer`'s assignment (local: no network) for the progress monitor.
    pub fn publish_assignment<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        *self.assignment.lock().unwrap_or_else(PoisonError::into_inner) =
            topic_partitions(&assignment).into_iter().collect();
    }

    /// How many owned partitions are stalled (lag and no committed progress).
    pub fn stalled_partitions(&self) -> usize {
        self.stalled.load(Ordering::Relaxed)
    }
}

/// The loop counts as alive while its last iteration is this recent.
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// The admin router of a process whose loops report `healths` (the processor's and the sink's
/// one, the actions service's one per target): `/healthz`, `/readyz`, `/metrics`.
pub fn router(healths: Vec<Arc<Health>>) -> Router {
    switchboard_service::telemetry::prometheus();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(switchboard_service::respond::metrics_text))
        .with_state(Arc::new(healths))
}

async fn healthz(State(healths): State<Arc<Vec<Arc<Health>>>>) -> Response {
    liveness(healths.iter().map(Arc::as_ref))
}

/// Whether a loop whose last iteration was at `heartbeat_millis` (0: not started yet) is alive.
pub fn alive(heartbeat_millis: i64) -> bool {
    heartbeat_millis == 0 || now_millis() - heartbeat_millis < STALL_LIMIT.as_millis() as i64
}

/// Why loops are not healthy, in fixed words (no topics, hosts or client errors).
fn unhealthy<'a>(healths: impl IntoIterator<Item = &'a Health>) -> Option<String> {
    let mut stalled = 0;
    for health in healths {
        if !alive(health.heartbeat_millis.load(Ordering::Relaxed)) {
            return Some("processing loop stalled".to_owned());
        }
        stalled += health.stalled_partitions();
    }
    (stalled > 0).then(|| {
        format!("no committed progress: {stalled} owned partition(s) have lag and made no progress for stall_timeout")
    })
}

/// `/healthz`'s answer for the loops of a process (the processor's, the sink's, each action
/// worker's): 503 while one's loop has not turned for [`STALL_LIMIT`] or has stalled
/// partitions (the liveness probe then restarts the process).
fn liveness<'a>(healths: impl IntoIterator<Item = &'a Health>) -> Response {
    match unhealthy(healths) {
        None => (StatusCode::OK, "ok").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn readyz(State(healths): State<Arc<Vec<Arc<Health>>>>) -> Response {
    readiness(healths.iter().map(Arc::as_ref))
}

/// `/readyz`'s answer for the loops of a process: 503 with the reason until every loop has
/// joined its group, and while [`liveness`] fails.
fn readiness<'a>(healths: impl IntoIterator<Item = &'a Health> + Clone) -> Response {
    if !healths
        .clone()
        .into_iter()
        .all(|h| h.ready.load(Ordering::Relaxed))
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: not consuming yet").into_response();
    }
    let reasons: Vec<String> = healths
        .clone()
        .into_iter()
        .filter_map(|h| h.not_ready.lock().unwrap_or_else(PoisonError::into_inner).clone())
        .collect();
    if !reasons.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", reasons.join("; ")),
        )
            .into_response();
    }
    match unhealthy(healths) {
        None => (StatusCode::OK, "ready").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}")).into_response(),
    }
}
