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

/// The durable, idempotent producer: `acks=all`, idempotence (no duplicates or reordering from
/// internal retries), lz4 compression, a short linger so that concurrent requests share batches,
/// and a delivery deadline equal to `publish_timeout`.
pub fn producer(config: &Config) -> Result<FutureProducer, KafkaError> {
    let timeout_ms = config.publish_timeout.as_millis().to_string();
    base_config(config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        // The Java client's partitioner, so that every client maps a phone id to the same partition.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "2")
        .set("batch.size", "1000000")
        .set("message.timeout.ms", &timeout_ms)
        .set("request.timeout.ms", &timeout_ms)
        .create()
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
