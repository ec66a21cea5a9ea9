//! The contract between switchboard's services.
//!
//! This crate owns everything two services must agree on and nothing else: the Avro schemas
//! (`schemas/*.avsc`, compiled in), the Rust types that mirror them, the Confluent wire-format
//! codec that talks to a schema registry, and the names of the Kafka topics and record headers.
//! It holds no service logic and does no I/O besides the codec's registry calls; the one rule it
//! carries is [`call_state`], the ordering of call events that the processor and the sink both
//! apply.

pub mod attempt;
pub mod call_state;
pub mod codec;
pub mod domain;
pub mod domain_event;
pub mod error_class;
pub mod headers;
pub mod media_type;
pub mod metric_names;
pub mod raw_webhook;
pub mod schema;
pub mod topics;
pub mod transience;

pub use attempt::ActionAttempt;
pub use codec::{Codec, CodecError};
pub use domain::{BillingEvent, BookingEvent, CallEvent, CallKind, CallState, GenericEvent, MessageEvent};
pub use domain_event::DomainEvent;
pub use raw_webhook::RawWebhook;
pub use schema::SchemaDef;
pub use topics::Source;
pub use transience::{Classify, Transience};
