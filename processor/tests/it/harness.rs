//! Test harness: a private broker, raw records produced the way ingest produces them, processors
//! run in-process or as child processes, and topic readers.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchboard_processor::config::Config;
use switchboard_schemas::domain::{CallEvent, CallKind};
use switchboard_schemas::{Codec, RawWebhook, SchemaDef};
use switchboard_tests::broker::PrivateBroker;
use switchboard_tests::committed::{self, ExactlyOnce};
use switchboard_tests::consume::read_to_end;
pub(crate) use switchboard_tests::metrics::{metric, metric_opt};
use tokio::sync::oneshot;

pub(crate) const PARTITIONS: i32 = 3;

/// A processor configuration for `broker`, with a fresh group.
pub(crate) fn config(broker: &PrivateBroker, instance: &str) -> Config {
    Config {
        kafka_bootstrap: broker.bootstrap(),
        schema_registry_url: switchboard_tests::registry_url(),
        group_id: "switchboard-processor".into(),
        instance_id: Some(instance.into()),
        state_dir: broker.state_dir(instance),
        topic_partitions: PARTITIONS,
        // Tansu completes a group join after about half the session timeout.
        session_timeout: Duration::from_secs(6),
        ..Config::default()
    }
    .validate()
    .unwrap()
}

/// Creates the raw topics as ingest would (same partition count as the processor's topics).
/// The committed offsets of `group` on partitions `0..PARTITIONS` of each of `topics`; partitions
/// with nothing committed are left out. The coordinator is asked again when it does not answer
/// within one request's timeout (a loaded machine), for up to a minute.
pub(crate) fn committed_offsets(
    broker: &PrivateBroker,
    group: &str,
    topics: &[&str],
) -> BTreeMap<(String, i32), i64> {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for topic in topics {
        for partition in 0..PARTITIONS {
            list.add_partition(topic, partition);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let committed = loop {
        match rdkafka::consumer::Consumer::committed_offsets(&consumer, list.clone(), Duration::from_secs(10))
        {
            Ok(committed) => break committed,
            Err(error) if std::time::Instant::now() < deadline => {
                println!("reading the committed offsets of {group}: {error}; asking again");
            }
            Err(error) => panic!("reading the committed offsets of {group}: {error}"),
        }
    };
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(offset) => Some(((e.topic().to_owned(), e.partition()), offset)),
            _ => None,
        })
        .collect()
}

pub(crate) async fn create_raw_topics(broker: &PrivateBroker) {
    let client = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .clone();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> = client.create().unwrap();
    let topics: Vec<_> = switchboard_schemas::Source::ALL
        .iter()
        .map(|s| {
            rdkafka::admin::NewTopic::new(
                s.raw_topic(),
                PARTITIONS,
                rdkafka::admin::TopicReplication::Fixed(1),
            )
        })
        .collect();
    let options = rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await.unwrap() {
        result.unwrap();
    }
}

/// A processor running in this process until stopped.
pub(crate) struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The admin server's address.
    pub(crate) admin: std::net::SocketAddr,
}

impl InProcess {
    pub(crate) async fn start(config: Config) -> Self {
        switchboard_service::telemetry::init_logging();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(switchboard_processor::run(config, listener, async {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
            admin,
        }
    }

    /// SIGTERM-equivalent: finish the open transaction, leave the group.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        self.task.await.unwrap().unwrap();
    }
}

/// Produces raw envelopes the way ingest does (key phone id, headers event-id and source).
pub(crate) struct RawProducer {
    producer: FutureProducer,
    codec: Codec,
}

impl RawProducer {
    pub(crate) fn new(broker: &PrivateBroker) -> Self {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random")
            .create()
            .unwrap();
        Self {
            producer,
            codec: Codec::new(&switchboard_tests::registry_url()).unwrap(),
        }
    }

    pub(crate) async fn send(&self, raw: &RawWebhook) {
        let topic = raw
            .source
            .parse::<switchboard_schemas::Source>()
            .unwrap()
            .raw_topic();
        let payload = self
            .codec
            .encode(topic, RawWebhook::schema_def(), raw)
            .await
            .unwrap();
        self.send_at(
            topic,
            &raw.phone_id,
            &payload,
            &raw.event_id,
            &raw.source,
            Some(raw.received_at),
        )
        .await;
    }

    pub(crate) async fn send_bytes(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        event_id: &str,
        source: &str,
    ) {
        self.send_at(topic, key, payload, event_id, source, None).await;
    }

