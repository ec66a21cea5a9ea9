//! switchboard-processor's integration tests. Each test runs on a private Tansu broker (so that
//! no other test's processor group reads its raw records) and the shared schema registry named by
//! `SWITCHBOARD_TEST_REGISTRY`.

mod actions;
mod actions_faults;
mod console;
mod crash;
mod dlq;
mod encode;
mod flow;
mod harness;
mod observe;
mod progress;
mod registry_flap;
mod replay;
mod replay_faults;
mod sink;
mod state;
