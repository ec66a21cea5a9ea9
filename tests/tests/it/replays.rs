//! Replays end to end (issue 13): ingest derives event ids from the signed content and namespaces
//! generic ids by source, so the processor's dedup folds a replayed Twilio or GitHub request with a
//! new unsigned delivery token into the original event, and keeps two generic sources' events with
//! the same `webhook-id` apart.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use switchboard_ingest::config::{Config, GenericScheme, GenericSource, SecretStrings};
use switchboard_schemas::domain::{CallEvent, GenericEvent};
use switchboard_schemas::topics;
use switchboard_tests::broker::PrivateBroker;
use tokio::sync::oneshot;

use crate::pipeline::{Running, read, start_processor};

const PUBLIC_URL: &str = "https://hooks.example.com";
const TWILIO_TOKEN: &str = "replays-twilio-token";
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const GITHUB_SECRET: &str = "replays-github-secret";

fn secrets(values: &[&str]) -> SecretStrings {
    SecretStrings(values.iter().map(|s| s.to_string()).collect())
}

async fn start_ingest(broker: &PrivateBroker) -> (Running, String) {
    let standard = |name: &str| GenericSource {
        name: name.into(),
        scheme: GenericScheme::StandardWebhooks,
        secrets: secrets(&[STANDARD_SECRET]),
        phone_id_pointer: None,
    };
    let config = Config {
        kafka_bootstrap: broker.bootstrap(),
        schema_registry_url: switchboard_tests::registry_url(),
        public_url: Some(PUBLIC_URL.into()),
        twilio_auth_tokens: secrets(&[TWILIO_TOKEN]),
        generic: vec![
            standard("crm-a"),
            standard("crm-b"),
            GenericSource {
                name: "gh".into(),
                scheme: GenericScheme::Github,
                secrets: secrets(&[GITHUB_SECRET]),
                phone_id_pointer: None,
            },
        ],
        topic_partitions: 3,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(switchboard_ingest::run(
        config.validate().unwrap(),
        listener,
        admin,
        async {
            let _ = stopped.await;
        },
    ));
    (Running::new(stop, task), base)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn twilio_signature(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    sorted.dedup();
    let data: String = std::iter::once(url.to_owned())
        .chain(sorted.iter().map(|(k, v)| format!("{k}{v}")))
        .collect();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(TWILIO_TOKEN.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Posts until ingest answers (it may answer 503 before its producer has metadata); the status.
async fn post(request: impl Fn() -> reqwest::RequestBuilder) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = request().send().await.unwrap().status().as_u16();
        if status != 503 {
            return status;
        }
        assert!(Instant::now() < deadline, "ingest never accepted the request");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_with_new_tokens_are_deduplicated_and_generic_sources_never_collide() {
    let broker = PrivateBroker::start().unwrap();
    let (ingest, base) = start_ingest(&broker).await;
    let processor = start_processor(&broker).await;
    let client = reqwest::Client::new();

    // One Twilio callback, replayed with new idempotency tokens and with a repeated pair appended
    // (both still verify); then a different callback of the same call as a sentinel.
    let path = "/webhooks/twilio/calls";
    let call = |status: &'static str| {
        vec![
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("CallSid", "CA22222222222222222222222222222222"),
            ("From", "+15005550006"),
            ("To", "+15557770002"),
            ("Direction", "inbound"),
            ("CallStatus", status),
        ]
    };
    let mut repeated = call("ringing");
    repeated.push(("CallStatus", "ringing"));
    let sends = [
        (call("ringing"), "token-1"),
        (call("ringing"), "token-2"),
        (repeated, "token-3"),
        (call("completed"), "token-4"),
    ];
    for (params, token) in &sends {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let signature = twilio_signature(&format!("{PUBLIC_URL}{path}"), params);
        let status = post(|| {
            client
                .post(format!("{base}{path}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", &signature)
                .header("i-twilio-idempotency-token", *token)
                .body(body.clone())
        })
        .await;
        assert_eq!(status, 200, "{token}");
    }

    // Two Standard Webhooks sources sending the same `webhook-id`; one GitHub delivery replayed
    // with a new delivery id; then a sentinel. All keyed `unassigned`: one partition, in order.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = STANDARD
        .decode(STANDARD_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let standard = |source: &str, id: &str, body: &str| {
        let signature = format!(
            "v1,{}",
            STANDARD.encode(hmac_sha256(&key, format!("{id}.{t}.{body}").as_bytes()))
        );
        client
            .post(format!("{base}/webhooks/generic/{source}"))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", t.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
    };
    let gh_body = r#"{"action":"opened","number":7}"#;
    let github = |delivery: &str| {
        client
            .post(format!("{base}/webhooks/generic/gh"))
            .header("content-type", "application/json")
            .header(
                "x-hub-signature-256",
                format!(
                    "sha256={}",
                    hex::encode(hmac_sha256(GITHUB_SECRET.as_bytes(), gh_body.as_bytes()))
                ),
            )
            .header("x-github-delivery", delivery)
            .body(gh_body)
    };
    assert_eq!(post(|| standard("crm-a", "msg_shared", r#"{"n":1}"#)).await, 200);
    assert_eq!(post(|| standard("crm-b", "msg_shared", r#"{"n":2}"#)).await, 200);
    assert_eq!(post(|| github("delivery-1")).await, 200);
    assert_eq!(post(|| github("delivery-2")).await, 200);
    assert_eq!(post(|| standard("crm-a", "msg_last", r#"{"n":3}"#)).await, 200);

    let deadline = Instant::now() + Duration::from_secs(90);
    let (calls, generic) = loop {
        let calls: Vec<(CallEvent, Vec<u8>)> = read(&broker, topics::CALLS, CallEvent::schema_def()).await;
        let generic: Vec<(GenericEvent, Vec<u8>)> =
            read(&broker, topics::GENERIC, GenericEvent::schema_def()).await;
        let sentinels = calls
            .iter()
            .any(|(e, _)| e.call_status.as_deref() == Some("completed"))
            && generic
                .iter()
                .any(|(e, _)| e.source_name == "crm-a" && e.body == r#"{"n":3}"#);
        if sentinels {
            break (calls, generic);
        }
        assert!(
            Instant::now() < deadline,
            "domain events did not appear: {} calls, {} generic",
            calls.len(),
            generic.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let statuses: Vec<_> = calls
        .iter()
        .map(|(e, _)| e.call_status.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        statuses,
        ["ringing", "completed"],
        "three deliveries of `ringing` with different tokens are one event"
    );
    let sources: Vec<_> = generic.iter().map(|(e, _)| e.source_name.as_str()).collect();
    assert_eq!(
        sources.iter().filter(|s| **s == "crm-b").count(),
        1,
        "crm-b's event must not be suppressed by crm-a's with the same webhook-id: {sources:?}"
    );
    assert_eq!(
        sources.iter().filter(|s| **s == "gh").count(),
        1,
        "a GitHub replay with a new delivery id is the same event: {sources:?}"
    );
    let mut ids: Vec<_> = generic.iter().map(|(e, _)| e.event_id.clone()).collect();
    ids.sort();
    let gh_id = format!(
        "gh:sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(gh_body.as_bytes()))
    );
    let mut expected = vec![
        "crm-a:msg_last".to_owned(),
        "crm-a:msg_shared".to_owned(),
        "crm-b:msg_shared".to_owned(),
        gh_id,
    ];
    expected.sort();
    assert_eq!(ids, expected);

    processor.stop().await;
    ingest.stop().await;
}
