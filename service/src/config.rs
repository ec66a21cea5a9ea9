//! Layered configuration: built-in defaults (serde defaults of the service's config type), then the
//! TOML file named by `SWITCHBOARD_CONFIG`, then `SWITCHBOARD_<KEY>` environment variables.

use std::collections::BTreeMap;
use std::fmt;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};

/// Env var naming the TOML configuration file.
pub const CONFIG_FILE_ENV: &str = "SWITCHBOARD_CONFIG";
/// Prefix of every env var that overrides a configuration key.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Default `kafka_bootstrap` of every service: a broker on this host.
pub const DEFAULT_KAFKA_BOOTSTRAP: &str = "127.0.0.1:9092";
/// Default `schema_registry_url` of every service: a registry on this host.
pub const DEFAULT_SCHEMA_REGISTRY_URL: &str = "http://127.0.0.1:8081";
/// Default `drain_timeout` of every service: how long in-flight requests may finish on SIGTERM.
pub const DEFAULT_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Why the configuration could not be loaded. The message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// An error found while validating an already-parsed configuration.
    pub fn invalid(key: &str, reason: impl fmt::Display) -> Self {
        ConfigError(format!("{key}: {reason}"))
    }
}

/// Loads `T` from the file named by `SWITCHBOARD_CONFIG` (if set) and the `SWITCHBOARD_*` env vars
/// whose lower-cased names (without the prefix) are in `env_keys`; env wins over the file.
pub fn load<T: DeserializeOwned>(env_keys: &[&str]) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Ok(path) = std::env::var(CONFIG_FILE_ENV) {
        if !std::path::Path::new(&path).is_file() {
            return Err(ConfigError(format!("{CONFIG_FILE_ENV}={path}: no such file")));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).only(env_keys));
    figment.extract().map_err(|e| ConfigError(describe(e)))
}

/// The keys of config struct `T` (its serde field names) that neither `env_keys` lists nor
/// `not_from_env` exempts (tables such as `[kafka]`, which env vars cannot express): each
/// service's test that every key is reachable through `SWITCHBOARD_*`.
pub fn keys_missing_from_env<T: DeserializeOwned>(
    env_keys: &[&str],
    not_from_env: &[&str],
) -> Vec<&'static str> {
    let mut fields = None;
    // Fails by design once the field list is captured; only the list matters.
    let _ = T::deserialize(FieldNames(&mut fields));
    let fields = fields.expect("the configuration type deserializes from a struct");
    fields
        .iter()
        .copied()
        .filter(|field| !env_keys.contains(field) && !not_from_env.contains(field))
        .collect()
}

/// A deserializer that records the field names of the struct asked of it.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = e
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_default();
            let kind = e.kind.to_string();
            match (key.is_empty(), origin.is_empty()) {
                (true, _) => kind,
                (false, true) => format!("key `{key}`: {kind}"),
                (false, false) => format!("key `{key}` (from {origin}): {kind}"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Deserializes a list given either as a TOML array or as one comma-separated string (the form
/// env vars take: `SWITCHBOARD_TWILIO_AUTH_TOKENS=a,b`). Empty items are dropped.
pub fn comma_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings or a comma-separated string")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        }

        // Env values that look like numbers arrive as numbers.
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
            Ok(vec![value.to_string()])
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(vec![value.to_string()])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<StringLike>()? {
                if !item.0.is_empty() {
                    items.push(item.0);
                }
            }
            Ok(items)
        }
    }

    deserializer.deserialize_any(ListVisitor)
}

/// A string that may have been parsed as a number on the way (env vars, TOML arrays of ids).
struct StringLike(String);

impl<'de> serde::Deserialize<'de> for StringLike {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StringLike;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringLike, E> {
                Ok(StringLike(v.trim().to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StringLike, E> {
                Ok(StringLike(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StringLike, E> {
                Ok(StringLike(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Deserializes a duration given as whole seconds (`5`) or with a unit (`"250ms"`, `"5s"`, `"2m"`).
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<std::time::Duration, D::Error> {
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = std::time::Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 5, \"5s\", \"250ms\", \"2m\" or \"7d\"")
        }

        fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Self::Value, E> {
            Ok(std::time::Duration::from_secs(secs))
        }

        fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Self::Value, E> {
            u64::try_from(secs)
                .map(std::time::Duration::from_secs)
                .map_err(|_| E::custom("negative duration"))
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            parse_duration(value).ok_or_else(|| E::custom(format!("{value:?} is not a duration")))
        }
    }

    deserializer.deserialize_any(DurationVisitor)
}

/// [`duration`] for an optional key (absent: `None`).
pub fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "duration")] std::time::Duration);
    Option::<Wrapped>::deserialize(deserializer).map(|wrapped| wrapped.map(|Wrapped(d)| d))
}

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"`, `"7d"` or a bare number of seconds.
pub fn parse_duration(value: &str) -> Option<std::time::Duration> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "ms" => number,
        "" | "s" => number.checked_mul(1_000)?,
        "m" => number.checked_mul(60_000)?,
        "h" => number.checked_mul(3_600_000)?,
        "d" => number.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(millis))
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        #[serde(deserialize_with = "comma_list")]
        tokens: Vec<String>,
        #[serde(deserialize_with = "duration")]
        timeout: Duration,
    }

