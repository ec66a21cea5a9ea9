//! Issue 13 at the Kafka level: what the stored envelope holds (no signature header, the provider's
//! token as metadata only) and the body limit aligned with the producer's `message.max.bytes`
//! (the largest accepted request is stored; a body that could never be stored is 413, not an
//! endless 503).

use std::collections::HashSet;
use std::time::Duration;

use switchboard_ingest::config::{Config, DEFAULT_MESSAGE_MAX_BYTES};
use switchboard_ingest::envelope::{ENVELOPE_OVERHEAD_BYTES, MAX_HEAD_BYTES};

use crate::kafka::{RunningIngest, call, records_for};
use crate::signing::{self, PUBLIC_URL, form};

const PATH: &str = "/webhooks/twilio/calls";

fn unique_call() -> (String, String) {
    let call_sid = format!("CA{}", &switchboard_tests::unique("x").replace('-', "")[..20]);
    let phone_id = format!("+1556{}", std::process::id() % 10_000_000);
    (call_sid, phone_id)
}

async fn start() -> RunningIngest {
    RunningIngest::start_with(Config {
        kafka_bootstrap: switchboard_tests::kafka_bootstrap(),
        publish_timeout: Duration::from_secs(10),
        ..Config::default()
    })
    .await
}

fn signed_post(
    client: &reqwest::Client,
    ingest: &RunningIngest,
    params: &[(&str, String)],
) -> reqwest::RequestBuilder {
    let pairs: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    client
        .post(format!("http://{}{PATH}", ingest.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            signing::twilio(&format!("{PUBLIC_URL}{PATH}"), &pairs),
        )
        .body(form(&pairs))
        .timeout(Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_signature_header_reaches_kafka_and_the_token_is_metadata() {
    let bootstrap = switchboard_tests::kafka_bootstrap();
    let ingest = start().await;
    let client = reqwest::Client::new();
    let (call_sid, phone_id) = unique_call();
    let params = call(&phone_id, &call_sid, "completed");
    let response = signed_post(&client, &ingest, &params)
        .header("i-twilio-idempotency-token", "token-kafka-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let records = records_for(&bootstrap, &phone_id, &HashSet::from([call_sid]));
    assert_eq!(records.len(), 1);
    let (raw, record_headers, _) = &records[0];
    for name in raw.headers.keys() {
        assert!(!name.contains("signature"), "{name} stored: {:?}", raw.headers);
    }
    assert!(
        record_headers.iter().all(|(name, _)| !name.contains("signature")),
        "{record_headers:?}"
    );
    assert_eq!(raw.headers["i-twilio-idempotency-token"], "token-kafka-1");
    assert!(raw.event_id.starts_with("sha256:"), "{}", raw.event_id);
    assert_ne!(raw.event_id, "token-kafka-1");
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_accepted_request_is_stored_and_an_unstorable_body_is_413() {
    let bootstrap = switchboard_tests::kafka_bootstrap();
    let ingest = start().await;
    let max_body = Config::default().max_body_bytes;
    assert!(max_body + ENVELOPE_OVERHEAD_BYTES <= DEFAULT_MESSAGE_MAX_BYTES);
    let client = reqwest::Client::new();

    // The largest body, with a head close to the largest: stored.
    let (call_sid, phone_id) = unique_call();
    let mut params = call(&phone_id, &call_sid, "completed");
    let pairs: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let filler = max_body - form(&pairs).len() - "&Filler=".len();
    params.push(("Filler", "x".repeat(filler)));
    let response = signed_post(&client, &ingest, &params)
        .header("x-padding", "p".repeat(MAX_HEAD_BYTES - 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let records = records_for(&bootstrap, &phone_id, &HashSet::from([call_sid]));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0.body.len(), max_body);

    // Over librdkafka's message.max.bytes (1,000,000) but under the old max_body_bytes (1 MiB):
    // once answered 503 + Retry-After on every retry, now 413.
    let (call_sid, phone_id) = unique_call();
    let mut params = call(&phone_id, &call_sid, "completed");
    params.push(("Filler", "x".repeat(1_020_000)));
    let response = signed_post(&client, &ingest, &params).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.headers().get("retry-after").is_none());
    ingest.shutdown().await;
}
