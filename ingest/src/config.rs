//! Ingest's configuration: every key documented here, loaded from defaults, the TOML file named by
//! `SWITCHBOARD_CONFIG`, and `SWITCHBOARD_<KEY>` env vars (env wins), then validated once into
//! [`Settings`], which holds the parsed secrets the handlers use.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;
use switchboard_service::config::{ConfigError, comma_list, duration};
use url::Url;

use crate::envelope::ENVELOPE_OVERHEAD_BYTES;
use crate::tenants::Tenants;
use crate::verify::twilio_events::BasicCredentials;
use crate::verify::{SecretSet, SharedKeys};

/// Env vars read as configuration keys (`SWITCHBOARD_` + the upper-cased key).
pub const ENV_KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "kafka_bootstrap",
    "schema_registry_url",
    "public_url",
    "twilio_auth_tokens",
    "twilio_shared_keys",
    "twilio_events_basic_auth",
    "twilio_events_max_events",
    "stripe_webhook_secrets",
    "calendly_signing_keys",
    "stripe_tolerance",
    "calendly_tolerance",
    "standard_webhooks_tolerance",
    "calendly_phone_id_pointer",
    "create_topics",
    "topic_partitions",
    "topic_replication_factor",
    "max_body_bytes",
    "publish_timeout",
    "header_read_timeout",
    "body_read_timeout",
    "drain_timeout",
    "rate_limit_per_second",
    "rate_limit_burst",
    "envelope_drop_headers",
    "idle_timeout",
    "max_connections",
    "max_in_flight_body_bytes",
    "max_form_params",
    "replay_cache_entries",
    "replay_cache_ttl",
];

/// librdkafka's default `message.max.bytes`: the largest record the producer sends.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Secrets as configured: a list whose `Debug` never shows the values.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretStrings(#[serde(deserialize_with = "comma_list")] pub Vec<String>);

impl fmt::Debug for SecretStrings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} secret(s), redacted]", self.0.len())
    }
}

/// A generic webhook source declared in the config file (`[[generic]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericSource {
    /// Served at `POST /webhooks/generic/{name}`; lower-case letters, digits, `-` and `_`.
    pub name: String,
    /// `standard-webhooks` or `github`.
    pub scheme: GenericScheme,
    /// Signing secrets; several at once during a rotation. Standard Webhooks: `whsec_<base64>`.
    pub secrets: SecretStrings,
    /// JSON pointer to the phone id in the body, e.g. `/data/phone_id`; `unassigned` without it.
    #[serde(default)]
    pub phone_id_pointer: Option<String>,
}

/// How a generic source signs its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GenericScheme {
    StandardWebhooks,
    Github,
}

pub use switchboard_service::config::KafkaProperties;

