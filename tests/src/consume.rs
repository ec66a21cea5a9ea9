//! Reading topics back in tests: everything up to the current end, from the beginning.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
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
    let mut remaining = std::collections::HashMap::new(); // partition -> high watermark
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
    // Read until a poll comes back empty with every partition past the high watermark taken at
    // the start. The watermark alone is not enough: transaction markers take offsets but are never
    // delivered, and Tansu reports the base offset of the last batch + 1 as the high watermark.
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic} not read to its end within 60 s"
        );
        match consumer.poll(Duration::from_millis(300)) {
            Some(Ok(message)) => messages.push(message.detach()),
            Some(Err(error)) => return Err(error.into()),
            None => {
                let position = consumer.position()?;
                let done = remaining.iter().all(|(partition, high)| {
                    position
                        .find_partition(topic, *partition)
                        .is_some_and(|e| matches!(e.offset(), Offset::Offset(next) if next >= *high))
                });
                if done {
                    return Ok(messages);
                }
            }
        }
    }
}
