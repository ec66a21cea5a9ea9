//! The sink's metric names, defined once, and the helpers that record them.

use std::time::Duration;

/// Rows written (events applied), and duplicates skipped by event id.
pub(super) const EVENTS: &str = "switchboard_sink_events_total";
/// Database transactions (batches) and their duration.
pub(super) const BATCH_SECONDS: &str = "switchboard_sink_batch_seconds";
/// Age of an event when the database transaction that stores it has committed: from ingest's
/// `received_at` (carried in every domain event) to the end of the commit, seconds.
pub(super) const EVENT_AGE_SECONDS: &str = "switchboard_sink_event_age_seconds";
/// Consumer lag by `topic` and `partition`.
pub(super) const LAG: &str = "switchboard_sink_consumer_lag";
/// Domain records that could not be decoded (skipped), by `topic`.
pub(super) const UNDECODABLE: &str = "switchboard_sink_undecodable_total";
/// Rebalances by `kind`.
pub(super) const REBALANCES: &str = "switchboard_sink_rebalances_total";
/// Delivery attempts deleted because they were older than `attempts_retention`.
pub(super) const ATTEMPTS_EXPIRED: &str = "switchboard_sink_attempts_expired_total";

pub(crate) fn batch(elapsed: Duration, applied: usize, duplicates: usize) {
    metrics::histogram!(BATCH_SECONDS).record(elapsed.as_secs_f64());
    metrics::counter!(EVENTS, "outcome" => "applied").increment(applied as u64);
    metrics::counter!(EVENTS, "outcome" => "duplicate").increment(duplicates as u64);
}

/// One sample of [`EVENT_AGE_SECONDS`] per event of a committed batch.
pub(crate) fn event_ages(events: &[switchboard_schemas::DomainEvent]) {
    let histogram = metrics::histogram!(EVENT_AGE_SECONDS);
    for event in events {
        histogram.record(switchboard_kafka::txn::age_since(event.received_at()).as_secs_f64());
    }
}

pub(crate) fn undecodable(topic: &str) {
    metrics::counter!(UNDECODABLE, "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn attempts_expired(deleted: u64) {
    metrics::counter!(ATTEMPTS_EXPIRED).increment(deleted);
}

pub(crate) fn rebalance(kind: &'static str) {
    metrics::counter!(REBALANCES, "kind" => kind).increment(1);
}
