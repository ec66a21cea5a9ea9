//! The DLQ's `error-class` header values: why a record was dead-lettered, by whichever service
//! wrote it. Low-cardinality: also a metrics label.

/// The record could not be decoded (the processor: the raw body is not what the source sends,
/// or the envelope itself; the actions service: the domain record).
pub const UNDECODABLE: &str = "undecodable";
/// The processor: the body decodes but is an event this release does not handle (or the source
/// is unknown).
pub const UNKNOWN_KIND: &str = "unknown_kind";
/// The processor: a field the event cannot do without is absent or empty.
pub const MISSING_FIELD: &str = "missing_field";
/// The actions service: still failing transiently after the last step of the ladder.
pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
/// The actions service: the target refused the event for good (a 4xx other than 408 and 429).
pub const REJECTED: &str = "rejected";
