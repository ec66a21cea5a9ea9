//! The sample webhooks of `switchboard-ingest send` (and of the tests and the load generator): realistic
//! payloads for each provider and the signed requests that carry them, as the provider would send
//! them. Pure but for the random ids they draw: the time is passed in, and the signatures come from
//! each scheme's `sign` in [`switchboard_verify`], the inverse of the verifier ingest runs.

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use rand::Rng as _;
use serde_json::{Map, Value, json};
use switchboard_schemas::media_type::{FORM, JSON};
use url::{Position, Url, form_urlencoded};

use crate::config::GenericScheme;
use crate::verify::twilio::{self, TwilioKey};
use crate::verify::{Secret, calendly, github, standard_webhooks, stripe, twilio_events};

/// Fictional numbers (555-01xx) used by the samples: the caller, and the receptionist's number
/// ingest keys inbound calls by.
const SAMPLE_FROM: &str = "+14155550100";
pub(crate) const SAMPLE_TO: &str = "+14155550199";
const SAMPLE_TWILIO_ACCOUNT: &str = "AC3f1e9c2b7d4a4e6f8b0c1d2e3f4a5b6c";
const SAMPLE_STRIPE_ACCOUNT: &str = "acct_1PgS4mpl3Sw1tchb";
const STRIPE_API_VERSION: &str = "2024-06-20";

/// A signed request, ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub url: Url,
    /// `Content-Type`, the signature headers and any delivery id header.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The URL the signature covers, for schemes that sign it (Twilio).
    pub signed_url: Option<String>,
}

/// The URL Twilio would have called: `public_url` (or the origin of `target`) followed by the path and
/// query of `target`, exactly as ingest rebuilds it from its SWITCHBOARD_PUBLIC_URL.
pub fn twilio_signed_url(target: &Url, public_url: Option<&Url>) -> String {
    let base = match public_url {
        Some(base) => base.as_str().trim_end_matches('/'),
        None => &target[..Position::BeforePath],
    };
    format!("{base}{}", &target[Position::BeforePath..Position::AfterQuery])
}

/// A realistic voice status callback at `now`, with `overrides` replacing parameters of the same name
/// or added at the end. The `CallSid` is random.
pub fn twilio_params(now: i64, overrides: &[(String, String)]) -> Vec<(String, String)> {
    let call_sid = format!("CA{}", random_hex(16));
    let defaults = [
        ("AccountSid", SAMPLE_TWILIO_ACCOUNT.to_owned()),
        ("ApiVersion", "2010-04-01".to_owned()),
        ("CallSid", call_sid),
        ("CallStatus", "completed".to_owned()),
        ("CallDuration", "42".to_owned()),
        ("Duration", "1".to_owned()),
        ("Called", SAMPLE_TO.to_owned()),
        ("Caller", SAMPLE_FROM.to_owned()),
        ("CallbackSource", "call-progress-events".to_owned()),
        ("Direction", "inbound".to_owned()),
        ("From", SAMPLE_FROM.to_owned()),
        ("FromCountry", "US".to_owned()),
        ("To", SAMPLE_TO.to_owned()),
        ("ToCountry", "US".to_owned()),
        ("SequenceNumber", "3".to_owned()),
        ("Timestamp", rfc2822(now)),
    ];
    let mut params: Vec<(String, String)> = defaults
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    for (name, value) in overrides {
        match params.iter_mut().find(|(existing, _)| existing == name) {
            Some(slot) => slot.1.clone_from(value),
            None => params.push((name.clone(), value.clone())),
        }
    }
    params
}

