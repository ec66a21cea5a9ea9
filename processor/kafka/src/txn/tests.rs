//! The transaction loop's failure paths against a real (private) broker: calls that time out
//! while the broker is frozen, committed offsets that cannot be read, seeks that fail per
//! partition.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use switchboard_tests::broker::PrivateBroker;

use super::*;

const TOPIC: &str = "txn-loop";
/// The producers' `transaction.timeout.ms`: the broker pauses below outlast it.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(3);

fn client(broker: &PrivateBroker) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", broker.bootstrap());
    client
}

fn producer_config(broker: &PrivateBroker, transactional_id: &str) -> ClientConfig {
    let mut config = client(broker);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("transactional.id", transactional_id)
        .set(
            "transaction.timeout.ms",
            TRANSACTION_TIMEOUT.as_millis().to_string(),
        );
    config
}

fn producer(broker: &PrivateBroker, transactional_id: &str) -> ThreadedProducer<ProducerContext> {
    producer_config(broker, transactional_id)
        .create_with_context(ProducerContext::default())
        .unwrap()
}

/// What a [`Transactor`] with `transactional_id` creates its producers with.
fn producers(broker: &PrivateBroker, transactional_id: &str) -> MakeProducer {
    make_producer(
        producer_config(broker, transactional_id),
        ProducerContext::default,
    )
}

/// Waits (at most ten seconds) until no transaction holds the test partition's last stable
/// offset back (a read_committed client's end equals a read_uncommitted one's); panics otherwise.
/// A transaction left hanging (a produce handled after its abort) holds it back for good.
fn assert_no_open_transaction(broker: &PrivateBroker) {
    let end = |isolation: &str| {
        let reader: BaseConsumer = client(broker)
            .set("group.id", "txn-loop-ends")
            .set("isolation.level", isolation)
            .create()
            .unwrap();
        reader
            .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
            .unwrap()
            .1
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (stable, high) = (end("read_committed"), end("read_uncommitted"));
        if stable == high {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a transaction stays open: last stable offset {stable}, high watermark {high}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn batching(resolve_within: Duration) -> Batching {
    switchboard_service::telemetry::init_logging();
    Batching {
        exactly_once: true,
        commit_interval: Duration::from_millis(100),
        max_records: 100,
        resolve_within,
        wait_for_deliveries: true,
    }
}

fn consumer(broker: &PrivateBroker, group: &str) -> BaseConsumer {
    let mut config = client(broker);
    crate::client::group_member(&mut config, group, Duration::from_secs(6));
    config.create().unwrap()
}

/// A member of `group` subscribed to the test topic, once the group has assigned it partitions
/// (a commit sends the consumed offsets with the group's metadata).
fn joined_consumer(broker: &PrivateBroker, group: &str) -> BaseConsumer {
    let consumer = consumer(broker, group);
    consumer.subscribe(&[TOPIC]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "never assigned");
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer
}

async fn create_topic(broker: &PrivateBroker) {
    crate::client::create_missing(
        &client(broker),
        &[NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))],
    )
    .await
    .unwrap();
}

fn record(value: &str) -> BaseRecord<'_, str, str> {
    BaseRecord::to(TOPIC).key("k").payload(value)
}

/// Freezes the broker, runs `during`, and resumes the broker `after` the freeze (from another
/// thread, while `during` may still be waiting on it).
fn frozen<T>(broker: &PrivateBroker, after: Duration, during: impl FnOnce() -> T) -> T {
    broker.pause().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(after);
            broker.resume().unwrap();
        });
        during()
    })
}

/// Commits a transaction holding `value` the way the loops do (through [`Recovery`]): a few
/// aborted attempts are fine (records that timed out during a pause), a fatal error or no commit
/// at all is not.
fn commit_one<C: ConsumerContext>(txn: &mut Transactor, consumer: &BaseConsumer<C>, value: &str) {
    let mut recovery = Recovery::new(Duration::from_millis(100), Duration::from_secs(1));
    for _ in 0..5 {
        let step = txn
            .begin()
            .and_then(|()| txn.send(record(value)))
            .and_then(|()| txn.commit(consumer))
            .map(|committed| committed.expect("it was open"));
        if step.is_ok() {
            return;
        }
        recovery
            .after(step.map(drop), || txn.abort_and_rewind(consumer, &[]).map(drop))
            .expect("the loop goes on");
    }
    panic!("no transaction committed in five attempts");
}

