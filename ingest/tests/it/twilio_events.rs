//! `POST /webhooks/twilio-events` through the router, with a publisher that can fail chosen
//! records: the SDK vectors, Basic auth, the split into one record per CloudEvent, and the rule
//! that a batch is answered 2xx only when every record is stored.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use serde_json::Value;
use switchboard_ingest::app::{AppState, app};
use switchboard_ingest::config::{Config, SecretStrings};
use switchboard_ingest::envelope::Envelope;
use switchboard_ingest::publish::{NotReady, PublishError, Publisher};
use switchboard_ingest::samples;
use switchboard_ingest::verify::Secret;
use switchboard_ingest::verify::twilio::TwilioKey;
use tower::ServiceExt;
use url::Url;

/// Stores every record except those whose event id is in `failing` (answered as a broker timeout).
#[derive(Default)]
struct Selective {
    published: Mutex<Vec<Envelope>>,
    failing: Mutex<HashSet<String>>,
}

impl Publisher for Selective {
    fn publish<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            if self.failing.lock().unwrap().contains(envelope.event_id()) {
                return Err(PublishError::Timeout(Duration::from_secs(5)));
            }
            self.published.lock().unwrap().push(envelope.clone());
            Ok(())
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        Box::pin(async { Ok(()) })
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

// The known answers of `ingest/verify/src/twilio_events.rs`, computed with the official `twilio`
// package by `scripts/twilio_events_vectors.py` (auth token `12345`).
const TOKEN: &str = "12345";
const BODY: &str = r#"[{"specversion":"1.0","type":"com.twilio.messaging.message.delivered","source":"/2010-04-01/Accounts/AC123/Messages/SM123.json","id":"EZ00000000000000000000000000000001","dataschema":"https://events-schemas.twilio.com/Messaging.MessageStatus/7","datacontenttype":"application/json","time":"2025-01-14T18:06:00.000Z","data":{"messageSid":"SM123","accountSid":"AC123","from":"+15551230000","to":"+14155550199","messageStatus":"DELIVERED","timestamp":"2025-01-14T18:06:00.000Z","eventName":"com.twilio.messaging.message.delivered","apiVersion":"2010-04-01"}}]"#;
const PATH: &str =
    "/webhooks/twilio-events?bodySHA256=3d65847e0019755232e91c983173627c4b48a2dd70f884c1502379e118b5c7d1";
const SIG: &str = "ku/P/1vLljbLFC8bekUdquIC9kg=";
const SIG_USERINFO: &str = "Qt4M01CRayC1eFrLgJ6ioXpib/0=";
/// `twilio:s3cret`.
const BASIC: &str = "Basic dHdpbGlvOnMzY3JldA==";

fn config() -> Config {
    Config {
        public_url: Some("https://hooks.example.com".into()),
        twilio_auth_tokens: SecretStrings(vec![TOKEN.into()]),
        replay_cache_entries: 0,
        ..Config::default()
    }
}

struct Harness {
    publisher: Arc<Selective>,
    router: axum::Router,
}

impl Harness {
    fn new(config: Config) -> Self {
        let publisher = Arc::new(Selective::default());
        let settings = Arc::new(config.validate().unwrap());
        let state = AppState::new(settings, Arc::clone(&publisher) as Arc<dyn Publisher>);
        Self {
            publisher,
            router: app(state),
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    fn published(&self) -> Vec<Envelope> {
        self.publisher.published.lock().unwrap().clone()
    }
}

fn request(path: &str, body: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

/// A signed batch of `events` call status events, as `switchboard-ingest send twilio-events` makes.
fn batch(events: usize) -> (Request<Body>, Vec<Value>) {
    let events = samples::twilio_events_batch(
        1_736_877_959,
        events,
        "https://hooks.example.com/webhooks/twilio/calls",
    );
    let outgoing = samples::twilio_events_request(
        Url::parse("http://127.0.0.1:8080/webhooks/twilio-events").unwrap(),
        Some(&Url::parse("https://hooks.example.com").unwrap()),
        &events,
        &TwilioKey::AuthToken(Secret::new(TOKEN)),
        None,
    );
    let path = &outgoing.url[url::Position::BeforePath..];
    let mut builder = Request::post(path);
    for (name, value) in &outgoing.headers {
        builder = builder.header(name, value);
    }
    (builder.body(Body::from(outgoing.body)).unwrap(), events)
}

#[tokio::test]
async fn the_sdk_vector_is_stored_as_one_cloudevent_record() {
    let harness = Harness::new(config());
    let (status, _, body) = harness
        .send(request(PATH, BODY, &[("x-twilio-signature", SIG)]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"], 1);
    let published = harness.published();
    assert_eq!(published.len(), 1);
    let record = published[0].record();
    assert_eq!(
        record.event_id,
        "twilio-events:EZ00000000000000000000000000000001"
    );
    assert_eq!(record.source, "twilio");
    assert_eq!(record.content_type, "application/cloudevents+json");
    assert_eq!(published[0].topic(), "switchboard.raw.twilio");
    // The element's bytes: here the whole array minus its brackets.
    assert_eq!(record.body, BODY.as_bytes()[1..BODY.len() - 1]);
    // A message status event names no direction: `To`, as for message status callbacks.
    assert_eq!(record.phone_id, "+14155550199");
    assert!(!record.headers.contains_key("x-twilio-signature"));
    assert_eq!(record.url, format!("https://hooks.example.com{PATH}"));
}

#[tokio::test]
async fn tenants_and_per_type_pointers_choose_the_phone_id() {
    let mut tenants_config = config();
    tenants_config.tenants.twilio_numbers =
        BTreeMap::from([("+15551230000".to_owned(), "tenant-a".to_owned())]);
    let harness = Harness::new(tenants_config);
    let (status, _, _) = harness
        .send(request(PATH, BODY, &[("x-twilio-signature", SIG)]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(harness.published()[0].key(), "tenant-a");

    let mut pointer_config = config();
    pointer_config.twilio_events_phone_id_pointers =
        BTreeMap::from([("com.twilio.messaging.*".to_owned(), "/data/from".to_owned())]);
    let harness = Harness::new(pointer_config);
    let (status, _, _) = harness
        .send(request(PATH, BODY, &[("x-twilio-signature", SIG)]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(harness.published()[0].key(), "+15551230000");
}

#[tokio::test]
async fn wrong_signatures_and_bodies_are_refused_and_publish_nothing() {
    let harness = Harness::new(config());
    let cases = [
        (
            request(PATH, BODY, &[("x-twilio-signature", SIG_USERINFO)]),
            StatusCode::UNAUTHORIZED,
        ),
        (request(PATH, BODY, &[]), StatusCode::UNAUTHORIZED),
        (
            request(PATH, "[]", &[("x-twilio-signature", SIG)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            request("/webhooks/twilio-events", BODY, &[("x-twilio-signature", SIG)]),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (request, expected) in cases {
        let (status, _, body) = harness.send(request).await;
        assert_eq!(status, expected, "{body}");
    }
    assert!(harness.published().is_empty());
}

#[tokio::test]
async fn basic_auth_is_required_when_configured() {
    let mut with_basic = config();
    with_basic.twilio_events_basic_auth = SecretStrings(vec!["twilio:s3cret".into()]);
    let harness = Harness::new(with_basic);
    let refused = [
        request(PATH, BODY, &[("x-twilio-signature", SIG)]),
        request(
            PATH,
            BODY,
            &[
                ("x-twilio-signature", SIG),
                ("authorization", "Basic dHdpbGlvOndyb25n"),
            ],
        ),
    ];
    for request in refused {
        let (status, _, body) = harness.send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "missing or wrong basic auth credentials");
    }
    assert!(harness.published().is_empty());
    // Signed over the URL without userinfo, and over the URL with it.
    for signature in [SIG, SIG_USERINFO] {
        let request = request(
            PATH,
            BODY,
            &[("x-twilio-signature", signature), ("authorization", BASIC)],
        );
        let (status, _, body) = harness.send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let published = harness.published();
    assert_eq!(published.len(), 2);
    assert!(!published[0].record().headers.contains_key("authorization"));
}

#[tokio::test]
async fn a_batch_becomes_one_record_per_event_in_order() {
    let harness = Harness::new(config());
    let (request, events) = batch(10);
    let (status, _, body) = harness.send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["events"].as_u64(), body["duplicates"].as_u64()),
        (Some(10), Some(0))
    );
    let mut published = harness.published();
    assert_eq!(published.len(), 10);
    let ids = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| format!("twilio-events:{}", e["id"].as_str().unwrap()))
            .collect()
    };
    // Published concurrently: compare as sets, then each record's body with its event.
    published.sort_by_key(|envelope| ids(&events).iter().position(|id| id == envelope.event_id()));
    let published_ids: Vec<String> = published.iter().map(|e| e.event_id().to_owned()).collect();
    assert_eq!(published_ids, ids(&events));
    for (envelope, event) in published.iter().zip(&events) {
        let stored: Value = serde_json::from_slice(&envelope.record().body).unwrap();
        assert_eq!(&stored, event);
        // Inbound sample calls: the phone id is `To`.
        assert_eq!(envelope.key(), "+14155550199");
    }
}

#[tokio::test]
async fn a_partly_stored_batch_is_503_and_its_redelivery_completes_it() {
    let mut cached = config();
    cached.replay_cache_entries = 1000;
    let harness = Harness::new(cached);
    let (_, events) = batch(10);
    let failing = format!("twilio-events:{}", events[3]["id"].as_str().unwrap());
    harness.publisher.failing.lock().unwrap().insert(failing.clone());
    let deliver = || {
        samples::twilio_events_request(
            Url::parse("http://127.0.0.1:8080/webhooks/twilio-events").unwrap(),
            Some(&Url::parse("https://hooks.example.com").unwrap()),
            &events,
            &TwilioKey::AuthToken(Secret::new(TOKEN)),
            None,
        )
    };
    let as_request = |outgoing: samples::Outgoing| {
        let mut builder = Request::post(&outgoing.url[url::Position::BeforePath..]);
        for (name, value) in &outgoing.headers {
            builder = builder.header(name, value);
        }
        builder.body(Body::from(outgoing.body)).unwrap()
    };

    let (status, headers, body) = harness.send(as_request(deliver())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(harness.published().len(), 9, "the others are stored");

    // Twilio redelivers the same batch: the nine stored events are replays, the tenth is stored.
    harness.publisher.failing.lock().unwrap().clear();
    let (status, _, body) = harness.send(as_request(deliver())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["events"].as_u64(), body["duplicates"].as_u64()),
        (Some(10), Some(9))
    );
    let published = harness.published();
    assert_eq!(published.len(), 10);
    assert_eq!(published.last().unwrap().event_id(), failing);
}

#[tokio::test]
async fn batches_over_the_event_limit_are_413_before_publishing() {
    let mut limited = config();
    limited.twilio_events_max_events = 5;
    let harness = Harness::new(limited);
    let (request, _) = batch(6);
    let (status, _, body) = harness.send(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "batch has more than 5 events");
    let (request, _) = batch(5);
    let (status, _, _) = harness.send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(harness.published().len(), 5);
}
