//! The progress monitor on the real broker: lag against the end offsets for every owned partition
//! (before any record is consumed), transaction markers that are not lag, and a processor that
//! cannot make progress turning `/healthz` and `/readyz` red, then green again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_kafka::TopicPartition;
use switchboard_kafka::progress::{Measured, Monitor};
use switchboard_tests::broker::PrivateBroker;

use crate::harness::{
    InProcess, RawProducer, completed_call, config, create_raw_topics, produce_calls, twilio_call,
};

const STALL: Duration = Duration::from_secs(3);

fn group_client(broker: &PrivateBroker, group: &str) -> ClientConfig {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .clone()
}

async fn create_topic(broker: &PrivateBroker, topic: &str) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let options = rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = rdkafka::admin::NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(1));
    for result in admin.create_topics([&new], &options).await.unwrap() {
        result.unwrap();
    }
}

fn producer(
    broker: &PrivateBroker,
    transactional_id: Option<&str>,
) -> ThreadedProducer<DefaultProducerContext> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true");
    if let Some(id) = transactional_id {
        client.set("transactional.id", id);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = client.create().unwrap();
    if transactional_id.is_some() {
        producer.init_transactions(Duration::from_secs(30)).unwrap();
    }
    producer
}

/// Sends `records` records to `topic[0]`, one batch each: the dev broker reports the end offset
/// of a partition as the base offset of its last batch + 1, which under-reports the lag of a
/// multi-record batch (never to 0).
fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, records: usize) {
    for i in 0..records {
        let payload = format!("record {i}");
        producer
            .send(
                BaseRecord::<str, str>::to(topic)
                    .partition(0)
                    .key("k")
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    }
}

/// Reads `topic[0]` as a processing loop would (`read_committed`) and commits, for `group`, the
/// offset after the last record delivered: where a caught-up loop's committed offset stands.
fn consume_and_commit(broker: &PrivateBroker, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = group_client(broker, group).create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&list).unwrap();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            next = rdkafka::Message::offset(&message.unwrap()) + 1;
        }
    }
    let mut commit = TopicPartitionList::new();
    commit
        .add_partition_offset(topic, 0, Offset::Offset(next))
        .unwrap();
    consumer.commit(&commit, CommitMode::Sync).unwrap();
    next
}