    fn extract(figment: Figment) -> Result<Sample, String> {
        figment.extract::<Sample>().map_err(describe)
    }

    #[test]
    fn lists_come_as_arrays_or_comma_separated_strings() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "tokens = [\"a\", 12345]\ntimeout = \"250ms\"")?;
            let from_file = extract(Figment::new().merge(Toml::file("c.toml"))).unwrap();
            assert_eq!(from_file.tokens, ["a", "12345"]);
            assert_eq!(from_file.timeout, Duration::from_millis(250));

            jail.set_env("SWITCHBOARD_TOKENS", "x, y,,z");
            jail.set_env("SWITCHBOARD_TIMEOUT", "5");
            let merged = extract(
                Figment::new()
                    .merge(Toml::file("c.toml"))
                    .merge(Env::prefixed(ENV_PREFIX).only(&["tokens", "timeout"])),
            )
            .unwrap();
            assert_eq!(merged.tokens, ["x", "y", "z"], "env overrides the file");
            assert_eq!(merged.timeout, Duration::from_secs(5));
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_bad_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "tokens = \"a\"\ntimeout = \"soon\"")?;
            let err = extract(Figment::new().merge(Toml::file("c.toml"))).unwrap_err();
            assert!(err.contains("key `timeout`"), "{err}");
            Ok(())
        });
    }

    #[derive(Debug, serde::Deserialize)]
    struct WithKafka {
        #[serde(default)]
        kafka: KafkaProperties,
    }

    fn kafka_table(toml: &str) -> Result<KafkaProperties, String> {
        Figment::new()
            .merge(Toml::string(toml))
            .extract::<WithKafka>()
            .map(|c| c.kafka)
            .map_err(describe)
    }

    #[test]
    fn kafka_properties_refuse_cooperative_rebalancing() {
        let err =
            kafka_table("[kafka]\n\"partition.assignment.strategy\" = \"cooperative-sticky\"").unwrap_err();
        assert!(
            err.contains("partition.assignment.strategy") && err.contains("eager"),
            "{err}"
        );
        let err = kafka_table("[kafka]\n\"partition.assignment.strategy\" = \"range, Cooperative-Sticky\"")
            .unwrap_err();
        assert!(err.contains("partition.assignment.strategy"), "{err}");
        let kept = kafka_table("[kafka]\n\"partition.assignment.strategy\" = \"range,roundrobin\"").unwrap();
        assert_eq!(kept.0["partition.assignment.strategy"], "range,roundrobin");
    }

    #[test]
    fn kafka_properties_refuse_the_consumer_group_protocol() {
        let err = kafka_table("[kafka]\n\"group.protocol\" = \"consumer\"").unwrap_err();
        assert!(err.contains("group.protocol") && err.contains("classic"), "{err}");
        let kept =
            kafka_table("[kafka]\n\"group.protocol\" = \"classic\"\n\"security.protocol\" = \"SASL_SSL\"")
                .unwrap();
        assert_eq!(kept.0.len(), 2);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("5 fortnights"), None);
        assert_eq!(parse_duration(""), None);
    }
}

/// Extra librdkafka properties (the `[kafka]` table, e.g. `"security.protocol" = "SASL_SSL"`),
/// applied to every Kafka client of a service. `Debug` shows the keys only: values may be SASL
/// passwords or key material.
///
/// Properties that change the consumer group protocol are refused when the configuration is
/// loaded ([`KafkaProperties::check`]): every consumer of switchboard (processor, sink, actions)
/// relies on the eager rebalance protocol, where a rebalance revokes every partition and the next
/// assignment starts each one again from its committed offset. Under incremental
/// (`cooperative-sticky`) or KIP-848 (`group.protocol=consumer`) rebalances, kept partitions are
/// not rewound after an aborted transaction and the sink's assign/unassign is invalid: records
/// would be lost.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl TryFrom<BTreeMap<String, String>> for KafkaProperties {
    type Error = ConfigError;

    fn try_from(properties: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let properties = KafkaProperties(properties);
        properties.check()?;
        Ok(properties)
    }
}

impl KafkaProperties {
    /// Refuses the properties under which switchboard's consumers would lose records (see the
    /// type's documentation). The error names the key and the value (these two are never secret).
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(strategies) = self.0.get("partition.assignment.strategy")
            && strategies
                .split(',')
                .any(|s| s.trim().eq_ignore_ascii_case("cooperative-sticky"))
        {
            return Err(ConfigError::invalid(
                "kafka.\"partition.assignment.strategy\"",
                format!(
                    "{strategies:?} is not supported: switchboard's consumers need an eager strategy \
                     (range, roundrobin); incremental rebalances would lose records"
                ),
            ));
        }
        if let Some(protocol) = self.0.get("group.protocol")
            && !protocol.trim().eq_ignore_ascii_case("classic")
        {
            return Err(ConfigError::invalid(
                "kafka.\"group.protocol\"",
                format!(
                    "{protocol:?} is not supported: switchboard's consumers need the classic group \
                     protocol (its eager rebalances); the consumer protocol would lose records"
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}
