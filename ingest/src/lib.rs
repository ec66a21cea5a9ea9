//! switchboard-ingest: verifies provider webhooks and makes them durable in Kafka.

pub mod verify;
