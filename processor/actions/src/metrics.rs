//! The actions service's metric names, defined once, and the helpers that record them. Delivery
//! metrics (requests, latency, breaker state) are the delivery module's.

use std::time::Duration;

/// Records moved to a retry topic, by `action` and `topic`.
pub(super) const RETRIED: &str = "switchboard_actions_retried_total";
/// Records sent to the DLQ, by `action` and `class`.
pub(super) const DEAD_LETTERED: &str = "switchboard_actions_dead_lettered_total";
/// Records waiting in a retry topic for an action, by `action` and `topic` (read by the
/// processor's dashboard, hence named in `switchboard_schemas`).
pub(super) const RETRY_DEPTH: &str = switchboard_schemas::metric_names::ACTIONS_RETRY_DEPTH;
/// Records in a DLQ topic (end offset - start offset), by `topic`.
pub(super) const DLQ_DEPTH: &str = "switchboard_dlq_depth";
/// Transaction commits, by `action`.
pub(super) const COMMIT_SECONDS: &str = "switchboard_actions_commit_seconds";
/// Aborted transactions, by `action`.
pub(super) const ABORTED: &str = "switchboard_actions_aborted_total";
/// Retry records without valid ladder headers (skipped), by `action`.
pub(super) const MALFORMED_RETRY: &str = "switchboard_actions_malformed_retry_total";

pub(super) fn retried(action: &str, topic: &str) {
    metrics::counter!(RETRIED, "action" => action.to_owned(), "topic" => topic.to_owned()).increment(1);
}

pub(super) fn dead_lettered(action: &str, class: &'static str) {
    metrics::counter!(DEAD_LETTERED, "action" => action.to_owned(), "class" => class).increment(1);
}

pub(super) fn committed(action: &str, elapsed: Duration) {
    metrics::histogram!(COMMIT_SECONDS, "action" => action.to_owned()).record(elapsed.as_secs_f64());
}

pub(super) fn aborted(action: &str) {
    metrics::counter!(ABORTED, "action" => action.to_owned()).increment(1);
}

pub(super) fn malformed_retry(action: &str) {
    metrics::counter!(MALFORMED_RETRY, "action" => action.to_owned()).increment(1);
}

pub(super) fn retry_depth(action: &str, topic: &str, depth: i64) {
    metrics::gauge!(RETRY_DEPTH, "action" => action.to_owned(), "topic" => topic.to_owned())
        .set(depth as f64);
}

pub(super) fn dlq_depth(topic: &str, depth: i64) {
    metrics::gauge!(DLQ_DEPTH, "topic" => topic.to_owned()).set(depth as f64);
}
