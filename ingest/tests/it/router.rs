//! The router with a fake publisher: every status code of the contract, and what reaches the
//! publisher (or does not).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use switchboard_ingest::app::{AppState, EMPTY_TWIML, app};
use switchboard_ingest::config::{Config, GenericScheme, GenericSource, SecretStrings};
use switchboard_ingest::envelope::Envelope;
use switchboard_ingest::publish::{NotReady, PublishError, Publisher};
use tower::ServiceExt;

use crate::signing::{self, *};

/// Records what it is asked to publish; fails on demand.
#[derive(Default)]
pub(crate) struct FakePublisher {
    published: Mutex<Vec<Envelope>>,
    fail_with: Mutex<Option<fn() -> PublishError>>,
    not_ready: Mutex<Option<String>>,
}

impl Publisher for FakePublisher {
    fn publish<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            if let Some(fail) = *self.fail_with.lock().unwrap() {
                return Err(fail());
            }
            self.published.lock().unwrap().push(envelope.clone());
            Ok(())
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        Box::pin(async move {
            let reason = self.not_ready.lock().unwrap().clone();
            reason.map_or(Ok(()), |reason| Err(NotReady::Kafka(reason)))
        })
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

pub(crate) fn secrets(values: &[&str]) -> SecretStrings {
    SecretStrings(values.iter().map(|s| s.to_string()).collect())
}

pub(crate) fn config() -> Config {
    Config {
        public_url: Some(PUBLIC_URL.into()),
        twilio_auth_tokens: secrets(&["an-old-token", TWILIO_TOKEN]),
        stripe_webhook_secrets: secrets(&[STRIPE_SECRET]),
        calendly_signing_keys: secrets(&[CALENDLY_KEY]),
        generic: vec![
            GenericSource {
                name: "acme".into(),
                scheme: GenericScheme::StandardWebhooks,
                secrets: secrets(&[STANDARD_SECRET]),
                phone_id_pointer: Some("/data/phone_id".into()),
            },
            GenericSource {
                name: "gh".into(),
                scheme: GenericScheme::Github,
                secrets: secrets(&[GITHUB_SECRET]),
                phone_id_pointer: None,
            },
        ],
        max_body_bytes: 4096,
        // These tests count what repeated requests publish; the replay cache has its own tests.
        replay_cache_entries: 0,
        ..Config::default()
    }
}

pub(crate) struct Harness {
    pub(crate) publisher: Arc<FakePublisher>,
    router: axum::Router,
    admin: axum::Router,
}

impl Harness {
    pub(crate) fn new(config: Config) -> Self {
        let publisher = Arc::new(FakePublisher::default());
        let settings = Arc::new(config.validate().unwrap());
        let state = AppState::new(settings, Arc::clone(&publisher) as Arc<dyn Publisher>);
        let admin = switchboard_ingest::admin_app(state.clone());
        Self {
            publisher,
            router: app(state),
            admin,
        }
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        Self::answer(self.router.clone(), request).await
    }

    /// Sends to the admin listener's router.
    async fn send_admin(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        Self::answer(self.admin.clone(), request).await
    }