/// An abort that times out while the broker is frozen is made again until it completes; the
/// loop then goes on in place. (Before: the transaction was forgotten before the first call, and
/// every later `begin_transaction` failed with `__CONFLICT`, forever.)
#[tokio::test(flavor = "multi_thread")]
async fn an_abort_that_times_out_is_called_again_until_it_completes() {
    let broker = PrivateBroker::start().unwrap();
    create_topic(&broker).await;
    let mut txn = Transactor::new(
        producers(&broker, "abort-times-out"),
        batching(Duration::from_secs(60)),
    )
    .unwrap();
    txn.begin().unwrap();
    txn.send(record("aborted")).unwrap();
    txn.producer.flush(Duration::from_secs(10)).unwrap();

    // Each attempt may take 15 s (a quarter of resolve_within): the first one times out.
    let started = Instant::now();
    let aborted = frozen(&broker, Duration::from_secs(20), || txn.abort());
    assert!(matches!(aborted, Ok(true)), "abort: {aborted:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(19),
        "the abort completed while the broker was frozen ({:?})",
        started.elapsed()
    );

    let consumer = consumer(&broker, "txn-loop-abort");
    commit_one(&mut txn, &consumer, "committed");
    assert_no_open_transaction(&broker);
}

/// A commit over a broker frozen longer than the transaction timeout (its records time out:
/// librdkafka then wants a producer-epoch bump, which the dev broker refuses) either completes
/// or aborts once the broker is back, and the loop goes on in place, leaving no transaction open
/// on the partition. (Before: the abort could not complete there, the loop stopped for a
/// restart, and about once in ten pauses the abort marker reached the partition before a
/// produce of the same transaction, which left the transaction hanging and the partition's last
/// stable offset stuck for good.)
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_across_a_long_broker_pause_recovers_in_place() {
    let broker = PrivateBroker::start().unwrap();
    create_topic(&broker).await;
    let consumer = joined_consumer(&broker, "txn-loop-commit");
    let resolve_within = Duration::from_secs(12);
    let mut txn = Transactor::new(producers(&broker, "commit-times-out"), batching(resolve_within)).unwrap();
    txn.begin().unwrap();
    txn.send(record("first")).unwrap();
    txn.consumed(TopicPartition::new(TOPIC, 0), 0);

    let started = Instant::now();
    let outcome = frozen(&broker, TRANSACTION_TIMEOUT * 3, || match txn.commit(&consumer) {
        Ok(Some(_)) => Ok("committed"),
        Err(LoopError::Retriable { .. }) => {
            assert!(txn.is_open(), "a failed commit leaves the transaction to abort");
            txn.abort_and_rewind(&consumer, &[]).map(|_| "aborted")
        }
        other => panic!("commit across the pause: {other:?}"),
    });
    eprintln!(
        "the transaction open across the pause: {outcome:?} after {:?}",
        started.elapsed()
    );
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(!txn.is_open());

    commit_one(&mut txn, &consumer, "second");
    assert_no_open_transaction(&broker);
}

/// A broker that never comes back makes the abort fatal within its bound: the process exits for
/// its supervisor instead of staying up without progress.
#[tokio::test(flavor = "multi_thread")]
async fn an_abort_that_never_completes_is_fatal_within_its_bound() {
    let broker = PrivateBroker::start().unwrap();
    create_topic(&broker).await;
    let resolve_within = Duration::from_secs(8);
    let mut txn = Transactor::new(
        producers(&broker, "abort-never-completes"),
        batching(resolve_within),
    )
    .unwrap();
    txn.begin().unwrap();
    txn.send(record("aborted")).unwrap();
    txn.producer.flush(Duration::from_secs(10)).unwrap();

    broker.pause().unwrap();
    let started = Instant::now();
    let aborted = txn.abort();
    let elapsed = started.elapsed();
    broker.resume().unwrap();
    assert!(
        matches!(aborted, Err(LoopError::Fatal { .. })),
        "abort: {aborted:?} after {elapsed:?}"
    );
    assert!(
        elapsed < resolve_within + Duration::from_secs(5),
        "gave up after {elapsed:?}"
    );

    // Closing the consumer then revokes the partitions, whose callback commits the open
    // transaction: that fails at once (the abort may still be in progress in librdkafka),
    // instead of conflicting with it for another bound before the process can exit.
    let consumer = consumer(&broker, "abort-never-completes");
    let started = Instant::now();
    let revoke = txn.finish_before_revoke(&consumer, &[]);
    assert!(
        matches!(revoke.failure, Some(LoopError::Fatal { .. })) && revoke.committed.is_none(),
        "{revoke:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the commit after a fatal abort took {:?}",
        started.elapsed()
    );
}