    /// Like [`Self::send_bytes`], with the record timestamp `timestamp` (epoch ms) as ingest sets it.
    pub(crate) async fn send_at(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        event_id: &str,
        source: &str,
        timestamp: Option<i64>,
    ) {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "event-id",
                value: Some(event_id),
            })
            .insert(Header {
                key: "source",
                value: Some(source),
            });
        let mut record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
        if let Some(timestamp) = timestamp {
            record = record.timestamp(timestamp);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// A realistic Twilio voice status callback envelope.
pub(crate) fn twilio_call(
    phone: &str,
    call_sid: &str,
    status: &str,
    sequence: u32,
    event_id: &str,
) -> RawWebhook {
    let mut params = vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef".to_owned()),
        ("ApiVersion", "2010-04-01".to_owned()),
        ("CallSid", call_sid.to_owned()),
        ("CallStatus", status.to_owned()),
        ("Called", phone.to_owned()),
        ("Caller", "+15005550006".to_owned()),
        ("Direction", "inbound".to_owned()),
        ("From", "+15005550006".to_owned()),
        ("To", phone.to_owned()),
        ("SequenceNumber", sequence.to_string()),
        (
            "Timestamp",
            format!("Tue, 14 Jan 2025 18:05:{:02} +0000", sequence % 60),
        ),
        ("CallbackSource", "call-progress-events".to_owned()),
    ];
    if status == "completed" {
        params.push(("CallDuration", "120".to_owned()));
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    RawWebhook {
        event_id: event_id.to_owned(),
        source: "twilio".into(),
        phone_id: phone.to_owned(),
        received_at: 1_736_877_959_000 + i64::from(sequence),
        url: "https://hooks.example.com/webhooks/twilio/calls".into(),
        content_type: "application/x-www-form-urlencoded".into(),
        headers: BTreeMap::new(),
        body: body.into_bytes(),
        signature_scheme: "twilio-hmac-sha1".into(),
        source_name: None,
    }
}

/// Every record of `topic`, decoded as `T` (schema `def`): with `isolation` `read_committed`, the
/// committed view computed from the raw batches (checked against a real `read_committed` consumer
/// on a broker that hides aborted records, see `switchboard_tests::committed`); with
/// `read_uncommitted`, everything in the log.
pub(crate) async fn read_decoded<T: serde::de::DeserializeOwned>(
    broker: &PrivateBroker,
    topic: &str,
    isolation: &str,
    def: &'static SchemaDef,
) -> Vec<(T, OwnedMessage)> {
    let messages = match isolation {
        "read_committed" => read_committed(broker, topic).await,
        _ => {
            let bootstrap = broker.bootstrap();
            let topic_name = topic.to_owned();
            let isolation = isolation.to_owned();
            tokio::task::spawn_blocking(move || read_to_end(&bootstrap, &topic_name, &isolation))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let codec = Codec::new(&switchboard_tests::registry_url()).unwrap();
    let mut decoded = Vec::new();
    for message in messages {
        let value: T = codec.decode(def, message.payload().unwrap()).await.unwrap();
        decoded.push((value, message));
    }
    decoded
}

/// The committed records of `topic` (see [`read_decoded`]).
pub(crate) async fn read_committed(broker: &PrivateBroker, topic: &str) -> Vec<OwnedMessage> {
    committed::committed_messages(&broker.bootstrap(), topic)
        .await
        .unwrap_or_else(|e| panic!("reading the committed view of {topic}: {e:#}"))
}

/// Asserts that the committed view of `topic` (domain call events) holds each of `expected` event
/// ids exactly once and nothing else; prints and returns the counts.
pub(crate) async fn assert_calls_exactly_once(
    broker: &PrivateBroker,
    topic: &str,
    expected: impl IntoIterator<Item = String>,
) -> ExactlyOnce {
    let codec = Codec::new(&switchboard_tests::registry_url()).unwrap();
    let (_, report) = committed::assert_exactly_once(&broker.bootstrap(), topic, expected, async |record| {
        let value = record
            .value
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no value"))?;
        Ok(codec
            .decode::<CallEvent>(CallEvent::schema_def(), value)
            .await?
            .event_id)
    })
    .await;
    report
}

/// Raw records of `topic` with their headers.
pub(crate) async fn read_raw(broker: &PrivateBroker, topic: &str) -> Vec<OwnedMessage> {
    let bootstrap = broker.bootstrap();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_to_end(&bootstrap, &topic, "read_uncommitted"))
        .await
        .unwrap()
        .unwrap()
}

pub(crate) fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub(crate) async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A completed call (call sid from `n`), as the processor writes it to `switchboard.calls`.
pub(crate) fn completed_call(event_id: &str, n: usize) -> CallEvent {
    CallEvent {
        from: Some("+15005550006".into()),
        to: Some("+15554000001".into()),
        direction: Some("inbound".into()),
        call_status: Some("completed".into()),
        call_duration: Some(120),
        sequence_number: Some(4),
        ..CallEvent::new(
            event_id,
            "+15554000001",
            &format!("CA{n:032}"),
            CallKind::Status,
            1_736_877_900_000,
        )
    }
}

/// Produces domain `events` to `switchboard.calls` as the processor does (Avro, key phone id).
pub(crate) async fn produce_calls(broker: &PrivateBroker, events: &[CallEvent]) {
    let producer = RawProducer::new(broker);
    for event in events {
        let payload = producer
            .codec
            .encode(switchboard_schemas::topics::CALLS, CallEvent::schema_def(), event)
            .await
            .unwrap();
        producer
            .send_bytes(
                switchboard_schemas::topics::CALLS,
                &event.phone_id,
                &payload,
                &event.event_id,
                "twilio",
            )
            .await;
    }
}

/// A child process, SIGKILLed when dropped.
pub(crate) struct Proc(Child);

impl Proc {
    /// The exit status, if it has exited.
    pub(crate) fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().unwrap()
    }

    /// SIGTERM, and the exit status once it has exited.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        self.0.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `switchboard-processor <args>` against `broker` and the shared registry, with `env`,
/// its log appended to `log`.
pub(crate) fn spawn(
    broker: &PrivateBroker,
    args: &[&str],
    env: &[(&str, String)],
    log: &std::path::Path,
) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard-processor"));
    command
        .args(args)
        .env("SWITCHBOARD_KAFKA_BOOTSTRAP", broker.bootstrap())
        .env(
            "SWITCHBOARD_SCHEMA_REGISTRY_URL",
            switchboard_tests::registry_url(),
        )
        .env("SWITCHBOARD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_SESSION_TIMEOUT", "6s")
        .stdout(Stdio::null())
        .stderr(log);
    let instance = env
        .iter()
        .find(|(key, _)| *key == "SWITCHBOARD_INSTANCE_ID")
        .map_or("default", |(_, value)| value.as_str());
    command.env("SWITCHBOARD_STATE_DIR", broker.state_dir(instance));
    for (key, value) in env {
        command.env(key, value);
    }
    Proc(command.spawn().unwrap())
}

/// A port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
