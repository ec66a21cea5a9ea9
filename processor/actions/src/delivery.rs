//! Delivering domain events to the HTTP endpoints of the `[[action]]` tables.
//!
//! This module is the delivery layer only; it knows nothing about Kafka. The component that
//! consumes domain events builds one [`Target`] per configured action (sharing one
//! [`http_client`]), calls [`Target::deliver`] for each matching event, and routes the returned
//! [`Outcome`]: [`Outcome::Delivered`] is done, [`Outcome::is_transient`] outcomes (including
//! [`Outcome::CircuitOpen`]) go down the retry ladder, [`Outcome::Permanent`] goes to the DLQ.
//!
//! - [`config`]: the `[[action]]` table, its validation, and resolving env-var secrets.
//! - [`classify`]: the one place where HTTP statuses and transport errors become an [`Outcome`].
//! - [`breaker`]: the per-target circuit breaker, a pure state machine.
//! - [`mod@sign`]: Standard Webhooks signatures.
//! - [`deliver`]: one target: rate limit, breaker, timeout, signing, the request itself.

pub(crate) mod breaker;
pub(crate) mod classify;
pub(crate) mod config;
pub(crate) mod deliver;
mod metrics;
pub(crate) mod sign;

#[cfg(test)]
mod tests;

pub(crate) use classify::Outcome;
pub(crate) use config::{ActionConfig, validate_all};
pub(crate) use deliver::{OutboundEvent, Target, http_client};