/// Ingest's configuration as written. See the README for every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the webhook server binds (the provider routes only).
    pub listen: SocketAddr,
    /// Address of the admin server: `/healthz`, `/readyz`, `/metrics`. Loopback by default; never
    /// expose it where providers (or anyone else) can reach it.
    pub admin_listen: SocketAddr,
    /// Kafka bootstrap servers, comma-separated.
    pub kafka_bootstrap: String,
    /// Schema registry base URL.
    pub schema_registry_url: String,
    /// Public base URL providers call (`scheme://host[:port]`), which Twilio signs. Required when
    /// Twilio is enabled.
    pub public_url: Option<String>,
    pub twilio_auth_tokens: SecretStrings,
    /// Twilio SharedKey signing keys as `id:secret`.
    pub twilio_shared_keys: SecretStrings,
    /// `user:password` pairs an Event Streams sink URL carries (`https://user:password@host/…`);
    /// when set, `/webhooks/twilio-events` requires one of them in `Authorization: Basic`.
    pub twilio_events_basic_auth: SecretStrings,
    /// Most CloudEvents one Event Streams request may carry; more: 413, nothing published.
    pub twilio_events_max_events: usize,
    /// Event Streams phone ids per event type, TOML only: event type (exact, or a prefix ending in
    /// `*`) -> JSON pointer into the CloudEvent (e.g. `"/data/to"`). Used when the callback URL's
    /// `phone_id` and the `[tenants]` mapping give none; the longest matching pattern wins.
    pub twilio_events_phone_id_pointers: BTreeMap<String, String>,
    pub stripe_webhook_secrets: SecretStrings,
    pub calendly_signing_keys: SecretStrings,
    #[serde(deserialize_with = "duration")]
    pub stripe_tolerance: Duration,
    #[serde(deserialize_with = "duration")]
    pub calendly_tolerance: Duration,
    #[serde(deserialize_with = "duration")]
    pub standard_webhooks_tolerance: Duration,
    /// JSON pointer to the phone id in Calendly payloads. The default names a UTM field the
    /// invitee can edit in the booking link; `[tenants] calendly` wins over it.
    pub calendly_phone_id_pointer: String,
    /// Server-side tenant mapping (provider-set ids → phone id) that wins over payload fields.
    pub tenants: Tenants,
    /// Request headers (case-insensitive names) never stored in the envelope, on top of
    /// credentials and every scheme's signature header, which are always dropped.
    #[serde(deserialize_with = "comma_list")]
    pub envelope_drop_headers: Vec<String>,
    pub generic: Vec<GenericSource>,
    /// Create the raw topics at start-up when they are missing.
    pub create_topics: bool,
    pub topic_partitions: i32,
    pub topic_replication_factor: i32,
    /// Largest accepted request body. Its envelope must fit the producer's `message.max.bytes`
    /// (checked at start-up), so that every accepted body can be stored.
    pub max_body_bytes: usize,
    /// Deadline for Kafka to acknowledge a record; past it the request gets 503.
    #[serde(deserialize_with = "duration")]
    pub publish_timeout: Duration,
    /// A connection must send its first complete request head within this time of being accepted
    /// (covers idle sockets, protocol detection, the HTTP/2 preface and SETTINGS); later HTTP/1
    /// heads too. Also the HTTP/2 ping interval and ping deadline.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A connection with no request in progress (HTTP/1 keep-alive, HTTP/2 without streams) is
    /// closed after this time. Keep it above the idle timeout of a load balancer in front.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub body_read_timeout: Duration,
    /// Webhook connections served at once; further connections wait in the listen backlog. Lowered
    /// at start-up (with a warning) to what the open files limit leaves.
    pub max_connections: usize,
    /// Request body bytes held in memory at once across all requests (being read, verified or
    /// published); a request that would exceed it gets 503 with `Retry-After` at once. At least
    /// `max_body_bytes`.
    pub max_in_flight_body_bytes: usize,
    /// Most parameters a form body may have (Twilio sends fewer than 100); more gets 413 before
    /// any parsing or signature check.
    pub max_form_params: usize,
    /// Stored event ids remembered per instance, so that a replay of an event Kafka already
    /// acknowledged is answered 200 without a second record and without spending the source's
    /// rate limit; 0 turns it off.
    pub replay_cache_entries: usize,
    /// How long a stored event id is remembered.
    #[serde(deserialize_with = "duration")]
    pub replay_cache_ttl: Duration,
    /// How long SIGTERM waits for in-flight requests.
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// Requests per second accepted from each source; 0 turns rate limiting off.
    pub rate_limit_per_second: u32,
    /// Burst size of each source's token bucket; 0 means equal to `rate_limit_per_second`.
    pub rate_limit_burst: u32,
    pub kafka: KafkaProperties,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9095)),
            kafka_bootstrap: switchboard_service::config::DEFAULT_KAFKA_BOOTSTRAP.into(),
            schema_registry_url: switchboard_service::config::DEFAULT_SCHEMA_REGISTRY_URL.into(),
            public_url: None,
            twilio_auth_tokens: SecretStrings::default(),
            twilio_shared_keys: SecretStrings::default(),
            twilio_events_basic_auth: SecretStrings::default(),
            twilio_events_max_events: 1000,
            twilio_events_phone_id_pointers: BTreeMap::new(),
            stripe_webhook_secrets: SecretStrings::default(),
            calendly_signing_keys: SecretStrings::default(),
            stripe_tolerance: Duration::from_secs(300),
            calendly_tolerance: Duration::from_secs(180),
            standard_webhooks_tolerance: Duration::from_secs(300),
            calendly_phone_id_pointer: "/payload/tracking/utm_content".into(),
            tenants: Tenants::default(),
            envelope_drop_headers: Vec::new(),
            generic: Vec::new(),
            create_topics: true,
            topic_partitions: 6,
            topic_replication_factor: 1,
            // 900 KiB: with the envelope's overhead it fits librdkafka's default
            // `message.max.bytes` (1,000,000).
            max_body_bytes: 900 * 1024,
            publish_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_in_flight_body_bytes: 64 * 1024 * 1024,
            max_form_params: 1000,
            replay_cache_entries: 100_000,
            replay_cache_ttl: Duration::from_secs(3600),
            drain_timeout: switchboard_service::config::DEFAULT_DRAIN_TIMEOUT,
            rate_limit_per_second: 0,
            rate_limit_burst: 0,
            kafka: KafkaProperties::default(),
        }
    }
}

