//! [`ActionAttempt`]: one delivery attempt of the actions service, as `switchboard.actions.attempts`
//! carries it (written by the actions service, stored by the sink, shown by the console).

use serde::{Deserialize, Serialize};

use crate::schema::{ACTION_ATTEMPT, SchemaDef};

/// One delivery attempt of a domain event to an action. See `schemas/action_attempt.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionAttempt {
    /// `<action>/<topic>/<partition>/<offset>` of the record delivered: unique per committed
    /// attempt, the sink's key.
    pub attempt_id: String,
    pub action: String,
    pub event_id: String,
    pub event_type: String,
    /// 1 for a first delivery (and the first after a redrive), n + 1 after n failed ones.
    pub attempt: i32,
    /// `delivered`, `transient`, `permanent` or `circuit_open`.
    pub outcome: String,
    /// The target's failure status, when it answered with one.
    #[serde(default)]
    pub status_code: Option<i32>,
    /// Why it failed (never the URL).
    #[serde(default)]
    pub reason: Option<String>,
    /// The retry topic of the next step, or the DLQ.
    #[serde(default)]
    pub routed_to: Option<String>,
    pub latency_ms: i64,
    pub attempted_at: i64,
}

impl ActionAttempt {
    /// The schema this type is written with.
    pub fn schema_def() -> &'static SchemaDef {
        &ACTION_ATTEMPT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_round_trips_through_its_schema() {
        let attempt = ActionAttempt {
            attempt_id: "crm/switchboard.calls/2/41".into(),
            action: "crm".into(),
            event_id: "sha256:ab".into(),
            event_type: "call.completed".into(),
            attempt: 2,
            outcome: "transient".into(),
            status_code: Some(503),
            reason: Some("HTTP 503".into()),
            routed_to: Some("switchboard.retry.5s".into()),
            latency_ms: 12,
            attempted_at: 1_765_098_000_000,
        };
        assert_eq!(
            crate::domain::tests::round_trip(ActionAttempt::schema_def(), &attempt),
            attempt
        );
    }
}
