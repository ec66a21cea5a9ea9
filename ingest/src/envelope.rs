//! Builds the Kafka record for a verified webhook: the `RawWebhook` envelope, its phone id (the
//! record key) and its event id (the dedup key downstream).
//!
//! An [`Envelope`] can only be made from a [`Verified`], so nothing unverified can be published.
//!
//! Phone ids (the record key, so that one phone's events stay in order on one partition): see
//! [`twilio_phone_id`]; a `phone_id` query parameter on a Twilio callback URL takes precedence
//! (recording callbacks carry no `From`/`To`).
//!
//! Event ids, per source:
//! - Twilio: the `I-Twilio-Idempotency-Token` header; without it, `sha256:` + hex SHA-256 of the
//!   signed content (URL followed by the canonical parameters), so a redelivery maps to the same id.
//! - Stripe: the event's `id`.
//! - Calendly: `<event>:<payload.uri>` (e.g. `invitee.created:https://api.calendly.com/…/invitees/…`),
//!   stable across redeliveries and distinct for a created and a canceled invitee.
//! - Standard Webhooks: `webhook-id`. GitHub: `X-GitHub-Delivery`.
//! - Whenever the field above is missing: `sha256:` + hex SHA-256 of the raw body.

use std::collections::BTreeMap;

use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard_schemas::{RawWebhook, Source};

use crate::verify::Verified;
use crate::verify::twilio::{Duplicates, canonical_params};

/// Phone id used when a payload names none; the event is still published.
pub const UNASSIGNED: &str = "unassigned";

/// Request headers that never go into the envelope: they may carry credentials.
const DROPPED_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

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
}

/// Where the phone id and event id come from for a source.
#[derive(Debug, Clone, Copy)]
pub enum Extract<'a> {
    Twilio,
    Stripe,
    /// Calendly with its phone id pointer.
    Calendly {
        phone_id_pointer: &'a str,
    },
    /// A generic source with its optional phone id pointer.
    Generic {
        phone_id_pointer: Option<&'a str>,
    },
}

/// The body was not the JSON the source sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("body is not valid JSON")]
pub struct InvalidJson;

impl Envelope {
    /// Builds the envelope for a request whose signature `verified` vouches for.
    pub fn new(verified: Verified, request: &Request<'_>, extract: Extract<'_>) -> Result<Self, InvalidJson> {
        let json = || serde_json::from_slice::<Value>(request.body).map_err(|_| InvalidJson);
        let (phone_id, event_id) = match extract {
            Extract::Twilio => {
                let params = if request.content_type.starts_with("application/json") {
                    json_params(&json()?)
                } else {
                    verified.params().to_vec()
                };
                let event_id = verified.event_id().map(str::to_owned).unwrap_or_else(|| {
                    sha256_id(
                        format!("{}{}", request.url, canonical_params(&params, Duplicates::Keep)).as_bytes(),
                    )
                });
                let phone_id = url_phone_id(request.url).unwrap_or_else(|| twilio_phone_id(&params));
                (phone_id, event_id)
            }
            Extract::Stripe => {
                let body = json()?;
                let phone_id = string_at(&body, "/data/object/metadata/phone_id")
                    .or_else(|| string_at(&body, "/account"))
                    .unwrap_or_else(|| UNASSIGNED.to_owned());
                let event_id = string_at(&body, "/id").unwrap_or_else(|| sha256_id(request.body));
                (phone_id, event_id)
            }
            Extract::Calendly { phone_id_pointer } => {
                let body = json()?;
                let phone_id = string_at(&body, phone_id_pointer).unwrap_or_else(|| UNASSIGNED.to_owned());
                let event_id = match (string_at(&body, "/event"), string_at(&body, "/payload/uri")) {
                    (Some(event), Some(uri)) => format!("{event}:{uri}"),
                    _ => sha256_id(request.body),
                };
                (phone_id, event_id)
            }
            Extract::Generic { phone_id_pointer } => {
                // A generic body need not be JSON; only a configured pointer requires it.
                let phone_id = match phone_id_pointer {
                    Some(pointer) => string_at(&json()?, pointer),
                    None => None,
                };
                let event_id = verified
                    .event_id()
                    .map(str::to_owned)
                    .unwrap_or_else(|| sha256_id(request.body));
                (phone_id.unwrap_or_else(|| UNASSIGNED.to_owned()), event_id)
            }
        };
        Ok(Self {
            source: request.source,
            record: RawWebhook {
                event_id,
                source: request.source.as_str().to_owned(),
                phone_id,
                received_at: request.received_at_millis,
                url: request.url.to_owned(),
                content_type: request.content_type.to_owned(),
                headers: envelope_headers(request.headers),
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
fn twilio_phone_id(params: &[(String, String)]) -> String {
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
        .unwrap_or_else(|| UNASSIGNED.to_owned())
}

/// Header names lower-cased (as `http` keeps them), repeated values joined with `", "`, values
/// that are not valid UTF-8 replaced lossily, credential headers dropped.
fn envelope_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        if DROPPED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
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
            assert_eq!(twilio_phone_id(&params(&pairs)), expected, "{pairs:?}");
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
    fn headers_are_joined_and_credentials_dropped() {
        let mut headers = HeaderMap::new();
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        headers.insert("authorization", "Bearer secret".parse().unwrap());
        headers.insert("cookie", "session=secret".parse().unwrap());
        headers.insert("x-twilio-signature", "sig=".parse().unwrap());
        let out = envelope_headers(&headers);
        assert_eq!(out.get("x-multi").map(String::as_str), Some("a, b"));
        assert!(!out.contains_key("authorization") && !out.contains_key("cookie"));
        assert_eq!(out.get("x-twilio-signature").map(String::as_str), Some("sig="));
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
