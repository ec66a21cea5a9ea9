//! The processor's configuration: defaults, the TOML file named by `SWITCHBOARD_CONFIG`, and
//! `SWITCHBOARD_<KEY>` env vars (env wins), validated once at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use switchboard_kafka::settings::{
    DEFAULT_STALL_TIMEOUT, hostname, validate_endpoints, validate_session_timeout, validate_stall_timeout,
    validate_topic_settings,
};
use switchboard_schemas::Source;
use switchboard_service::config::{ConfigError, duration, optional_duration};

/// Each source's default dedup window: how long its provider may redeliver an event, with room.
/// Twilio retries a callback within minutes (connection overrides) and an Event Streams batch for
/// up to 4 hours: 1 day. Stripe retries for up to 3 days: 4 days. Calendly retries for up to a
/// day: 2 days. Other senders (Standard Webhooks, GitHub-style) vary; Svix-style schedules run a
/// day or more and GitHub redelivers by hand within 3 days: 7 days.
pub fn default_dedup_window(source: Source) -> Duration {
    const DAY: u64 = 24 * 3600;
    Duration::from_secs(match source {
        Source::Twilio => DAY,
        Source::Stripe => 4 * DAY,
        Source::Calendly => 2 * DAY,
        Source::Generic => 7 * DAY,
    })
}

pub use switchboard_service::auth::AdminToken;

/// Env vars read as configuration keys (`SWITCHBOARD_` + the upper-cased key).
pub const ENV_KEYS: &[&str] = &[
    "kafka_bootstrap",
    "schema_registry_url",
    "group_id",
    "instance_id",
    "admin_listen",
    "processing_guarantee",
    "commit_interval",
    "max_batch_records",
    "transaction_timeout",
    "dedup_window",
    "dedup_window_twilio",
    "dedup_window_stripe",
    "dedup_window_calendly",
    "dedup_window_generic",
    "state_dir",
    "state_cache",
    "create_topics",
    "topic_partitions",
    "topic_replication_factor",
    "drain_timeout",
    "session_timeout",
    "stall_timeout",
    "admin_token",
    "actions_admin_url",
    "sink_api_url",
    "sink_api_token",
];

/// An optional http(s) URL setting: blank means unset.
fn http_url(key: &'static str, url: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(url) = url.filter(|url| !url.trim().is_empty()) else {
        return Ok(None);
    };
    let parsed = url::Url::parse(&url).map_err(|e| ConfigError::invalid(key, e))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(key, "must be an http(s) URL"));
    }
    Ok(Some(url))
}

/// How results and consumed offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Kafka transactions: outputs and offsets commit atomically (the default).
    ExactlyOnce,
    /// Idempotent producer, offsets committed after the outputs are acknowledged. Duplicates are
    /// possible after a crash; kept for comparison (benchmark) and for brokers without
    /// transactions.
    AtLeastOnce,
}

pub use switchboard_service::config::KafkaProperties;