/// A Twilio request to `url` carrying `params`: a form body, or with `json` a JSON object body and a
/// `bodySHA256` query parameter. Signed for [`twilio_signed_url`].
pub fn twilio_request(
    mut url: Url,
    public_url: Option<&Url>,
    params: &[(String, String)],
    json: bool,
    key: &TwilioKey,
) -> Outgoing {
    let (content_type, body, signed_params) = if json {
        let object: Map<String, Value> = params
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect();
        let body = to_json(&Value::Object(object));
        url.query_pairs_mut()
            .append_pair("bodySHA256", &twilio::body_sha256(&body));
        (JSON, body, &[][..])
    } else {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        (FORM, body.into_bytes(), params)
    };
    let signed_url = twilio_signed_url(&url, public_url);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    insert_twilio_signature(&mut headers, key, &signed_url, signed_params);
    insert(&mut headers, twilio::IDEMPOTENCY_HEADER, &random_uuid());
    Outgoing {
        url,
        headers,
        body,
        signed_url: Some(signed_url),
    }
}

/// `X-Twilio-Signature` over `signed_url` and `params`, and the settings header that names a shared
/// key.
fn insert_twilio_signature(
    headers: &mut HeaderMap,
    key: &TwilioKey,
    signed_url: &str,
    params: &[(String, String)],
) {
    insert(
        headers,
        twilio::SIGNATURE_HEADER,
        &twilio::sign(key, signed_url, params),
    );
    if let Some(settings) = key.settings() {
        insert(headers, twilio::SETTINGS_HEADER, &settings);
    }
}

/// The call status transitions an Event Streams sample cycles through, with the `CallStatus` and
/// `SequenceNumber` their callbacks carry.
const CALL_TRANSITIONS: [(&str, &str, &str); 4] = [
    ("initiated", "initiated", "0"),
    ("ringing", "ringing", "1"),
    ("answered", "in-progress", "2"),
    ("completed", "completed", "3"),
];

/// One Event Streams voice status event (`Voice.WebhookEvent`): `transition` (`initiated`,
/// `ringing`, `answered` or `completed`) of `params`' call, embedding the status callback request
/// to `callback_url` with `params` as its parameters, and a random CloudEvent id.
pub fn twilio_call_event(
    now: i64,
    transition: &str,
    callback_url: &str,
    params: &[(String, String)],
) -> Value {
    let call_sid = params
        .iter()
        .find(|(name, _)| name == "CallSid")
        .map_or("", |(_, value)| value.as_str());
    let parameters: Map<String, Value> = params
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    json!({
        "specversion": "1.0",
        "type": format!("com.twilio.voice.status-callback.call.{transition}"),
        "source": format!("/2010-04-01/Accounts/{SAMPLE_TWILIO_ACCOUNT}/Calls/{call_sid}.json"),
        "id": format!("EZ{}", random_hex(16)),
        "dataschema": "https://events-schemas.twilio.com/Voice.WebhookEvent/2",
        "datacontenttype": "application/json",
        "time": rfc3339(now),
        "data": {
            "sid": call_sid,
            "requestDateCreated": rfc2822(now),
            "timestamp": rfc3339(now),
            "eventSid": format!("VW{}", random_hex(16)),
            "request": {"method": "POST", "url": callback_url, "parameters": parameters},
            "response": {"responseCode": 200, "requestDuration": 120, "contentType": "text/xml", "dateCreated": rfc2822(now)},
        },
    })
}

/// `events` call status events: each call's initiated, ringing, answered and completed events in
/// turn (the last call may stop early), each call with a random sid.
pub fn twilio_events_batch(now: i64, events: usize, callback_url: &str) -> Vec<Value> {
    let mut batch = Vec::with_capacity(events);
    let mut call = Vec::new();
    for index in 0..events {
        let (transition, status, sequence) = CALL_TRANSITIONS[index % CALL_TRANSITIONS.len()];
        if index % CALL_TRANSITIONS.len() == 0 {
            call = twilio_params(now, &[]);
        }
        let overrides = [
            ("CallStatus".to_owned(), status.to_owned()),
            ("SequenceNumber".to_owned(), sequence.to_owned()),
        ];
        let sid = [("CallSid".to_owned(), param_value(&call, "CallSid"))];
        let params = twilio_params(now, &[&sid[..], &overrides[..]].concat());
        batch.push(twilio_call_event(now, transition, callback_url, &params));
    }
    batch
}

