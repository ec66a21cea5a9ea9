//! Kafka plumbing for the processor: client settings and the topics it needs.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use switchboard_kafka::client::{create_missing, group_member};
use switchboard_schemas::{Source, topics};

use crate::config::{Config, Guarantee};
use crate::topology::Topology;

/// The raw topics the processor consumes.
pub(crate) fn raw_topics() -> Vec<&'static str> {
    Source::ALL.iter().map(|s| s.raw_topic()).collect()
}

fn base(config: &Config) -> ClientConfig {
    switchboard_kafka::client::base(
        &config.kafka_bootstrap,
        &format!("switchboard-processor-{}", config.instance_id()),
        &config.kafka,
    )
}

/// The group member: read_committed, no auto-commit (offsets are committed with the outputs).
pub(crate) fn consumer_config(config: &Config) -> ClientConfig {
    let mut client = base(config);
    group_member(&mut client, &config.group_id, config.session_timeout);
    client
}

/// The producer: transactional under exactly-once, idempotent otherwise.
pub(crate) fn producer_config(config: &Config) -> ClientConfig {
    let mut client = base(config);
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random");
    if config.processing_guarantee == Guarantee::ExactlyOnce {
        client.set("transactional.id", config.transactional_id()).set(
            "transaction.timeout.ms",
            config.transaction_timeout.as_millis().to_string(),
        );
    }
    client
}

/// A standalone reader (no group) for restoring state from changelogs, and for the operator
/// tools. A position outside the log (retention removed the segment being read) resets to the
/// earliest record, never to the end: librdkafka's default (`latest`) would silently skip every
/// record in between. (Restore asks for an error instead, see [`crate::restore`].)
pub(crate) fn reader_config(config: &Config) -> ClientConfig {
    let mut client = base(config);
    client
        .set("group.id", format!("{}-restore", config.group_id))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    client
}

/// Creates every topic the processor writes when missing: domain topics, the compacted
/// call-state and dedup changelogs (the latter also deleted after the dedup window), the DLQ.
pub(crate) async fn create_topics(config: &Config) -> Result<(), KafkaError> {
    create_output_topics(config, &Topology::live()).await
}

/// Creates the output topics of `topology` when missing, configured like the live ones.
pub(crate) async fn create_output_topics(config: &Config, topology: &Topology) -> Result<(), KafkaError> {
    let retention = config.longest_dedup_window().as_millis().to_string();
    let replication = || TopicReplication::Fixed(config.topic_replication_factor);
    let partitions = config.topic_partitions;
    let call_state = topology.topic(topics::CALL_STATE);
    let dedup = topology.topic(topics::DEDUP_CHANGELOG);
    let outputs = topology.outputs();
    let new_topics: Vec<NewTopic<'_>> = outputs
        .iter()
        .map(|topic| {
            let new = NewTopic::new(topic, partitions, replication());
            if *topic == call_state {
                new.set("cleanup.policy", "compact")
            } else if *topic == dedup {
                new.set("cleanup.policy", "compact,delete")
                    .set("retention.ms", &retention)
            } else {
                new
            }
        })
        .collect();
    create_missing(&base(config), &new_topics).await
}

/// Checks that each state changelog has at least as many partitions as every raw topic: state of
/// raw partition `p` lives in changelog partition `p`.
pub(crate) fn check_copartitioning(config: &Config) -> anyhow::Result<()> {
    let consumer: BaseConsumer = reader_config(config).create()?;
    let timeout = Duration::from_secs(10);
    let count = |topic: &str| -> anyhow::Result<usize> {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        Ok(metadata.topics().first().map_or(0, |t| t.partitions().len()))
    };
    let raw_max = raw_topics()
        .into_iter()
        .map(count)
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    for changelog in [topics::DEDUP_CHANGELOG, topics::CALL_STATE] {
        let partitions = count(changelog)?;
        anyhow::ensure!(
            partitions >= raw_max,
            "{changelog} has {partitions} partitions but a raw topic has {raw_max}: state changelogs must have at least as many \
             partitions as the raw topics (increase them with kafka-topics --alter)"
        );
    }
    Ok(())
}
