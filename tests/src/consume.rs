//! Reading topics back in tests: everything up to the current end, from the beginning.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Every record of `topic` present now (up to each partition's high watermark at the time of the
/// call), read with `isolation_level` (`read_committed` or `read_uncommitted`).
pub fn read_to_end(bootstrap: &str, topic: &str, isolation_level: &str) -> anyhow::Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", crate::unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation_level)
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        if high > low {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            remaining.insert(partition, high);
        }
    }
    if remaining.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&assignment)?;
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic} not read to its end within 60 s"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let partition = message.partition();
                if remaining
                    .get(&partition)
                    .is_some_and(|high| message.offset() + 1 >= *high)
                {
                    remaining.remove(&partition);
                }
                messages.push(message.detach());
            }
            Some(Err(error)) => return Err(error.into()),
            None => {
                // Transaction markers occupy offsets but are never delivered: stop at the position.
                let position = consumer.position()?;
                for element in position.elements() {
                    if let Offset::Offset(next) = element.offset()
                        && remaining
                            .get(&element.partition())
                            .is_some_and(|high| next >= *high)
                    {
                        remaining.remove(&element.partition());
                    }
                }
            }
        }
    }
    Ok(messages)
}
