//! End-to-end tests against the broker and registry named by `SWITCHBOARD_TEST_KAFKA` and
//! `SWITCHBOARD_TEST_REGISTRY` (both set by `make test`).

mod chaos;
mod committed;
mod pipeline;
mod probe;
mod replays;
mod twilio_mixed;
