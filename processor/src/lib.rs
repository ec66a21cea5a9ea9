//! switchboard-processor: raw webhooks to exactly-once domain events.
