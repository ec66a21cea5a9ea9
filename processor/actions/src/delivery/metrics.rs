//! Delivery metric names, defined once, and the helpers that record them. Labels: `action`
//! (a configured name, so bounded) and `outcome` — never event ids or URLs.

use std::time::Duration;

/// Deliveries by `action` and `outcome` (`delivered`, `transient`, `permanent`, `circuit_open`).
pub(super) const REQUESTS: &str = "switchboard_actions_requests_total";
/// Time from sending a request to its classified outcome, by `action` (circuit-open refusals
/// and rate-limit waits are not included).
pub(super) const REQUEST_SECONDS: &str = "switchboard_actions_request_seconds";
/// Circuit breaker state by `action`: 0 closed, 1 open, 2 half-open (read by the processor's
/// dashboard, hence named in `switchboard_schemas`).
pub(super) const BREAKER_STATE: &str = switchboard_schemas::metric_names::ACTIONS_BREAKER_STATE;

pub(super) fn outcome(action: &str, outcome: &'static str) {
    metrics::counter!(REQUESTS, "action" => action.to_owned(), "outcome" => outcome).increment(1);
}

pub(super) fn request_seconds(action: &str, elapsed: Duration) {
    metrics::histogram!(REQUEST_SECONDS, "action" => action.to_owned()).record(elapsed.as_secs_f64());
}

pub(super) fn breaker_state(action: &str, value: f64) {
    metrics::gauge!(BREAKER_STATE, "action" => action.to_owned()).set(value);
}