/// The processor's configuration. See the README for every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka_bootstrap: String,
    pub schema_registry_url: String,
    /// Consumer group shared by every processor instance.
    pub group_id: String,
    /// Stable per instance: the transactional id is `<group_id>-<instance_id>`. Defaults to the
    /// host name, so a StatefulSet pod keeps its id across restarts (and fences its zombie).
    pub instance_id: Option<String>,
    /// Address of the admin HTTP server (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    pub processing_guarantee: Guarantee,
    /// Longest time a transaction stays open collecting records.
    #[serde(deserialize_with = "duration")]
    pub commit_interval: Duration,
    /// Most records in one transaction.
    pub max_batch_records: usize,
    /// `transaction.timeout.ms`: the broker aborts a transaction left open longer than this.
    /// Default 10 s (as Kafka Streams under exactly-once): when an instance dies mid-transaction,
    /// its partitions' new owner cannot read their committed offsets (unstable) until the broker
    /// aborts that transaction, so this is how long they stall. It must exceed the longest
    /// healthy transaction (`commit_interval` plus the commit itself) with room for a slow
    /// broker; a transaction that outlives it is aborted and processed again (never lost, never
    /// doubled). It also bounds librdkafka's delivery timeout for the outputs.
    #[serde(deserialize_with = "duration")]
    pub transaction_timeout: Duration,
    /// How long a provider event id is remembered for dedup, for every source without a window
    /// of its own below. Unset: each source's default ([`default_dedup_window`]).
    #[serde(deserialize_with = "optional_duration")]
    pub dedup_window: Option<Duration>,
    /// The dedup window of each source (see [`Config::dedup_window_of`]).
    #[serde(deserialize_with = "optional_duration")]
    pub dedup_window_twilio: Option<Duration>,
    #[serde(deserialize_with = "optional_duration")]
    pub dedup_window_stripe: Option<Duration>,
    #[serde(deserialize_with = "optional_duration")]
    pub dedup_window_calendly: Option<Duration>,
    #[serde(deserialize_with = "optional_duration")]
    pub dedup_window_generic: Option<Duration>,
    /// Directory of the local state store (the StatefulSet's volume). Losing it is safe: the
    /// state is restored from the changelog topics, which takes longer.
    pub state_dir: std::path::PathBuf,
    /// Cache of the state store, bytes: with the open transaction, what bounds the processor's
    /// memory for state.
    pub state_cache: usize,
    pub create_topics: bool,
    /// Partitions of created topics. Must match the raw topics' (state changelogs are
    /// co-partitioned with them).
    pub topic_partitions: i32,
    pub topic_replication_factor: i32,
    /// How long SIGTERM waits for the open transaction and the admin server.
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// Consumer group session timeout: how long the group waits for a silent member before
    /// moving its partitions. Some brokers (Tansu) also take about half of it to complete a join.
    #[serde(deserialize_with = "duration")]
    pub session_timeout: Duration,
    /// How long an owned partition may have lag without committed progress before `/healthz`
    /// and `/readyz` answer 503 (the liveness probe then restarts the instance).
    #[serde(deserialize_with = "duration")]
    pub stall_timeout: Duration,
    /// Bearer token of `/debug/webhooks` (refused while unset), of the console's reads (open
    /// while unset) and of its writes (redrive; the console is read-only while unset). `Debug`
    /// prints `[redacted]`.
    pub admin_token: Option<AdminToken>,
    /// Admin URL of the actions service (e.g. `http://actions:9097`), whose `/metrics` the
    /// dashboard scrapes for retry depth and circuit breakers.
    pub actions_admin_url: Option<String>,
    /// Base URL of the sink's calls API (e.g. `http://sink:9091`), which the console's search
    /// and call pages query.
    pub sink_api_url: Option<String>,
    /// The sink's `api_token`, sent as a bearer token to `sink_api_url`. `Debug` prints
    /// `[redacted]`.
    pub sink_api_token: Option<AdminToken>,
    pub kafka: KafkaProperties,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka_bootstrap: switchboard_service::config::DEFAULT_KAFKA_BOOTSTRAP.into(),
            schema_registry_url: switchboard_service::config::DEFAULT_SCHEMA_REGISTRY_URL.into(),
            group_id: "switchboard-processor".into(),
            instance_id: None,
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            processing_guarantee: Guarantee::ExactlyOnce,
            commit_interval: Duration::from_millis(100),
            max_batch_records: 5_000,
            transaction_timeout: Duration::from_secs(10),
            dedup_window: None,
            dedup_window_twilio: None,
            dedup_window_stripe: None,
            dedup_window_calendly: None,
            dedup_window_generic: None,
            state_dir: "state".into(),
            state_cache: 64 << 20,
            create_topics: true,
            topic_partitions: 6,
            topic_replication_factor: 1,
            drain_timeout: switchboard_service::config::DEFAULT_DRAIN_TIMEOUT,
            session_timeout: switchboard_kafka::settings::DEFAULT_SESSION_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            admin_token: None,
            actions_admin_url: None,
            sink_api_url: None,
            sink_api_token: None,
            kafka: KafkaProperties::default(),
        }
    }
}