    async fn answer(
        router: axum::Router,
        request: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    pub(crate) fn published(&self) -> Vec<Envelope> {
        self.publisher.published.lock().unwrap().clone()
    }
}

pub(crate) const CALL: &[(&str, &str)] = &[
    ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
    ("CallSid", "CA0123456789abcdef0123456789abcdef"),
    ("From", "+15005550006"),
    ("To", "+15551230000"),
    ("Direction", "inbound"),
    ("CallStatus", "completed"),
    ("CallDuration", "120"),
];

pub(crate) fn twilio_request(path: &str, params: &[(&str, &str)], signature: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(Body::from(form(params)))
        .unwrap()
}

pub(crate) fn signed_twilio(path: &str) -> Request<Body> {
    twilio_request(path, CALL, &signing::twilio(&format!("{PUBLIC_URL}{path}"), CALL))
}

pub(crate) fn json_request(path: &str, body: &str, headers: &[(&str, String)]) -> Request<Body> {
    let mut builder = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn a_signed_twilio_callback_is_published_and_answered_with_twiml() {
    let harness = Harness::new(config());
    let (status, headers, body) = harness
        .send(signed_twilio("/webhooks/twilio/calls?attempt=1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/xml");
    assert_eq!(body, EMPTY_TWIML);

    let published = harness.published();
    assert_eq!(published.len(), 1);
    let envelope = &published[0];
    assert_eq!(envelope.topic(), "switchboard.raw.twilio");
    assert_eq!(envelope.key(), "+15551230000", "inbound: the phone id is To");
    let record = envelope.record();
    assert_eq!(
        record.url,
        format!("{PUBLIC_URL}/webhooks/twilio/calls?attempt=1")
    );
    assert_eq!(record.body, form(CALL).into_bytes(), "the exact bytes received");
    assert_eq!(record.signature_scheme, "twilio-hmac-sha1");
    assert!(
        record.event_id.starts_with("sha256:"),
        "no idempotency token: hash of the signed content"
    );
}

#[tokio::test]
async fn twilio_redeliveries_get_the_same_event_id_whatever_their_idempotency_token() {
    let harness = Harness::new(config());
    for _ in 0..2 {
        assert_eq!(
            harness.send(signed_twilio("/webhooks/twilio/calls")).await.0,
            StatusCode::OK
        );
    }
    let mut with_token = signed_twilio("/webhooks/twilio/calls");
    with_token
        .headers_mut()
        .insert("i-twilio-idempotency-token", "token-123".parse().unwrap());
    assert_eq!(harness.send(with_token).await.0, StatusCode::OK);

    let published = harness.published();
    let ids: Vec<&str> = published.iter().map(Envelope::event_id).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], ids[0], "the unsigned token does not make a new event");
    assert_eq!(
        published[2].record().headers["i-twilio-idempotency-token"],
        "token-123",
        "the token is kept as metadata"
    );
}

#[tokio::test]
async fn bad_signatures_are_401_and_publish_nothing() {
    let harness = Harness::new(config());
    let wrong_url = signing::twilio(&format!("{PUBLIC_URL}/webhooks/twilio/other"), CALL);
    let cases = [
        twilio_request("/webhooks/twilio/calls", CALL, &wrong_url),
        Request::post("/webhooks/twilio/calls")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form(CALL)))
            .unwrap(),
        json_request(
            "/webhooks/stripe",
            r#"{"id":"evt_1"}"#,
            &[(
                "stripe-signature",
                timestamped("wrong", now(), r#"{"id":"evt_1"}"#),
            )],
        ),
        json_request(
            "/webhooks/stripe",
            r#"{"id":"evt_1"}"#,
            &[(
                "stripe-signature",
                timestamped(STRIPE_SECRET, now() - 3600, r#"{"id":"evt_1"}"#),
            )],
        ),
    ];
    for request in cases {
        let (status, _, body) = harness.send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].is_string(), "{body}");
        for secret in [TWILIO_TOKEN, STRIPE_SECRET] {
            assert!(!body.contains(secret));
        }
    }
    assert!(harness.published().is_empty());
}

