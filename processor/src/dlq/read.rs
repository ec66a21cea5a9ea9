//! Bounded reads: a topic from chosen start offsets up to the end it had when the read began,
//! with assigned partitions (no consumer group) and `read_committed`.
//!
//! The end is "position ≥ the high watermark taken at the start, and a poll came back empty" on
//! every partition, as in [`crate::restore`]: transaction markers take offsets but are never
//! delivered, and some brokers (Tansu) report the base offset of the last batch + 1 as the high
//! watermark, so records past it may still arrive. Start offsets are clamped to at most
//! `high - 1`, so every read partition has a record (or marker) to move its position past `high`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// A read that makes no progress for this long fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How much earlier than `--since` a time-based start looks, for clock skew between the
/// processor's `failed-at` and the record timestamp.
const SKEW_MARGIN_MILLIS: i64 = 60_000;

/// Where a bounded read starts in every partition.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    Beginning,
    /// The first record with a timestamp at or after these epoch milliseconds (less a margin for
    /// clock skew), found with `offsets_for_times`.
    Time(i64),
}

/// A topic opened for a bounded read.
pub(crate) struct BoundedRead {
    consumer: BaseConsumer,
    topic: String,
    /// Partition -> (start offset, high watermark at the start).
    spans: BTreeMap<i32, (i64, i64)>,
}

impl std::fmt::Debug for BoundedRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedRead")
            .field("topic", &self.topic)
            .field("spans", &self.spans)
            .finish_non_exhaustive()
    }
}

/// The partitions of `topic` (none when the topic does not exist).
pub(crate) fn partitions(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .with_context(|| format!("fetching the metadata of {topic}"))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// The offset a read of a partition with watermarks `low..high` starts at, given the offset a
/// time lookup returned (`None`: no record that late; `Some(None)`: the lookup gave nothing
/// usable, so read the whole partition).
pub(crate) fn clamp_start(low: i64, high: i64, found: Option<Option<i64>>) -> i64 {
    let last = (high - 1).max(low);
    match found {
        None => last,
        Some(None) => low,
        Some(Some(offset)) => offset.clamp(low, last),
    }
}

impl BoundedRead {
    /// Opens `topic` for a read from `start` to its current end. `None` when there is nothing to
    /// read (the topic is missing or empty).
    pub(crate) fn open(client: &ClientConfig, topic: &str, start: Start) -> anyhow::Result<Option<Self>> {
        let consumer: BaseConsumer = client.create().context("creating a Kafka consumer")?;
        let mut watermarks = BTreeMap::new();
        for partition in partitions(&consumer, topic)? {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                .with_context(|| format!("fetching the watermarks of {topic}[{partition}]"))?;
            if high > low {
                watermarks.insert(partition, (low, high));
            }
        }
        if watermarks.is_empty() {
            return Ok(None);
        }
        let mut found: BTreeMap<i32, Option<Option<i64>>> = BTreeMap::new();
        if let Start::Time(millis) = start {
            let mut query = TopicPartitionList::new();
            for partition in watermarks.keys() {
                query.add_partition_offset(topic, *partition, Offset::Offset(millis - SKEW_MARGIN_MILLIS))?;
            }
            match consumer.offsets_for_times(query, METADATA_TIMEOUT) {
                Ok(answer) => {
                    for element in answer.elements_for_topic(topic) {
                        let start = match (element.error(), element.offset()) {
                            (Ok(()), Offset::Offset(offset)) => Some(Some(offset)),
                            (Ok(()), Offset::End) => None,
                            _ => Some(None),
                        };
                        found.insert(element.partition(), start);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, topic, "offsets_for_times failed: reading from the beginning");
                }
            }
        }
        let spans = watermarks
            .into_iter()
            .map(|(partition, (low, high))| {
                let lookup = found.get(&partition).copied().unwrap_or(Some(None));
                (partition, (clamp_start(low, high, lookup), high))
            })
            .collect::<BTreeMap<_, _>>();
        tracing::debug!(
            topic,
            ?start,
            ?spans,
            "bounded read: partition -> (start, high watermark)"
        );
        Ok(Some(Self {
            consumer,
            topic: topic.to_owned(),
            spans,
        }))
    }

    /// How many offsets the read covers (an estimate of the records it will see).
    pub(crate) fn span(&self) -> u64 {
        self.spans
            .values()
            .map(|(start, high)| u64::try_from(high - start).unwrap_or(0))
            .sum()
    }

    /// Hands every record to `each` in partition order until the end, or until `each` breaks.
    pub(crate) fn for_each(
        self,
        mut each: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<ControlFlow<()>>,
    ) -> anyhow::Result<()> {
        let topic = self.topic.as_str();
        let mut assignment = TopicPartitionList::new();
        for (partition, (start, _)) in &self.spans {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(*start))?;
        }
        self.consumer
            .assign(&assignment)
            .with_context(|| format!("assigning the partitions of {topic}"))?;
        let mut last_progress = Instant::now();
        loop {
            anyhow::ensure!(
                last_progress.elapsed() < STALL_TIMEOUT,
                "reading {topic} made no progress for {STALL_TIMEOUT:?}"
            );
            match self.consumer.poll(Duration::from_millis(300)) {
                Some(Ok(message)) => {
                    last_progress = Instant::now();
                    if each(&message)?.is_break() {
                        return Ok(());
                    }
                }
                Some(Err(error)) => return Err(error).with_context(|| format!("reading {topic}")),
                None => {
                    let position = self.consumer.position()?;
                    let done = self.spans.iter().all(|(partition, (_, high))| {
                        position
                            .find_partition(topic, *partition)
                            .is_some_and(|e| matches!(e.offset(), Offset::Offset(next) if next >= *high))
                    });
                    if done {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stay_within_the_partition_and_before_its_reported_end() {
        // A time lookup inside the partition starts there.
        assert_eq!(clamp_start(10, 50, Some(Some(30))), 30);
        // Before the low watermark (deleted records): the low watermark.
        assert_eq!(clamp_start(10, 50, Some(Some(3))), 10);
        // At or past the reported end (Tansu underestimates it): the last reported offset, so the
        // position still moves past the high watermark.
        assert_eq!(clamp_start(10, 50, Some(Some(70))), 49);
        // No record that late: only the last reported offset.
        assert_eq!(clamp_start(10, 50, None), 49);
        // No usable answer: the whole partition.
        assert_eq!(clamp_start(10, 50, Some(None)), 10);
    }
}
