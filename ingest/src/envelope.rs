//! Builds the Kafka record for a verified webhook: the `RawWebhook` envelope, its phone id (the
//! record key) and its event id (the dedup key downstream).
//!
//! An [`Envelope`] can only be made from a [`Verified`], so nothing unverified can be published.
//!
//! Phone ids (the record key, so that one phone's events stay in order on one partition), first
//! match wins:
//! - Twilio: a `phone_id` query parameter on the (signed) callback URL; the `[tenants]` mapping of
//!   the account's number ([`Tenants::twilio`]); else [`twilio_phone_id`].
//! - Stripe: the `[tenants]` mapping of `account`; `data.object.metadata.phone_id`; `account`.
//! - Calendly: the `[tenants]` mapping of the event type or an organizer; the configured pointer.
//! - Twilio Event Streams (one record per CloudEvent): the `phone_id` query parameter of the
//!   callback URL a voice event records; the `[tenants]` mapping of the event's parameters; the
//!   `twilio_events_phone_id_pointers` entry for its type; else [`twilio_phone_id`] of its
//!   parameters ([`CloudEvent::params`]).
//! - Generic: the source's pointer.
//! - Otherwise, or when the value is longer than [`MAX_PHONE_ID_BYTES`]: [`UNASSIGNED`].
//!
//! Event ids are derived from what the signature covers, never from an unsigned header, so that a
//! replayed request cannot become a "new" event by changing one:
//! - Twilio: [`twilio::event_id`], `sha256:` of the URL and the canonical parameters. The
//!   `I-Twilio-Idempotency-Token` header is kept in the envelope's headers as metadata only.
//! - Twilio Event Streams: `twilio-events:` + the CloudEvent `id` (inside the signed body).
//! - Stripe: the event's `id`.
//! - Calendly: `<event>:<payload.uri>` (e.g. `invitee.created:https://api.calendly.com/…/invitees/…`),
//!   stable across redeliveries and distinct for a created and a canceled invitee.
//! - Generic sources: `<source name>:` + the Standard Webhooks `webhook-id` (signed) or, for GitHub,
//!   `sha256:` of the body (`X-GitHub-Delivery` is not signed and stays metadata). The source name
//!   keeps ids of different sources apart: they share one topic and one dedup state per partition.
//! - Whenever the field above is missing: `sha256:` + hex SHA-256 of the raw body.
//!
//! Headers: names lower-cased, repeats joined; credentials and every signature header dropped
//! ([`DROPPED_HEADERS`] plus the configured `envelope_drop_headers`), so that nobody who can read a
//! topic, the DLQ or a debug view holds a replayable request. [`check_head`] bounds what is kept.

use std::borrow::Cow;
use std::collections::BTreeMap;

use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard_schemas::{RawWebhook, Source, media_type};

use crate::tenants::Tenants;
use crate::verify::twilio_events::CloudEvent;
use crate::verify::{Verified, twilio};

pub use crate::tenants::MAX_PHONE_ID_BYTES;

/// Phone id used when a payload names none; the event is still published.
pub const UNASSIGNED: &str = "unassigned";

/// Request headers that never go into the envelope: credentials, and the signatures of every
/// scheme (with the URL and body they make a replayable request).
pub const DROPPED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    twilio::SIGNATURE_HEADER,
    crate::verify::stripe::SIGNATURE_HEADER,
    crate::verify::calendly::SIGNATURE_HEADER,
    crate::verify::standard_webhooks::SIGNATURE_HEADER,
    "x-hub-signature",
    crate::verify::github::SIGNATURE_HEADER,
];

/// The longest accepted provider delivery-id header (`I-Twilio-Idempotency-Token`,
/// `X-GitHub-Delivery`, `webhook-id`): providers send UUID-sized ids.
pub const MAX_ID_HEADER_BYTES: usize = 256;

/// The delivery-id headers [`MAX_ID_HEADER_BYTES`] applies to.
pub const ID_HEADERS: &[&str] = &[
    twilio::IDEMPOTENCY_HEADER,
    crate::verify::github::DELIVERY_HEADER,
    crate::verify::standard_webhooks::ID_HEADER,
];

/// The most request-head bytes (URL plus every header name and value) a request may bring. Bounds
/// what the envelope keeps besides the body (see [`ENVELOPE_OVERHEAD_BYTES`]).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// An upper bound on an encoded envelope's size beyond its body: the head ([`MAX_HEAD_BYTES`],
/// counted twice since the content type is also stored on its own), the ids, the phone id as field
/// and as record key, the Kafka record headers, and Avro and wire-format framing.
pub const ENVELOPE_OVERHEAD_BYTES: usize = 2 * MAX_HEAD_BYTES + 4 * 1024;

