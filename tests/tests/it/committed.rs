//! The committed-view reader against real transactions on the broker under test
//! (`SWITCHBOARD_TEST_KAFKA`): committed, aborted and still-open transactions, two producers
//! interleaved on one partition in both marker orders, and a fenced instance. Every expectation
//! here is one that a wrong rule (keeping aborted or open records, matching a marker to the
//! batch before it whatever its producer, returning control batches, trusting the high
//! watermark) would break.
//!
//! Apache Kafka writes transaction markers after answering EndTxn, so expectations that need a
//! marker wait until it is there (no record still open) before checking anything else.

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use switchboard_tests::committed::{CommittedView, read_committed_view};
use switchboard_tests::fetch;
use switchboard_tests::{client_config, create_topic, kafka_bootstrap, unique};

const TIMEOUT: Duration = Duration::from_secs(15);

type Txn = ThreadedProducer<DefaultProducerContext>;

fn topic(partitions: i32) -> String {
    let topic = unique("committed-view");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(create_topic(&topic, partitions))
        .unwrap();
    topic
}

fn transactional(id: &str) -> Txn {
    let producer: Txn = client_config()
        .set("transactional.id", id)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    producer.init_transactions(TIMEOUT).unwrap();
    producer
}

fn plain() -> Txn {
    client_config().set("linger.ms", "50").create().unwrap()
}

