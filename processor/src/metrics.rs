//! Metric names, defined once, and the helpers that record them. Labels: topic, source, class,
//! outcome, partition — never ids.

/// Raw records consumed, by `topic`.
pub const CONSUMED: &str = "switchboard_processor_consumed_total";
/// Records produced, by `topic` (domain topics, changelogs, DLQ).
pub const PRODUCED: &str = "switchboard_processor_produced_total";
/// Provider redeliveries skipped by dedup, by `source`.
pub const DUPLICATES: &str = "switchboard_processor_duplicates_skipped_total";
/// Records sent to the DLQ, by `source` and `class`.
pub const DLQ: &str = "switchboard_processor_dlq_total";
/// Time to commit a transaction (offsets + commit), seconds.
pub const COMMIT_SECONDS: &str = "switchboard_processor_transaction_commit_seconds";
/// Transactions by `outcome` (committed, aborted).
pub const TRANSACTIONS: &str = "switchboard_processor_transactions_total";
/// Consumer lag (end offset - committed offset, every owned partition; see [`crate::progress`]),
/// by `topic` and `partition` (bounded by the partition count).
pub const LAG: &str = "switchboard_processor_consumer_lag";
/// Rebalances by `kind` (assign, revoke).
pub const REBALANCES: &str = "switchboard_processor_rebalances_total";
/// Event ids remembered for dedup.
pub const DEDUP_ENTRIES: &str = "switchboard_processor_dedup_entries";
/// Age of a domain event when the transaction that makes it visible (`read_committed`) has
/// committed: from ingest's `received_at` (the envelope's field, carried into every domain event)
/// to the end of the commit, seconds.
pub const EVENT_AGE_SECONDS: &str = "switchboard_processor_event_age_seconds";
/// Restores of assigned partitions put off (the partition stays paused), by `reason`
/// (offset_unknown, not_started, restore_failed: a restore that failed and is retried).
pub const RESTORE_DEFERRED: &str = "switchboard_processor_restore_deferred_total";

/// Changelog entries applied by restores.
pub const RESTORED_ENTRIES: &str = "switchboard_processor_restored_entries_total";
/// Duration of restores (on the restore thread), seconds.
pub const RESTORE_SECONDS: &str = "switchboard_processor_restore_seconds";

pub(crate) fn restored(entries: u64, elapsed: std::time::Duration) {
    metrics::counter!(RESTORED_ENTRIES).increment(entries);
    metrics::histogram!(RESTORE_SECONDS).record(elapsed.as_secs_f64());
}

pub(crate) fn counter_consumed(topic: &str) {
    metrics::counter!(CONSUMED, "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn counter_produced(topic: &str) {
    metrics::counter!(PRODUCED, "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn counter_duplicate(source: &str) {
    metrics::counter!(DUPLICATES, "source" => source.to_owned()).increment(1);
}

pub(crate) fn counter_dlq(source: &str, class: &'static str) {
    metrics::counter!(DLQ, "source" => source.to_owned(), "class" => class).increment(1);
}

pub(crate) fn commit(elapsed: std::time::Duration, _records: usize) {
    metrics::histogram!(COMMIT_SECONDS).record(elapsed.as_secs_f64());
    metrics::counter!(TRANSACTIONS, "outcome" => "committed").increment(1);
}

/// One sample of [`EVENT_AGE_SECONDS`] per `received_at` (epoch ms) of a committed transaction.
pub(crate) fn event_ages(received_at: &[i64]) {
    let histogram = metrics::histogram!(EVENT_AGE_SECONDS);
    for at in received_at {
        histogram.record(switchboard_kafka::txn::age_since(*at).as_secs_f64());
    }
}

pub(crate) fn aborted() {
    metrics::counter!(TRANSACTIONS, "outcome" => "aborted").increment(1);
}

pub(crate) fn rebalance(kind: &'static str) {
    metrics::counter!(REBALANCES, "kind" => kind).increment(1);
}

pub(crate) fn dedup_entries(entries: usize) {
    metrics::gauge!(DEDUP_ENTRIES).set(entries as f64);
}

pub(crate) fn restore_deferred(reason: &'static str) {
    metrics::counter!(RESTORE_DEFERRED, "reason" => reason).increment(1);
}