/// A request head that the envelope will not carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadTooLarge {
    #[error("`{0}` header exceeds {MAX_ID_HEADER_BYTES} bytes")]
    IdHeader(&'static str),
    #[error("request URL and headers exceed {MAX_HEAD_BYTES} bytes")]
    Head,
}

/// Refuses a request whose delivery-id header or whole head is larger than the envelope keeps.
/// Checked before verification: it costs no more than the headers already in memory.
pub fn check_head(url: &str, headers: &HeaderMap) -> Result<(), HeadTooLarge> {
    for name in ID_HEADERS {
        if headers
            .get_all(*name)
            .iter()
            .map(|value| value.len())
            .sum::<usize>()
            > MAX_ID_HEADER_BYTES
        {
            return Err(HeadTooLarge::IdHeader(name));
        }
    }
    let head = url.len()
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum::<usize>();
    if head > MAX_HEAD_BYTES {
        return Err(HeadTooLarge::Head);
    }
    Ok(())
}

/// A verified webhook ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    source: Source,
    record: RawWebhook,
}

/// What the handler knows about the request besides its verification.
#[derive(Debug)]
pub struct Request<'a> {
    pub source: Source,
    pub url: &'a str,
    pub content_type: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub received_at_millis: i64,
    /// For generic sources: the configured name.
    pub source_name: Option<&'a str>,
    /// Header names (lower-case) dropped on top of [`DROPPED_HEADERS`].
    pub dropped_headers: &'a [String],
}

/// Where the phone id and event id come from for a source.
#[derive(Debug, Clone, Copy)]
pub enum Extract<'a> {
    Twilio {
        tenants: &'a Tenants,
    },
    Stripe {
        tenants: &'a Tenants,
    },
    /// Calendly with its phone id pointer.
    Calendly {
        tenants: &'a Tenants,
        phone_id_pointer: &'a str,
    },
    /// A generic source with its optional phone id pointer.
    Generic {
        phone_id_pointer: Option<&'a str>,
    },
    /// One CloudEvent of a Twilio Event Streams batch; the request's body is the event's bytes.
    TwilioEvent {
        tenants: &'a Tenants,
        /// `twilio_events_phone_id_pointers`.
        phone_id_pointers: &'a BTreeMap<String, String>,
        event: &'a CloudEvent<'a>,
    },
}

/// The body was not the JSON the source sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("body is not valid JSON")]
pub struct InvalidJson;