/// `seek_partitions` reports a partition it could not seek inside `Ok`: that is an error.
#[test]
fn a_seek_refused_for_one_partition_is_an_error() {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9")
        .set("group.id", "txn-loop-seek")
        .create()
        .unwrap();
    // Not assigned: librdkafka answers UNKNOWN_PARTITION for it, inside Ok.
    let result = seek(
        &consumer,
        &[(TopicPartition::new(TOPIC, 0), Offset::Offset(5))],
        true,
    );
    assert!(matches!(result, Err(LoopError::Retriable { .. })), "{result:?}");
}

/// A committed offset is only "nothing committed, start from the beginning" when the answer
/// carries no error.
#[test]
fn a_committed_offset_with_an_error_is_unknown_not_the_beginning() {
    let unstable = Err(KafkaError::OffsetFetch(RDKafkaErrorCode::UnstableOffsetCommit));
    assert!(matches!(
        committed_offset(unstable, Offset::Invalid),
        CommittedOffset::Unknown(_)
    ));
    let timed_out = Err(KafkaError::OffsetFetch(RDKafkaErrorCode::RequestTimedOut));
    assert_eq!(committed_offset(timed_out, Offset::Invalid).position(), None);
    assert_eq!(
        committed_offset(Ok(()), Offset::Invalid),
        CommittedOffset::Nothing
    );
    assert_eq!(
        committed_offset(Ok(()), Offset::Invalid).position(),
        Some(Offset::Beginning)
    );
    assert_eq!(
        committed_offset(Ok(()), Offset::Offset(7)),
        CommittedOffset::At(7)
    );
}

