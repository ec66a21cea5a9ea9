//! The dashboard's metric names, defined once. Every gauge is set from one
//! [`Snapshot`](super::sample::Snapshot) by its `export`, the same snapshot the page renders, so what the
//! page shows and what `/metrics` says agree. Labels: `source`, `topic` — never ids.

/// Raw records per second written to `switchboard.raw.<source>` (ingest's accepted requests),
/// by `source`, from end-offset deltas between two samples.
pub const REQUESTS_PER_SECOND: &str = "switchboard_observed_requests_per_second";
/// Domain events per second written to a domain topic, by `topic`: the records written between
/// two samples, counted by reading them while they are at most 20,000 (else end-offset deltas,
/// which also count transaction markers).
pub const EVENTS_PER_SECOND: &str = "switchboard_observed_events_per_second";
/// Records in `switchboard.dlq`: counted by reading it while it holds at most 10,000 offsets,
/// beyond that end offset - start offset (an upper bound: transaction markers take offsets).
pub const DLQ_DEPTH: &str = "switchboard_observed_dlq_depth";
/// Records waiting in the retry topics, summed over actions, as scraped from the actions service
/// (absent when `actions_admin_url` is not set).
pub const RETRY_DEPTH: &str = "switchboard_observed_retry_depth";
/// Event age (ingest's `received_at` to the processor's commit) by `quantile` (`0.5`, `0.99`),
/// seconds, over the domain events committed between the last two samples, from this
/// instance's [`crate::metrics::EVENT_AGE_SECONDS`] buckets (absent when none were committed).
pub const EVENT_AGE_QUANTILE: &str = "switchboard_observed_event_age_quantile_seconds";
/// Sequence number of the latest sample: tells which snapshot the other gauges belong to.
pub const SAMPLE: &str = "switchboard_observed_sample";
