//! Client settings and topic creation shared by every service: the one [`base`] client every
//! Kafka client of switchboard starts from, consumer-group settings, topic creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use switchboard_service::config::KafkaProperties;

/// Longest time a fetch waits on the broker for new records (see [`group_member`]).
const FETCH_WAIT_MAX_MS: &str = "20";
/// How often a group member reads the cluster's metadata (see [`group_member`]).
const METADATA_REFRESH_MS: &str = "5000";

/// The settings every Kafka client of a service starts from: `bootstrap.servers`, `client.id`,
/// then the `[kafka]` pass-through properties (SASL, TLS …), which may override either.
pub fn base(bootstrap: &str, client_id: &str, properties: &KafkaProperties) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", bootstrap)
        .set("client.id", client_id);
    for (key, value) in &properties.0 {
        client.set(key, value);
    }
    client
}

/// The settings every consumer-group member of switchboard shares (processor and sink): reads
/// only committed records, starts from the earliest record without a committed position, and
/// leaves offset management to the application.
pub fn group_member(client: &mut ClientConfig, group_id: &str, session_timeout: Duration) {
    // librdkafka's default (500 ms) lets an idle partition's fetch wait half a second before new
    // records are seen: a webhook pipeline wants them in milliseconds. `[kafka]` may override.
    if client.get("fetch.wait.max.ms").is_none() {
        client.set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
    }
    // A subscribed topic that does not exist yet (a sink started before the processor created
    // the domain topics, a processor before ingest created the raw ones) is noticed, and joined,
    // at the next metadata refresh: librdkafka's default is every 5 minutes, and a sink that
    // subscribed while the processor was creating its topics stored nothing for over a minute in
    // the chaos suite. A metadata request every 5 s costs nothing. `[kafka]` may override.
    if client.get("topic.metadata.refresh.interval.ms").is_none() {
        client.set("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS);
    }
    client
        .set("group.id", group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", session_timeout.as_millis().to_string())
        .set(
            "heartbeat.interval.ms",
            (session_timeout.as_millis() / 6).max(100).to_string(),
        );
}

/// Creates those of `new_topics` that do not exist yet.
pub async fn create_missing(client: &ClientConfig, new_topics: &[NewTopic<'_>]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(new_topics, &options).await? {
        match result {
            Ok(topic) => tracing::info!(%topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                tracing::warn!(%topic, %code, "cannot create topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}
