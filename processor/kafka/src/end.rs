//! The true end of a partition, and bounded reads to it: the one place that knows whether a
//! broker's reported end offsets can be trusted.
//!
//! A bounded read (restoring a changelog, reading the DLQ, measuring a topic for the dashboard
//! or the debug endpoint, a replay) reads partitions up to the end they had when it started. Kafka
//! reports that end in ListOffsets(latest), librdkafka's high watermark; for a `read_committed`
//! client it is the last stable offset, the end of what such a client can read. Whether the
//! answer *is* the end is a property of the broker, [`EndOffsets`]:
//!
//! - [`EndOffsets::Exact`] (Apache Kafka, and Confluent, MSK, Redpanda alike): it is. One
//!   ListOffsets request per partition, and a read is done once its position reached it.
//! - [`EndOffsets::LowerBound`] (Tansu, the dev broker): it is not, in two ways.
//!   1. Its high watermark is the base offset of the last batch + 1, not the offset after the
//!      batch's last record: records past it may exist (and transaction markers take offsets).
//!   2. Its last stable offset is 0 while a transaction is open on the partition: a
//!      `read_committed` client then sees the partition as empty (the dashboard's per-topic
//!      rates alternated between 0 and everything since the topic's start; issue 17).
//!
//!   So there the end offsets are asked for with `read_uncommitted` (a lower bound of the end,
//!   never 0 for a partition with records), and a read to the end starts at most one offset
//!   before it ([`EndOffsets::last_start`]) and is done once its position is at or past it *and*
//!   a poll came back empty ([`Finish`]), or a grace period after that.
//!
//! The capability is probed, not configured: [`EndOffsets::probe`] reads the cluster id (one
//! metadata request, which librdkafka caches) and [`EndOffsets::of_cluster`] maps Tansu's
//! (`tansu_cluster`, the id `scripts/broker` and every Tansu started without `--cluster-id` has;
//! never an Apache Kafka cluster id, which is a base64 UUID) to `LowerBound`, everything else to
//! `Exact`. A Tansu started with another cluster id would be taken for an exact broker: the
//! workarounds would then be skipped, not the reads broken on a real Kafka.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use rdkafka::client::{Client, ClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A topic and partition, as bounded reads key them.
pub type Partition = (String, i32);

/// Tansu's default cluster id (`tansu broker --cluster-id`).
const TANSU_CLUSTER_ID: &str = "tansu_cluster";

/// Whether a broker's reported end offsets are the ends of its partitions (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOffsets {
    /// The reported end is the end.
    Exact,
    /// The reported end may be below the end; it is found by reading (Tansu).
    LowerBound,
}

impl EndOffsets {
    /// The capability of the cluster with id `cluster_id`.
    pub fn of_cluster(cluster_id: Option<&str>) -> Self {
        if cluster_id == Some(TANSU_CLUSTER_ID) {
            Self::LowerBound
        } else {
            Self::Exact
        }
    }

    /// The capability of the cluster `client` is connected to (one metadata request).
    pub fn probe<C: ClientContext>(client: &Client<C>, timeout: Duration) -> Self {
        Self::of_cluster(client.fetch_cluster_id(timeout).as_deref())
    }

    /// The latest offset a read that must reach the reported end `high` of a partition whose
    /// first offset is `low` may start at: `high` itself on an exact broker (nothing to read);
    /// one offset before it otherwise, so that the read sees the record (or marker) that moves
    /// its position past `high`.
    pub fn last_start(self, low: i64, high: i64) -> i64 {
        match self {
            Self::Exact => high.max(low),
            Self::LowerBound => (high - 1).max(low),
        }
    }

    /// Whether a record at `offset`, with timestamp `timestamp` (epoch milliseconds), is past the
    /// end `end` a read took when it started at `started_at`. On a broker that under-reports its
    /// ends, a record past `end` that was written before the read started was there all along.
    pub fn past_end(self, offset: i64, end: i64, timestamp: i64, started_at: i64) -> bool {
        match self {
            Self::Exact => offset >= end,
            Self::LowerBound => offset >= end && timestamp >= started_at,
        }
    }
}

