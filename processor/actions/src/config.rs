//! The actions dispatcher's configuration: same conventions as every service
//! (`SWITCHBOARD_CONFIG`, then `SWITCHBOARD_<KEY>` env vars), validated once. The `[[action]]`
//! tables come from the configuration file only.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use switchboard_service::config::{ConfigError, duration};

use crate::delivery::{ActionConfig, validate_all};
use switchboard_service::config::KafkaProperties;

/// Env vars read as configuration keys (`SWITCHBOARD_` + the upper-cased key).
pub(crate) const ENV_KEYS: &[&str] = &[
    "kafka_bootstrap",
    "schema_registry_url",
    "actions_group_prefix",
    "instance_id",
    "admin_listen",
    "commit_interval",
    "max_in_flight",
    "transaction_timeout",
    "create_topics",
    "retry_retention",
    "topic_partitions",
    "topic_replication_factor",
    "session_timeout",
    "stall_timeout",
    "drain_timeout",
];

/// Default [`ActionsConfig::retry_retention`]: 7 days, as the DLQ.
pub(crate) const DEFAULT_RETRY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The dispatcher's configuration. See the README for every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsConfig {
    pub kafka_bootstrap: String,
    pub schema_registry_url: String,
    /// Each action is its own consumer group, `<prefix>.<action name>`, so that one slow or
    /// failing target never holds back another.
    pub actions_group_prefix: String,
    /// Stable per instance (defaults to the host name): transactional ids are
    /// `<prefix>.<action>-<instance_id>`.
    pub instance_id: Option<String>,
    /// Admin address: `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen: SocketAddr,
    /// The retry ladder: one topic `switchboard.retry.<delay>` per step; a record that failed
    /// transiently after the last step goes to `switchboard.dlq`.
    #[serde(deserialize_with = "durations")]
    pub retry_delays: Vec<Duration>,
    /// Longest time a transaction stays open collecting outcomes.
    #[serde(deserialize_with = "duration")]
    pub commit_interval: Duration,
    /// Deliveries in flight at once per action (records are read in batches of this size and
    /// delivered concurrently).
    pub max_in_flight: usize,
    /// `transaction.timeout.ms` of every action's producer. Default 30 s: a transaction stays
    /// open while a batch is delivered, so it must exceed `commit_interval` plus twice the
    /// slowest action timeout (5 s by default); a dead instance's partitions stall this long on a
    /// broker that aborts its transaction (retries wait, deliveries are late, nothing is lost).
    #[serde(deserialize_with = "duration")]
    pub transaction_timeout: Duration,
    /// Create the retry topics and the DLQ when missing.
    pub create_topics: bool,
    /// `retention.ms` of the retry topics the dispatcher creates: how long a waiting retry
    /// survives while nothing consumes it (the actions service down, a target's group stopped).
    /// Default 7 days, the DLQ's (the broker default, 168 h, and the Helm chart's
    /// `topics.retentionMs`). At least 1 day and twice the longest retry delay. Existing topics
    /// keep their configuration (see the README to raise it).
    #[serde(deserialize_with = "duration")]
    pub retry_retention: Duration,
    pub topic_partitions: i32,
    pub topic_replication_factor: i32,
    #[serde(deserialize_with = "duration")]
    pub session_timeout: Duration,
    /// How long an owned partition may have lag without committed progress before `/healthz`
    /// and `/readyz` answer 503 (see the processor's `stall_timeout`).
    #[serde(deserialize_with = "duration")]
    pub stall_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// The outbound actions (`[[action]]` tables).
    #[serde(rename = "action")]
    pub actions: Vec<ActionConfig>,
    pub kafka: KafkaProperties,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        Self {
            kafka_bootstrap: switchboard_service::config::DEFAULT_KAFKA_BOOTSTRAP.into(),
            schema_registry_url: switchboard_service::config::DEFAULT_SCHEMA_REGISTRY_URL.into(),
            actions_group_prefix: "switchboard-actions".into(),
            instance_id: None,
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9097)),
            retry_delays: [1, 2, 4, 8, 16].into_iter().map(Duration::from_secs).collect(),
            commit_interval: Duration::from_millis(100),
            max_in_flight: 16,
            transaction_timeout: Duration::from_secs(30),
            create_topics: true,
            retry_retention: DEFAULT_RETRY_RETENTION,
            topic_partitions: 6,
            topic_replication_factor: 1,
            session_timeout: switchboard_kafka::settings::DEFAULT_SESSION_TIMEOUT,
            stall_timeout: switchboard_kafka::settings::DEFAULT_STALL_TIMEOUT,
            drain_timeout: switchboard_service::config::DEFAULT_DRAIN_TIMEOUT,
            actions: Vec::new(),
            kafka: KafkaProperties::default(),
        }
    }
}

fn durations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "duration")] Duration);
    let wrapped: Vec<Wrapped> = Vec::deserialize(deserializer)?;
    Ok(wrapped.into_iter().map(|Wrapped(d)| d).collect())
}

impl ActionsConfig {
    /// Loads the layered configuration and validates it.
    pub fn load() -> Result<Self, ConfigError> {
        switchboard_service::config::load::<ActionsConfig>(ENV_KEYS)?.validate()
    }

