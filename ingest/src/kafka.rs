//! Kafka plumbing for ingest: producer settings, topic creation, the metadata check.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::producer::Producer;
use switchboard_schemas::Source;

use crate::config::Config;

/// Client settings shared by the producer and the admin client: bootstrap plus pass-through
/// properties from `[kafka]` (SASL, TLS …).
fn base_config(config: &Config) -> ClientConfig {
    switchboard_kafka::client::base(&config.kafka_bootstrap, "switchboard-ingest", &config.kafka)
}

/// How long the producer holds a record for others to share its batch, unless `[kafka]` sets
/// `linger.ms`.
pub const LINGER_MS: &str = "2";

/// The durable, idempotent producer: `acks=all`, idempotence (no duplicates or reordering from
/// internal retries), lz4 compression, a short linger so that concurrent requests share batches
/// (a `[kafka]` `linger.ms` wins: it trades each 2xx's latency for fewer, larger batches), and a
/// delivery deadline equal to `publish_timeout`.
pub fn producer(config: &Config) -> Result<FutureProducer, KafkaError> {
    producer_config(config).create()
}

fn producer_config(config: &Config) -> ClientConfig {
    let timeout_ms = config.publish_timeout.as_millis().to_string();
    let mut client = base_config(config);
    // `queue.buffering.max.ms` is librdkafka's other name for it.
    if ["linger.ms", "queue.buffering.max.ms"]
        .iter()
        .all(|key| client.get(key).is_none())
    {
        client.set("linger.ms", LINGER_MS);
    }
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        // The Java client's partitioner, so that every client maps a phone id to the same partition.
        .set("partitioner", "murmur2_random")
        .set("batch.size", "1000000")
        .set("message.timeout.ms", &timeout_ms)
        .set("request.timeout.ms", &timeout_ms);
    client
}

/// Creates any missing raw topic with the configured partitions and replication.
pub async fn create_raw_topics(config: &Config) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base_config(config).create()?;
    let topics: Vec<NewTopic<'_>> = Source::ALL
        .iter()
        .map(|source| {
            NewTopic::new(
                source.raw_topic(),
                config.topic_partitions,
                TopicReplication::Fixed(config.topic_replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(topic) => tracing::info!(%topic, partitions = config.topic_partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code))
                    .inspect_err(|_| tracing::warn!(%topic, %code, "cannot create topic"));
            }
        }
    }
    Ok(())
}

/// Fetches cluster metadata through `producer`: the broker is reachable and answering.
pub async fn check_metadata(producer: &FutureProducer, timeout: Duration) -> Result<(), KafkaError> {
    // `fetch_metadata` blocks: run it off the async workers.
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout).map(|_| ()))
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_service::config::KafkaProperties;

    fn with_kafka(properties: &[(&str, &str)]) -> Config {
        let properties = properties.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config {
            kafka: KafkaProperties(properties.collect()),
            ..Config::default()
        }
    }

    #[test]
    fn the_linger_is_a_default_that_kafka_properties_override_and_durability_is_not() {
        let default = producer_config(&Config::default());
        assert_eq!(default.get("linger.ms"), Some(LINGER_MS));

        let tuned = producer_config(&with_kafka(&[("linger.ms", "5"), ("acks", "1")]));
        assert_eq!(tuned.get("linger.ms"), Some("5"));
        assert_eq!(tuned.get("acks"), Some("all"), "durability is not a tuning knob");
        assert_eq!(tuned.get("enable.idempotence"), Some("true"));

        let alias = producer_config(&with_kafka(&[("queue.buffering.max.ms", "7")]));
        assert_eq!(
            alias.get("linger.ms"),
            None,
            "librdkafka's alias is left to decide"
        );
        assert_eq!(alias.get("queue.buffering.max.ms"), Some("7"));
    }
}