/// A generic source, validated.
#[derive(Debug)]
pub struct GenericSettings {
    pub name: String,
    pub scheme: GenericScheme,
    pub secrets: SecretSet,
    pub phone_id_pointer: Option<String>,
}

/// The configuration after validation: parsed secrets and URLs, and which sources are enabled.
#[derive(Debug)]
pub struct Settings {
    pub config: Config,
    pub public_url: Option<Url>,
    pub twilio_auth_tokens: SecretSet,
    pub twilio_shared_keys: SharedKeys,
    pub twilio_events_basic: BasicCredentials,
    pub stripe_secrets: SecretSet,
    pub calendly_keys: SecretSet,
    pub generic: BTreeMap<String, GenericSettings>,
    /// `None` when rate limiting is off.
    pub rate_limit: Option<(NonZeroU32, NonZeroU32)>,
    /// `envelope_drop_headers`, lower-cased.
    pub dropped_headers: Vec<String>,
}

impl Settings {
    /// Loads the layered configuration and validates it.
    pub fn load() -> Result<Self, ConfigError> {
        switchboard_service::config::load::<Config>(ENV_KEYS)?.validate()
    }

    pub fn twilio_enabled(&self) -> bool {
        !self.twilio_auth_tokens.is_empty() || !self.twilio_shared_keys.is_empty()
    }

    /// Names of the enabled sources, for the start-up log.
    pub fn enabled_sources(&self) -> Vec<String> {
        let mut enabled = Vec::new();
        if self.twilio_enabled() {
            enabled.push("twilio".to_owned());
            enabled.push("twilio-events".to_owned());
        }
        if !self.stripe_secrets.is_empty() {
            enabled.push("stripe".to_owned());
        }
        if !self.calendly_keys.is_empty() {
            enabled.push("calendly".to_owned());
        }
        enabled.extend(self.generic.keys().map(|name| format!("generic/{name}")));
        enabled
    }
}