/// Sends `value` to `topic[0]` and flushes, so that each call is a batch of its own, in call order.
fn send(producer: &Txn, topic: &str, value: &str) {
    producer
        .send(
            BaseRecord::<str, str>::to(topic)
                .partition(0)
                .key(value)
                .payload(value),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(TIMEOUT).unwrap();
}

fn values(view: &CommittedView) -> Vec<String> {
    view.values()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The view once `open` records are left open (the markers written so far have arrived).
fn view_with_open(topic: &str, open: usize) -> CommittedView {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let view = read_committed_view(&kafka_bootstrap(), topic).unwrap();
        if view.open == open || Instant::now() > deadline {
            assert_eq!(view.open, open, "records of open transactions in {view:?}");
            return view;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn committed_records_are_kept_aborted_and_open_ones_left_out() {
    let topic = topic(1);
    let outside = plain();
    let txn = transactional(&unique("committed-txn"));

    send(&outside, &topic, "plain-1");
    txn.begin_transaction().unwrap();
    send(&txn, &topic, "committed-1");
    send(&txn, &topic, "committed-2");
    txn.commit_transaction(TIMEOUT).unwrap();
    txn.begin_transaction().unwrap();
    send(&txn, &topic, "aborted-1");
    send(&txn, &topic, "aborted-2");
    txn.abort_transaction(TIMEOUT).unwrap();
    send(&outside, &topic, "plain-2");
    txn.begin_transaction().unwrap();
    send(&txn, &topic, "open-1");

    let view = view_with_open(&topic, 1);
    assert_eq!(
        values(&view),
        ["plain-1", "committed-1", "committed-2", "plain-2"]
    );
    assert_eq!(view.aborted, 2, "records of the aborted transaction seen");
    assert_eq!((view.commits, view.aborts), (1, 1), "markers seen");
    // Offsets: the records' own, in order; the two markers took offsets 3 and 6 and are not records.
    let offsets: Vec<i64> = view.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 1, 2, 7]);
    assert!(view.records.iter().all(|r| r.partition == 0));
    assert_eq!(view.records[1].key.as_deref(), Some(&b"committed-1"[..]));
    assert!(view.records[1].transactional && !view.records[0].transactional);

    // The open transaction's COMMIT makes its record part of the view, after everything before it.
    txn.commit_transaction(TIMEOUT).unwrap();
    let view = view_with_open(&topic, 0);
    assert_eq!(
        values(&view),
        ["plain-1", "committed-1", "committed-2", "plain-2", "open-1"]
    );
    assert_eq!((view.commits, view.aborts, view.aborted), (2, 1, 2));
}

#[test]
fn markers_are_matched_to_data_by_producer_id_when_two_producers_interleave() {
    let topic = topic(1);
    let a = transactional(&unique("committed-a"));
    let b = transactional(&unique("committed-b"));

    // Round 1: A commits before B aborts. Matching each data batch to the next marker whatever
    // its producer would keep b-1 (followed by A's COMMIT).
    a.begin_transaction().unwrap();
    b.begin_transaction().unwrap();
    send(&a, &topic, "a-1");
    send(&b, &topic, "b-1");
    send(&a, &topic, "a-2");
    a.commit_transaction(TIMEOUT).unwrap();
    send(&b, &topic, "b-2");
    b.abort_transaction(TIMEOUT).unwrap();

    // Round 2: B aborts before A commits. The same wrong rule would drop a-3 and a-4.
    a.begin_transaction().unwrap();
    b.begin_transaction().unwrap();
    send(&a, &topic, "a-3");
    send(&b, &topic, "b-3");
    send(&a, &topic, "a-4");
    b.abort_transaction(TIMEOUT).unwrap();
    a.commit_transaction(TIMEOUT).unwrap();

    let view = view_with_open(&topic, 0);
    assert_eq!(values(&view), ["a-1", "a-2", "a-3", "a-4"]);
    assert_eq!(view.aborted, 3, "b-1, b-2 and b-3 seen and left out");
    assert_eq!((view.commits, view.aborts), (2, 2));
    let producers: std::collections::HashSet<i64> = view.records.iter().map(|r| r.producer_id).collect();
    assert_eq!(producers.len(), 1, "only A's records");
}

#[test]
fn a_fenced_instances_open_transaction_is_aborted_and_left_out() {
    let topic = topic(1);
    let id = unique("committed-fenced");
    let old = transactional(&id);
    old.begin_transaction().unwrap();
    send(&old, &topic, "fenced-1");
    send(&old, &topic, "fenced-2");
    assert_eq!(
        view_with_open(&topic, 2).records.len(),
        0,
        "an open transaction shows nothing"
    );

    // A new instance of the same transactional.id fences the old one: its open transaction is
    // aborted by the broker, with an ABORT marker for the old producer's records.
    let new = transactional(&id);
    new.begin_transaction().unwrap();
    send(&new, &topic, "new-1");
    new.commit_transaction(TIMEOUT).unwrap();
    assert!(
        old.commit_transaction(TIMEOUT).is_err(),
        "the fenced instance cannot commit"
    );

    let view = view_with_open(&topic, 0);
    assert_eq!(values(&view), ["new-1"]);
    assert_eq!((view.aborted, view.aborts, view.commits), (2, 1, 1));

    // The ABORT marker carries the fenced records' producer id; the rule matches on it alone,
    // whatever epoch the broker wrote (Tansu: the old one; Apache Kafka: a bumped one).
    let source = fetch::partitions(&kafka_bootstrap(), &topic).unwrap().remove(0);
    let batches = fetch::read_partition(&source.leader, &topic, 0, 0).unwrap();
    let fenced = &batches[0];
    let abort = batches.iter().find(|b| b.control).unwrap();
    assert!(fenced.transactional && !fenced.control);
    assert_eq!(abort.producer_id, fenced.producer_id);
    println!(
        "fenced data epoch {}, its ABORT marker's epoch {}",
        fenced.producer_epoch, abort.producer_epoch
    );
}

#[test]
fn every_partition_is_read_and_whole_batches_are_not_counted_twice() {
    let topic = topic(3);
    let producer = plain();
    for i in 0..30 {
        producer
            .send(
                BaseRecord::<str, str>::to(&topic)
                    .partition(i % 3)
                    .key("k")
                    .payload(&format!("v-{i}")),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    let txn = transactional(&unique("committed-multi"));
    txn.begin_transaction().unwrap();
    for partition in 0..3 {
        txn.send(
            BaseRecord::<str, str>::to(&topic)
                .partition(partition)
                .payload("txn")
                .headers(
                    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                        key: "h",
                        value: Some("x"),
                    }),
                ),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    }
    txn.commit_transaction(TIMEOUT).unwrap();

    let view = view_with_open(&topic, 0);
    assert_eq!(view.records.len(), 33);
    assert_eq!(
        view.commits, 3,
        "one COMMIT marker in every partition the transaction wrote to"
    );
    for partition in 0..3 {
        let offsets: Vec<i64> = view
            .records
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, (0..11).collect::<Vec<_>>(), "partition {partition}");
    }
    let txn_records: Vec<_> = view.records.iter().filter(|r| r.transactional).collect();
    assert_eq!(txn_records.len(), 3);
    assert!(txn_records.iter().all(|r| r.header("h").as_deref() == Some("x")));

    // Fetch returns whole batches: a fetch from inside the first batch returns it from its start.
    let source = fetch::partitions(&kafka_bootstrap(), &topic).unwrap().remove(0);
    assert_eq!(source.partition, 0, "in partition order");
    let batches = fetch::read_partition(&source.leader, &topic, 0, 1).unwrap();
    let first = &batches[0];
    println!(
        "fetch from offset 1 returned first the batch {}..{}",
        first.base_offset, first.next_offset
    );
    let mut offsets: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.records.iter().map(|r| r.offset))
        .collect();
    let read = offsets.len();
    offsets.dedup();
    assert_eq!(offsets.len(), read, "no record read twice");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
}
