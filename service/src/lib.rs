//! What every switchboard service shares, so that each behaves the same way in operation:
//! layered configuration (TOML file named by `SWITCHBOARD_CONFIG`, overridden by `SWITCHBOARD_*`
//! env vars), `tracing` set-up (`SWITCHBOARD_LOG_FORMAT=json`), OpenTelemetry tracing with W3C
//! Trace Context, the Prometheus recorder, the HTTP server loop with read timeouts, graceful
//! shutdown on SIGTERM or Ctrl-C, the shared `/metrics` handler and JSON error body, and the
//! bearer-token check.

pub mod auth;
pub mod config;
pub mod http;
pub mod respond;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