impl Config {
    /// Checks every key and parses the secrets; the error names the offending key.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let secrets = |key: &str, values: &SecretStrings| {
            SecretSet::from_strings(&values.0).map_err(|e| ConfigError::invalid(key, e))
        };
        let twilio_auth_tokens = secrets("twilio_auth_tokens", &self.twilio_auth_tokens)?;
        let twilio_shared_keys = SharedKeys::from_strings(&self.twilio_shared_keys.0)
            .map_err(|e| ConfigError::invalid("twilio_shared_keys", e))?;
        let twilio_events_basic = BasicCredentials::from_strings(&self.twilio_events_basic_auth.0)
            .map_err(|e| ConfigError::invalid("twilio_events_basic_auth", e))?;
        if self.twilio_events_max_events == 0 {
            return Err(ConfigError::invalid(
                "twilio_events_max_events",
                "must be positive",
            ));
        }
        for (event_type, pointer) in &self.twilio_events_phone_id_pointers {
            if event_type.is_empty() || !(pointer.starts_with('/')) {
                return Err(ConfigError::invalid(
                    "twilio_events_phone_id_pointers",
                    "entries are `\"<event type or prefix*>\" = \"/json/pointer\"`",
                ));
            }
        }
        let stripe_secrets = secrets("stripe_webhook_secrets", &self.stripe_webhook_secrets)?;
        let calendly_keys = secrets("calendly_signing_keys", &self.calendly_signing_keys)?;

        let public_url = self.public_url.as_deref().map(parse_public_url).transpose()?;
        if (!twilio_auth_tokens.is_empty() || !twilio_shared_keys.is_empty()) && public_url.is_none() {
            return Err(ConfigError::invalid(
                "public_url",
                "required when Twilio is enabled: Twilio signs the public URL it calls",
            ));
        }

        let mut generic = BTreeMap::new();
        for (index, source) in self.generic.iter().enumerate() {
            let key = |field: &str| format!("generic[{index}].{field}");
            let valid_name = !source.name.is_empty()
                && source
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !valid_name {
                return Err(ConfigError::invalid(
                    &key("name"),
                    "use lower-case letters, digits, '-' and '_'",
                ));
            }
            let parsed = match source.scheme {
                GenericScheme::StandardWebhooks => SecretSet::from_standard_webhooks(&source.secrets.0),
                GenericScheme::Github => SecretSet::from_strings(&source.secrets.0),
            }
            .map_err(|e| ConfigError::invalid(&key("secrets"), e))?;
            if parsed.is_empty() {
                return Err(ConfigError::invalid(
                    &key("secrets"),
                    "at least one secret is required",
                ));
            }
            check_pointer(
                &key("phone_id_pointer"),
                source.phone_id_pointer.as_deref().unwrap_or(""),
            )?;
            let settings = GenericSettings {
                name: source.name.clone(),
                scheme: source.scheme,
                secrets: parsed,
                phone_id_pointer: source.phone_id_pointer.clone().filter(|p| !p.is_empty()),
            };
            if generic.insert(source.name.clone(), settings).is_some() {
                return Err(ConfigError::invalid(
                    &key("name"),
                    format!("{:?} is declared twice", source.name),
                ));
            }
        }
        check_pointer("calendly_phone_id_pointer", &self.calendly_phone_id_pointer)?;
        self.tenants
            .check()
            .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        let dropped_headers = self
            .envelope_drop_headers
            .iter()
            .map(|name| {
                http::HeaderName::from_bytes(name.trim().as_bytes())
                    .map(|name| name.as_str().to_owned())
                    .map_err(|_| {
                        ConfigError::invalid(
                            "envelope_drop_headers",
                            format!("{name:?} is not a header name"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tolerances = [
            ("stripe_tolerance", self.stripe_tolerance),
            ("calendly_tolerance", self.calendly_tolerance),
            ("standard_webhooks_tolerance", self.standard_webhooks_tolerance),
        ];
        for (key, tolerance) in tolerances {
            if tolerance < Duration::from_secs(1) {
                return Err(ConfigError::invalid(
                    key,
                    "must be at least 1s: the signed timestamp is the only replay protection of the scheme \
                     (Stripe's libraries read 0 as \"no check\"; ingest refuses it)",
                ));
            }
        }

        if self.topic_partitions < 1 {
            return Err(ConfigError::invalid("topic_partitions", "must be at least 1"));
        }
        if self.topic_replication_factor < 1 && self.topic_replication_factor != -1 {
            return Err(ConfigError::invalid(
                "topic_replication_factor",
                "must be at least 1, or -1 for the broker default",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::invalid("max_body_bytes", "must be positive"));
        }
        let message_max_bytes = self.message_max_bytes()?;
        if self.max_body_bytes.saturating_add(ENVELOPE_OVERHEAD_BYTES) > message_max_bytes {
            return Err(ConfigError::invalid(
                "max_body_bytes",
                format!(
                    "the envelope of a {} byte body (up to {} bytes with the URL, headers and ids) does not \
                     fit the producer's message.max.bytes ({message_max_bytes}): such bodies could never be \
                     stored; lower max_body_bytes to at most {} or raise [kafka] message.max.bytes (and the \
                     topics' max.message.bytes)",
                    self.max_body_bytes,
                    self.max_body_bytes.saturating_add(ENVELOPE_OVERHEAD_BYTES),
                    message_max_bytes.saturating_sub(ENVELOPE_OVERHEAD_BYTES),
                ),
            ));
        }
        self.check_limits()?;
        if !(Duration::from_millis(100)..=Duration::from_secs(14)).contains(&self.publish_timeout) {
            return Err(ConfigError::invalid(
                "publish_timeout",
                "must be between 100ms and 14s (providers such as Twilio give up after 15 s)",
            ));
        }
        let rate_limit = NonZeroU32::new(self.rate_limit_per_second).map(|per_second| {
            (
                per_second,
                NonZeroU32::new(self.rate_limit_burst).unwrap_or(per_second),
            )
        });
        if self.kafka_bootstrap.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka_bootstrap",
                "must name at least one broker",
            ));
        }
        Url::parse(&self.schema_registry_url).map_err(|e| ConfigError::invalid("schema_registry_url", e))?;

        Ok(Settings {
            config: self,
            public_url,
            twilio_auth_tokens,
            twilio_shared_keys,
            twilio_events_basic,
            stripe_secrets,
            calendly_keys,
            generic,
            rate_limit,
            dropped_headers,
        })
    }

    /// The producer's `message.max.bytes`: `[kafka]`'s value, else librdkafka's default.
    pub fn message_max_bytes(&self) -> Result<usize, ConfigError> {
        match self.kafka.0.get("message.max.bytes") {
            None => Ok(DEFAULT_MESSAGE_MAX_BYTES),
            Some(value) => value
                .trim()
                .parse()
                .map_err(|_| ConfigError::invalid("kafka.message.max.bytes", "must be a number of bytes")),
        }
    }
}

impl Config {
    /// The connection, memory and replay limits.
    fn check_limits(&self) -> Result<(), ConfigError> {
        let positive = [
            ("header_read_timeout", self.header_read_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("body_read_timeout", self.body_read_timeout.is_zero()),
            ("max_connections", self.max_connections == 0),
            ("max_form_params", self.max_form_params == 0),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::invalid(key, "must be positive"));
        }
        if self.max_in_flight_body_bytes < self.max_body_bytes {
            return Err(ConfigError::invalid(
                "max_in_flight_body_bytes",
                "must be at least max_body_bytes, or a largest body could never be accepted",
            ));
        }
        if self.replay_cache_entries > 0 && self.replay_cache_ttl.is_zero() {
            return Err(ConfigError::invalid(
                "replay_cache_ttl",
                "must be positive (set replay_cache_entries = 0 to turn the cache off)",
            ));
        }
        Ok(())
    }
}

fn parse_public_url(value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::invalid("public_url", e))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::invalid(
            "public_url",
            "must be http(s)://host[:port]",
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::invalid(
            "public_url",
            "must not have a path, query or fragment",
        ));
    }
    Ok(url)
}

