//! switchboard-ingest's integration tests: the router with a fake publisher (no broker), and the
//! Kafka publisher against the broker and registry named by `SWITCHBOARD_TEST_KAFKA` and
//! `SWITCHBOARD_TEST_REGISTRY`.

mod identity;
mod kafka;
mod kafka_envelope;
mod router;
mod shutdown;
mod signing;