impl Envelope {
    /// Builds the envelope for a request whose signature `verified` vouches for.
    pub fn new(
        verified: &Verified,
        request: &Request<'_>,
        extract: Extract<'_>,
    ) -> Result<Self, InvalidJson> {
        let json = || serde_json::from_slice::<Value>(request.body).map_err(|_| InvalidJson);
        let signed_id = || {
            verified
                .event_id()
                .map(str::to_owned)
                .unwrap_or_else(|| sha256_id(request.body))
        };
        let (phone_id, event_id) = match extract {
            Extract::Twilio { tenants } => {
                // A form's parameters are read where the verifier parsed them, never copied.
                let params: Cow<'_, [(String, String)]> = if media_type::is_json(request.content_type) {
                    Cow::Owned(json_params(&json()?))
                } else {
                    Cow::Borrowed(verified.params())
                };
                let phone_id = url_phone_id(request.url)
                    .or_else(|| tenants.twilio(&params))
                    .or_else(|| twilio_phone_id(&params));
                (phone_id, signed_id())
            }
            Extract::Stripe { tenants } => {
                let body = json()?;
                let phone_id = tenants
                    .stripe(&body)
                    .or_else(|| string_at(&body, "/data/object/metadata/phone_id"))
                    .or_else(|| string_at(&body, "/account"));
                let event_id = string_at(&body, "/id").unwrap_or_else(|| sha256_id(request.body));
                (phone_id, event_id)
            }
            Extract::Calendly {
                tenants,
                phone_id_pointer,
            } => {
                let body = json()?;
                let phone_id = tenants
                    .calendly(&body)
                    .or_else(|| string_at(&body, phone_id_pointer));
                let event_id = match (string_at(&body, "/event"), string_at(&body, "/payload/uri")) {
                    (Some(event), Some(uri)) => format!("{event}:{uri}"),
                    _ => sha256_id(request.body),
                };
                (phone_id, event_id)
            }
            Extract::TwilioEvent {
                tenants,
                phone_id_pointers,
                event,
            } => {
                let params = event.params();
                let phone_id = event
                    .callback_url()
                    .and_then(url_phone_id)
                    .or_else(|| tenants.twilio(&params))
                    .or_else(|| {
                        type_pointer(phone_id_pointers, &event.event_type)
                            .and_then(|pointer| string_at(&event.json, pointer))
                    })
                    .or_else(|| twilio_phone_id(&params));
                (phone_id, event.event_id())
            }
            Extract::Generic { phone_id_pointer } => {
                // A generic body need not be JSON; only a configured pointer requires it.
                let phone_id = match phone_id_pointer {
                    Some(pointer) => string_at(&json()?, pointer),
                    None => None,
                };
                let name = request.source_name.unwrap_or(request.source.as_str());
                (phone_id, format!("{name}:{}", signed_id()))
            }
        };
        let phone_id = phone_id
            .filter(|id| id.len() <= MAX_PHONE_ID_BYTES)
            .unwrap_or_else(|| UNASSIGNED.to_owned());
        Ok(Self {
            source: request.source,
            record: RawWebhook {
                event_id,
                source: request.source.as_str().to_owned(),
                phone_id,
                received_at: request.received_at_millis,
                url: request.url.to_owned(),
                content_type: request.content_type.to_owned(),
                headers: envelope_headers(request.headers, request.dropped_headers),
                body: request.body.to_vec(),
                signature_scheme: verified.scheme().as_str().to_owned(),
                source_name: request.source_name.map(str::to_owned),
            },
        })
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// The raw topic this envelope goes to.
    pub fn topic(&self) -> &'static str {
        self.source.raw_topic()
    }

    /// The record key: the phone id.
    pub fn key(&self) -> &str {
        &self.record.phone_id
    }

    pub fn event_id(&self) -> &str {
        &self.record.event_id
    }

    pub fn record(&self) -> &RawWebhook {
        &self.record
    }
}

/// The pointer configured for `event_type`: an exact entry, else the longest `prefix*` entry that
/// matches.
fn type_pointer<'a>(pointers: &'a BTreeMap<String, String>, event_type: &str) -> Option<&'a str> {
    if let Some(pointer) = pointers.get(event_type) {
        return Some(pointer);
    }
    pointers
        .iter()
        .filter_map(|(pattern, pointer)| {
            let prefix = pattern.strip_suffix('*')?;
            event_type
                .starts_with(prefix)
                .then_some((prefix.len(), pointer.as_str()))
        })
        .max_by_key(|(length, _)| *length)
        .map(|(_, pointer)| pointer)
}

/// `sha256:<hex>` of `bytes`.
fn sha256_id(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn string_at(json: &Value, pointer: &str) -> Option<String> {
    match json.pointer(pointer)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Top-level scalar fields of a Twilio JSON body, as parameters.
fn json_params(json: &Value) -> Vec<(String, String)> {
    let Some(object) = json.as_object() else {
        return Vec::new();
    };
    object
        .iter()
        .filter_map(|(name, value)| match value {
            Value::String(s) => Some((name.clone(), s.clone())),
            Value::Number(n) => Some((name.clone(), n.to_string())),
            Value::Bool(b) => Some((name.clone(), b.to_string())),
            _ => None,
        })
        .collect()
}

/// The `phone_id` query parameter of the (signed) callback URL. Twilio's recording callbacks carry
/// no `From`/`To`; an app that sets `?phone_id=…` on its recording and transcription callback URLs
/// keeps them on the same partition (and in the same order) as the call's status callbacks.
fn url_phone_id(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| name == "phone_id" && !value.trim().is_empty())
        .map(|(_, value)| value.into_owned())
}

/// `From` for outbound calls and messages, else `To`, else `Called`, else `AccountSid`.
///
/// `From` on an `outbound-dial` leg is the original caller's id, which a caller can spoof: map the
/// account's numbers under `[tenants]` (or put `phone_id` on the callback URL) where that matters.
fn twilio_phone_id(params: &[(String, String)]) -> Option<String> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, v)| n == name && !v.trim().is_empty())
            .map(|(_, v)| v.clone())
    };
    let outbound = param("Direction").is_some_and(|d| d.starts_with("outbound"));
    outbound
        .then(|| param("From"))
        .flatten()
        .or_else(|| param("To"))
        .or_else(|| param("Called"))
        .or_else(|| param("AccountSid"))
}

