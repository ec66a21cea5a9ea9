-- The actions service's delivery attempts (switchboard.actions.attempts), for the console's
-- deliveries page: one row per committed attempt, keyed by <action>/<topic>/<partition>/<offset>
-- of the record delivered. Portable SQL like 0001.

CREATE TABLE action_attempts (
    attempt_id TEXT PRIMARY KEY CHECK (length(attempt_id) > 0),
    action TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    status_code INTEGER,
    reason TEXT,
    routed_to TEXT,
    latency_ms BIGINT NOT NULL,
    attempted_at BIGINT NOT NULL
);
-- Newest first: all of them, one action's, one event's.
CREATE INDEX action_attempts_by_time ON action_attempts (attempted_at DESC, attempt_id DESC);
CREATE INDEX action_attempts_by_action ON action_attempts (action, attempted_at DESC, attempt_id DESC);
CREATE INDEX action_attempts_by_event ON action_attempts (event_id, attempted_at DESC, attempt_id DESC);
