//! Broker capability probe: does a `read_committed` consumer skip records of aborted
//! transactions? Apache Kafka, Confluent, MSK and Redpanda do; the Tansu dev broker accepts
//! transactions and transactional offset commits but still delivers aborted records.
//!
//! The probe asks the broker the data lives on: [`capabilities_at`] probes each bootstrap address
//! once per process and caches the answer. A test whose output is on a
//! [`crate::broker::PrivateBroker`] (always a private Tansu) is therefore never mistaken for one
//! running on the real Kafka that `SWITCHBOARD_TEST_KAFKA` may name, and vice versa.
//!
//! Nothing skips on the answer: exactly-once assertions always check the committed view computed
//! from raw batches ([`crate::committed`]), and use the answer only to decide whether a real
//! `read_committed` consumer can be compared with it as well.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::{client_config_at, unique};

const ABORTED: &[u8] = b"aborted";
const COMMITTED: &[u8] = b"committed";
const TIMEOUT: Duration = Duration::from_secs(15);

/// What the probe found out about a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Transactions (init, begin, commit, abort) are accepted.
    pub transactions: bool,
    /// A `read_committed` consumer does not see records of aborted transactions.
    pub hides_aborted: bool,
}

/// The capabilities of the broker at `bootstrap`, probed once per process and address.
/// Blocking; call it from a test thread or `spawn_blocking`.
pub fn capabilities_at(bootstrap: &str) -> anyhow::Result<Capabilities> {
    static PROBED: Mutex<Option<HashMap<String, Capabilities>>> = Mutex::new(None);
    let cached = PROBED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(bootstrap)
        .cloned();
    if let Some(capabilities) = cached {
        return Ok(capabilities);
    }
    // Probed without the lock held: two tests may probe the same address at once, harmlessly.
    let capabilities = probe_at(bootstrap)?;
    PROBED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(bootstrap.to_owned(), capabilities.clone());
    Ok(capabilities)
}

/// The capabilities of the shared broker under test (`SWITCHBOARD_TEST_KAFKA`).
pub fn capabilities() -> anyhow::Result<Capabilities> {
    capabilities_at(&crate::kafka_bootstrap())
}

/// Writes one aborted and one committed transaction to a fresh topic on the broker at
/// `bootstrap` and reads it back with `read_committed`, uncached. Blocking.
pub fn probe_at(bootstrap: &str) -> anyhow::Result<Capabilities> {
    let topic = unique("probe");
    // On a thread of its own: the caller may be on a runtime's worker thread.
    let (address, name) = (bootstrap.to_owned(), topic.clone());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crate::create_topic_at(&address, &name, 1))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("creating the probe topic panicked"))??;

    let producer: ThreadedProducer<DefaultProducerContext> = client_config_at(bootstrap)
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

    let consumer: BaseConsumer = client_config_at(bootstrap)
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