impl Config {
    /// Loads the layered configuration and validates it.
    pub fn load() -> Result<Self, ConfigError> {
        switchboard_service::config::load::<Config>(ENV_KEYS)?.validate()
    }

    /// Checks every key; the error names the offending key.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        validate_endpoints(&self.kafka_bootstrap, &self.schema_registry_url)?;
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::invalid("group_id", "must not be empty"));
        }
        let instance_id = match self.instance_id.take().filter(|id| !id.trim().is_empty()) {
            Some(id) => id,
            None => hostname().ok_or_else(|| {
                ConfigError::invalid(
                    "instance_id",
                    "not set and the host name is unknown; set SWITCHBOARD_INSTANCE_ID",
                )
            })?,
        };
        self.instance_id = Some(instance_id);
        if !(Duration::from_millis(10)..=Duration::from_secs(30)).contains(&self.commit_interval) {
            return Err(ConfigError::invalid(
                "commit_interval",
                "must be between 10ms and 30s",
            ));
        }
        if self.transaction_timeout <= self.commit_interval * 2 {
            return Err(ConfigError::invalid(
                "transaction_timeout",
                "must be well above commit_interval",
            ));
        }
        if self.max_batch_records == 0 {
            return Err(ConfigError::invalid("max_batch_records", "must be at least 1"));
        }
        for (key, window) in [
            ("dedup_window", self.dedup_window),
            ("dedup_window_twilio", self.dedup_window_twilio),
            ("dedup_window_stripe", self.dedup_window_stripe),
            ("dedup_window_calendly", self.dedup_window_calendly),
            ("dedup_window_generic", self.dedup_window_generic),
        ] {
            if window.is_some_and(|w| w < Duration::from_secs(60)) {
                return Err(ConfigError::invalid(key, "must be at least 1m"));
            }
        }
        if self.state_cache < 1 << 20 {
            return Err(ConfigError::invalid(
                "state_cache",
                "must be at least 1 MiB (1048576)",
            ));
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("state_dir", "must not be empty"));
        }
        validate_session_timeout(self.session_timeout)?;
        validate_stall_timeout(self.stall_timeout)?;
        validate_topic_settings(self.topic_partitions, self.topic_replication_factor)?;
        self.admin_token = self.admin_token.filter(|token| !token.is_blank());
        self.sink_api_token = self.sink_api_token.filter(|token| !token.is_blank());
        self.actions_admin_url = http_url("actions_admin_url", self.actions_admin_url)?;
        self.sink_api_url = http_url("sink_api_url", self.sink_api_url)?;
        Ok(self)
    }

    /// This instance's stable id (validated configs always have one).
    /// How long `source`'s event ids are remembered: its own key, else `dedup_window`, else its
    /// default.
    pub fn dedup_window_of(&self, source: Source) -> Duration {
        let own = match source {
            Source::Twilio => self.dedup_window_twilio,
            Source::Stripe => self.dedup_window_stripe,
            Source::Calendly => self.dedup_window_calendly,
            Source::Generic => self.dedup_window_generic,
        };
        own.or(self.dedup_window)
            .unwrap_or_else(|| default_dedup_window(source))
    }

    /// The longest dedup window of any source: how long the dedup changelog keeps entries.
    pub fn longest_dedup_window(&self) -> Duration {
        Source::ALL
            .into_iter()
            .map(|source| self.dedup_window_of(source))
            .max()
            .expect("there are sources")
    }

    /// The dedup window of the raw topic `topic`'s source (the longest for a topic of no source).
    pub fn dedup_window_of_topic(&self, topic: &str) -> Duration {
        Source::ALL
            .into_iter()
            .find(|source| source.raw_topic() == topic)
            .map_or_else(
                || self.longest_dedup_window(),
                |source| self.dedup_window_of(source),
            )
    }

    pub fn instance_id(&self) -> &str {
        self.instance_id.as_deref().unwrap_or("switchboard-processor")
    }

    /// `<group_id>-<instance_id>`: stable per instance, unique in the group.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.instance_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_but_the_tables_is_reachable_through_the_environment() {
        // Tables the README documents as file only.
        let file_only = ["kafka"];
        let missing = switchboard_service::config::keys_missing_from_env::<Config>(ENV_KEYS, &file_only);
        assert!(missing.is_empty(), "keys missing from ENV_KEYS: {missing:?}");
    }

    fn config(toml: &str) -> Result<Config, String> {
        let config: Config = figment::Figment::new()
            .merge(<figment::providers::Toml as figment::providers::Format>::string(
                toml,
            ))
            .extract()
            .map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_kafka_streams_eos() {
        let config = config("instance_id = \"p-0\"").unwrap();
        assert_eq!(config.commit_interval, Duration::from_millis(100));
        assert_eq!(config.processing_guarantee, Guarantee::ExactlyOnce);
        assert_eq!(config.transactional_id(), "switchboard-processor-p-0");
        assert_eq!(
            config.dedup_window_of(Source::Twilio),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            config.dedup_window_of(Source::Stripe),
            Duration::from_secs(4 * 86_400)
        );
        assert_eq!(config.longest_dedup_window(), Duration::from_secs(604_800));
        assert_eq!(config.state_cache, 64 << 20);
        assert_eq!(config.admin_listen.port(), 9090);
        assert_eq!(config.stall_timeout, Duration::from_secs(300));
    }

    #[test]
    fn a_source_window_wins_over_dedup_window_which_wins_over_the_defaults() {
        let config =
            config("instance_id = \"p-0\"\ndedup_window = \"3d\"\ndedup_window_stripe = \"5d\"").unwrap();
        assert_eq!(
            config.dedup_window_of(Source::Stripe),
            Duration::from_secs(5 * 86_400)
        );
        assert_eq!(
            config.dedup_window_of(Source::Twilio),
            Duration::from_secs(3 * 86_400)
        );
        assert_eq!(
            config.dedup_window_of_topic("switchboard.raw.calendly"),
            Duration::from_secs(3 * 86_400)
        );
        assert_eq!(config.longest_dedup_window(), Duration::from_secs(5 * 86_400));
        assert!(self::config("instance_id = \"p-0\"\ndedup_window_twilio = \"30s\"").is_err());
    }

    #[test]
    fn admin_token_is_redacted_and_blank_means_unset() {
        let with_token = config("instance_id = \"p-0\"\nadmin_token = \"hunter2\"").unwrap();
        assert!(with_token.admin_token.is_some());
        assert!(!format!("{with_token:?}").contains("hunter2"));
        let blank = config("instance_id = \"p-0\"\nadmin_token = \"  \"").unwrap();
        assert!(blank.admin_token.is_none());
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("commit_interval = \"1h\"", "commit_interval"),
            (
                "commit_interval = \"1s\"\ntransaction_timeout = \"1s\"",
                "transaction_timeout",
            ),
            ("max_batch_records = 0", "max_batch_records"),
            ("dedup_window = 5", "dedup_window"),
            ("processing_guarantee = \"at-most-once\"", "processing_guarantee"),
            ("group_id = \" \"", "group_id"),
            ("schema_registry_url = \"::\"", "schema_registry_url"),
            ("actions_admin_url = \"ftp://x\"", "actions_admin_url"),
            ("sink_api_url = \"ftp://x\"", "sink_api_url"),
            ("stall_timeout = \"500ms\"", "stall_timeout"),
            (
                "[kafka]\n\"partition.assignment.strategy\" = \"cooperative-sticky\"",
                "partition.assignment.strategy",
            ),
            ("[kafka]\n\"group.protocol\" = \"consumer\"", "group.protocol"),
        ];
        for (toml, key) in cases {
            let err = config(&format!("instance_id = \"p-0\"\n{toml}")).expect_err(toml);
            assert!(err.contains(key), "{toml}: {err}");
        }
    }
}
