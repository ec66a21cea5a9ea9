//! Kafka reads for the debug endpoint and the dashboard: topic extents, window starts by time,
//! and bounded reads of partition ranges. Blocking: call from a blocking thread.
//!
//! Ends: an extent's end is the true end of its partition when the extents were read, as
//! [`switchboard_kafka::end`] finds it (on the dev broker, whose reported ends can be short, or 0
//! while a transaction is open, by reading each partition's last batch). Every later read of
//! these extents therefore has known targets: it stops once its position reached them. A read
//! stops at the ends it was given: records appended meanwhile may or may not be seen.
//!
//! Counts: offsets count records exactly only in topics written without transactions (the raw
//! topics: ingest's producer is idempotent, not transactional). In the topics the processor and
//! the actions service write in transactions (domain topics, DLQ, retry topics), every transaction
//! also leaves a marker offset in each partition it wrote to, so their records are counted by
//! reading them ([`Reader::count`]), up to a bound; past it the offsets are an upper bound.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use switchboard_kafka::end::{Budget, EndReader, Read, ReadError, Targets};

use crate::config::Config;
use crate::kafka;

/// A topic partition.
pub(crate) type Partition = switchboard_kafka::end::Partition;

/// Timeout of each metadata request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one poll waits before counting as empty.
const POLL: Duration = Duration::from_millis(100);
/// After every partition reached its reported end, how long the read that finds the true ends
/// keeps polling for an empty poll before it stops anyway (a busy partition never gives one).
const GRACE: Duration = Duration::from_millis(1_000);

/// The offsets a partition holds: `low..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) low: i64,
    /// One past the last offset (see the module docs).
    pub(crate) end: i64,
}

/// A record read, owned, with what the observability routes need of it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Record timestamp, epoch milliseconds.
    pub(crate) timestamp: Option<i64>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    /// Headers whose value is UTF-8, in record order.
    pub(crate) headers: Vec<(String, String)>,
}

