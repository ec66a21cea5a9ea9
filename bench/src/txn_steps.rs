//! The broker's share of an exactly-once transaction: a transactional producer configured as the
//! processor's (idempotent, `acks=all`, lz4, `linger.ms=5`) runs the processor's cycle against an
//! otherwise idle broker, one step at a time, and each step's wall time is recorded:
//!
//! 1. **produce**: `begin_transaction`, a batch of records to one partition, then the wait for
//!    their delivery reports the processor does before committing
//!    (`switchboard_kafka::txn::await_deliveries`; with `--flush`, rust-rdkafka's
//!    `Producer::flush` instead, which polls in whole 100 ms steps). The first send of a
//!    transaction also adds the partition to it: AddPartitionsToTxn, then Produce;
//! 2. **offsets**: `send_offsets_to_transaction` (AddOffsetsToTxn, then TxnOffsetCommit to the
//!    group coordinator);
//! 3. **commit**: `commit_transaction` (EndTxn; the broker writes the markers before answering).
//!
//! No record is consumed or processed: what the steps take is the broker's round trips plus
//! librdkafka's, the floor of the processor's `transaction_commit_seconds` on that broker.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use switchboard_kafka::txn::await_deliveries;

use crate::report::{self, Latency};

/// How long any single broker call may take before the run fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Each step's latency over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Steps {
    pub transactions: u64,
    pub records_per_transaction: usize,
    pub produce: Latency,
    pub offsets: Latency,
    pub commit: Latency,
    /// All three, per transaction.
    pub total: Latency,
}

/// What to run.
#[derive(Debug)]
pub struct Run<'a> {
    pub bootstrap: &'a str,
    /// Must exist.
    pub topic: &'a str,
    /// The group whose offsets each transaction commits.
    pub group: &'a str,
    pub transactions: u64,
    /// Records per transaction.
    pub records: usize,
    /// Extra producer properties, over the processor's.
    pub properties: &'a [(String, String)],
    /// Wait for the deliveries with rust-rdkafka's `flush` rather than the processor's wait.
    pub flush: bool,
}

/// Runs the transactions of `run`, one step at a time. Blocking: call from a blocking thread.
pub fn measure(run: &Run<'_>) -> anyhow::Result<Steps> {
    let Run {
        bootstrap,
        topic,
        group,
        transactions,
        records,
        properties,
        flush,
    } = *run;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("transactional.id", format!("{group}-txn-steps"));
    for (name, value) in properties {
        config.set(name, value);
    }
    let producer: ThreadedProducer<_> = config.create().context("creating the transactional producer")?;
    producer.init_transactions(CALL_TIMEOUT)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the group member")?;
    consumer.subscribe(&[topic])?;
    // A transaction commits offsets for a group member: wait until this one has joined.
    let joined = Instant::now() + Duration::from_secs(60);
    while consumer.assignment()?.count() == 0 {
        anyhow::ensure!(
            Instant::now() < joined,
            "the consumer did not join {group} within 60 s"
        );
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let group_metadata = consumer
        .group_metadata()
        .context("the consumer has no group metadata")?;

    let payload = vec![b'x'; 512];
    let (mut produce, mut offsets, mut commit, mut total) = (
        report::histogram(),
        report::histogram(),
        report::histogram(),
        report::histogram(),
    );
    for round in 0..transactions {
        let started = Instant::now();
        producer.begin_transaction()?;
        for _ in 0..records {
            producer
                .send(BaseRecord::<(), [u8]>::to(topic).partition(0).payload(&payload))
                .map_err(|(error, _)| error)?;
        }
        if flush {
            producer.flush(CALL_TIMEOUT)?;
        } else {
            anyhow::ensure!(
                await_deliveries(&producer, CALL_TIMEOUT),
                "records without a delivery report after {CALL_TIMEOUT:?}"
            );
        }
        let produced = step(&mut produce, started);

        let mut positions = TopicPartitionList::new();
        positions.add_partition_offset(topic, 0, Offset::Offset(i64::try_from(round)?))?;
        producer.send_offsets_to_transaction(&positions, &group_metadata, CALL_TIMEOUT)?;
        let sent = step(&mut offsets, produced);

        producer.commit_transaction(CALL_TIMEOUT)?;
        step(&mut commit, sent);
        report::record(&mut total, started.elapsed());
        let _ = consumer.poll(Duration::ZERO);
    }
    Ok(Steps {
        transactions,
        records_per_transaction: records,
        produce: Latency::of(&produce),
        offsets: Latency::of(&offsets),
        commit: Latency::of(&commit),
        total: Latency::of(&total),
    })
}

/// Records the time since `since` into `histogram` and returns now.
fn step(histogram: &mut Histogram<u64>, since: Instant) -> Instant {
    let now = Instant::now();
    report::record(histogram, now - since);
    now
}

/// The report's table of one run.
pub fn table(steps: &Steps) -> String {
    let row = |name: &str, latency: &Latency| {
        format!(
            "| {name} | {:.1} | {:.1} | {:.1} |\n",
            latency.p50, latency.p99, latency.max
        )
    };
    let mut out = String::from("| step | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|\n");
    out.push_str(&row(
        "produce (AddPartitionsToTxn, Produce, delivery reports)",
        &steps.produce,
    ));
    out.push_str(&row(
        "send offsets (AddOffsetsToTxn, TxnOffsetCommit)",
        &steps.offsets,
    ));
    out.push_str(&row("commit (EndTxn, markers)", &steps.commit));
    out.push_str(&row("**whole transaction**", &steps.total));
    out
}
