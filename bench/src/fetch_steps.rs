//! The broker's share of one consumer hop: how long a record takes from its delivery report to a
//! consumer that waits at the end of its partition, as the partition fills up with batches, for
//! consumers with different `fetch.wait.max.ms`.
//!
//! Every hop of the pipeline is such a wait (the processor reading a raw topic, the sink and any
//! downstream reader a domain topic). On Apache Kafka a fetch finds its offset through the
//! segment's index, whatever the partition holds. This measures it on the broker the bench runs
//! against: partition 0 of a topic of its own is filled with single-record batches
//! (`batch.num.messages=1`) up to each size, then one marked record at a time is produced and timed
//! from its delivery report until a `read_committed` consumer positioned at the end returns it.
//! A hop that takes longer than [`STALL`] is reported as a stall, and that consumer is not timed at
//! larger sizes.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use switchboard_kafka::txn::await_deliveries;

use crate::report::{self, Latency};

/// How long a producer call, or the fill's deliveries, may take before the run fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// A hop longer than this is a stall.
pub const STALL: Duration = Duration::from_secs(10);

/// The hops of one consumer at one partition size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    pub batches: u64,
    pub fetch_wait_ms: u64,
    /// `None`: a record was not returned within [`STALL`] (or an earlier size stalled).
    pub hop: Option<Latency>,
}

/// What to run.
#[derive(Debug)]
pub struct Run<'a> {
    pub bootstrap: &'a str,
    /// Must exist and be empty.
    pub topic: &'a str,
    /// Partition sizes (in batches) to measure at, ascending.
    pub sizes: &'a [u64],
    /// `fetch.wait.max.ms` of each consumer timed.
    pub fetch_waits: &'a [Duration],
    /// Records timed per consumer at each size.
    pub samples: u64,
}

/// A consumer of partition 0 with `fetch_wait`.
fn consumer(bootstrap: &str, fetch_wait: Duration) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "switchboard-bench-fetch-steps")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
        .create()
        .context("creating a consumer")
}

/// Fills partition 0 of `run.topic` to each size and times the hops there. Blocking.
pub fn measure(run: &Run<'_>) -> anyhow::Result<Vec<Hop>> {
    let producer: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", run.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .context("creating the producer")?;
    let send = |payload: &[u8]| -> anyhow::Result<()> {
        producer
            .send(
                BaseRecord::<(), [u8]>::to(run.topic)
                    .partition(0)
                    .payload(payload),
            )
            .map_err(|(error, _)| anyhow::Error::new(error))?;
        Ok(())
    };
    let delivered = || -> anyhow::Result<()> {
        anyhow::ensure!(
            await_deliveries(&producer, CALL_TIMEOUT),
            "no delivery report within {CALL_TIMEOUT:?}"
        );
        Ok(())
    };
    let mut consumers = run
        .fetch_waits
        .iter()
        .map(|&wait| Ok((wait, consumer(run.bootstrap, wait)?, false)))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let filler = vec![b'x'; 512];
    let mut written = 0_u64;
    let mut hops = Vec::new();
    for &size in run.sizes {
        while written < size {
            send(&filler)?;
            written += 1;
            if written.is_multiple_of(10_000) || written == size {
                delivered()?;
            }
        }
        for (wait, consumer, stalled) in &mut consumers {
            let fetch_wait_ms = u64::try_from(wait.as_millis())?;
            if *stalled {
                hops.push(Hop {
                    batches: size,
                    fetch_wait_ms,
                    hop: None,
                });
                continue;
            }
            // Near the end (the broker's "latest" offset need not be exact): the first, untimed
            // record moves the consumer past what is left of the fill.
            let (_, end) = consumer.fetch_watermarks(run.topic, 0, CALL_TIMEOUT)?;
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(run.topic, 0, Offset::Offset((end - 100).max(0)))?;
            consumer.assign(&assignment)?;
            let mut histogram = report::histogram();
            for sample in 0..=run.samples {
                let marker = format!("{size}-{fetch_wait_ms}-{sample}");
                send(marker.as_bytes())?;
                delivered()?;
                written += 1;
                let at = Instant::now();
                let returned = loop {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(message)) if message.payload() == Some(marker.as_bytes()) => break true,
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return Err(error).context("reading the record back"),
                        None if at.elapsed() >= STALL => break false,
                        None => {}
                    }
                };
                if !returned {
                    *stalled = true;
                    break;
                }
                if sample > 0 {
                    report::record(&mut histogram, at.elapsed());
                }
            }
            // An assigned consumer goes on fetching in the background: not between its turns.
            consumer.unassign()?;
            hops.push(Hop {
                batches: size,
                fetch_wait_ms,
                hop: (!*stalled).then(|| Latency::of(&histogram)),
            });
        }
    }
    Ok(hops)
}

/// The hops as a Markdown table: a row per size, a column per consumer.
pub fn table(hops: &[Hop]) -> String {
    let mut waits: Vec<u64> = hops.iter().map(|h| h.fetch_wait_ms).collect();
    waits.sort_unstable();
    waits.dedup();
    let mut sizes: Vec<u64> = hops.iter().map(|h| h.batches).collect();
    sizes.dedup();
    let mut out = String::from("| batches in the partition |");
    for wait in &waits {
        out.push_str(&format!(" `fetch.wait.max.ms={wait}`: p50 / p99 ms |"));
    }
    out.push_str("\n|---:|");
    out.push_str(&"---:|".repeat(waits.len()));
    out.push('\n');
    for size in sizes {
        out.push_str(&format!("| {size} |"));
        for wait in &waits {
            let cell = match hops
                .iter()
                .find(|h| h.batches == size && h.fetch_wait_ms == *wait)
            {
                Some(Hop { hop: Some(hop), .. }) => format!(" {:.1} / {:.1} |", hop.p50, hop.p99),
                Some(Hop { hop: None, .. }) => format!(" **never** (nothing within {} s) |", STALL.as_secs()),
                None => " |".to_owned(),
            };
            out.push_str(&cell);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_size_a_column_per_wait_and_stalls_said_so() {
        let at = |batches, fetch_wait_ms, p50: Option<f64>| Hop {
            batches,
            fetch_wait_ms,
            hop: p50.map(|p50| Latency {
                p50,
                p99: p50 * 2.0,
                ..Latency::default()
            }),
        };
        let text = table(&[
            at(100, 5, Some(1.0)),
            at(100, 50, Some(3.0)),
            at(20_000, 5, None),
            at(20_000, 50, Some(9.0)),
        ]);
        assert!(text.contains("| 100 | 1.0 / 2.0 | 3.0 / 6.0 |"), "{text}");
        assert!(
            text.contains("| 20000 | **never** (nothing within 10 s) | 9.0 / 18.0 |"),
            "{text}"
        );
        assert!(
            text.contains("`fetch.wait.max.ms=5`") && text.contains("`fetch.wait.max.ms=50`"),
            "{text}"
        );
    }
}