/// Header names lower-cased (as `http` keeps them), repeated values joined with `", "`, values
/// that are not valid UTF-8 replaced lossily, credential and signature headers dropped.
fn envelope_headers(headers: &HeaderMap, dropped: &[String]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        if DROPPED_HEADERS.contains(&name) || dropped.iter().any(|d| d == name) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.to_owned())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn twilio_phone_id_follows_direction() {
        let cases = [
            (
                vec![("Direction", "inbound"), ("From", "+1A"), ("To", "+1B")],
                "+1B",
            ),
            (
                vec![("Direction", "outbound-api"), ("From", "+1A"), ("To", "+1B")],
                "+1A",
            ),
            (vec![("Direction", "outbound-dial"), ("To", "+1B")], "+1B"),
            (vec![("Called", "+1C"), ("AccountSid", "AC1")], "+1C"),
            (vec![("AccountSid", "AC1")], "AC1"),
            (vec![("MessageStatus", "sent")], UNASSIGNED),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                twilio_phone_id(&params(&pairs)).unwrap_or_else(|| UNASSIGNED.to_owned()),
                expected,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn a_phone_id_in_the_signed_callback_url_wins() {
        assert_eq!(
            url_phone_id("https://h.example.com/webhooks/twilio/recordings?phone_id=%2B15551230000")
                .as_deref(),
            Some("+15551230000")
        );
        assert_eq!(
            url_phone_id("https://h.example.com/webhooks/twilio/recordings?x=1"),
            None
        );
        assert_eq!(
            url_phone_id("https://h.example.com/webhooks/twilio/recordings?phone_id="),
            None
        );
        assert_eq!(
            url_phone_id("https://h.example.com/webhooks/twilio/recordings"),
            None
        );
    }

    #[test]
    fn headers_are_joined_and_credentials_and_signatures_dropped() {
        let mut headers = HeaderMap::new();
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        headers.insert("authorization", "Bearer secret".parse().unwrap());
        headers.insert("cookie", "session=secret".parse().unwrap());
        let signatures = [
            "x-twilio-signature",
            "stripe-signature",
            "calendly-webhook-signature",
            "webhook-signature",
            "x-hub-signature",
            "x-hub-signature-256",
            "x-custom-signature",
        ];
        for name in signatures {
            headers.insert(name, "sig=".parse().unwrap());
        }
        headers.insert("i-twilio-idempotency-token", "token-1".parse().unwrap());
        let out = envelope_headers(&headers, &["x-custom-signature".to_owned()]);
        assert_eq!(out.get("x-multi").map(String::as_str), Some("a, b"));
        assert_eq!(
            out.get("i-twilio-idempotency-token").map(String::as_str),
            Some("token-1"),
            "the provider's token stays as metadata"
        );
        let kept: Vec<&String> = out.keys().collect();
        assert_eq!(kept, ["i-twilio-idempotency-token", "x-multi"]);
    }

    #[test]
    fn heads_are_bounded() {
        let url = "https://h.example.com/webhooks/twilio/calls";
        let mut headers = HeaderMap::new();
        headers.insert("i-twilio-idempotency-token", "t".repeat(256).parse().unwrap());
        assert_eq!(check_head(url, &headers), Ok(()));
        headers.insert("i-twilio-idempotency-token", "t".repeat(257).parse().unwrap());
        assert_eq!(
            check_head(url, &headers),
            Err(HeadTooLarge::IdHeader("i-twilio-idempotency-token"))
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-filler",
            "f".repeat(MAX_HEAD_BYTES - url.len() - 8).parse().unwrap(),
        );
        assert_eq!(check_head(url, &headers), Ok(()));
        headers.insert("x-more", "m".parse().unwrap());
        assert_eq!(check_head(url, &headers), Err(HeadTooLarge::Head));
    }

    #[test]
    fn json_pointers_read_strings_and_numbers_only() {
        let body: Value = serde_json::json!({"a": {"s": "x", "n": 5, "o": {}, "blank": " "}});
        assert_eq!(string_at(&body, "/a/s").as_deref(), Some("x"));
        assert_eq!(string_at(&body, "/a/n").as_deref(), Some("5"));
        assert_eq!(string_at(&body, "/a/o"), None);
        assert_eq!(string_at(&body, "/a/blank"), None);
        assert_eq!(string_at(&body, "/missing"), None);
    }

    #[test]
    fn body_hash_ids_are_stable_and_prefixed() {
        assert_eq!(
            sha256_id(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
