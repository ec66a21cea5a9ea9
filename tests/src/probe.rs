//! Broker capability probe: does a `read_committed` consumer skip records of aborted
//! transactions? Apache Kafka, Confluent, MSK and Redpanda do; the Tansu dev broker accepts
//! transactions and transactional offset commits but still delivers aborted records.
//!
//! Tests whose assertions depend on that filtering call [`require_aborted_filtering`] and skip
//! with the probe's reason on a broker that lacks it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::{client_config, unique};

const ABORTED: &[u8] = b"aborted";
const COMMITTED: &[u8] = b"committed";
const TIMEOUT: Duration = Duration::from_secs(15);

/// What the probe found out about the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Transactions (init, begin, commit, abort) are accepted.
    pub transactions: bool,
    /// A `read_committed` consumer does not see records of aborted transactions.
    pub hides_aborted: bool,
}

impl Capabilities {
    /// Why tests that need aborted-record filtering cannot run here, if they cannot.
    pub fn filtering_gap(&self) -> Option<&'static str> {
        if !self.transactions {
            Some("the broker does not accept Kafka transactions")
        } else if !self.hides_aborted {
            Some(
                "the broker lets a read_committed consumer see records of aborted transactions \
                 (Tansu's known gap); set SWITCHBOARD_TEST_KAFKA to a real Kafka to run this test",
            )
        } else {
            None
        }
    }
}

/// Probes the broker under test once per process.
pub fn capabilities() -> &'static Capabilities {
    static PROBED: OnceLock<Capabilities> = OnceLock::new();
    PROBED.get_or_init(|| probe().unwrap_or_else(|e| panic!("broker capability probe failed: {e:#}")))
}

/// `Ok(())` when the broker filters aborted records; otherwise the reason to print when skipping.
pub fn require_aborted_filtering() -> Result<(), &'static str> {
    capabilities().filtering_gap().map_or(Ok(()), Err)
}

/// Writes one aborted and one committed transaction to a fresh topic and reads it back with
/// `read_committed`. Blocking; call it from a test thread or `spawn_blocking`.
pub fn probe() -> anyhow::Result<Capabilities> {
    let topic = unique("probe");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::create_topic(&topic, 1))?;

    let producer: ThreadedProducer<DefaultProducerContext> = client_config()
        .set("transactional.id", unique("probe-txn"))
        .set("enable.idempotence", "true")
        .create()?;
    if producer.init_transactions(TIMEOUT).is_err() {
        return Ok(Capabilities {
            transactions: false,
            hides_aborted: false,
        });
    }
    for (payload, commit) in [(ABORTED, false), (COMMITTED, true)] {
        producer.begin_transaction()?;
        producer
            .send(BaseRecord::<(), [u8]>::to(&topic).payload(payload))
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        producer.flush(TIMEOUT)?;
        if commit {
            producer.commit_transaction(TIMEOUT)?
        } else {
            producer.abort_transaction(TIMEOUT)?
        }
    }

    let consumer: BaseConsumer = client_config()
        .set("group.id", unique("probe-group"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&assignment)?;

    let mut saw_aborted = false;
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) if message.payload() == Some(ABORTED) => saw_aborted = true,
            Some(Ok(message)) if message.payload() == Some(COMMITTED) => {
                return Ok(Capabilities {
                    transactions: true,
                    hides_aborted: !saw_aborted,
                });
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
    anyhow::bail!("the committed record of {topic} was not readable within {TIMEOUT:?}")
}
