//! Settings every consuming service of the processor binary shares (the processor, the sink, the
//! actions service), with their defaults and the checks each applies alike.

use std::time::Duration;

use switchboard_service::config::ConfigError;

/// Default `session_timeout` of every consumer-group member.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// Default `stall_timeout` of every consuming loop: above the transaction timeout (60 s), the
/// longest retry backoff (30 s) and the time a dead instance's open transaction holds its
/// partitions on Apache Kafka, so that only a loop that cannot recover by itself is restarted.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// `stall_timeout`, checked alike by the processor, the sink and the actions.
pub fn validate_stall_timeout(stall_timeout: Duration) -> Result<(), ConfigError> {
    if stall_timeout < Duration::from_secs(1) {
        return Err(ConfigError::invalid("stall_timeout", "must be at least 1s"));
    }
    Ok(())
}

/// This host's name (`HOSTNAME`, else `/etc/hostname`), if any.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// The broker list and the registry URL, checked alike by every processor command.
pub fn validate_endpoints(kafka_bootstrap: &str, schema_registry_url: &str) -> Result<(), ConfigError> {
    if kafka_bootstrap.trim().is_empty() {
        return Err(ConfigError::invalid(
            "kafka_bootstrap",
            "must name at least one broker",
        ));
    }
    url::Url::parse(schema_registry_url).map_err(|e| ConfigError::invalid("schema_registry_url", e))?;
    Ok(())
}

/// Partitions and replication factor of the topics a command creates.
pub fn validate_topic_settings(partitions: i32, replication_factor: i32) -> Result<(), ConfigError> {
    if partitions < 1 {
        return Err(ConfigError::invalid("topic_partitions", "must be at least 1"));
    }
    if replication_factor < 1 && replication_factor != -1 {
        return Err(ConfigError::invalid(
            "topic_replication_factor",
            "must be at least 1, or -1 for the broker default",
        ));
    }
    Ok(())
}

/// A consumer-group session timeout within what brokers accept.
pub fn validate_session_timeout(session_timeout: Duration) -> Result<(), ConfigError> {
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&session_timeout) {
        return Err(ConfigError::invalid(
            "session_timeout",
            "must be between 1s and 1h",
        ));
    }
    Ok(())
}