fn measure_one(monitor: &mut Monitor, task: &TopicPartition, at: Instant) -> Measured {
    let owned = BTreeSet::from([task.clone()]);
    monitor.measure(&owned, &BTreeMap::new(), at)[task]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_partition_without_a_committed_offset_lags_by_every_record_and_stalls() {
    let broker = PrivateBroker::start().unwrap();
    let topic = "progress.plain";
    create_topic(&broker, topic).await;
    send(&producer(&broker, None), topic, 5);
    let task = TopicPartition::new(topic, 0);

    let mut monitor = Monitor::new(&group_client(&broker, "g-plain"), STALL).unwrap();
    let start = Instant::now();
    // Owned, never polled, nothing committed: every record is lag.
    let first = measure_one(&mut monitor, &task, start);
    assert_eq!(
        first,
        Measured {
            lag: Some(5),
            stalled: false
        }
    );
    let later = measure_one(&mut monitor, &task, start + STALL + Duration::from_secs(1));
    assert_eq!(
        later,
        Measured {
            lag: Some(5),
            stalled: true
        },
        "no committed progress for stall_timeout"
    );

    // Progress: a commit in the middle moves the clock, a commit at the end leaves no lag.
    let consumer: BaseConsumer = group_client(&broker, "g-plain").create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(2)).unwrap();
    consumer.commit(&list, CommitMode::Sync).unwrap();
    let after_commit = start + STALL * 2;
    let moved = measure_one(&mut monitor, &task, after_commit);
    assert_eq!(
        moved,
        Measured {
            lag: Some(3),
            stalled: false
        }
    );
    let stuck_again = measure_one(&mut monitor, &task, after_commit + STALL);
    assert_eq!(
        stuck_again,
        Measured {
            lag: Some(3),
            stalled: true
        }
    );
    assert_eq!(consume_and_commit(&broker, "g-plain", topic), 5);
    let done = measure_one(&mut monitor, &task, after_commit + STALL * 3);
    assert_eq!(
        done,
        Measured {
            lag: Some(0),
            stalled: false
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_ending_in_transaction_markers_is_caught_up_and_never_stalls() {
    let broker = PrivateBroker::start().unwrap();
    let topic = "progress.transactional";
    create_topic(&broker, topic).await;
    let producer = producer(&broker, Some("progress-markers"));
    for _ in 0..2 {
        producer.begin_transaction().unwrap();
        send(&producer, topic, 3);
        producer.commit_transaction(Duration::from_secs(10)).unwrap();
    }
    let task = TopicPartition::new(topic, 0);
    let probe: BaseConsumer = group_client(&broker, "g-probe").create().unwrap();
    let (_, high) = probe.fetch_watermarks(topic, 0, Duration::from_secs(5)).unwrap();

    // A loop that consumed every record commits the offset of the last COMMIT marker: one short
    // of the end offset.
    let next = consume_and_commit(&broker, "g-markers", topic);
    assert!(
        next < high,
        "the end offset ({high}) counts the last marker; committed {next}"
    );
    let mut monitor = Monitor::new(&group_client(&broker, "g-markers"), STALL).unwrap();
    let start = Instant::now();
    for step in 0..3 {
        let measured = measure_one(&mut monitor, &task, start + STALL * step);
        assert_eq!(
            measured,
            Measured {
                lag: Some(0),
                stalled: false
            },
            "step {step}"
        );
    }

    // A record after the marker is lag again; and stalls when nothing commits it.
    producer.begin_transaction().unwrap();
    send(&producer, topic, 1);
    producer.commit_transaction(Duration::from_secs(10)).unwrap();
    let waiting = measure_one(&mut monitor, &task, start + STALL * 4);
    assert!(waiting.lag.is_some_and(|lag| lag >= 1), "{waiting:?}");
    let stalled = measure_one(&mut monitor, &task, start + STALL * 6);
    assert!(stalled.stalled, "{stalled:?}");
    consume_and_commit(&broker, "g-markers", topic);
    let caught_up = measure_one(&mut monitor, &task, start + STALL * 7);
    assert_eq!(
        caught_up,
        Measured {
            lag: Some(0),
            stalled: false
        }
    );

    // An aborted transaction at the end: what a read_committed loop can consume of it, it has
    // committed; the rest (records it never sees, the ABORT marker) is no lag.
    producer.begin_transaction().unwrap();
    send(&producer, topic, 2);
    producer.abort_transaction(Duration::from_secs(10)).unwrap();
    consume_and_commit(&broker, "g-markers", topic);
    let after_abort = measure_one(&mut monitor, &task, start + STALL * 8);
    assert_eq!(
        after_abort,
        Measured {
            lag: Some(0),
            stalled: false
        }
    );
    let much_later = measure_one(&mut monitor, &task, start + STALL * 10);
    assert_eq!(
        much_later,
        Measured {
            lag: Some(0),
            stalled: false
        }
    );
}

/// A TCP forwarder to the schema registry that can be taken down (connections accepted and
/// closed at once): the processor's registry lookups fail like a registry outage's.
struct RegistryGate {
    url: String,
    up: Arc<AtomicBool>,
}

impl RegistryGate {
    async fn start() -> Self {
        let target = switchboard_tests::registry_url();
        let target = url::Url::parse(&target).unwrap();
        let target = format!(
            "{}:{}",
            target.host_str().unwrap(),
            target.port_or_known_default().unwrap()
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(false));
        let gate = Arc::clone(&up);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !gate.load(Ordering::Relaxed) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { url, up }
    }
}

async fn get(admin: std::net::SocketAddr, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://{admin}{path}")).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

async fn wait_for(
    admin: std::net::SocketAddr,
    path: &str,
    status: u16,
    within: Duration,
) -> (Duration, String) {
    let started = Instant::now();
    loop {
        let (got, body) = get(admin, path).await;
        if got == status {
            return (started.elapsed(), body);
        }
        assert!(
            started.elapsed() < within,
            "{path} still answers {got} ({body}) after {within:?}, expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_that_cannot_make_progress_turns_red_and_green_again_when_it_can() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let raw = RawProducer::new(&broker);
    for i in 0..5 {
        raw.send(&twilio_call(
            "+15550100",
            &format!("CA-progress-{i}"),
            "ringing",
            1,
            &format!("progress-{i}"),
        ))
        .await;
    }
    let gate = RegistryGate::start().await;
    let mut processor_config = config(&broker, "p-progress");
    processor_config.schema_registry_url = gate.url.clone();
    processor_config.stall_timeout = STALL;
    let processor = InProcess::start(processor_config).await;

    // The registry is down: no raw record decodes, every transaction aborts, nothing commits.
    let (_, before) = wait_for(processor.admin, "/healthz", 200, Duration::from_secs(30)).await;
    assert_eq!(before, "ok");
    let (_, reason) = wait_for(processor.admin, "/healthz", 503, Duration::from_secs(60)).await;
    assert!(reason.contains("no committed progress"), "{reason}");
    let (_, not_ready) = wait_for(processor.admin, "/readyz", 503, Duration::from_secs(5)).await;
    assert!(not_ready.contains("no committed progress"), "{not_ready}");
    assert!(
        !not_ready.contains("127.0.0.1") && !not_ready.contains("switchboard."),
        "no internals in the reason: {not_ready}"
    );

    // The registry is back: the records commit and health recovers.
    gate.up.store(true, Ordering::Relaxed);
    let (recovered, _) = wait_for(processor.admin, "/healthz", 200, Duration::from_secs(90)).await;
    wait_for(processor.admin, "/readyz", 200, Duration::from_secs(15)).await;
    eprintln!("healthy again {recovered:?} after the registry came back");
    processor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_store_turns_red_and_green_again_when_it_can() {
    let broker = PrivateBroker::start().unwrap();
    let events: Vec<_> = (0..5)
        .map(|n| completed_call(&format!("EV-sink-stall-{n}"), n))
        .collect();
    produce_calls(&broker, &events).await;
    let gate = RegistryGate::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = switchboard_sink::SinkConfig {
        kafka_bootstrap: broker.bootstrap(),
        schema_registry_url: gate.url.clone(),
        database_url: format!("sqlite://{}", dir.path().join("sink.db").display()),
        session_timeout: Duration::from_secs(6),
        stall_timeout: STALL,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sink = tokio::spawn(switchboard_sink::run(config, listener, async {
        let _ = stopped.await;
    }));

    // The registry is down: the sink reads the records again and again, stores nothing.
    wait_for(admin, "/healthz", 200, Duration::from_secs(30)).await;
    let (_, reason) = wait_for(admin, "/healthz", 503, Duration::from_secs(60)).await;
    assert!(reason.contains("no committed progress"), "{reason}");
    wait_for(admin, "/readyz", 503, Duration::from_secs(5)).await;

    gate.up.store(true, Ordering::Relaxed);
    wait_for(admin, "/healthz", 200, Duration::from_secs(60)).await;
    wait_for(admin, "/readyz", 200, Duration::from_secs(15)).await;
    let _ = stop.send(());
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_worker_that_cannot_make_progress_turns_the_dispatcher_red_and_green_again() {
    let broker = PrivateBroker::start().unwrap();
    let events: Vec<_> = (0..5)
        .map(|n| completed_call(&format!("EV-action-stall-{n}"), n))
        .collect();
    produce_calls(&broker, &events).await;
    let gate = RegistryGate::start().await;
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_url = format!("http://{}/hook", receiver.local_addr().unwrap());
    tokio::spawn(async move {
        let ok = axum::Router::new().fallback(|| async { "ok" });
        axum::serve(receiver, ok).await
    });
    let toml = format!("[[action]]\nname = \"stall\"\non = [\"call.completed\"]\nurl = \"{receiver_url}\"\n");
    let mut config: switchboard_actions::ActionsConfig = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string(&toml),
    )
    .extract()
    .unwrap();
    config.kafka_bootstrap = broker.bootstrap();
    config.schema_registry_url = gate.url.clone();
    config.instance_id = Some("stall-0".into());
    config.session_timeout = Duration::from_secs(6);
    config.topic_partitions = 3;
    config.stall_timeout = STALL;
    let config = config.validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = tokio::spawn(switchboard_actions::run(config, listener, async {
        let _ = stopped.await;
    }));

    // The registry is down: no domain record decodes, nothing commits.
    wait_for(admin, "/healthz", 200, Duration::from_secs(30)).await;
    let (_, reason) = wait_for(admin, "/healthz", 503, Duration::from_secs(60)).await;
    assert!(reason.contains("no committed progress"), "{reason}");
    wait_for(admin, "/readyz", 503, Duration::from_secs(5)).await;

    gate.up.store(true, Ordering::Relaxed);
    wait_for(admin, "/healthz", 200, Duration::from_secs(90)).await;
    wait_for(admin, "/readyz", 200, Duration::from_secs(15)).await;
    let _ = stop.send(());
    dispatcher.await.unwrap().unwrap();
}
