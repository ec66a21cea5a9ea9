//! Kafka record header names, shared by every service that writes or reads them (ingest's raw
//! records, the processor's outputs, changelog entries and DLQ records). Ids and coordinates
//! only, never secrets.

/// The provider event id (raw records and every output).
pub const EVENT_ID: &str = "event-id";
/// The source (raw records and every output).
pub const SOURCE: &str = "source";
/// Where a changelog entry or a DLQ record came from.
pub const ORIGIN_TOPIC: &str = "original-topic";
pub const ORIGIN_PARTITION: &str = "original-partition";
pub const ORIGIN_OFFSET: &str = "original-offset";
/// DLQ only.
pub const ERROR_CLASS: &str = "error-class";
pub const ERROR_REASON: &str = "error-reason";
pub const FAILED_AT: &str = "failed-at";

/// Headers the actions service's retry ladder adds (besides `original-topic/partition/offset`).
pub mod ladder {
    /// Failed deliveries so far, from 1.
    pub const ATTEMPT: &str = "attempt";
    /// Epoch milliseconds of the first failure.
    pub const FIRST_FAILED_AT: &str = "first-failed-at";
    /// Why the last delivery failed.
    pub const LAST_ERROR: &str = "last-error";
    /// Epoch milliseconds before which the record is not delivered again.
    pub const NOT_BEFORE: &str = "not-before";
    /// The action the record is retried for (the other actions already delivered it).
    pub const ACTION: &str = "action";
}
