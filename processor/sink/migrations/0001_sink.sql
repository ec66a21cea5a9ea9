-- The sink's tables. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- Timestamps are BIGINT milliseconds since the Unix epoch; booleans are INTEGER 0/1.
-- Every *_events table is keyed by the event id (the idempotency key) and rejects an empty one.

-- Next offset to consume per (group, topic, partition), written in the same transaction as rows.
CREATE TABLE sink_offsets (
    consumer_group TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL CHECK ("partition" >= 0),
    next_offset BIGINT NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (consumer_group, topic, "partition")
);

-- One row per call: the call_state::apply fold of its events, including the tie-break keys
-- (status_at, recording_*, transcription_*) the next fold needs.
CREATE TABLE calls (
    call_sid TEXT PRIMARY KEY,
    phone_id TEXT NOT NULL,
    from_number TEXT,
    to_number TEXT,
    direction TEXT,
    status TEXT NOT NULL,
    duration_seconds INTEGER,
    sequence_number INTEGER,
    started_at BIGINT,
    ended_at BIGINT,
    recording_url TEXT,
    recording_duration INTEGER,
    transcription_text TEXT,
    last_event_id TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    status_at BIGINT,
    recording_sid TEXT,
    recording_status TEXT,
    transcription_sid TEXT,
    transcription_status TEXT
);
CREATE INDEX calls_by_phone ON calls (phone_id, updated_at DESC, call_sid DESC);

CREATE TABLE call_events (
    event_id TEXT PRIMARY KEY CHECK (length(event_id) > 0),
    call_sid TEXT NOT NULL,
    phone_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT,
    occurred_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX call_events_by_call ON call_events (call_sid, occurred_at);

-- One row per message; status by precedence (see store/precedence.rs).
CREATE TABLE messages (
    message_sid TEXT PRIMARY KEY,
    phone_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    from_number TEXT,
    to_number TEXT,
    last_event_id TEXT NOT NULL,
    status_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX messages_by_phone ON messages (phone_id, updated_at DESC, message_sid DESC);

CREATE TABLE message_events (
    event_id TEXT PRIMARY KEY CHECK (length(event_id) > 0),
    message_sid TEXT NOT NULL,
    phone_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    received_at BIGINT NOT NULL
);
CREATE INDEX message_events_by_message ON message_events (message_sid);

-- One row per Stripe event: nothing to fold.
CREATE TABLE payments (
    event_id TEXT PRIMARY KEY CHECK (length(event_id) > 0),
    phone_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    customer TEXT,
    amount BIGINT,
    currency TEXT,
    status TEXT,
    created BIGINT,
    received_at BIGINT NOT NULL
);
CREATE INDEX payments_by_phone ON payments (phone_id, received_at DESC);
CREATE INDEX payments_by_object ON payments (object_id);

-- One row per Calendly invitee; a cancellation is final (see store/precedence.rs).
CREATE TABLE bookings (
    invitee_uri TEXT PRIMARY KEY,
    phone_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    invitee_name TEXT,
    invitee_email TEXT,
    event_start BIGINT,
    event_end BIGINT,
    canceled INTEGER NOT NULL CHECK (canceled IN (0, 1)),
    cancel_reason TEXT,
    last_event_id TEXT NOT NULL,
    status_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX bookings_by_phone ON bookings (phone_id, updated_at DESC, invitee_uri DESC);

CREATE TABLE booking_events (
    event_id TEXT PRIMARY KEY CHECK (length(event_id) > 0),
    invitee_uri TEXT NOT NULL,
    phone_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX booking_events_by_invitee ON booking_events (invitee_uri);