    /// Checks every key; the error names the offending key.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        switchboard_kafka::settings::validate_endpoints(&self.kafka_bootstrap, &self.schema_registry_url)?;
        switchboard_kafka::settings::validate_session_timeout(self.session_timeout)?;
        switchboard_kafka::settings::validate_stall_timeout(self.stall_timeout)?;
        if self.actions_group_prefix.trim().is_empty() {
            return Err(ConfigError::invalid("actions_group_prefix", "must not be empty"));
        }
        let instance_id = match self.instance_id.take().filter(|id| !id.trim().is_empty()) {
            Some(id) => id,
            None => switchboard_kafka::settings::hostname().ok_or_else(|| {
                ConfigError::invalid(
                    "instance_id",
                    "not set and the host name is unknown; set SWITCHBOARD_INSTANCE_ID",
                )
            })?,
        };
        self.instance_id = Some(instance_id);
        if self.retry_delays.is_empty() || self.retry_delays.len() > 20 {
            return Err(ConfigError::invalid("retry_delays", "must list 1 to 20 delays"));
        }
        if self
            .retry_delays
            .iter()
            .any(|d| d.is_zero() || *d > Duration::from_secs(7 * 24 * 3600))
        {
            return Err(ConfigError::invalid(
                "retry_delays",
                "each delay must be between 1ms and 7d",
            ));
        }
        let longest = self.retry_delays.iter().max().copied().unwrap_or_default();
        if self.retry_retention < Duration::from_secs(24 * 3600).max(longest * 2) {
            return Err(ConfigError::invalid(
                "retry_retention",
                "must be at least 1d and twice the longest retry delay: a waiting retry must outlive an outage of the actions service",
            ));
        }
        let mut topics: Vec<String> = self
            .retry_delays
            .iter()
            .map(|d| switchboard_schemas::topics::retry_topic(*d))
            .collect();
        topics.sort();
        topics.dedup();
        if topics.len() != self.retry_delays.len() {
            return Err(ConfigError::invalid("retry_delays", "delays must be distinct"));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(30)).contains(&self.commit_interval) {
            return Err(ConfigError::invalid(
                "commit_interval",
                "must be between 10ms and 30s",
            ));
        }
        if !(1..=1_000).contains(&self.max_in_flight) {
            return Err(ConfigError::invalid(
                "max_in_flight",
                "must be between 1 and 1000",
            ));
        }
        let slowest = self.actions.iter().map(|a| a.timeout).max().unwrap_or_default();
        if self.transaction_timeout <= (self.commit_interval * 10).max(self.commit_interval + slowest * 2) {
            return Err(ConfigError::invalid(
                "transaction_timeout",
                "must be well above commit_interval (10x) and the slowest action timeout (2x)",
            ));
        }
        switchboard_kafka::settings::validate_topic_settings(
            self.topic_partitions,
            self.topic_replication_factor,
        )?;
        validate_all(&self.actions)?;
        Ok(self)
    }

    /// This instance's stable id (validated configs always have one).
    pub fn instance_id(&self) -> &str {
        self.instance_id.as_deref().unwrap_or("switchboard-actions")
    }

    /// The consumer group of `action`.
    pub fn group_id(&self, action: &str) -> String {
        format!("{}.{action}", self.actions_group_prefix)
    }

    /// The transactional id of `action` on this instance.
    pub fn transactional_id(&self, action: &str) -> String {
        format!("{}-{}", self.group_id(action), self.instance_id())
    }

    /// The retry topics, first step first.
    pub fn retry_topics(&self) -> Vec<String> {
        self.retry_delays
            .iter()
            .map(|d| switchboard_schemas::topics::retry_topic(*d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_but_the_tables_is_reachable_through_the_environment() {
        // Tables and lists the README documents as file only.
        let file_only = ["retry_delays", "action", "kafka"];
        let missing =
            switchboard_service::config::keys_missing_from_env::<ActionsConfig>(ENV_KEYS, &file_only);
        assert!(missing.is_empty(), "keys missing from ENV_KEYS: {missing:?}");
    }

    #[test]
    fn defaults_are_the_documented_ladder() {
        let config = ActionsConfig {
            instance_id: Some("a-0".into()),
            ..ActionsConfig::default()
        }
        .validate()
        .unwrap();
        assert_eq!(
            config.retry_topics(),
            [
                "switchboard.retry.1s",
                "switchboard.retry.2s",
                "switchboard.retry.4s",
                "switchboard.retry.8s",
                "switchboard.retry.16s"
            ]
        );
        assert_eq!(config.retry_retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(config.group_id("app"), "switchboard-actions.app");
        assert_eq!(config.transactional_id("app"), "switchboard-actions.app-a-0");
    }

    #[test]
    fn invalid_keys_are_named() {
        let base = || ActionsConfig {
            instance_id: Some("a-0".into()),
            ..ActionsConfig::default()
        };
        let cases = [
            (
                ActionsConfig {
                    retry_delays: vec![],
                    ..base()
                },
                "retry_delays",
            ),
            (
                ActionsConfig {
                    retry_delays: vec![Duration::from_secs(1), Duration::from_secs(1)],
                    ..base()
                },
                "retry_delays",
            ),
            (
                ActionsConfig {
                    retry_retention: Duration::from_secs(3 * 3600),
                    ..base()
                },
                "retry_retention",
            ),
            (
                ActionsConfig {
                    retry_delays: vec![Duration::from_secs(24 * 3600)],
                    retry_retention: Duration::from_secs(36 * 3600),
                    ..base()
                },
                "retry_retention",
            ),
            (
                ActionsConfig {
                    max_in_flight: 0,
                    ..base()
                },
                "max_in_flight",
            ),
            (
                ActionsConfig {
                    commit_interval: Duration::from_secs(60),
                    ..base()
                },
                "commit_interval",
            ),
            (
                ActionsConfig {
                    transaction_timeout: Duration::from_secs(1),
                    ..base()
                },
                "transaction_timeout",
            ),
            (
                ActionsConfig {
                    kafka_bootstrap: " ".into(),
                    ..base()
                },
                "kafka_bootstrap",
            ),
        ];
        for (config, key) in cases {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error} should name {key}");
        }
    }
}
