//! Progress monitor: measures every owned partition's lag against the broker's end offsets and
//! finds the partitions that have lag and made no committed progress for `stall_timeout` — a
//! consuming loop that is alive but stuck (a wedged transaction, a restore retried forever, an
//! open transaction of a dead producer holding the committed offsets). The admin server turns
//! `/healthz` and `/readyz` red while any partition is stalled.
//!
//! Lag is `end offset - committed offset` for every partition of the loop's assignment, read from
//! a client of its own (never the loop's: the loop must not block on metadata requests):
//!
//! - the committed offset is the group's, read from the broker (OffsetFetch), or, for a loop that
//!   commits elsewhere (the sink's database), the larger of that and the offset the loop published;
//!   a partition without one starts at its first offset (`auto.offset.reset=earliest`), so a
//!   partition being restored, or stuck before its first record, counts every record it holds;
//! - transaction markers take offsets that are never delivered: a partition whose end is a COMMIT
//!   or ABORT marker has `end - committed >= 1` with nothing to consume. So before a partition
//!   counts as lagging, a probe reads it from the committed offset (`read_committed`, like the
//!   loop): if it reaches the end offset without a record, the partition is caught up. The
//!   verdict is kept until the committed or end offset moves. (A lagging partition's probe ends
//!   at its first record: one small fetch per partition and measurement.)
//!
//! The dev broker (Tansu) can report an end offset below the real one (the base offset of the
//! last batch + 1): lag is then under-reported, never invented.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::health::Health;
use crate::partition::TopicPartition;

/// How often lag is measured at most (more often when `stall_timeout` is short).
const MAX_INTERVAL: Duration = Duration::from_secs(10);
const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Time allowed for each broker request of a measurement.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time a probe reads a partition looking for a record before the end offset.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The measured state of one owned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// Records between the committed offset and the end offset (0 when only transaction markers
    /// or records the loop cannot see are left). `None`: the end offset could not be read.
    pub lag: Option<i64>,
    /// Lag and no committed progress for `stall_timeout`.
    pub stalled: bool,
}

/// What the group has committed for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Committed {
    At(i64),
    /// Nothing committed yet.
    Nothing,
    /// The broker did not say (request failed, or offsets of an open transaction pending).
    Unknown,
}

/// What the monitor remembers of one owned partition between measurements.
#[derive(Debug)]
struct Watch {
    committed: Option<i64>,
    /// Last committed progress (or the last time the partition had nothing to do).
    progress_at: Instant,
    /// `(committed, end)` at which a probe found nothing to consume before the end offset.
    caught_up_at: Option<(i64, i64)>,
    /// Whether the last measurement found lag.
    lagging: bool,
}

