//! The committed view of a topic, computed from its raw record batches, and the exactly-once
//! assertion every test of the suite reads output topics through.
//!
//! A transactional producer's records become visible to `read_committed` readers only when the
//! transaction's COMMIT marker is written; an ABORT marker discards them. Apache Kafka tells its
//! readers which ranges were aborted (the `aborted_transactions` of a Fetch response); the Tansu
//! dev broker never does, so librdkafka's `read_committed` consumer shows aborted records there.
//! Tansu does write the markers themselves (one-record control batches, one offset each, in every
//! partition the transaction wrote to, carrying the producer id), so the view is computed here
//! from the batches, per partition, in offset order:
//!
//! - a non-transactional batch is committed;
//! - a transactional data batch is committed iff the first control batch after it with the
//!   **same producer id** is a COMMIT, aborted if that marker is an ABORT, and still open while
//!   no marker follows;
//! - control batches are never records of the view.
//!
//! Markers are matched on the producer id, not the epoch: when a new instance of a
//! `transactional.id` fences an old one, the ABORT of the old one's open transaction carries the
//! *old* epoch on Tansu and the new (bumped) one on Apache Kafka.
//!
//! [`check_exactly_once`] always checks this view; where the broker holding the data hides
//! aborted records from `read_committed` readers (probed per bootstrap address by
//! [`crate::probe::capabilities_at`]: a real Kafka named by `SWITCHBOARD_TEST_KAFKA`, never a
//! [`crate::broker::PrivateBroker`] running Tansu), it additionally reads the topic with a real
//! `read_committed` consumer and requires exactly the same records.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, bail, ensure};
use rdkafka::Timestamp;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

use crate::fetch::{self, RawBatch};

/// A control record's key: version (`i16`, 0) and type (`i16`): 0 = ABORT, 1 = COMMIT.
const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// One record of the committed view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Headers in their order (a repeated key keeps its last value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The producer that wrote it (`-1` for a producer without an id).
    pub producer_id: i64,
    /// Written inside a (committed) transaction.
    pub transactional: bool,
    /// The record's timestamp (milliseconds since the epoch).
    pub timestamp: i64,
}

impl CommittedRecord {
    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The record as an rdkafka message of `topic`, for code written against rdkafka's types.
    pub fn to_message(&self, topic: &str) -> OwnedMessage {
        let headers = self
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key: key.as_str(),
                    value: value.as_deref(),
                })
            });
        OwnedMessage::new(
            self.value.clone(),
            self.key.clone(),
            topic.to_owned(),
            Timestamp::CreateTime(self.timestamp),
            self.partition,
            self.offset,
            Some(headers),
        )
    }
}

/// The committed view of a topic, with what was left out of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommittedView {
    /// The committed records, ordered by partition, then offset.
    pub records: Vec<CommittedRecord>,
    /// Records of aborted transactions seen (and left out).
    pub aborted: usize,
    /// Records of transactions with no marker yet (left out).
    pub open: usize,
    /// COMMIT markers seen.
    pub commits: usize,
    /// ABORT markers seen.
    pub aborts: usize,
}

impl CommittedView {
    /// The committed records' values.
    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.records.iter().filter_map(|r| r.value.as_deref())
    }

    fn merge(&mut self, other: CommittedView) {
        self.records.extend(other.records);
        self.aborted += other.aborted;
        self.open += other.open;
        self.commits += other.commits;
        self.aborts += other.aborts;
    }
}

/// The committed view of every partition of `topic` on the broker at `bootstrap`, read from
/// offset 0 (or the log start) to the end. Blocking: call it from a test thread or
/// `spawn_blocking` (see [`committed_view`] for async callers).
pub fn read_committed_view(bootstrap: &str, topic: &str) -> anyhow::Result<CommittedView> {
    let mut view = CommittedView::default();
    for source in fetch::partitions(bootstrap, topic)? {
        let partition = source.partition;
        let batches = fetch::read_partition(&source.leader, topic, partition, source.log_start)?;
        view.merge(committed_batches(partition, batches).with_context(|| format!("{topic}[{partition}]"))?);
    }
    Ok(view)
}