#[tokio::test]
async fn twilio_json_bodies_need_a_matching_body_hash() {
    let harness = Harness::new(config());
    let body = r#"{"CallSid":"CA1","CallStatus":"completed","To":"+15551230000"}"#;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
    let signed = |path: &str| {
        vec![(
            "x-twilio-signature",
            signing::twilio(&format!("{PUBLIC_URL}{path}"), &[]),
        )]
    };

    let good = format!("/webhooks/twilio/calls?bodySHA256={hash}");
    let (status, _, answer) = harness.send(json_request(&good, body, &signed(&good))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(harness.published()[0].key(), "+15551230000");

    let missing = "/webhooks/twilio/calls";
    assert_eq!(
        harness
            .send(json_request(missing, body, &signed(missing)))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let wrong = format!("/webhooks/twilio/calls?bodySHA256={}", "0".repeat(64));
    assert_eq!(
        harness.send(json_request(&wrong, body, &signed(&wrong))).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(harness.published().len(), 1);
}

#[tokio::test]
async fn stripe_calendly_and_generic_sources_are_published_with_their_ids() {
    let harness = Harness::new(config());
    let stripe = r#"{"id":"evt_123","type":"invoice.paid","account":"acct_9","data":{"object":{"id":"in_1","metadata":{"phone_id":"+15550001111"}}}}"#;
    let calendly = r#"{"event":"invitee.created","payload":{"uri":"https://api.calendly.com/invitees/INV1","tracking":{"utm_content":"+15550002222"}}}"#;
    let acme = r#"{"data":{"phone_id":"+15550003333"}}"#;
    let gh = r#"{"action":"opened"}"#;
    let t = now();
    let requests = [
        json_request(
            "/webhooks/stripe",
            stripe,
            &[("stripe-signature", timestamped(STRIPE_SECRET, t, stripe))],
        ),
        json_request(
            "/webhooks/calendly",
            calendly,
            &[(
                "calendly-webhook-signature",
                timestamped(CALENDLY_KEY, t, calendly),
            )],
        ),
        json_request(
            "/webhooks/generic/acme",
            acme,
            &[
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", t.to_string()),
                ("webhook-signature", standard_webhooks("msg_1", t, acme)),
            ],
        ),
        json_request(
            "/webhooks/generic/gh",
            gh,
            &[
                ("x-hub-signature-256", github(gh)),
                ("x-github-delivery", "d-1".into()),
            ],
        ),
    ];
    for request in requests {
        let (status, _, body) = harness.send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let published: Vec<(String, String, String, Option<String>)> = harness
        .published()
        .iter()
        .map(|e| {
            (
                e.topic().to_owned(),
                e.key().to_owned(),
                e.event_id().to_owned(),
                e.record().source_name.clone(),
            )
        })
        .collect();
    assert_eq!(
        published,
        [
            (
                "switchboard.raw.stripe".into(),
                "+15550001111".into(),
                "evt_123".into(),
                None
            ),
            (
                "switchboard.raw.calendly".into(),
                "+15550002222".into(),
                "invitee.created:https://api.calendly.com/invitees/INV1".into(),
                None
            ),
            (
                "switchboard.raw.generic".into(),
                "+15550003333".into(),
                "acme:msg_1".into(),
                Some("acme".into())
            ),
            (
                "switchboard.raw.generic".into(),
                "unassigned".into(),
                format!(
                    "gh:sha256:{}",
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(gh.as_bytes()))
                ),
                Some("gh".into())
            ),
        ]
    );
}

#[tokio::test]
async fn a_signed_body_that_is_not_json_is_400() {
    let harness = Harness::new(config());
    let body = "not json";
    let request = json_request(
        "/webhooks/stripe",
        body,
        &[("stripe-signature", timestamped(STRIPE_SECRET, now(), body))],
    );
    let (status, _, answer) = harness.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer, r#"{"error":"body is not valid JSON"}"#);
    assert!(harness.published().is_empty());
}

#[tokio::test]
async fn unconfigured_and_unknown_sources_are_404() {
    let harness = Harness::new(Config {
        stripe_webhook_secrets: secrets(&[]),
        ..config()
    });
    let body = r#"{"id":"evt_1"}"#;
    let stripe = json_request(
        "/webhooks/stripe",
        body,
        &[("stripe-signature", timestamped(STRIPE_SECRET, now(), body))],
    );
    assert_eq!(
        harness.send(stripe).await.0,
        StatusCode::NOT_FOUND,
        "no secret, no route"
    );
    let unknown = json_request("/webhooks/generic/nobody", "{}", &[]);
    let (status, _, body) = harness.send(unknown).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, r#"{"error":"unknown source"}"#)
    );
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_a_length() {
    let harness = Harness::new(config());
    let big = "x".repeat(5000);
    let declared = json_request("/webhooks/stripe", &big, &[]);
    assert_eq!(harness.send(declared).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from(big))]);
    let streamed = Request::post("/webhooks/stripe")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(chunks))
        .unwrap();
    let (status, _, body) = harness.send(streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body, r#"{"error":"body exceeds 4096 bytes"}"#);
}

#[tokio::test]
async fn unsupported_content_types_are_415() {
    let harness = Harness::new(config());
    let request = Request::post("/webhooks/stripe")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, body) = harness.send(request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body.contains("application/json"), "{body}");
}

#[tokio::test]
async fn a_source_over_its_rate_limit_gets_429_with_retry_after() {
    let harness = Harness::new(Config {
        rate_limit_per_second: 1,
        rate_limit_burst: 2,
        ..config()
    });
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, headers, _) = harness.send(signed_twilio("/webhooks/twilio/calls")).await;
        statuses.push((status, headers.get(header::RETRY_AFTER).cloned()));
    }
    assert_eq!(statuses[0].0, StatusCode::OK);
    assert_eq!(statuses[1].0, StatusCode::OK);
    assert_eq!(statuses[2].0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(statuses[2].1.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
    assert_eq!(harness.published().len(), 2);
}

#[tokio::test]
async fn kafka_trouble_is_503_with_retry_after() {
    let harness = Harness::new(config());
    for fail in [
        || PublishError::Timeout(Duration::from_secs(5)),
        || PublishError::Unavailable(rdkafka::error::KafkaError::ClientCreation("broker down".into())),
    ] {
        *harness.publisher.fail_with.lock().unwrap() = Some(fail);
        let (status, headers, body) = harness.send(signed_twilio("/webhooks/twilio/calls")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(headers.contains_key(header::RETRY_AFTER));
        assert!(!body.contains("broker down"), "internals stay internal: {body}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let harness = Harness::new(config());
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    assert_eq!(harness.send_admin(get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(harness.send_admin(get("/readyz")).await.0, StatusCode::OK);
    *harness.publisher.not_ready.lock().unwrap() = Some("kafka metadata unreachable".into());
    assert_eq!(
        harness.send_admin(get("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    harness.send(signed_twilio("/webhooks/twilio/calls")).await;
    let (status, _, metrics) = harness.send_admin(get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_ingest_requests_total{")
                && l.contains("source=\"twilio\"")
                && l.contains("outcome=\"accepted\"")),
        "{metrics}"
    );
    assert!(!metrics.contains(TWILIO_TOKEN));
}