/// Measures the owned partitions of one consumer group.
pub struct Monitor {
    /// A client with the group's `group.id`, to read its committed offsets. It never joins the
    /// group (no subscribe).
    group: BaseConsumer,
    /// A standalone reader for probes (assign only, no commits).
    probe: BaseConsumer,
    stall_timeout: Duration,
    watches: BTreeMap<TopicPartition, Watch>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("stall_timeout", &self.stall_timeout)
            .field("partitions", &self.watches.len())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// A monitor for the group of `group_client` (a group member's settings: `group.id`,
    /// `isolation.level=read_committed`).
    pub fn new(group_client: &ClientConfig, stall_timeout: Duration) -> KafkaResult<Self> {
        // Reading committed offsets must not wait for open transactions (`read_committed` asks
        // the broker for stable offsets only and retries while one is pending): the offsets of a
        // transaction that never ends are exactly what must show up as no progress.
        let group = group_client
            .clone()
            .set("isolation.level", "read_uncommitted")
            .create()?;
        let mut probe = group_client.clone();
        let group_id = probe.get("group.id").unwrap_or("switchboard").to_owned();
        probe
            .set("group.id", format!("{group_id}.progress"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50")
            // A probe needs one record, not a prefetch of the partition.
            .set("max.partition.fetch.bytes", "65536")
            .set("queued.max.messages.kbytes", "64")
            .set("queued.min.messages", "1");
        Ok(Self {
            group,
            probe: probe.create()?,
            stall_timeout,
            watches: BTreeMap::new(),
        })
    }

    /// Measures the partitions of `owned` at `now`. `published` holds the offsets a loop committed
    /// outside Kafka (the sink's database); empty for the others.
    pub fn measure(
        &mut self,
        owned: &BTreeSet<TopicPartition>,
        published: &BTreeMap<TopicPartition, i64>,
        now: Instant,
    ) -> BTreeMap<TopicPartition, Measured> {
        self.watches.retain(|task, _| owned.contains(task));
        let committed = self.committed(owned);
        let mut measured = BTreeMap::new();
        for task in owned {
            let from_broker = committed.get(task).copied().unwrap_or(Committed::Unknown);
            let result = self.measure_one(task, from_broker, published.get(task).copied(), now);
            measured.insert(task.clone(), result);
        }
        measured
    }

    fn measure_one(
        &mut self,
        task: &TopicPartition,
        from_broker: Committed,
        published: Option<i64>,
        now: Instant,
    ) -> Measured {
        let first = !self.watches.contains_key(task);
        let watch = self.watches.entry(task.clone()).or_insert_with(|| Watch {
            committed: None,
            progress_at: now,
            caught_up_at: None,
            lagging: false,
        });
        let committed = match (from_broker, published) {
            (Committed::At(offset), Some(local)) => Some(offset.max(local)),
            (Committed::At(offset), None) => Some(offset),
            (_, Some(local)) => Some(local),
            (Committed::Nothing, None) => None,
            // Unknown: as far as we know, where it was.
            (Committed::Unknown, None) => watch.committed,
        };
        // Progress is a move of the committed offset between two measurements.
        let progressed = !first && committed.is_some() && committed != watch.committed;
        watch.committed = committed;
        if progressed {
            watch.progress_at = now;
        }
        let Ok((low, high)) = self
            .group
            .fetch_watermarks(&task.topic, task.partition, REQUEST_TIMEOUT)
        else {
            // Cannot measure: the last verdict holds, and no progress is assumed.
            return Measured {
                lag: None,
                stalled: watch.lagging && now.duration_since(watch.progress_at) >= self.stall_timeout,
            };
        };
        // Below the first offset (retention removed them), the loop starts at the first offset.
        let start = committed.unwrap_or(low).max(low);
        let mut lag = (high - start).max(0);
        if lag > 0 {
            if watch.caught_up_at == Some((start, high)) {
                lag = 0;
            } else {
                watch.caught_up_at = None;
                if probe_finds_nothing(&self.probe, task, start, high) {
                    watch.caught_up_at = Some((start, high));
                    lag = 0;
                }
            }
        }
        if lag == 0 {
            watch.progress_at = now;
        }
        watch.lagging = lag > 0;
        Measured {
            lag: Some(lag),
            stalled: lag > 0 && now.duration_since(watch.progress_at) >= self.stall_timeout,
        }
    }

    /// The group's committed offsets of `owned`, from the broker.
    fn committed(&self, owned: &BTreeSet<TopicPartition>) -> BTreeMap<TopicPartition, Committed> {
        let mut list = TopicPartitionList::new();
        for task in owned {
            list.add_partition(&task.topic, task.partition);
        }
        let Ok(committed) = self.group.committed_offsets(list, REQUEST_TIMEOUT) else {
            return BTreeMap::new();
        };
        committed
            .elements()
            .iter()
            .map(|e| {
                let value = match (e.error(), e.offset()) {
                    (Err(_), _) => Committed::Unknown,
                    (Ok(()), Offset::Offset(offset)) => Committed::At(offset),
                    (Ok(()), _) => Committed::Nothing,
                };
                (TopicPartition::new(e.topic(), e.partition()), value)
            })
            .collect()
    }
}

/// Whether reading `task` from `start` (`read_committed`) reaches `end` without a record: what
/// lies between is transaction markers (or records of aborted transactions). `false` when a record
/// comes first or the end is not reached within [`PROBE_TIMEOUT`].
fn probe_finds_nothing(probe: &BaseConsumer, task: &TopicPartition, start: i64, end: i64) -> bool {
    let mut list = TopicPartitionList::new();
    if list
        .add_partition_offset(&task.topic, task.partition, Offset::Offset(start))
        .is_err()
        || probe.assign(&list).is_err()
    {
        return false;
    }
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let nothing = loop {
        match probe.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => break message.offset() >= end,
            Some(Err(_)) => break false,
            None => {
                let reached = probe.position().is_ok_and(|position| {
                    position
                        .elements()
                        .iter()
                        .any(|e| matches!(e.offset(), Offset::Offset(next) if next >= end))
                });
                if reached {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
            }
        }
    };
    let _ = probe.unassign();
    nothing
}

/// The measurement interval for `stall_timeout`: a quarter of it, between 200 ms and 10 s.
pub fn interval(stall_timeout: Duration) -> Duration {
    (stall_timeout / 4).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Measures `health`'s owned partitions every [`interval`] until `stop` is set: publishes the
/// number of stalled partitions in `health` and, when `metric` is set, each partition's lag.
/// Runs on a blocking thread of its own.
pub fn run(
    group_client: &ClientConfig,
    health: &Health,
    stop: &AtomicBool,
    stall_timeout: Duration,
    metric: Option<&'static str>,
) {
    let mut monitor = match Monitor::new(group_client, stall_timeout) {
        Ok(monitor) => monitor,
        Err(error) => {
            tracing::warn!(%error, "cannot create the progress monitor's clients; lag is not measured");
            return;
        }
    };
    let interval = interval(stall_timeout);
    let mut reported: BTreeSet<TopicPartition> = BTreeSet::new();
    let mut stalled_before = 0;
    while !stop.load(Ordering::Relaxed) {
        let owned = health
            .assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let published = health
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let measured = monitor.measure(&owned, &published, Instant::now());
        let stalled = measured.values().filter(|m| m.stalled).count();
        if let Some(metric) = metric {
            for (task, m) in &measured {
                if let Some(lag) = m.lag {
                    set_lag(metric, task, lag);
                }
            }
            // Partitions no longer owned: their lag is another instance's to report.
            for task in reported.difference(&owned) {
                set_lag(metric, task, 0);
            }
            reported = owned;
        }
        if stalled > 0 && stalled != stalled_before {
            let partitions: Vec<String> = measured
                .iter()
                .filter(|(_, m)| m.stalled)
                .map(|(task, _)| task.to_string())
                .collect();
            tracing::warn!(
                ?partitions,
                ?stall_timeout,
                "partitions have lag and no committed progress"
            );
        } else if stalled == 0 && stalled_before > 0 {
            tracing::info!("every owned partition is making progress again");
        }
        stalled_before = stalled;
        health.stalled.store(stalled, Ordering::Relaxed);
        let deadline = Instant::now() + interval;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(MIN_INTERVAL.min(interval));
        }
    }
}

/// Sets consumer lag gauge `name` (the processor's or the sink's) of `partition`.
fn set_lag(name: &'static str, partition: &TopicPartition, lag: i64) {
    metrics::gauge!(name, "topic" => partition.topic.clone(), "partition" => partition.partition.to_string())
        .set(lag as f64);
}