/// [`read_committed_view`] on a blocking thread.
pub async fn committed_view(bootstrap: &str, topic: &str) -> anyhow::Result<CommittedView> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_committed_view(&bootstrap, &topic)).await?
}

/// The transaction rule over one partition's batches, given in offset order.
pub fn committed_batches(partition: i32, batches: Vec<RawBatch>) -> anyhow::Result<CommittedView> {
    let mut view = CommittedView::default();
    // Data batches of each producer's transaction that has no marker yet, in offset order.
    let mut open: HashMap<i64, Vec<RawBatch>> = HashMap::new();
    let mut committed: Vec<RawBatch> = Vec::new();
    for batch in batches {
        if batch.control {
            let pending = open.remove(&batch.producer_id).unwrap_or_default();
            match control_type(&batch)? {
                COMMIT => {
                    view.commits += 1;
                    committed.extend(pending);
                }
                ABORT => {
                    view.aborts += 1;
                    view.aborted += pending.iter().map(|b| b.records.len()).sum::<usize>();
                }
                other => bail!("control batch at {} has unknown type {other}", batch.base_offset),
            }
        } else if batch.transactional {
            open.entry(batch.producer_id).or_default().push(batch);
        } else {
            committed.push(batch);
        }
    }
    view.open = open.values().flatten().map(|b| b.records.len()).sum();
    committed.sort_by_key(|b| b.base_offset);
    view.records = committed
        .into_iter()
        .flat_map(|batch| {
            let (producer_id, transactional) = (batch.producer_id, batch.transactional);
            batch.records.into_iter().map(move |r| CommittedRecord {
                partition,
                offset: r.offset,
                key: r.key.map(|k| k.to_vec()),
                value: r.value.map(|v| v.to_vec()),
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.map(|v| v.to_vec())))
                    .collect(),
                producer_id,
                transactional,
                timestamp: r.timestamp,
            })
        })
        .collect();
    Ok(view)
}

/// The marker type of a control batch (its one record's key).
fn control_type(batch: &RawBatch) -> anyhow::Result<i16> {
    let record = batch
        .records
        .first()
        .with_context(|| format!("control batch at {} has no record", batch.base_offset))?;
    let key = record
        .key
        .as_deref()
        .with_context(|| format!("control record at {} has no key", record.offset))?;
    ensure!(
        key.len() >= 4,
        "control record at {} has a {}-byte key",
        record.offset,
        key.len()
    );
    let version = i16::from_be_bytes([key[0], key[1]]);
    ensure!(
        version == 0,
        "control record at {} has key version {version}",
        record.offset
    );
    Ok(i16::from_be_bytes([key[2], key[3]]))
}

/// How a topic's committed view compares with the events that must be in it exactly once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExactlyOnce {
    pub topic: String,
    /// Records in the committed view.
    pub committed: usize,
    /// Records of aborted transactions seen in the log and left out.
    pub aborted_seen: usize,
    /// Records of transactions still open (no marker yet), left out.
    pub open: usize,
    /// Extra copies of expected ids (a record seen twice counts 1).
    pub duplicates: usize,
    /// Expected ids absent from the committed view.
    pub lost: usize,
    /// Committed records whose id was not expected (each copy counts).
    pub unexpected: usize,
    /// Records a real `read_committed` consumer returned, where the broker hides aborted records
    /// and the two were compared (they must be the same records); `None` on a broker without that
    /// filtering (Tansu).
    pub read_committed: Option<usize>,
}

impl ExactlyOnce {
    /// Every expected id exactly once, nothing else.
    pub fn holds(&self) -> bool {
        self.duplicates == 0 && self.lost == 0 && self.unexpected == 0
    }
}

impl std::fmt::Display for ExactlyOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: committed records {} / records of aborted transactions seen {} / open {} / duplicates {} / lost {} / unexpected {}",
            self.topic,
            self.committed,
            self.aborted_seen,
            self.open,
            self.duplicates,
            self.lost,
            self.unexpected
        )?;
        match self.read_committed {
            Some(n) => write!(f, " / read_committed consumer agrees ({n} records)"),
            None => write!(
                f,
                " / no read_committed comparison (the broker shows aborted records)"
            ),
        }
    }
}