/// What the targets of a [`Finish`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    /// Offsets known to be ends (ends found earlier, or the end of a range): reached means done.
    Known,
    /// Reported end offsets: on a [`EndOffsets::LowerBound`] broker, records may follow them.
    Reported,
}

/// When a bounded read is done: every partition's position reached its target and, when
/// records may lie past the targets, a poll came back empty (or `grace` passed after that).
#[derive(Debug)]
pub struct Finish {
    targets: BTreeMap<Partition, i64>,
    open: bool,
    grace: Option<Duration>,
    reached_at: Option<Instant>,
}

impl Finish {
    /// Done when every partition of `targets` reached its target (see [`Targets`]).
    pub fn new(capability: EndOffsets, targets: BTreeMap<Partition, i64>, kind: Targets) -> Self {
        Self {
            targets,
            open: capability == EndOffsets::LowerBound && kind == Targets::Reported,
            grace: None,
            reached_at: None,
        }
    }

    /// Stops `grace` after every target was reached even without an empty poll (a busy
    /// partition never gives one).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Whether the read is done, where a poll just returned nothing (`empty`) or a record, and
    /// `position` says where each partition is; the pure part of [`Finish::done`].
    pub fn done_at(
        &mut self,
        empty: bool,
        position: impl Fn(&str, i32) -> Option<i64>,
        now: Instant,
    ) -> bool {
        if self.reached_at.is_none()
            && self.targets.iter().all(|((topic, partition), target)| {
                position(topic, *partition).is_some_and(|at| at >= *target)
            })
        {
            self.reached_at = Some(now);
        }
        let Some(reached_at) = self.reached_at else {
            return false;
        };
        !self.open
            || empty
            || self
                .grace
                .is_some_and(|grace| now.duration_since(reached_at) >= grace)
    }

    /// Whether the read `consumer` does is done (see [`Finish::done_at`]).
    pub fn done(&mut self, consumer: &BaseConsumer, empty: bool) -> KafkaResult<bool> {
        let positions = consumer.position()?;
        Ok(self.done_at(
            empty,
            |topic, partition| match positions.find_partition(topic, partition)?.offset() {
                Offset::Offset(next) => Some(next),
                _ => None,
            },
            Instant::now(),
        ))
    }
}

/// How long a bounded read may take.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Fails at this instant.
    Until(Instant),
    /// Fails after this long without a record.
    Stall(Duration),
}

/// Why a bounded read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The read's [`Budget`] ran out.
    #[error("the read did not reach the end in time")]
    OutOfTime,
}

/// One bounded read: where each partition starts and ends, and how long it may take.
#[derive(Debug)]
pub struct Read {
    /// Partition -> (start, target). Partitions that start at or past their target are not read.
    pub spans: BTreeMap<Partition, (Offset, i64)>,
    pub targets: Targets,
    /// How long one poll waits before it counts as empty.
    pub poll: Duration,
    pub grace: Option<Duration>,
    pub budget: Budget,
}

/// A consumer without a group (partitions are assigned) that reads partitions to their ends,
/// with its broker's [`EndOffsets`].
pub struct EndReader {
    consumer: BaseConsumer,
    capability: EndOffsets,
    /// On a [`EndOffsets::LowerBound`] broker, a `read_uncommitted` client for the end offsets.
    ends: Option<BaseConsumer>,
}

impl std::fmt::Debug for EndReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EndReader({:?})", self.capability)
    }
}

impl EndReader {
    /// A reader with the settings of `client`; probes the broker's capability (waiting at most
    /// `timeout`).
    pub fn new(client: &ClientConfig, timeout: Duration) -> KafkaResult<Self> {
        let consumer: BaseConsumer = client.create()?;
        let capability = EndOffsets::probe(consumer.client(), timeout);
        let ends = match capability {
            EndOffsets::Exact => None,
            EndOffsets::LowerBound => Some(
                client
                    .clone()
                    .set("isolation.level", "read_uncommitted")
                    .create()?,
            ),
        };
        Ok(Self {
            consumer,
            capability,
            ends,
        })
    }

    /// The consumer the reads use.
    pub fn consumer(&self) -> &BaseConsumer {
        &self.consumer
    }