fn param_value(params: &[(String, String)], name: &str) -> String {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// An Event Streams delivery of `events` to `url`: the JSON array as the body, `bodySHA256` of it
/// appended to the URL, `X-Twilio-Signature` over [`twilio_signed_url`], and `Authorization: Basic`
/// when `basic` (`user:password`) is given.
pub fn twilio_events_request(
    url: Url,
    public_url: Option<&Url>,
    events: &[Value],
    key: &TwilioKey,
    basic: Option<&str>,
) -> Outgoing {
    twilio_events_body_request(
        url,
        public_url,
        to_json(&Value::Array(events.to_vec())),
        key,
        basic,
    )
}

/// [`twilio_events_request`] for a body already serialized (the load generator reuses bodies).
pub fn twilio_events_body_request(
    mut url: Url,
    public_url: Option<&Url>,
    body: Vec<u8>,
    key: &TwilioKey,
    basic: Option<&str>,
) -> Outgoing {
    url.query_pairs_mut()
        .append_pair("bodySHA256", &twilio::body_sha256(&body));
    let signed_url = twilio_signed_url(&url, public_url);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    insert_twilio_signature(&mut headers, key, &signed_url, &[]);
    if let Some(basic) = basic {
        insert(
            &mut headers,
            "authorization",
            &twilio_events::basic_authorization(basic),
        );
    }
    Outgoing {
        url,
        headers,
        body,
        signed_url: Some(signed_url),
    }
}

/// A realistic Stripe event of `event_type` created at `now`, with a random `evt_` id.
pub fn stripe_event(event_type: &str, phone_id: Option<&str>, now: i64) -> Value {
    let kind = event_type.rsplit_once('.').map_or(event_type, |(kind, _)| kind);
    let (prefix, object, status) = match kind {
        "invoice" => (
            "in",
            "invoice",
            if event_type.ends_with(".paid") {
                "paid"
            } else {
                "open"
            },
        ),
        "payment_intent" if event_type.ends_with(".payment_failed") => {
            ("pi", "payment_intent", "requires_payment_method")
        }
        "payment_intent" => ("pi", "payment_intent", "succeeded"),
        "charge" => ("ch", "charge", "succeeded"),
        "checkout.session" => ("cs", "checkout.session", "complete"),
        "customer.subscription" => ("sub", "subscription", "active"),
        _ => ("obj", kind, "succeeded"),
    };
    let metadata = match phone_id {
        Some(phone_id) => json!({ "phone_id": phone_id }),
        None => json!({}),
    };
    json!({
        "id": format!("evt_{}", random_alphanumeric(24)),
        "object": "event",
        "account": SAMPLE_STRIPE_ACCOUNT,
        "api_version": STRIPE_API_VERSION,
        "created": now,
        "data": {
            "object": {
                "id": format!("{prefix}_{}", random_alphanumeric(24)),
                "object": object,
                "amount": 2000,
                "currency": "usd",
                "customer": format!("cus_{}", random_alphanumeric(14)),
                "created": now,
                "livemode": false,
                "metadata": metadata,
                "status": status,
            }
        },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": format!("req_{}", random_alphanumeric(14)), "idempotency_key": null },
        "type": event_type,
    })
}

/// A Stripe request: `Stripe-Signature: t=<now>,v1=<hex>`.
pub fn stripe_request(url: Url, secret: &Secret, body: Vec<u8>, now: i64) -> Outgoing {
    let signature = stripe::sign(secret, now, &body);
    timestamped_request(url, stripe::SIGNATURE_HEADER, &signature, body)
}

/// A realistic Calendly invitee event created at `now`, for a meeting tomorrow; the invitee URI is
/// random.
pub fn calendly_event(event: &str, phone_id: Option<&str>, now: i64) -> Value {
    let scheduled_event = format!("https://api.calendly.com/scheduled_events/{}", random_uuid());
    let invitee = random_uuid();
    let start = (now / 3600 + 24) * 3600;
    let canceled = event == "invitee.canceled";
    let status = if canceled { "canceled" } else { "active" };
    let cancellation = canceled.then(|| {
        json!({ "canceled_by": "Ada Lovelace", "canceler_type": "invitee", "reason": "Something came up" })
    });
    json!({
        "created_at": rfc3339(now),
        "created_by": "https://api.calendly.com/users/3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
        "event": event,
        "payload": {
            "cancel_url": format!("https://calendly.com/cancellations/{invitee}"),
            "cancellation": cancellation,
            "created_at": rfc3339(now),
            "email": "ada@example.com",
            "event": scheduled_event,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "name": "Ada Lovelace",
            "new_invitee": null,
            "old_invitee": null,
            "questions_and_answers": [],
            "reschedule_url": format!("https://calendly.com/reschedulings/{invitee}"),
            "rescheduled": false,
            "scheduled_event": {
                "uri": scheduled_event,
                "name": "30 Minute Meeting",
                "status": status,
                "start_time": rfc3339(start),
                "end_time": rfc3339(start + 30 * 60),
                "event_type": "https://api.calendly.com/event_types/7d2c5b1e-4f3a-4e8b-9c6d-1a2b3c4d5e6f",
                "location": { "type": "outbound_call", "location": phone_id },
                "created_at": rfc3339(now),
                "updated_at": rfc3339(now),
            },
            "status": status,
            "text_reminder_number": phone_id,
            "timezone": "America/New_York",
            "tracking": {
                "utm_campaign": null,
                "utm_source": null,
                "utm_medium": null,
                "utm_content": phone_id,
                "utm_term": null,
                "salesforce_uuid": null,
            },
            "updated_at": rfc3339(now),
            "uri": format!("{scheduled_event}/invitees/{invitee}"),
        },
    })
}

/// A Calendly request: `Calendly-Webhook-Signature: t=<now>,v1=<hex>`.
pub fn calendly_request(url: Url, key: &Secret, body: Vec<u8>, now: i64) -> Outgoing {
    let signature = calendly::sign(key, now, &body);
    timestamped_request(url, calendly::SIGNATURE_HEADER, &signature, body)
}

/// A JSON request with a `t=…,v1=…` signature in `header`.
fn timestamped_request(url: Url, header: &'static str, signature: &str, body: Vec<u8>) -> Outgoing {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    insert(&mut headers, header, signature);
    Outgoing {
        url,
        headers,
        body,
        signed_url: None,
    }
}

/// The default generic body: a Standard Webhooks style `{"type", "timestamp", "data"}` event.
pub fn generic_event(phone_id: Option<&str>, now: i64) -> Value {
    let mut data = json!({ "id": format!("obj_{}", random_alphanumeric(20)) });
    if let Some(phone_id) = phone_id {
        data["phone_id"] = phone_id.into();
    }
    json!({ "type": "switchboard.sample", "timestamp": rfc3339(now), "data": data })
}

/// A generic request. Standard Webhooks: `webhook-id` (`msg_<random>`), `webhook-timestamp`,
/// `webhook-signature`; `secret` is the decoded key. GitHub: `X-Hub-Signature-256` and a random
/// `X-GitHub-Delivery`.
pub fn generic_request(
    url: Url,
    scheme: GenericScheme,
    secret: &Secret,
    body: Vec<u8>,
    now: i64,
) -> Outgoing {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    match scheme {
        GenericScheme::StandardWebhooks => {
            let id = format!("msg_{}", random_alphanumeric(24));
            let signature = standard_webhooks::sign(secret, &id, now, &body);
            insert(&mut headers, standard_webhooks::ID_HEADER, &id);
            insert(
                &mut headers,
                standard_webhooks::TIMESTAMP_HEADER,
                &now.to_string(),
            );
            insert(&mut headers, standard_webhooks::SIGNATURE_HEADER, &signature);
        }
        GenericScheme::Github => {
            insert(
                &mut headers,
                github::SIGNATURE_HEADER,
                &github::sign(secret, &body),
            );
            insert(&mut headers, github::DELIVERY_HEADER, &random_uuid());
        }
    }
    Outgoing {
        url,
        headers,
        body,
        signed_url: None,
    }
}

/// Inserts a header this module generated: a lowercase constant name and a visible-ASCII value.
fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    let value = HeaderValue::from_str(value).expect("generated header values are visible ASCII");
    headers.insert(HeaderName::from_static(name), value);
}