/// Reads the committed view of `topic` and counts, by the id `id_of` gives each record, how it
/// holds `expected`. Where the broker at `bootstrap` hides aborted records from `read_committed`
/// readers, also reads the topic with a real `read_committed` consumer and fails unless it
/// returns exactly the committed view's records (partition and offset).
pub async fn check_exactly_once(
    bootstrap: &str,
    topic: &str,
    expected: impl IntoIterator<Item = String>,
    id_of: impl AsyncFn(&CommittedRecord) -> anyhow::Result<String>,
) -> anyhow::Result<(CommittedView, ExactlyOnce)> {
    let (view, read_committed) = verified_view(bootstrap, topic).await?;
    let mut ids = Vec::with_capacity(view.records.len());
    for record in &view.records {
        ids.push(
            id_of(record)
                .await
                .with_context(|| format!("{topic}[{}]@{}", record.partition, record.offset))?,
        );
    }
    let mut report = ExactlyOnce::count(topic, &view, ids, expected);
    report.read_committed = read_committed;
    Ok((view, report))
}

/// The committed view of `topic`, and — where the broker at `bootstrap` hides aborted records
/// from `read_committed` readers — the number of records a real `read_committed` consumer
/// returned, after checking that they are exactly the view's records (partition and offset).
pub async fn verified_view(bootstrap: &str, topic: &str) -> anyhow::Result<(CommittedView, Option<usize>)> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_verified_view(&bootstrap, &topic)).await?
}

/// [`verified_view`], blocking.
pub fn read_verified_view(bootstrap: &str, topic: &str) -> anyhow::Result<(CommittedView, Option<usize>)> {
    let view = read_committed_view(bootstrap, topic)?;
    if !crate::probe::capabilities_at(bootstrap)?.hides_aborted {
        return Ok((view, None));
    }
    let computed: BTreeSet<(i32, i64)> = view.records.iter().map(|r| (r.partition, r.offset)).collect();
    let seen = compare_with_read_committed(bootstrap, topic, &computed)?;
    Ok((view, Some(seen)))
}

/// The committed records of `topic` as rdkafka messages (partition, then offset order), checked
/// against a real `read_committed` consumer where the broker allows ([`verified_view`]).
/// Blocking: for tests written against `consume::read_to_end`'s messages.
pub fn read_committed_messages(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<OwnedMessage>> {
    let (view, _) = read_verified_view(bootstrap, topic)?;
    Ok(view.records.iter().map(|r| r.to_message(topic)).collect())
}

/// [`read_committed_messages`] on a blocking thread.
pub async fn committed_messages(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<OwnedMessage>> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_committed_messages(&bootstrap, &topic)).await?
}

impl ExactlyOnce {
    /// Counts `ids` (one per record of `view`, in its order) against `expected`.
    pub fn count(
        topic: &str,
        view: &CommittedView,
        ids: impl IntoIterator<Item = String>,
        expected: impl IntoIterator<Item = String>,
    ) -> Self {
        let expected: BTreeSet<String> = expected.into_iter().collect();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for id in ids {
            *counts.entry(id).or_default() += 1;
        }
        let mut report = ExactlyOnce {
            topic: topic.to_owned(),
            committed: view.records.len(),
            aborted_seen: view.aborted,
            open: view.open,
            lost: expected.iter().filter(|id| !counts.contains_key(*id)).count(),
            ..ExactlyOnce::default()
        };
        for (id, n) in &counts {
            if expected.contains(id) {
                report.duplicates += n - 1;
            } else {
                report.unexpected += n;
            }
        }
        report
    }
}

/// Fails unless a real `read_committed` consumer returns exactly the `computed` records
/// (partition, offset). Blocking.
fn compare_with_read_committed(
    bootstrap: &str,
    topic: &str,
    computed: &BTreeSet<(i32, i64)>,
) -> anyhow::Result<usize> {
    use rdkafka::Message;
    let seen: BTreeSet<(i32, i64)> = crate::consume::read_to_end(bootstrap, topic, "read_committed")?
        .iter()
        .map(|m| (m.partition(), m.offset()))
        .collect();
    let only_consumer: Vec<_> = seen.difference(computed).take(10).collect();
    let only_view: Vec<_> = computed.difference(&seen).take(10).collect();
    ensure!(
        only_consumer.is_empty() && only_view.is_empty(),
        "{topic}: the read_committed consumer and the committed view differ: \
         only the consumer saw (partition, offset) {only_consumer:?}, only the view {only_view:?}"
    );
    Ok(seen.len())
}