    pub fn capability(&self) -> EndOffsets {
        self.capability
    }

    /// A partition's first offset and its reported end: exact on an exact broker, a lower bound
    /// of the end otherwise (see the module docs).
    pub fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> KafkaResult<(i64, i64)> {
        self.ends
            .as_ref()
            .unwrap_or(&self.consumer)
            .fetch_watermarks(topic, partition, timeout)
    }

    /// The end of every partition of `watermarks` (`low..high`, from [`EndReader::watermarks`]):
    /// `high` on an exact broker; otherwise found by reading each non-empty partition from
    /// just before `high` (its last batch), each end then being past the last record read.
    pub fn ends(
        &self,
        watermarks: &BTreeMap<Partition, (i64, i64)>,
        poll: Duration,
        grace: Duration,
        budget: Budget,
    ) -> Result<BTreeMap<Partition, i64>, ReadError> {
        let mut ends: BTreeMap<Partition, i64> = watermarks
            .iter()
            .map(|(tp, &(low, high))| (tp.clone(), high.max(low)))
            .collect();
        if self.capability == EndOffsets::Exact {
            return Ok(ends);
        }
        let spans = watermarks
            .iter()
            .map(|(tp, &(low, high))| {
                (
                    tp.clone(),
                    (Offset::Offset(self.capability.last_start(low, high)), high),
                )
            })
            .collect();
        self.read(
            Read {
                spans,
                targets: Targets::Reported,
                poll,
                grace: Some(grace),
                budget,
            },
            |message| {
                let message = message?;
                let key = (message.topic().to_owned(), message.partition());
                if let Some(end) = ends.get_mut(&key) {
                    *end = (*end).max(message.offset() + 1);
                }
                Ok::<_, ReadError>(ControlFlow::Continue(()))
            },
        )?;
        Ok(ends)
    }

