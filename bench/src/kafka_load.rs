//! Baseline (b), the Kafka ceiling: the raw rdkafka producer, configured exactly as ingest's
//! (`switchboard_ingest::kafka::producer`: idempotent, `acks=all`, lz4, `linger.ms=2`), sending the
//! envelopes ingest would have built for the same webhooks — verified with ingest's verifier, built
//! with its `Envelope`, Avro-encoded with `switchboard_schemas::Codec` before the clock starts — to
//! a topic of its own on the same broker, with the same number of sends in flight.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use http::{HeaderMap, HeaderValue};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use switchboard_ingest::config::Config;
use switchboard_ingest::envelope::{Envelope, Extract, Request};
use switchboard_ingest::tenants::Tenants;
use switchboard_ingest::verify::{SecretSet, SharedKeys, twilio};
use switchboard_schemas::{Codec, RawWebhook, Source};

use crate::http_load;
use crate::report::Run;
use crate::workload::{self, Webhook};

/// Partitions of the baseline topic: ingest's default for the raw topics.
const PARTITIONS: i32 = 6;

/// One record, ready to send.
#[derive(Debug)]
pub struct Prepared {
    pub key: String,
    pub event_id: String,
    pub payload: Vec<u8>,
    pub timestamp: i64,
}

/// The headers ingest would have seen for `webhook` (those the envelope keeps).
fn request_headers(webhook: &Webhook, host: &str) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_str(host)?);
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert("content-length", HeaderValue::from(webhook.body.len()));
    headers.insert("x-twilio-signature", HeaderValue::from_str(&webhook.signature)?);
    headers.insert(
        "i-twilio-idempotency-token",
        HeaderValue::from_str(&webhook.event_id)?,
    );
    Ok(headers)
}

/// Verifies, builds and encodes the envelope of every webhook (not measured).
pub async fn prepare(
    webhooks: &[Webhook],
    public_url: &str,
    auth_token: &str,
    codec: &Codec,
    topic: &str,
) -> anyhow::Result<Vec<Prepared>> {
    let tokens = SecretSet::from_strings([auth_token]).context("auth token")?;
    let url = workload::signed_url(public_url);
    let host = url::Url::parse(public_url)?.authority().to_owned();
    let received_at = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let mut prepared = Vec::with_capacity(webhooks.len());
    for webhook in webhooks {
        let headers = request_headers(webhook, &host)?;
        let content_type = "application/x-www-form-urlencoded";
        let verified = twilio::verify(
            &tokens,
            &SharedKeys::default(),
            &headers,
            &url,
            content_type,
            &webhook.body,
        )
        .map_err(|e| anyhow::anyhow!("a pre-signed webhook does not verify: {e}"))?;
        let request = Request {
            source: Source::Twilio,
            url: &url,
            content_type,
            headers: &headers,
            body: &webhook.body,
            received_at_millis: received_at,
            source_name: None,
            dropped_headers: &[],
        };
        let tenants = Tenants::default();
        let envelope = Envelope::new(&verified, &request, Extract::Twilio { tenants: &tenants })?;
        let payload = codec
            .encode(topic, RawWebhook::schema_def(), envelope.record())
            .await?;
        prepared.push(Prepared {
            key: envelope.key().to_owned(),
            event_id: envelope.event_id().to_owned(),
            payload,
            timestamp: received_at,
        });
    }
    Ok(prepared)
}

/// Creates `topic` unless it exists.
pub async fn create_topic(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    for result in admin.create_topics([&new], &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create {topic}: {code}"),
        }
    }
    Ok(())
}

/// Ingest's producer, for `bootstrap`.
pub fn producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    let config = Config {
        kafka_bootstrap: bootstrap.to_owned(),
        ..Config::default()
    };
    Ok(switchboard_ingest::kafka::producer(&config)?)
}

async fn send(producer: &FutureProducer, topic: &str, record: &Prepared) -> Result<(), String> {
    let headers = OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: "event-id",
            value: Some(record.event_id.as_str()),
        })
        .insert(Header {
            key: "source",
            value: Some("twilio"),
        });
    let future = FutureRecord::to(topic)
        .key(&record.key)
        .payload(&record.payload)
        .headers(headers)
        .timestamp(record.timestamp);
    producer
        .send(future, Timeout::After(Duration::from_secs(5)))
        .await
        .map(|_| ())
        .map_err(|(error, _)| match error.rdkafka_error_code() {
            Some(code) => format!("{code:?}"),
            None => error.to_string(),
        })
}

/// A closed-loop run: `concurrency` sends in flight for `duration` after `warmup` unmeasured ones;
/// records wrap around when they run out.
pub async fn closed_loop(
    producer: FutureProducer,
    topic: &str,
    records: Arc<[Prepared]>,
    concurrency: usize,
    duration: Duration,
    warmup: usize,
) -> anyhow::Result<Run> {
    let topic: Arc<str> = topic.into();
    let send_one = move |index: usize| {
        let (producer, topic, records) = (producer.clone(), Arc::clone(&topic), Arc::clone(&records));
        async move { send(&producer, &topic, &records[index % records.len()]).await }
    };
    http_load::drive_closed_loop("raw rdkafka producer", send_one, concurrency, duration, warmup).await
}