/// [`check_exactly_once`], failing the test unless every expected id is in the committed view
/// exactly once and nothing else is. Prints the report and returns it with the view.
pub async fn assert_exactly_once(
    bootstrap: &str,
    topic: &str,
    expected: impl IntoIterator<Item = String>,
    id_of: impl AsyncFn(&CommittedRecord) -> anyhow::Result<String>,
) -> (CommittedView, ExactlyOnce) {
    let (view, report) = check_exactly_once(bootstrap, topic, expected, id_of)
        .await
        .unwrap_or_else(|e| panic!("reading the committed view of {topic}: {e:#}"));
    println!("exactly-once: {report}");
    assert!(report.holds(), "exactly-once violated: {report}");
    (view, report)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::records::{Record, TimestampType};

    use super::*;

    fn record(offset: i64, producer_id: i64, epoch: i16, key: Option<Bytes>, value: &str) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: 0,
            timestamp: 0,
            key,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
        }
    }

    fn data(offset: i64, producer_id: i64, transactional: bool, value: &str) -> RawBatch {
        RawBatch {
            base_offset: offset,
            next_offset: offset + 1,
            producer_id,
            producer_epoch: 0,
            transactional,
            control: false,
            records: vec![record(offset, producer_id, 0, None, value)],
        }
    }

    fn marker(offset: i64, producer_id: i64, epoch: i16, kind: i16) -> RawBatch {
        let mut key = Vec::from(0i16.to_be_bytes());
        key.extend(kind.to_be_bytes());
        RawBatch {
            base_offset: offset,
            next_offset: offset + 1,
            producer_id,
            producer_epoch: epoch,
            transactional: true,
            control: true,
            records: vec![record(
                offset,
                producer_id,
                epoch,
                Some(Bytes::from(key)),
                "\0\0\0\0\0\0",
            )],
        }
    }

    fn values(view: &CommittedView) -> Vec<&str> {
        view.values().map(|v| std::str::from_utf8(v).unwrap()).collect()
    }

    #[test]
    fn the_rule_keeps_plain_and_committed_drops_aborted_and_open_and_markers() {
        let view = committed_batches(
            0,
            vec![
                data(0, 7, true, "a"),
                data(1, -1, false, "plain"),
                data(2, 8, true, "b"),
                marker(3, 8, 0, ABORT),
                marker(4, 7, 0, COMMIT),
                data(5, 7, true, "open"),
            ],
        )
        .unwrap();
        assert_eq!(values(&view), ["a", "plain"]);
        assert_eq!((view.aborted, view.open, view.commits, view.aborts), (1, 1, 1, 1));
    }

    #[test]
    fn a_marker_with_another_epoch_still_closes_its_producers_transaction() {
        // Apache Kafka writes the ABORT of a fenced instance with the bumped epoch.
        let mut fenced = data(0, 7, true, "fenced");
        fenced.producer_epoch = 3;
        let view = committed_batches(0, vec![fenced, marker(1, 7, 4, ABORT)]).unwrap();
        assert_eq!((view.records.len(), view.aborted, view.open), (0, 1, 0));
    }

    #[test]
    fn an_unknown_control_type_is_an_error_not_a_guess() {
        assert!(committed_batches(0, vec![data(0, 7, true, "x"), marker(1, 7, 0, 5)]).is_err());
    }

    #[test]
    fn exactly_once_counts_duplicates_losses_and_strangers() {
        let view = CommittedView::default();
        let ids = ["a", "b", "b", "x"].map(String::from);
        let expected = ["a", "b", "c"].map(String::from);
        let report = ExactlyOnce::count("t", &view, ids, expected);
        assert_eq!((report.duplicates, report.lost, report.unexpected), (1, 1, 1));
        assert!(!report.holds());
    }
}