fn check_pointer(key: &str, pointer: &str) -> Result<(), ConfigError> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            "a JSON pointer starts with '/', e.g. /data/phone_id",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_but_the_tables_is_reachable_through_the_environment() {
        // Tables the README documents as file only.
        let file_only = ["twilio_events_phone_id_pointers", "tenants", "generic", "kafka"];
        let missing = switchboard_service::config::keys_missing_from_env::<Config>(ENV_KEYS, &file_only);
        assert!(missing.is_empty(), "keys missing from ENV_KEYS: {missing:?}");
    }

    fn config(toml: &str) -> Result<Settings, String> {
        let config: Config = figment::Figment::new()
            .merge(<figment::providers::Toml as figment::providers::Format>::string(
                toml,
            ))
            .extract()
            .map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_serve_nothing() {
        let settings = config("").unwrap();
        assert!(settings.enabled_sources().is_empty());
        assert_eq!(settings.config.listen.port(), 8080);
        assert_eq!(settings.config.publish_timeout, Duration::from_secs(5));
        assert_eq!(settings.config.max_body_bytes, 900 * 1024);
        assert!(settings.rate_limit.is_none());
    }

    #[test]
    fn every_source_can_be_enabled() {
        let settings = config(
            r#"
            public_url = "https://hooks.example.com"
            twilio_auth_tokens = "tok1,tok2"
            twilio_shared_keys = ["k1:s1"]
            stripe_webhook_secrets = ["whsec_stripe"]
            calendly_signing_keys = "cal"
            rate_limit_per_second = 100
            [[generic]]
            name = "acme"
            scheme = "standard-webhooks"
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            phone_id_pointer = "/data/phone_id"
            [[generic]]
            name = "gh"
            scheme = "github"
            secrets = "s3cret"
            "#,
        )
        .unwrap();
        assert_eq!(
            settings.enabled_sources(),
            [
                "twilio",
                "twilio-events",
                "stripe",
                "calendly",
                "generic/acme",
                "generic/gh"
            ]
        );
        assert_eq!(settings.twilio_auth_tokens.len(), 2);
        assert_eq!(
            settings.rate_limit.map(|(r, b)| (r.get(), b.get())),
            Some((100, 100))
        );
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("twilio_auth_tokens = \"t\"", "public_url"),
            ("public_url = \"https://h.example.com/prefix\"", "public_url"),
            ("public_url = \"ftp://h.example.com\"", "public_url"),
            ("topic_partitions = 0", "topic_partitions"),
            ("publish_timeout = \"30s\"", "publish_timeout"),
            (
                "calendly_phone_id_pointer = \"payload\"",
                "calendly_phone_id_pointer",
            ),
            (
                "[[generic]]\nname = \"Bad Name\"\nscheme = \"github\"\nsecrets = [\"x\"]",
                "generic[0].name",
            ),
            (
                "[[generic]]\nname = \"a\"\nscheme = \"standard-webhooks\"\nsecrets = [\"whsec_***\"]",
                "generic[0].secrets",
            ),
            (
                "[[generic]]\nname = \"a\"\nscheme = \"github\"\nsecrets = []",
                "generic[0].secrets",
            ),
            (
                "[[generic]]\nname = \"a\"\nscheme = \"carrier-pigeon\"\nsecrets = [\"x\"]",
                "scheme",
            ),
            ("listen = \"not an address\"", "listen"),
            ("idle_timeout = \"0s\"", "idle_timeout"),
            ("max_connections = 0", "max_connections"),
            ("max_form_params = 0", "max_form_params"),
            (
                "twilio_events_basic_auth = \"no-password:\"",
                "twilio_events_basic_auth",
            ),
            ("twilio_events_max_events = 0", "twilio_events_max_events"),
            (
                "[twilio_events_phone_id_pointers]\n\"com.twilio.messaging.*\" = \"data/to\"",
                "twilio_events_phone_id_pointers",
            ),
            ("max_in_flight_body_bytes = 1000", "max_in_flight_body_bytes"),
            ("replay_cache_ttl = \"0s\"", "replay_cache_ttl"),
            ("unknown_key = 1", "unknown_key"),
        ];
        for (toml, key) in cases {
            let err = config(toml).expect_err(toml);
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn a_body_limit_whose_envelope_cannot_be_stored_is_refused() {
        // The old default: bodies between 1,000,000 and 1,048,576 bytes got 503 forever.
        let err = config("max_body_bytes = 1048576").unwrap_err();
        assert!(
            err.contains("max_body_bytes") && err.contains("message.max.bytes"),
            "{err}"
        );
        let largest = DEFAULT_MESSAGE_MAX_BYTES - ENVELOPE_OVERHEAD_BYTES;
        assert!(config(&format!("max_body_bytes = {largest}")).is_ok());
        assert!(config(&format!("max_body_bytes = {}", largest + 1)).is_err());
        // A producer allowed larger records takes a larger body.
        let raised = config("max_body_bytes = 1048576\n[kafka]\n\"message.max.bytes\" = \"2000000\"");
        assert!(raised.is_ok(), "{:?}", raised.err());
        let bad = config("[kafka]\n\"message.max.bytes\" = \"lots\"").unwrap_err();
        assert!(bad.contains("message.max.bytes"), "{bad}");
    }

    #[test]
    fn a_zero_tolerance_is_refused() {
        for key in [
            "stripe_tolerance",
            "calendly_tolerance",
            "standard_webhooks_tolerance",
        ] {
            let err = config(&format!("{key} = 0")).unwrap_err();
            assert!(err.contains(key), "{err}");
            assert!(config(&format!("{key} = 1")).is_ok());
        }
    }

    #[test]
    fn tenants_and_dropped_headers_are_read_from_the_file() {
        let settings = config(
            r#"
            envelope_drop_headers = "X-Proxy-Signature, x-other"
            [tenants]
            twilio_numbers = { "+15551230000" = "tenant-a" }
            stripe_accounts = { "acct_1" = "tenant-b" }
            calendly = { "https://api.calendly.com/event_types/E1" = "tenant-c" }
            "#,
        )
        .unwrap();
        assert_eq!(settings.dropped_headers, ["x-proxy-signature", "x-other"]);
        assert_eq!(settings.config.tenants.twilio_numbers["+15551230000"], "tenant-a");
        assert_eq!(settings.config.tenants.stripe_accounts["acct_1"], "tenant-b");
        let err = config("[tenants]\nstripe_accounts = { \"acct_1\" = \"\" }").unwrap_err();
        assert!(err.contains("tenants.stripe_accounts"), "{err}");
        let err = config("envelope_drop_headers = \"bad header\"").unwrap_err();
        assert!(err.contains("envelope_drop_headers"), "{err}");
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let settings = config(
            "public_url = \"https://h.example.com\"\ntwilio_auth_tokens = \"supersecret\"\n[kafka]\n\"sasl.password\" = \"hunter2\"",
        )
        .unwrap();
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("supersecret") && !debug.contains("hunter2"),
            "{debug}"
        );
        assert!(debug.contains("sasl.password"));
    }
}