    /// Assigns the partitions of `read` and hands what each poll returns (a record or an error)
    /// to `each` until the read is done ([`Finish`]), `each` breaks or fails, or the budget runs
    /// out; then unassigns them.
    pub fn read<E: From<ReadError>>(
        &self,
        read: Read,
        mut each: impl FnMut(KafkaResult<&BorrowedMessage<'_>>) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E> {
        let spans: BTreeMap<Partition, (Offset, i64)> = read
            .spans
            .into_iter()
            .filter(|(_, (start, target))| !matches!(start, Offset::Offset(start) if start >= target))
            .collect();
        if spans.is_empty() {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::new();
        for ((topic, partition), (start, _)) in &spans {
            assignment
                .add_partition_offset(topic, *partition, *start)
                .map_err(ReadError::from)?;
        }
        self.consumer.assign(&assignment).map_err(ReadError::from)?;
        let targets = spans.into_iter().map(|(tp, (_, target))| (tp, target)).collect();
        let mut finish = Finish::new(self.capability, targets, read.targets);
        if let Some(grace) = read.grace {
            finish = finish.with_grace(grace);
        }
        let result = self.read_assigned(&mut finish, read.poll, read.budget, &mut each);
        let _ = self.consumer.unassign();
        result
    }

    fn read_assigned<E: From<ReadError>>(
        &self,
        finish: &mut Finish,
        poll: Duration,
        budget: Budget,
        each: &mut impl FnMut(KafkaResult<&BorrowedMessage<'_>>) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E> {
        let mut progress_at = Instant::now();
        loop {
            let out_of_time = match budget {
                Budget::Until(deadline) => Instant::now() >= deadline,
                Budget::Stall(stall) => progress_at.elapsed() >= stall,
            };
            if out_of_time {
                return Err(ReadError::OutOfTime.into());
            }
            let polled = self.consumer.poll(poll);
            let empty = polled.is_none();
            if let Some(polled) = polled {
                if polled.is_ok() {
                    progress_at = Instant::now();
                }
                if each(polled.as_ref().map_err(Clone::clone))?.is_break() {
                    return Ok(());
                }
            }
            if finish.done(&self.consumer, empty).map_err(ReadError::from)? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tansus_cluster_id_under_reports_its_ends() {
        assert_eq!(
            EndOffsets::of_cluster(Some("tansu_cluster")),
            EndOffsets::LowerBound
        );
        // Apache Kafka (a base64 UUID), Redpanda, none at all (a broker before Metadata v2).
        for id in [Some("MkU3OEVBNTcwNTJENDM2Qk"), Some("redpanda.4e2a9a1c"), None] {
            assert_eq!(EndOffsets::of_cluster(id), EndOffsets::Exact, "{id:?}");
        }
    }

    #[test]
    fn a_read_to_a_reported_end_starts_before_it_only_where_it_may_be_short() {
        assert_eq!(EndOffsets::Exact.last_start(10, 50), 50);
        assert_eq!(EndOffsets::LowerBound.last_start(10, 50), 49);
        // An empty partition: nothing before its first offset.
        assert_eq!(EndOffsets::LowerBound.last_start(10, 10), 10);
        assert_eq!(EndOffsets::Exact.last_start(10, 0), 10);
    }

    #[test]
    fn past_the_end_means_written_later_only_where_the_end_may_be_short() {
        // Offset 60 of a read that took end 50 at t=1000, written at t=900 (before) or 1100.
        assert!(EndOffsets::Exact.past_end(60, 50, 900, 1_000));
        assert!(!EndOffsets::LowerBound.past_end(60, 50, 900, 1_000));
        assert!(EndOffsets::LowerBound.past_end(60, 50, 1_100, 1_000));
        assert!(!EndOffsets::Exact.past_end(49, 50, 1_100, 1_000));
    }

    fn targets() -> BTreeMap<Partition, i64> {
        [(("t".to_owned(), 0), 5), (("t".to_owned(), 1), 8)].into()
    }

    #[test]
    fn a_read_to_known_or_exact_ends_is_done_when_every_position_reached_them() {
        let now = Instant::now();
        let at = |p0: Option<i64>, p1: Option<i64>| {
            move |_: &str, partition: i32| if partition == 0 { p0 } else { p1 }
        };
        for (capability, kind) in [
            (EndOffsets::Exact, Targets::Reported),
            (EndOffsets::Exact, Targets::Known),
            (EndOffsets::LowerBound, Targets::Known),
        ] {
            let mut finish = Finish::new(capability, targets(), kind);
            assert!(
                !finish.done_at(true, at(Some(5), None), now),
                "{capability:?} {kind:?}"
            );
            assert!(
                !finish.done_at(true, at(Some(5), Some(7)), now),
                "{capability:?} {kind:?}"
            );
            assert!(
                finish.done_at(false, at(Some(5), Some(9)), now),
                "{capability:?} {kind:?}"
            );
        }
    }

    #[test]
    fn a_read_to_reported_ends_of_a_lower_bound_broker_waits_for_an_empty_poll_or_the_grace() {
        let now = Instant::now();
        let reached = |_: &str, partition: i32| Some(if partition == 0 { 5 } else { 8 });
        let mut finish = Finish::new(EndOffsets::LowerBound, targets(), Targets::Reported);
        // Reached, but the poll brought a record: more may follow.
        assert!(!finish.done_at(false, reached, now));
        assert!(!finish.done_at(false, reached, now + Duration::from_secs(60)));
        assert!(finish.done_at(true, reached, now + Duration::from_secs(60)));

        let mut finish = Finish::new(EndOffsets::LowerBound, targets(), Targets::Reported)
            .with_grace(Duration::from_secs(1));
        assert!(!finish.done_at(false, reached, now));
        assert!(!finish.done_at(false, reached, now + Duration::from_millis(999)));
        assert!(finish.done_at(false, reached, now + Duration::from_secs(1)));
        // The grace counts from when the targets were first reached.
        let mut finish = Finish::new(EndOffsets::LowerBound, targets(), Targets::Reported)
            .with_grace(Duration::from_secs(1));
        assert!(!finish.done_at(false, |_, _| Some(0), now));
        assert!(!finish.done_at(false, reached, now + Duration::from_secs(5)));
        assert!(finish.done_at(false, reached, now + Duration::from_secs(6)));
    }
}