// ---------------------------------------------------------------------------------------------------
// Ids and times
// ---------------------------------------------------------------------------------------------------

/// Random hex of `bytes` random bytes: unique sample ids, not key material.
fn random_hex(bytes: usize) -> String {
    let mut random = vec![0; bytes];
    rand::rng().fill(random.as_mut_slice());
    hex::encode(random)
}

fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A random (version 4) UUID, lowercase.
fn random_uuid() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// The JSON text of a sample.
pub(crate) fn to_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a JSON value always serializes")
}

fn utc(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).expect("a unix time in seconds is within chrono's range")
}

/// `2023-11-14T22:13:20.000000Z`, as Calendly writes times.
fn rfc3339(unix: i64) -> String {
    utc(unix).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// `Tue, 14 Nov 2023 22:13:20 +0000`, as Twilio writes its `Timestamp` parameter (the day always
/// two digits, unlike chrono's `to_rfc2822`).
fn rfc2822(unix: i64) -> String {
    utc(unix).format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::verify::{Scheme, SecretSet, SharedKeys, VerifyError};

    const NOW: i64 = 1_700_000_000;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn header<'a>(request: &'a Outgoing, name: &str) -> &'a str {
        request
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
    }

    fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name}"))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// The URL ingest verifies against: its public URL followed by the request's path and query.
    fn ingest_url(public_url: &str, request: &Outgoing) -> String {
        format!(
            "{public_url}{}",
            &request.url[Position::BeforePath..Position::AfterQuery]
        )
    }

    fn content_type(request: &Outgoing) -> &str {
        header(request, "content-type")
    }

    #[test]
    fn twilio_form_request_passes_the_verifier() {
        let tokens = SecretSet::from_strings(["old-token", "tok_test"]).unwrap();
        let key = TwilioKey::AuthToken(Secret::new("tok_test"));
        let public = url("https://hooks.example.com");
        let overrides = pairs(&[("CallStatus", "busy"), ("Custom", "a b&c=d")]);
        let params = twilio_params(NOW, &overrides);
        let request = twilio_request(
            url("http://127.0.0.1:8080/webhooks/twilio/calls?x=1"),
            Some(&public),
            &params,
            false,
            &key,
        );

        let signed = "https://hooks.example.com/webhooks/twilio/calls?x=1";
        assert_eq!(request.signed_url.as_deref(), Some(signed));
        assert_eq!(ingest_url("https://hooks.example.com", &request), signed);
        assert_eq!(content_type(&request), FORM);
        assert!(!request.headers.contains_key(twilio::SETTINGS_HEADER));
        let verified = twilio::verify(
            &tokens,
            &SharedKeys::default(),
            &request.headers,
            signed,
            FORM,
            &request.body,
        )
        .unwrap();
        assert_eq!(verified.scheme(), Scheme::TwilioHmacSha1);
        assert_eq!(verified.params(), params.as_slice());
        assert!(!header(&request, twilio::IDEMPOTENCY_HEADER).is_empty());
        assert_eq!(
            verified.event_id(),
            Some(twilio::event_id(signed, &params).as_str()),
            "the identity is the signed content, not the unsigned token"
        );

        // The parameters Twilio sends for a finished inbound call, with the overrides applied.
        assert_eq!(param(&params, "CallStatus"), "busy");
        assert_eq!(param(&params, "Custom"), "a b&c=d");
        assert_eq!(param(&params, "Direction"), "inbound");
        assert_eq!(param(&params, "ApiVersion"), "2010-04-01");
        assert_eq!(param(&params, "CallbackSource"), "call-progress-events");
        assert_eq!(param(&params, "Timestamp"), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert!(param(&params, "AccountSid").starts_with("AC"));
        let call_sid = param(&params, "CallSid");
        assert!(call_sid.len() == 34 && call_sid.starts_with("CA"), "{call_sid}");
        assert!(call_sid[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{call_sid}");
        assert_ne!(
            call_sid,
            param(&twilio_params(NOW, &[]), "CallSid"),
            "CallSid is random per send"
        );
        assert_eq!(params.iter().filter(|(name, _)| name == "CallStatus").count(), 1);

        // Sent without --public-url, the signature covers --url itself.
        let local = twilio_request(
            url("http://127.0.0.1:8080/webhooks/twilio/calls"),
            None,
            &params,
            false,
            &key,
        );
        let signed = "http://127.0.0.1:8080/webhooks/twilio/calls";
        assert_eq!(local.signed_url.as_deref(), Some(signed));
        let verified = twilio::verify(
            &tokens,
            &SharedKeys::default(),
            &local.headers,
            signed,
            FORM,
            &local.body,
        );
        assert!(verified.is_ok());
        // Any other public URL fails, as in production.
        let other = twilio::verify(
            &tokens,
            &SharedKeys::default(),
            &local.headers,
            "https://h.example.com/webhooks/twilio/calls",
            FORM,
            &local.body,
        );
        assert_eq!(other.unwrap_err(), VerifyError::SignatureMismatch);
    }

    #[test]
    fn twilio_json_request_passes_the_verifier() {
        let tokens = SecretSet::from_strings(["tok_test"]).unwrap();
        let key = TwilioKey::AuthToken(Secret::new("tok_test"));
        let public = url("https://hooks.example.com/");
        let params = twilio_params(NOW, &[]);
        let request = twilio_request(
            url("http://localhost:8080/webhooks/twilio/events"),
            Some(&public),
            &params,
            true,
            &key,
        );

        assert_eq!(content_type(&request), JSON);
        let signed = request.signed_url.clone().unwrap();
        assert!(
            signed.starts_with("https://hooks.example.com/webhooks/twilio/events?bodySHA256="),
            "{signed}"
        );
        assert_eq!(ingest_url("https://hooks.example.com", &request), signed);
        let verified = twilio::verify(
            &tokens,
            &SharedKeys::default(),
            &request.headers,
            &signed,
            JSON,
            &request.body,
        )
        .unwrap();
        assert_eq!(verified.scheme(), Scheme::TwilioHmacSha1);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["CallStatus"], "completed");
        assert_eq!(body["CallSid"], param(&params, "CallSid"));
    }

    #[test]
    fn twilio_shared_key_request_passes_the_verifier() {
        let shared_keys = SharedKeys::from_strings(["key-2023:old", "key-2024:shared-secret"]).unwrap();
        let key = TwilioKey::SharedKey {
            id: "key-2024".into(),
            key: Secret::new("shared-secret"),
        };
        let params = twilio_params(NOW, &[]);
        let request = twilio_request(
            url("https://hooks.example.com/webhooks/twilio/calls"),
            None,
            &params,
            false,
            &key,
        );

        assert_eq!(
            header(&request, twilio::SETTINGS_HEADER),
            "key=key-2024,algorithm=HMAC_SHA256"
        );
        let signed = request.signed_url.as_deref().unwrap();
        let verified = twilio::verify(
            &SecretSet::default(),
            &shared_keys,
            &request.headers,
            signed,
            FORM,
            &request.body,
        )
        .unwrap();
        assert_eq!(verified.scheme(), Scheme::TwilioSharedKeyHmacSha256);
    }

    #[test]
    fn twilio_events_request_passes_the_verifier_and_splits_into_its_events() {
        let token = TwilioKey::AuthToken(Secret::new("tok"));
        let callback = "https://hooks.example.com/webhooks/twilio/calls";
        let events = twilio_events_batch(NOW, 6, callback);
        let request = twilio_events_request(
            url("http://127.0.0.1:8080/webhooks/twilio-events"),
            Some(&url("https://hooks.example.com")),
            &events,
            &token,
            Some("twilio:s3cret"),
        );
        let signed = request.signed_url.clone().unwrap();
        assert!(signed.starts_with("https://hooks.example.com/webhooks/twilio-events?bodySHA256="));
        let basic = crate::verify::twilio_events::BasicCredentials::from_strings(["twilio:s3cret"]).unwrap();
        let verified = crate::verify::twilio_events::verify(
            &crate::verify::SecretSet::from_strings(["tok"]).unwrap(),
            &crate::verify::SharedKeys::default(),
            &basic,
            &request.headers,
            &signed,
            &request.body,
        );
        assert!(verified.is_ok(), "{verified:?}");
        let split = crate::verify::twilio_events::split(&request.body, 10).unwrap();
        let types: Vec<&str> = split.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "com.twilio.voice.status-callback.call.initiated",
                "com.twilio.voice.status-callback.call.ringing",
                "com.twilio.voice.status-callback.call.answered",
                "com.twilio.voice.status-callback.call.completed",
                "com.twilio.voice.status-callback.call.initiated",
                "com.twilio.voice.status-callback.call.ringing",
            ]
        );
        let sids: Vec<String> = split
            .iter()
            .map(|e| param(&e.params(), "CallSid").to_owned())
            .collect();
        assert_eq!(sids[0], sids[3]);
        assert_ne!(sids[3], sids[4]);
        assert_eq!(param(&split[2].params(), "CallStatus"), "in-progress");
        assert_eq!(split[2].callback_url(), Some(callback));
    }

    #[test]
    fn stripe_request_passes_the_verifier() {
        let secrets = SecretSet::from_strings(["whsec_test"]).unwrap();
        let event = stripe_event("invoice.paid", Some("+14155550123"), NOW);
        let request = stripe_request(
            url("http://127.0.0.1:8080/webhooks/stripe"),
            &Secret::new("whsec_test"),
            to_json(&event),
            NOW,
        );

        assert!(header(&request, "stripe-signature").starts_with("t=1700000000,v1="));
        let verified = stripe::verify(
            &secrets,
            &request.headers,
            &request.body,
            NOW + 10,
            stripe::DEFAULT_TOLERANCE,
        )
        .unwrap();
        assert_eq!(verified.scheme(), Scheme::StripeV1);

        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert!(body["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(body["type"], "invoice.paid");
        assert_eq!(body["created"], NOW);
        assert!(body["account"].as_str().unwrap().starts_with("acct_"));
        let object = &body["data"]["object"];
        assert!(object["id"].as_str().unwrap().starts_with("in_"));
        assert!(object["customer"].as_str().unwrap().starts_with("cus_"));
        assert_eq!(
            (object["amount"].as_i64(), object["currency"].as_str()),
            (Some(2000), Some("usd"))
        );
        assert_eq!(object["status"], "paid");
        assert_eq!(
            body.pointer("/data/object/metadata/phone_id"),
            Some(&json!("+14155550123"))
        );

        let anonymous = stripe_event("payment_intent.succeeded", None, NOW);
        assert_eq!(anonymous.pointer("/data/object/metadata"), Some(&json!({})));
        assert!(
            anonymous["data"]["object"]["id"]
                .as_str()
                .unwrap()
                .starts_with("pi_")
        );
        assert_ne!(anonymous["id"], body["id"], "event ids are random");
    }

    #[test]
    fn calendly_request_passes_the_verifier() {
        let keys = SecretSet::from_strings(["cal_key"]).unwrap();
        let event = calendly_event("invitee.created", Some("+14155550123"), NOW);
        let request = calendly_request(
            url("http://127.0.0.1:8080/webhooks/calendly"),
            &Secret::new("cal_key"),
            to_json(&event),
            NOW,
        );

        let verified = calendly::verify(
            &keys,
            &request.headers,
            &request.body,
            NOW,
            calendly::DEFAULT_TOLERANCE,
        )
        .unwrap();
        assert_eq!(verified.scheme(), Scheme::CalendlyV1);

        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["event"], "invitee.created");
        assert_eq!(body["created_at"], "2023-11-14T22:13:20.000000Z");
        let uri = body.pointer("/payload/uri").and_then(Value::as_str).unwrap();
        assert!(
            uri.starts_with("https://api.calendly.com/scheduled_events/") && uri.contains("/invitees/"),
            "{uri}"
        );
        assert_eq!(body["payload"]["name"], "Ada Lovelace");
        assert_eq!(body["payload"]["email"], "ada@example.com");
        assert_eq!(
            body.pointer("/payload/scheduled_event/start_time"),
            Some(&json!("2023-11-15T22:00:00.000000Z"))
        );
        assert_eq!(
            body.pointer("/payload/scheduled_event/end_time"),
            Some(&json!("2023-11-15T22:30:00.000000Z"))
        );
        // Ingest finds the phone id under its default pointer.
        let pointer = Config::default().calendly_phone_id_pointer;
        assert_eq!(body.pointer(&pointer), Some(&json!("+14155550123")));

        let canceled = calendly_event("invitee.canceled", None, NOW);
        assert_eq!(canceled["payload"]["status"], "canceled");
        assert_eq!(canceled.pointer(&pointer), Some(&Value::Null));
        assert_ne!(
            canceled["payload"]["uri"], body["payload"]["uri"],
            "invitee URIs are random"
        );
    }

    #[test]
    fn standard_webhooks_request_passes_the_verifier() {
        let secret_text = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let secrets = SecretSet::from_standard_webhooks([secret_text]).unwrap();
        let key = Secret::from_standard_webhooks(secret_text).unwrap();
        let body = to_json(&generic_event(Some("+14155550123"), NOW));
        let request = generic_request(
            url("http://127.0.0.1:8080/webhooks/generic/acme"),
            GenericScheme::StandardWebhooks,
            &key,
            body,
            NOW,
        );

        let id = header(&request, "webhook-id");
        assert!(id.starts_with("msg_"), "{id}");
        assert_eq!(header(&request, "webhook-timestamp"), "1700000000");
        assert!(header(&request, "webhook-signature").starts_with("v1,"));
        assert_eq!(content_type(&request), JSON);
        let verified = standard_webhooks::verify(
            &secrets,
            &request.headers,
            &request.body,
            NOW,
            standard_webhooks::DEFAULT_TOLERANCE,
        )
        .unwrap();
        assert_eq!(verified.scheme(), Scheme::StandardWebhooksV1);
        assert_eq!(verified.event_id(), Some(id));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body.pointer("/data/phone_id"), Some(&json!("+14155550123")));
    }

    #[test]
    fn github_request_passes_the_verifier() {
        let secrets = SecretSet::from_strings(["plain secret"]).unwrap();
        let body = br#"{"data":{"phone_id":"+1555"}}"#.to_vec();
        let request = generic_request(
            url("http://127.0.0.1:8080/webhooks/generic/gh"),
            GenericScheme::Github,
            &Secret::new("plain secret"),
            body.clone(),
            NOW,
        );

        assert_eq!(request.body, body);
        let delivery = header(&request, "x-github-delivery");
        assert_eq!(delivery.len(), 36, "{delivery}");
        let verified = github::verify(&secrets, &request.headers, &request.body).unwrap();
        assert_eq!(verified.scheme(), Scheme::GithubHmacSha256);
        assert_eq!(verified.event_id(), None, "the delivery id is not signed");
    }

    #[test]
    fn formats_times_in_utc() {
        let cases = [
            (
                0,
                "1970-01-01T00:00:00.000000Z",
                "Thu, 01 Jan 1970 00:00:00 +0000",
            ),
            (
                NOW,
                "2023-11-14T22:13:20.000000Z",
                "Tue, 14 Nov 2023 22:13:20 +0000",
            ),
            (
                951_825_599,
                "2000-02-29T11:59:59.000000Z",
                "Tue, 29 Feb 2000 11:59:59 +0000",
            ),
            (
                -1,
                "1969-12-31T23:59:59.000000Z",
                "Wed, 31 Dec 1969 23:59:59 +0000",
            ),
        ];
        for (unix, iso, rfc2822_text) in cases {
            assert_eq!(rfc3339(unix), iso);
            assert_eq!(rfc2822(unix), rfc2822_text);
        }
        let uuid = random_uuid();
        assert_eq!(
            uuid.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{uuid}"
        );
    }
}
