//! switchboard-ingest's integration tests: the router with a fake publisher (no broker), and the
//! Kafka publisher against the broker and registry named by `SWITCHBOARD_TEST_KAFKA` and
//! `SWITCHBOARD_TEST_REGISTRY`.

mod admin;
mod connections;
mod forged_bodies;
mod identity;
mod kafka;
mod kafka_envelope;
mod parser_props;
mod replay_flood;
mod router;
mod shutdown;
mod signing;
mod support;
mod twilio_events;
