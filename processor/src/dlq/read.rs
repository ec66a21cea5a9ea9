//! Bounded reads: a topic from chosen start offsets up to the end it had when the read began,
//! with assigned partitions (no consumer group) and `read_committed`.
//!
//! Where that end is, and when a read has reached it, is [`switchboard_kafka::end`]'s to say (the
//! dev broker under-reports its ends): start offsets are clamped to at most
//! [`EndOffsets::last_start`], so that on such a broker every read partition has a record (or
//! marker) to move its position past its reported end.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_kafka::end::{Budget, EndOffsets, EndReader, Read, ReadError, Targets};

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
#[derive(Debug)]
pub(crate) struct BoundedRead {
    reader: EndReader,
    topic: String,
    /// Partition -> (start offset, reported end at the start).
    spans: BTreeMap<i32, (i64, i64)>,
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

/// The offset a read of a partition with watermarks `low..high` on a broker with `capability`
/// starts at, given the offset a time lookup returned (`None`: no record that late;
/// `Some(None)`: the lookup gave nothing usable, so read the whole partition).
pub(crate) fn clamp_start(capability: EndOffsets, low: i64, high: i64, found: Option<Option<i64>>) -> i64 {
    let last = capability.last_start(low, high);
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
        let reader = EndReader::new(client, METADATA_TIMEOUT).context("creating a Kafka consumer")?;
        let consumer = reader.consumer();
        let mut watermarks = BTreeMap::new();
        for partition in partitions(consumer, topic)? {
            let (low, high) = reader
                .watermarks(topic, partition, METADATA_TIMEOUT)
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
                (
                    partition,
                    (clamp_start(reader.capability(), low, high, lookup), high),
                )
            })
            .collect::<BTreeMap<_, _>>();
        tracing::debug!(
            topic,
            ?start,
            ?spans,
            "bounded read: partition -> (start, reported end)"
        );
        Ok(Some(Self {
            reader,
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
        let read = Read {
            spans: self
                .spans
                .iter()
                .map(|(partition, (start, high))| {
                    ((topic.to_owned(), *partition), (Offset::Offset(*start), *high))
                })
                .collect(),
            targets: Targets::Reported,
            poll: Duration::from_millis(300),
            grace: None,
            budget: Budget::Stall(STALL_TIMEOUT),
        };
        let result = self.reader.read(read, |polled| match polled {
            Ok(message) => each(message),
            Err(error) => Err(error).with_context(|| format!("reading {topic}")),
        });
        match result {
            Err(error) if matches!(error.downcast_ref::<ReadError>(), Some(ReadError::OutOfTime)) => {
                anyhow::bail!("reading {topic} made no progress for {STALL_TIMEOUT:?}")
            }
            result => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stay_within_the_partition_and_before_its_reported_end() {
        // A time lookup inside the partition starts there.
        assert_eq!(clamp_start(EndOffsets::LowerBound, 10, 50, Some(Some(30))), 30);
        // Before the low watermark (deleted records): the low watermark.
        assert_eq!(clamp_start(EndOffsets::LowerBound, 10, 50, Some(Some(3))), 10);
        // At or past the reported end (Tansu underestimates it): the last reported offset, so the
        // position still moves past the high watermark.
        assert_eq!(clamp_start(EndOffsets::LowerBound, 10, 50, Some(Some(70))), 49);
        // No record that late: only the last reported offset.
        assert_eq!(clamp_start(EndOffsets::LowerBound, 10, 50, None), 49);
        // No usable answer: the whole partition.
        assert_eq!(clamp_start(EndOffsets::LowerBound, 10, 50, Some(None)), 10);
    }

    #[test]
    fn on_an_exact_broker_a_start_at_the_end_reads_nothing() {
        assert_eq!(clamp_start(EndOffsets::Exact, 10, 50, Some(Some(30))), 30);
        assert_eq!(clamp_start(EndOffsets::Exact, 10, 50, Some(Some(70))), 50);
        assert_eq!(clamp_start(EndOffsets::Exact, 10, 50, None), 50);
        assert_eq!(clamp_start(EndOffsets::Exact, 10, 50, Some(None)), 10);
    }
}
