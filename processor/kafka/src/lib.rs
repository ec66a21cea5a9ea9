//! switchboard-kafka: what every consuming loop of the `switchboard-processor` binary shares (the
//! processor's, the sink's, each action worker's).
//!
//! - [`TopicPartition`]: the unit of processing, ownership and state.
//! - [`cadence`]: when an open batch commits (caught up, full or old), for every loop alike.
//! - [`txn`]: one consume-transform-produce Kafka transaction at a time, and the loop's recovery.
//! - [`health`]: a loop's liveness, readiness and progress, and the admin routes that report it.
//! - [`progress`]: the lag and stall monitor behind `/healthz` and the lag gauges.
//! - [`client`]: consumer-group settings and topic creation.
//! - [`end`]: the true end of a partition and bounded reads to it, behind the broker's
//!   [`end::EndOffsets`] capability (exact, or a lower bound on the dev broker).
//! - [`settings`]: configuration defaults and checks every consuming service applies alike.

pub mod cadence;
pub mod client;
pub mod end;
pub mod health;
mod partition;
pub mod progress;
pub mod settings;
pub mod txn;

pub use health::Health;
pub use partition::{TopicPartition, topic_partitions};