/// While another producer's open transaction holds pending offsets of the group (a dead
/// instance's, never expired by the dev broker), the committed offset is unknown: a rewind
/// neither seeks to the beginning nor goes on; once that producer is fenced, it rewinds to the
/// committed offset.
#[tokio::test(flavor = "multi_thread")]
async fn a_rewind_never_turns_an_unreadable_committed_offset_into_the_beginning() {
    let broker = PrivateBroker::start().unwrap();
    create_topic(&broker).await;
    let group = "txn-loop-unstable";
    // Ten records, and the group's committed offset at 4.
    let setup = producer(&broker, "unstable-setup");
    setup.init_transactions(Duration::from_secs(30)).unwrap();
    setup.begin_transaction().unwrap();
    for i in 0..10 {
        send_waiting(&setup, record(&format!("r{i}"))).unwrap();
    }
    setup.commit_transaction(Duration::from_secs(30)).unwrap();
    let owner = consumer(&broker, group);
    owner.subscribe(&[TOPIC]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while seen.len() < 10 {
        assert!(Instant::now() < deadline, "records not read: {seen:?}");
        if let Some(Ok(message)) = owner.poll(Duration::from_millis(100)) {
            seen.push(message.offset());
        }
    }
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(TOPIC, 0, Offset::Offset(4)).unwrap();
    owner
        .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
        .unwrap();

    // A "dead" instance: its transaction holds offset 8 for the group, pending.
    let dead = producer(&broker, "unstable-dead");
    dead.init_transactions(Duration::from_secs(30)).unwrap();
    dead.begin_transaction().unwrap();
    let mut pending = TopicPartitionList::new();
    pending.add_partition_offset(TOPIC, 0, Offset::Offset(8)).unwrap();
    dead.send_offsets_to_transaction(
        &pending,
        &owner.group_metadata().unwrap(),
        Duration::from_secs(30),
    )
    .unwrap();

    let committed =
        committed_offsets(&owner, &[TopicPartition::new(TOPIC, 0)], Duration::from_secs(5)).unwrap();
    eprintln!("committed offsets while a transaction holds pending offsets: {committed:?}");
    let mut txn = Transactor::new(
        producers(&broker, "unstable-owner"),
        batching(Duration::from_secs(6)),
    )
    .unwrap();
    let rewound = txn.abort_and_rewind(&owner, &[]);
    match &committed[0].1 {
        CommittedOffset::Unknown(_) => {
            assert!(
                matches!(rewound, Err(LoopError::Fatal { .. })),
                "rewind: {rewound:?}"
            );
            let next = owner.poll(Duration::from_secs(2));
            assert!(
                next.is_none(),
                "the partition was moved: {:?}",
                next.map(|m| m.map(|m| m.offset()))
            );
        }
        // A broker that answers the last stable offset instead (allowed: require_stable is a
        // request, Tansu may ignore it): the rewind goes there, never to the beginning.
        CommittedOffset::At(offset) => {
            rewound.unwrap();
            let next = owner.poll(Duration::from_secs(10)).unwrap().unwrap();
            assert_eq!(next.offset(), *offset);
            assert_ne!(next.offset(), 0);
        }
        CommittedOffset::Nothing => panic!("the committed offset 4 read as nothing committed"),
    }

    // The dead instance's successor fences it: the offset is readable again.
    drop(dead);
    let successor = producer(&broker, "unstable-dead");
    successor.init_transactions(Duration::from_secs(30)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match txn.abort_and_rewind(&owner, &[]) {
            Ok(_) => break,
            Err(error) => assert!(Instant::now() < deadline, "never rewound: {error}"),
        }
    }
    let next = owner.poll(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(next.offset(), 4);
}

#[test]
fn a_wait_for_deliveries_that_never_come_gives_up_within_its_bound() {
    // No broker listens on port 1: the record stays in flight.
    let producer: ThreadedProducer<ProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("message.timeout.ms", "60000")
        .create_with_context(ProducerContext::default())
        .unwrap();
    // Nothing sent: only the client's own events (connection errors) pass through the queue, and
    // the polling thread serves them.
    assert!(
        await_deliveries(&producer, Duration::from_secs(5)),
        "nothing in flight"
    );
    producer.send(record("stuck")).map_err(|(e, _)| e).unwrap();
    let started = Instant::now();
    assert!(
        !await_deliveries(&producer, Duration::from_millis(200)),
        "a record in flight"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
    producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
}

/// A transaction that consumed records and wrote none (only duplicates, or records a replay
/// skips) still moves the group's committed offsets: every time, on the dev broker too (which
/// drops the offsets of a transaction without records; the group's offsets then stopped short of
/// a partition's end by the duplicates at its tail).
#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_that_wrote_nothing_still_commits_its_offsets() {
    let broker = PrivateBroker::start().unwrap();
    create_topic(&broker).await;
    let consumer = joined_consumer(&broker, "offsets-only");
    let mut txn = Transactor::new(
        producers(&broker, "offsets-only"),
        batching(Duration::from_secs(30)),
    )
    .unwrap();
    let task = TopicPartition::new(TOPIC, 0);
    let committed = || {
        let mut list = TopicPartitionList::new();
        list.add_partition(TOPIC, 0);
        consumer
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap()
            .find_partition(TOPIC, 0)
            .unwrap()
            .offset()
    };
    for round in 0..3 {
        // A record written, then a transaction of duplicates only.
        txn.begin().unwrap();
        txn.send(record("emitted")).unwrap();
        txn.consumed(task.clone(), 10 * round + 5);
        assert!(txn.commit(&consumer).unwrap().is_some());
        assert_eq!(committed(), Offset::Offset(10 * round + 5));
        txn.begin().unwrap();
        txn.consumed(task.clone(), 10 * round + 9);
        assert!(txn.commit(&consumer).unwrap().is_some());
        assert_eq!(committed(), Offset::Offset(10 * round + 9), "round {round}");
    }
}