impl Record {
    pub(crate) fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .filter_map(|h| Some((h.key.to_owned(), std::str::from_utf8(h.value?).ok()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The last value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A consumer without a group (partitions are assigned), with the processor's client settings.
#[derive(Debug)]
pub(crate) struct Reader {
    reader: EndReader,
    deadline: Instant,
}

impl Reader {
    /// A reader whose every operation fails once `timeout` has passed.
    pub(crate) fn new(config: &Config, timeout: Duration) -> anyhow::Result<Self> {
        let reader = EndReader::new(&kafka::reader_config(config), timeout.min(METADATA_TIMEOUT))
            .context("creating a Kafka consumer")?;
        Ok(Self {
            reader,
            deadline: Instant::now() + timeout,
        })
    }

    /// Starts a new time budget (the sampler reuses one reader).
    pub(crate) fn renew(&mut self, timeout: Duration) {
        self.deadline = Instant::now() + timeout;
    }

    fn remaining(&self) -> anyhow::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(!left.is_zero(), "Kafka reads took too long");
        Ok(left.min(METADATA_TIMEOUT))
    }

    /// The partitions of every existing topic that is in `topics` or starts with `prefix`.
    pub(crate) fn partitions(
        &self,
        topics: &[&str],
        prefix: Option<&str>,
    ) -> anyhow::Result<BTreeMap<String, Vec<i32>>> {
        let metadata = self
            .reader
            .consumer()
            .fetch_metadata(None, self.remaining()?)
            .context("fetching the cluster metadata")?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .filter(|t| topics.contains(&t.name()) || prefix.is_some_and(|p| t.name().starts_with(p)))
            .map(|t| {
                (
                    t.name().to_owned(),
                    t.partitions().iter().map(|p| p.id()).collect(),
                )
            })
            .collect())
    }

    /// The extent of every partition of `topics`.
    pub(crate) fn extents(
        &self,
        topics: &BTreeMap<String, Vec<i32>>,
    ) -> anyhow::Result<BTreeMap<Partition, Extent>> {
        let mut watermarks = BTreeMap::new();
        for (topic, partitions) in topics {
            for &partition in partitions {
                let (low, high) = self
                    .reader
                    .watermarks(topic, partition, self.remaining()?)
                    .with_context(|| format!("fetching the watermarks of {topic}[{partition}]"))?;
                watermarks.insert((topic.clone(), partition), (low, high));
            }
        }
        let ends = self
            .reader
            .ends(&watermarks, POLL, GRACE, Budget::Until(self.deadline))
            .map_err(out_of_time)?;
        Ok(watermarks
            .into_iter()
            .map(|(tp, (low, _))| {
                let end = ends[&tp].max(low);
                (tp, Extent { low, end })
            })
            .collect())
    }

    /// Where each partition's records at or after `since_millis` start (`offsets_for_times`),
    /// clamped to its extent. A partition without such records starts at its end; one the
    /// broker gives no usable answer for starts at its low offset (Tansu answers 0 always, so
    /// there a window covers every retained record).
    pub(crate) fn window_starts(
        &self,
        extents: &BTreeMap<Partition, Extent>,
        since_millis: i64,
    ) -> anyhow::Result<BTreeMap<Partition, i64>> {
        let mut query = TopicPartitionList::new();
        for (topic, partition) in extents.keys() {
            query.add_partition_offset(topic, *partition, Offset::Offset(since_millis))?;
        }
        let mut starts: BTreeMap<Partition, i64> =
            extents.iter().map(|(tp, e)| (tp.clone(), e.low)).collect();
        if query.count() == 0 {
            return Ok(starts);
        }
        let answer = self
            .reader
            .consumer()
            .offsets_for_times(query, self.remaining()?)
            .context("looking up offsets by time")?;
        for element in answer.elements() {
            let tp = (element.topic().to_owned(), element.partition());
            let Some(extent) = extents.get(&tp) else {
                continue;
            };
            let start = match (element.error(), element.offset()) {
                (Ok(()), Offset::Offset(offset)) => offset.clamp(extent.low, extent.end),
                (Ok(()), Offset::End) => extent.end,
                _ => extent.low,
            };
            starts.insert(tp, start);
        }
        Ok(starts)
    }

    /// The records (not offsets: transaction markers take offsets too) in `ranges`
    /// (`start..end` per partition), per topic, when the ranges hold at most `limit` offsets in
    /// all; `None` (nothing read) when they hold more.
    pub(crate) fn count(
        &self,
        ranges: &BTreeMap<Partition, (i64, i64)>,
        limit: i64,
    ) -> anyhow::Result<Option<BTreeMap<String, u64>>> {
        let span: i64 = ranges.values().map(|(start, end)| (end - start).max(0)).sum();
        if span > limit {
            return Ok(None);
        }
        let mut counts: BTreeMap<String, u64> = ranges.keys().map(|(topic, _)| (topic.clone(), 0)).collect();
        self.read(ranges.clone(), |message| {
            let tp = (message.topic().to_owned(), message.partition());
            if ranges
                .get(&tp)
                .is_some_and(|(start, end)| (*start..*end).contains(&message.offset()))
            {
                *counts.entry(tp.0).or_default() += 1;
            }
            ControlFlow::Continue(())
        })?;
        Ok(Some(counts))
    }

    /// Hands every record of the ranges `start..target` (per partition; targets at most the
    /// ends of [`Reader::extents`]) to `each`, in partition order, until every partition's
    /// position reached its target, or until `each` breaks. Records past a target may be handed
    /// too.
    pub(crate) fn read(
        &self,
        ranges: BTreeMap<Partition, (i64, i64)>,
        mut each: impl FnMut(&BorrowedMessage<'_>) -> ControlFlow<()>,
    ) -> anyhow::Result<()> {
        let read = Read {
            spans: ranges
                .into_iter()
                .map(|(tp, (start, target))| (tp, (Offset::Offset(start), target)))
                .collect(),
            targets: Targets::Known,
            poll: POLL,
            grace: None,
            budget: Budget::Until(self.deadline),
        };
        self.reader
            .read(read, |polled| Ok::<_, ReadError>(each(polled?)))
            .map_err(out_of_time)
    }
}

/// A read error, "Kafka reads took too long" when the time budget ran out.
fn out_of_time(error: ReadError) -> anyhow::Error {
    match error {
        ReadError::OutOfTime => anyhow::anyhow!("Kafka reads took too long"),
        ReadError::Kafka(error) => anyhow::Error::new(error).context("reading records"),
    }
}
