//! Metric names one service reads from another's `/metrics` (the processor's dashboard scrapes
//! the actions service), defined here so both sides spell them once. Each service's other metric
//! names live in its own `metrics` module.

/// Records waiting in a retry topic for an action (end offset - position), by `action` and
/// `topic`. Written by the actions service, read by the processor's dashboard.
pub const ACTIONS_RETRY_DEPTH: &str = "switchboard_actions_retry_depth";
/// Circuit breaker state by `action`: 0 closed, 1 open, 2 half-open. Written by the actions
/// service, read by the processor's dashboard.
pub const ACTIONS_BREAKER_STATE: &str = "switchboard_actions_breaker_state";
