//! The pipeline end to end: signed webhooks posted to ingest over HTTP come out of the processor as
//! the right domain events, on a private broker.

use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use rdkafka::Message;
use switchboard_schemas::domain::{BillingEvent, CallEvent, CallState};
use switchboard_schemas::{Codec, SchemaDef, topics};
use switchboard_tests::broker::PrivateBroker;
use switchboard_tests::committed;
use tokio::sync::oneshot;

const PUBLIC_URL: &str = "https://hooks.example.com";
const TWILIO_TOKEN: &str = "pipeline-twilio-token";
const STRIPE_SECRET: &str = "whsec_pipeline";
pub(crate) const API_TOKEN: &str = "pipeline-api-token";

pub(crate) struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub(crate) fn new(stop: oneshot::Sender<()>, task: tokio::task::JoinHandle<anyhow::Result<()>>) -> Self {
        Self { stop, task }
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn start_ingest(broker: &PrivateBroker) -> (Running, String) {
    let config = switchboard_ingest::config::Config {
        kafka_bootstrap: broker.bootstrap(),
        schema_registry_url: switchboard_tests::registry_url(),
        public_url: Some(PUBLIC_URL.into()),
        twilio_auth_tokens: switchboard_ingest::config::SecretStrings(vec![TWILIO_TOKEN.into()]),
        stripe_webhook_secrets: switchboard_ingest::config::SecretStrings(vec![STRIPE_SECRET.into()]),
        topic_partitions: 3,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let task = tokio::spawn(switchboard_ingest::run(
        config.validate().unwrap(),
        listener,
        admin,
        async {
            let _ = stopped.await;
        },
    ));
    (Running { stop, task }, base)
}

pub(crate) async fn start_sink(broker: &PrivateBroker, database_url: String) -> (Running, String) {
    let config = switchboard_sink::SinkConfig {
        kafka_bootstrap: broker.bootstrap(),
        schema_registry_url: switchboard_tests::registry_url(),
        database_url,
        api_token: Some(API_TOKEN.into()),
        session_timeout: Duration::from_secs(6),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(switchboard_sink::run(
        config.validate().unwrap(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    (Running { stop, task }, base)
}

pub(crate) async fn start_processor(broker: &PrivateBroker) -> Running {
    let config = switchboard_processor::config::Config {
        kafka_bootstrap: broker.bootstrap(),
        schema_registry_url: switchboard_tests::registry_url(),
        instance_id: Some("pipeline-0".into()),
        state_dir: broker.state_dir("pipeline-0"),
        topic_partitions: 3,
        session_timeout: Duration::from_secs(6),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(switchboard_processor::run(
        config.validate().unwrap(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    Running { stop, task }
}

fn twilio_signature(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let data: String = std::iter::once(url.to_owned())
        .chain(sorted.iter().map(|(k, v)| format!("{k}{v}")))
        .collect();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(TWILIO_TOKEN.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn post_twilio(client: &reqwest::Client, base: &str, params: &[(&str, &str)]) -> u16 {
    let path = "/webhooks/twilio/calls";
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    client
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            twilio_signature(&format!("{PUBLIC_URL}{path}"), params),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn post_stripe(client: &reqwest::Client, base: &str, body: &str) -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(STRIPE_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    client
        .post(format!("{base}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub(crate) async fn read<T: serde::de::DeserializeOwned>(
    broker: &PrivateBroker,
    topic: &str,
    def: &'static SchemaDef,
) -> Vec<(T, Vec<u8>)> {
    let (bootstrap, topic) = (broker.bootstrap(), topic.to_owned());
    // The committed view (see `switchboard_tests::committed`): what a read_committed reader of a
    // broker that hides aborted records gets, on any broker.
    let messages = committed::committed_messages(&bootstrap, &topic).await.unwrap();
    let codec = Codec::new(&switchboard_tests::registry_url()).unwrap();
    let mut out = Vec::new();
    for message in messages {
        out.push((
            codec.decode(def, message.payload().unwrap()).await.unwrap(),
            message.key().unwrap_or_default().to_vec(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_through_ingest_become_domain_events() {
    let broker = PrivateBroker::start().unwrap();
    let (ingest, base) = start_ingest(&broker).await;
    let processor = start_processor(&broker).await;
    let database = tempfile::tempdir().unwrap();
    let (sink, sink_base) = start_sink(
        &broker,
        format!("sqlite://{}", database.path().join("calls.db").display()),
    )
    .await;
    let client = reqwest::Client::new();
    let phone = "+15557770001";
    let call = |status: &'static str, sequence: &'static str| {
        vec![
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("CallSid", "CA11111111111111111111111111111111"),
            ("From", "+15005550006"),
            ("To", phone),
            ("Direction", "inbound"),
            ("CallStatus", status),
            ("SequenceNumber", sequence),
            ("CallDuration", "120"),
        ]
    };
    // Ingest may answer 503 until its producer has metadata: providers retry, so does the test.
    let deadline = Instant::now() + Duration::from_secs(60);
    for params in [
        call("ringing", "1"),
        call("completed", "3"),
        call("completed", "3"),
        call("in-progress", "2"),
    ] {
        while post_twilio(&client, &base, &params).await != 200 {
            assert!(Instant::now() < deadline, "ingest never accepted the callback");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let stripe = r#"{"id":"evt_pipeline_1","type":"invoice.paid","account":"acct_1","created":1736877959,"data":{"object":{"id":"in_1","customer":"cus_1","amount_paid":4900,"currency":"usd","status":"paid","metadata":{"phone_id":"+15557770001"}}}}"#;
    assert_eq!(post_stripe(&client, &base, stripe).await, 200);

    let deadline = Instant::now() + Duration::from_secs(90);
    let (calls, billing) = loop {
        let calls: Vec<(CallEvent, Vec<u8>)> = read(&broker, topics::CALLS, CallEvent::schema_def()).await;
        let billing: Vec<(BillingEvent, Vec<u8>)> =
            read(&broker, topics::BILLING, BillingEvent::schema_def()).await;
        if calls.len() >= 3 && !billing.is_empty() {
            break (calls, billing);
        }
        assert!(
            Instant::now() < deadline,
            "domain events did not appear: {} calls, {} billing",
            calls.len(),
            billing.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let statuses: Vec<_> = calls
        .iter()
        .map(|(e, _)| e.call_status.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        calls.len(),
        3,
        "the redelivered `completed` is deduplicated: {statuses:?}"
    );
    assert!(
        calls
            .iter()
            .all(|(e, key)| e.phone_id == phone && key == phone.as_bytes() && e.kind == "status")
    );
    let (invoice, key) = &billing[0];
    assert_eq!(key, phone.as_bytes());
    assert_eq!(
        (
            invoice.event_type.as_str(),
            invoice.object_id.as_str(),
            invoice.amount
        ),
        ("invoice.paid", "in_1", Some(4900))
    );

    let states: Vec<(CallState, Vec<u8>)> = read(&broker, topics::CALL_STATE, CallState::schema_def()).await;
    let (state, _) = states.last().unwrap();
    assert_eq!(
        (state.status.as_str(), state.duration_seconds),
        ("completed", Some(120))
    );

    // The basic scenario: the stored call, through the calls API.
    let deadline = Instant::now() + Duration::from_secs(60);
    let call = loop {
        let response = client
            .get(format!("{sink_base}/calls/CA11111111111111111111111111111111"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = if status == 200 {
            response.json::<serde_json::Value>().await.unwrap()
        } else {
            serde_json::Value::Null
        };
        if body["status"] == "completed" {
            break body;
        }
        assert!(status == 200 || status == 404, "GET /calls: {status}");
        assert!(
            Instant::now() < deadline,
            "the completed call never reached the database: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(call["status"], "completed", "{call}");
    assert_eq!(call["duration_seconds"], 120, "{call}");
    assert_eq!(call["phone_id"], phone);
    let unauthorized = client
        .get(format!("{sink_base}/calls/CA11111111111111111111111111111111"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);

    sink.stop().await;
    processor.stop().await;
    ingest.stop().await;
}
