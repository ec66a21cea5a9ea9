//! Issue 13, "replays and identity", through the router with a fake publisher: event ids come from
//! what the signature covers (a replay with a new unsigned token is the same event), signature
//! headers never reach the envelope, generic ids are namespaced by source, the tenant mapping wins
//! over sender-controlled payload fields, media types are case-insensitive everywhere, and the SDK
//! leniencies ingest matches.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use switchboard_ingest::config::{Config, GenericScheme, GenericSource};
use switchboard_ingest::envelope::Envelope;
use switchboard_ingest::tenants::Tenants;

use crate::router::{CALL, Harness, config, json_request, secrets, signed_twilio, twilio_request};
use crate::signing::{self, *};

fn ids(harness: &Harness) -> Vec<String> {
    harness
        .published()
        .iter()
        .map(|e| e.event_id().to_owned())
        .collect()
}

fn with_header(mut request: Request<Body>, name: &'static str, value: &str) -> Request<Body> {
    request.headers_mut().insert(name, value.parse().unwrap());
    request
}

#[tokio::test]
async fn a_replayed_twilio_request_is_the_same_event_whatever_its_token_or_repeated_pairs() {
    let harness = Harness::new(config());
    let path = "/webhooks/twilio/calls";
    let signature = signing::twilio(&format!("{PUBLIC_URL}{path}"), CALL);
    let original = with_header(signed_twilio(path), "i-twilio-idempotency-token", "token-1");
    let new_token = with_header(signed_twilio(path), "i-twilio-idempotency-token", "token-2");
    // `&CallStatus=completed` appended twice, and the pairs reordered: still verifies (twilio-python
    // collapses repeats, every SDK sorts), so it must still be the same event.
    let mut repeated = CALL.to_vec();
    repeated.push(("CallStatus", "completed"));
    repeated.push(("CallStatus", "completed"));
    repeated.reverse();
    let repeated = with_header(
        twilio_request(path, &repeated, &signature),
        "i-twilio-idempotency-token",
        "token-3",
    );
    for request in [original, new_token, repeated] {
        let (status, _, body) = harness.send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let ids = ids(&harness);
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let params: Vec<(String, String)> = CALL.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    assert_eq!(
        ids[0],
        switchboard_ingest::verify::twilio::event_id(&format!("{PUBLIC_URL}{path}"), &params)
    );

    // A different signed request is a different event.
    let (status, _, _) = harness
        .send(signed_twilio("/webhooks/twilio/calls?attempt=2"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(harness.published()[3].event_id(), ids[0]);
}

#[tokio::test]
async fn a_replayed_github_delivery_with_a_new_delivery_id_is_the_same_event() {
    let harness = Harness::new(config());
    let body = r#"{"action":"opened"}"#;
    for delivery in ["d-1", "d-2"] {
        let request = json_request(
            "/webhooks/generic/gh",
            body,
            &[
                ("x-hub-signature-256", github(body)),
                ("x-github-delivery", delivery.into()),
            ],
        );
        assert_eq!(harness.send(request).await.0, StatusCode::OK);
    }
    let published = harness.published();
    assert_eq!(published[0].event_id(), published[1].event_id());
    assert_eq!(
        published[1].record().headers["x-github-delivery"],
        "d-2",
        "the delivery id is kept as metadata"
    );
}

#[tokio::test]
async fn an_oversized_delivery_token_or_head_is_431_and_publishes_nothing() {
    let harness = Harness::new(config());
    let long = "t".repeat(60_000);
    let token = with_header(
        signed_twilio("/webhooks/twilio/calls"),
        "i-twilio-idempotency-token",
        &long,
    );
    let (status, _, body) = harness.send(token).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{body}");
    assert_eq!(
        body,
        r#"{"error":"`i-twilio-idempotency-token` header exceeds 256 bytes"}"#
    );

    let gh = r#"{"action":"opened"}"#;
    let delivery = json_request(
        "/webhooks/generic/gh",
        gh,
        &[
            ("x-hub-signature-256", github(gh)),
            ("x-github-delivery", "d".repeat(257)),
        ],
    );
    assert_eq!(
        harness.send(delivery).await.0,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );

    let head = with_header(
        signed_twilio("/webhooks/twilio/calls"),
        "x-padding",
        &"p".repeat(17 * 1024),
    );
    let (status, _, body) = harness.send(head).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{body}");
    assert!(harness.published().is_empty());

    // At the bound: accepted.
    let at_bound = with_header(
        signed_twilio("/webhooks/twilio/calls"),
        "i-twilio-idempotency-token",
        &"t".repeat(256),
    );
    assert_eq!(harness.send(at_bound).await.0, StatusCode::OK);
}

#[tokio::test]
async fn no_signature_header_reaches_the_envelope() {
    let harness = Harness::new(Config {
        envelope_drop_headers: vec!["X-Proxy-Signature".into()],
        ..config()
    });
    let t = now();
    let stripe = r#"{"id":"evt_sig"}"#;
    let calendly = r#"{"event":"invitee.created","payload":{"uri":"https://api.calendly.com/invitees/SIG"}}"#;
    let acme = r#"{"data":{"phone_id":"+15550003333"}}"#;
    let gh = r#"{"action":"opened"}"#;
    let requests = [
        with_header(signed_twilio("/webhooks/twilio/calls"), "x-proxy-signature", "p"),
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
                ("webhook-id", "msg_sig".into()),
                ("webhook-timestamp", t.to_string()),
                ("webhook-signature", standard_webhooks("msg_sig", t, acme)),
            ],
        ),
        json_request(
            "/webhooks/generic/gh",
            gh,
            &[
                ("x-hub-signature-256", github(gh)),
                ("x-hub-signature", "sha1=0000".into()),
            ],
        ),
    ];
    for request in requests {
        let (status, _, body) = harness.send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let published = harness.published();
    assert_eq!(published.len(), 5);
    for envelope in &published {
        let headers = &envelope.record().headers;
        assert!(headers.contains_key("content-type"), "{headers:?}");
        for name in headers.keys() {
            assert!(!name.contains("signature"), "{name} stored: {headers:?}");
        }
    }
    assert_eq!(published[3].record().headers["webhook-id"], "msg_sig");
}

#[tokio::test]
async fn generic_event_ids_are_namespaced_by_source_and_an_empty_webhook_id_is_refused() {
    let mut base = config();
    base.generic.push(GenericSource {
        name: "other".into(),
        scheme: GenericScheme::StandardWebhooks,
        secrets: secrets(&[STANDARD_SECRET]),
        phone_id_pointer: None,
    });
    let harness = Harness::new(base);
    let t = now();
    let body = r#"{"data":{"phone_id":"+15550003333"}}"#;
    let signed = |path: &str, id: &str| {
        json_request(
            path,
            body,
            &[
                ("webhook-id", id.into()),
                ("webhook-timestamp", t.to_string()),
                ("webhook-signature", standard_webhooks(id, t, body)),
            ],
        )
    };
    for path in ["/webhooks/generic/acme", "/webhooks/generic/other"] {
        assert_eq!(harness.send(signed(path, "msg_same")).await.0, StatusCode::OK);
    }
    assert_eq!(ids(&harness), ["acme:msg_same", "other:msg_same"]);

    // Signed over an empty id: refused, as the Standard Webhooks library refuses it.
    let (status, _, body) = harness.send(signed("/webhooks/generic/acme", "")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(harness.published().len(), 2);
}

#[tokio::test]
async fn the_tenant_mapping_wins_over_sender_controlled_fields() {
    let mut tenants = Tenants::default();
    tenants
        .twilio_numbers
        .insert("+15551230000".into(), "tenant-a".into());
    tenants
        .twilio_numbers
        .insert("+15559990000".into(), "tenant-b".into());
    tenants
        .stripe_accounts
        .insert("acct_connected".into(), "tenant-a".into());
    tenants.calendly.insert(
        "https://api.calendly.com/event_types/ETA".into(),
        "tenant-a".into(),
    );
    let harness = Harness::new(Config { tenants, ..config() });
    let t = now();

    // Twilio, inbound, with a spoofed `From` naming tenant B's number: the account's `To` wins.
    let spoofed: Vec<(&str, &str)> = vec![
        ("CallSid", "CA1"),
        ("From", "+15559990000"),
        ("To", "+15551230000"),
        ("Direction", "inbound"),
        ("CallStatus", "ringing"),
    ];
    let path = "/webhooks/twilio/calls";
    let signature = signing::twilio(&format!("{PUBLIC_URL}{path}"), &spoofed);
    // A `<Dial>` leg: `From` is the original caller's (spoofable) id and maps to no tenant.
    let dial: Vec<(&str, &str)> = vec![
        ("CallSid", "CA2"),
        ("From", "+15559990000"),
        ("To", "+12025550123"),
        ("Direction", "outbound-dial"),
        ("CallStatus", "ringing"),
    ];
    let dial_signature = signing::twilio(&format!("{PUBLIC_URL}{path}"), &dial);
    // Stripe Connect: the connected account set metadata.phone_id to another tenant's.
    let stripe =
        r#"{"id":"evt_t","account":"acct_connected","data":{"object":{"metadata":{"phone_id":"tenant-b"}}}}"#;
    // Calendly: the invitee edited utm_content in the booking link.
    let calendly = r#"{"event":"invitee.created","payload":{"uri":"https://api.calendly.com/invitees/T1","tracking":{"utm_content":"tenant-b"},"scheduled_event":{"event_type":"https://api.calendly.com/event_types/ETA"}}}"#;
    let requests = [
        twilio_request(path, &spoofed, &signature),
        twilio_request(path, &dial, &dial_signature),
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
    ];
    for request in requests {
        let (status, _, body) = harness.send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let keys: Vec<String> = harness.published().iter().map(|e| e.key().to_owned()).collect();
    assert_eq!(
        keys,
        [
            "tenant-a",
            // Unmapped dial leg: the documented payload rule (`From` on outbound legs) applies.
            "+15559990000",
            "tenant-a",
            "tenant-a"
        ]
    );
}

#[tokio::test]
async fn a_json_media_type_in_any_case_is_json_for_the_envelope_too() {
    let harness = Harness::new(config());
    let body = r#"{"CallSid":"CA1","CallStatus":"completed","To":"+15551230000"}"#;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
    let path = format!("/webhooks/twilio/calls?bodySHA256={hash}");
    let request = Request::post(&path)
        .header(header::CONTENT_TYPE, "Application/JSON; Charset=UTF-8")
        .header(
            "x-twilio-signature",
            signing::twilio(&format!("{PUBLIC_URL}{path}"), &[]),
        )
        .body(Body::from(body))
        .unwrap();
    let (status, _, answer) = harness.send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let published: Vec<Envelope> = harness.published();
    assert_eq!(published[0].key(), "+15551230000", "read as JSON, not as a form");
}

#[tokio::test]
async fn sdk_leniencies_twilio_settings_without_algorithm_and_stripes_first_timestamp() {
    let harness = Harness::new(config());
    // twilio-python: an empty settings header, or one naming no algorithm, means HMAC-SHA1.
    for settings in ["", "key=key-2024"] {
        let request = with_header(
            signed_twilio("/webhooks/twilio/calls"),
            "x-twilio-webhooks-signature-settings",
            settings,
        );
        let (status, _, body) = harness.send(request).await;
        assert_eq!(status, StatusCode::OK, "{settings:?}: {body}");
    }
    // An unknown algorithm is still refused (as by the SDK).
    let unknown = with_header(
        signed_twilio("/webhooks/twilio/calls"),
        "x-twilio-webhooks-signature-settings",
        "key=key-2024,algorithm=HMAC_MD5",
    );
    assert_eq!(harness.send(unknown).await.0, StatusCode::UNAUTHORIZED);

    // Stripe's libraries read the first `t=`; a second one is ignored.
    let t = now();
    let body = r#"{"id":"evt_first_t"}"#;
    let signed = timestamped(STRIPE_SECRET, t, body);
    let (first, rest) = signed.split_once(',').unwrap();
    let header_value = format!("{first},t={},{rest}", t - 100_000);
    let request = json_request("/webhooks/stripe", body, &[("stripe-signature", header_value)]);
    let (status, _, answer) = harness.send(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}
