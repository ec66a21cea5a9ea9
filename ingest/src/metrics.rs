//! Metric names and the few helpers that record them. Labels are low-cardinality: source,
//! outcome, reason. Never ids, never phone numbers.

use std::time::Duration;

/// Requests by `source` and `outcome` (accepted, unauthorized, bad_request, …).
pub const REQUESTS: &str = "switchboard_ingest_requests_total";
/// Signature verification failures by `source` and `reason`.
pub const VERIFICATION_FAILURES: &str = "switchboard_ingest_verification_failures_total";
/// Time from handing a record to the producer to its delivery report, by `source`.
pub const PRODUCE_SECONDS: &str = "switchboard_ingest_produce_duration_seconds";
/// Requests being handled right now.
pub const IN_FLIGHT: &str = "switchboard_ingest_in_flight_requests";

pub fn request(source: &str, outcome: &'static str) {
    metrics::counter!(REQUESTS, "source" => source.to_owned(), "outcome" => outcome).increment(1);
}

pub fn verification_failure(source: &str, reason: &'static str) {
    metrics::counter!(VERIFICATION_FAILURES, "source" => source.to_owned(), "reason" => reason).increment(1);
}

pub fn produced(source: &'static str, elapsed: Duration) {
    metrics::histogram!(PRODUCE_SECONDS, "source" => source).record(elapsed.as_secs_f64());
}

/// Counts a request as in flight until dropped.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}
