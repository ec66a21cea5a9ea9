//! The sink's configuration: same conventions as every service (`SWITCHBOARD_CONFIG`, then
//! `SWITCHBOARD_<KEY>` env vars), validated once.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use switchboard_service::config::{ConfigError, duration};

use switchboard_service::config::KafkaProperties;

/// Env vars read as configuration keys (`SWITCHBOARD_` + the upper-cased key).
/// [`SinkConfig::attempts_retention`] by default: 30 days.
pub(crate) const DEFAULT_ATTEMPTS_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest retention accepted: shorter would empty the deliveries page while an operator
/// reads it.
const MIN_ATTEMPTS_RETENTION: Duration = Duration::from_secs(3600);

pub(crate) const ENV_KEYS: &[&str] = &[
    "kafka_bootstrap",
    "schema_registry_url",
    "sink_group_id",
    "database_url",
    "admin_listen",
    "api_token",
    "batch_max_records",
    "batch_interval",
    "session_timeout",
    "stall_timeout",
    "drain_timeout",
    "attempts_retention",
];

/// The sink's configuration. See the README for every key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    pub kafka_bootstrap: String,
    pub schema_registry_url: String,
    /// Consumer group of the sink instances (offsets live in the database, per group).
    pub sink_group_id: String,
    /// `sqlite://path.db` (embedded default) or `postgres://…`.
    pub database_url: String,
    /// Admin and API address: `/healthz`, `/readyz`, `/metrics` and the calls API.
    pub admin_listen: SocketAddr,
    /// When set, the calls API requires `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Most records in one database transaction.
    pub batch_max_records: usize,
    /// Longest time records wait for their database transaction.
    #[serde(deserialize_with = "duration")]
    pub batch_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub session_timeout: Duration,
    /// How long an owned partition may have lag without committed progress before `/healthz`
    /// and `/readyz` answer 503 (see the processor's `stall_timeout`).
    #[serde(deserialize_with = "duration")]
    pub stall_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// How long the actions' delivery attempts (the console's deliveries page) are kept; older
    /// ones are deleted in the background. `0` keeps them forever.
    #[serde(deserialize_with = "duration")]
    pub attempts_retention: Duration,
    pub kafka: KafkaProperties,
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL may carry a password, the token is a secret.
        f.debug_struct("SinkConfig")
            .field("kafka_bootstrap", &self.kafka_bootstrap)
            .field("sink_group_id", &self.sink_group_id)
            .field("database", &self.database_url.split(':').next())
            .field("admin_listen", &self.admin_listen)
            .field("api_token", &self.api_token.as_ref().map(|_| "**redacted**"))
            .field("batch_max_records", &self.batch_max_records)
            .field("batch_interval", &self.batch_interval)
            .field("attempts_retention", &self.attempts_retention)
            .finish_non_exhaustive()
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            kafka_bootstrap: switchboard_service::config::DEFAULT_KAFKA_BOOTSTRAP.into(),
            schema_registry_url: switchboard_service::config::DEFAULT_SCHEMA_REGISTRY_URL.into(),
            sink_group_id: "switchboard-sink".into(),
            database_url: "sqlite://switchboard.db".into(),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9091)),
            api_token: None,
            batch_max_records: 1_000,
            batch_interval: Duration::from_millis(100),
            session_timeout: switchboard_kafka::settings::DEFAULT_SESSION_TIMEOUT,
            stall_timeout: switchboard_kafka::settings::DEFAULT_STALL_TIMEOUT,
            drain_timeout: switchboard_service::config::DEFAULT_DRAIN_TIMEOUT,
            attempts_retention: DEFAULT_ATTEMPTS_RETENTION,
            kafka: KafkaProperties::default(),
        }
    }
}

impl SinkConfig {
    /// Loads the layered configuration and validates it.
    pub fn load() -> Result<Self, ConfigError> {
        switchboard_service::config::load::<SinkConfig>(ENV_KEYS)?.validate()
    }

    /// Checks every key; the error names the offending key.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        switchboard_kafka::settings::validate_endpoints(&self.kafka_bootstrap, &self.schema_registry_url)?;
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres")) {
            return Err(ConfigError::invalid(
                "database_url",
                "use sqlite://<path> or postgres://…",
            ));
        }
        if self.batch_max_records == 0 {
            return Err(ConfigError::invalid("batch_max_records", "must be at least 1"));
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&self.batch_interval) {
            return Err(ConfigError::invalid(
                "batch_interval",
                "must be between 1ms and 60s",
            ));
        }
        if !self.attempts_retention.is_zero() && self.attempts_retention < MIN_ATTEMPTS_RETENTION {
            return Err(ConfigError::invalid(
                "attempts_retention",
                "must be 0 (keep forever) or at least 1h",
            ));
        }
        switchboard_kafka::settings::validate_session_timeout(self.session_timeout)?;
        switchboard_kafka::settings::validate_stall_timeout(self.stall_timeout)?;
        self.api_token = self.api_token.filter(|token| !token.trim().is_empty());
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_but_the_tables_is_reachable_through_the_environment() {
        // Tables the README documents as file only.
        let file_only = ["kafka"];
        let missing = switchboard_service::config::keys_missing_from_env::<SinkConfig>(ENV_KEYS, &file_only);
        assert!(missing.is_empty(), "keys missing from ENV_KEYS: {missing:?}");
    }

    #[test]
    fn defaults_are_the_embedded_store_and_invalid_keys_are_named() {
        let config = SinkConfig::default().validate().unwrap();
        assert_eq!(config.database_url, "sqlite://switchboard.db");
        assert!(config.api_token.is_none());
        let err = SinkConfig {
            database_url: "mysql://x".into(),
            ..SinkConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("database_url"), "{err}");
        assert_eq!(config.attempts_retention, Duration::from_secs(30 * 24 * 3600));
        for (retention, valid) in [(0, true), (60, false), (3600, true)] {
            let result = SinkConfig {
                attempts_retention: Duration::from_secs(retention),
                ..SinkConfig::default()
            }
            .validate();
            assert_eq!(result.is_ok(), valid, "attempts_retention {retention}s");
        }
        let debug = format!(
            "{:?}",
            SinkConfig {
                api_token: Some("tok-123".into()),
                ..SinkConfig::default()
            }
        );
        assert!(!debug.contains("tok-123"), "{debug}");
    }
}
