//! Normalizers: one pure function per provider that turns a verified [`RawWebhook`] into the
//! domain event it describes, or says why it never can ([`Poison`], which goes to the DLQ).
//!
//! No I/O and no clock: the same envelope always normalizes to the same event. Ids come from the
//! envelope (`phone_id`, `event_id`), so the record key and the dedup key are ingest's. A
//! [`Poison`] reason names fields, never values: it travels in DLQ headers and logs, and must not
//! carry payload data or secrets.

mod calendly;
mod generic;
mod stripe;
mod twilio;
mod twilio_events;

use std::fmt;

use serde_json::Value;
use switchboard_schemas::{DomainEvent, RawWebhook, Source, error_class, media_type};

/// Why a record can never become a domain event. Low-cardinality: a metrics label and a DLQ header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoisonClass {
    /// The body is not what the source sends (not a form, not JSON, not UTF-8), or the record
    /// itself could not be decoded.
    Undecodable,
    /// The body decodes but is an event this release does not handle (or the source is unknown).
    UnknownKind,
    /// A field the event cannot do without is absent or empty; the reason names it.
    MissingField,
}

impl PoisonClass {
    /// Every class, in a stable order.
    pub const ALL: [PoisonClass; 3] = [
        PoisonClass::Undecodable,
        PoisonClass::UnknownKind,
        PoisonClass::MissingField,
    ];

    /// `undecodable`, `unknown_kind` or `missing_field`.
    pub fn as_str(self) -> &'static str {
        match self {
            PoisonClass::Undecodable => error_class::UNDECODABLE,
            PoisonClass::UnknownKind => error_class::UNKNOWN_KIND,
            PoisonClass::MissingField => error_class::MISSING_FIELD,
        }
    }
}

impl fmt::Display for PoisonClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that can never be processed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {reason}")]
pub struct Poison {
    pub class: PoisonClass,
    /// Names fields, never their values.
    pub reason: String,
}

impl Poison {
    pub fn new(class: PoisonClass, reason: impl Into<String>) -> Self {
        Self {
            class,
            reason: reason.into(),
        }
    }

    pub(crate) fn undecodable(reason: impl Into<String>) -> Self {
        Self::new(PoisonClass::Undecodable, reason)
    }

    pub(crate) fn unknown_kind(reason: impl Into<String>) -> Self {
        Self::new(PoisonClass::UnknownKind, reason)
    }

    /// `field` is named as the provider spells it (`CallSid`, `data.object.id`).
    pub(crate) fn missing_field(field: &str) -> Self {
        Self::new(PoisonClass::MissingField, format!("missing field {field}"))
    }
}

/// The domain event `raw` describes, dispatched on its source.
pub fn normalize(raw: &RawWebhook) -> Result<DomainEvent, Poison> {
    let source: Source = raw
        .source
        .parse()
        .map_err(|_| Poison::unknown_kind("unknown source"))?;
    match source {
        Source::Twilio if media_type::is(&raw.content_type, media_type::CLOUDEVENTS_JSON) => {
            twilio_events::normalize(raw)
        }
        Source::Twilio => twilio::normalize(raw),
        Source::Stripe => stripe::normalize(raw),
        Source::Calendly => calendly::normalize(raw),
        Source::Generic => generic::normalize(raw),
    }
}

/// The body as a JSON object (Stripe, Calendly, Twilio's JSON callbacks).
fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Poison> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Poison::undecodable("body is not a JSON object")),
        Err(_) => Err(Poison::undecodable("body is not valid JSON")),
    }
}

/// The non-blank string at `pointer`, or `None`.
fn str_at<'a>(json: &'a Value, pointer: &str) -> Option<&'a str> {
    json.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// The non-blank string at `pointer`, or [`PoisonClass::MissingField`] naming `field`.
fn required_str(json: &Value, pointer: &str, field: &str) -> Result<String, Poison> {
    str_at(json, pointer)
        .map(str::to_owned)
        .ok_or_else(|| Poison::missing_field(field))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switchboard_schemas::topics;

    use super::*;

    /// An envelope as ingest builds it, for the normalizer tests.
    pub(crate) fn envelope(source: &str, content_type: &str, body: &[u8]) -> RawWebhook {
        RawWebhook {
            event_id: "EV-1".into(),
            source: source.into(),
            phone_id: "+14155550100".into(),
            received_at: 1_736_877_960_000,
            url: format!("https://hooks.example.com/webhooks/{source}"),
            content_type: content_type.into(),
            headers: BTreeMap::new(),
            body: body.to_vec(),
            signature_scheme: "test".into(),
            source_name: None,
        }
    }

    #[test]
    fn an_unknown_source_is_an_unknown_kind() {
        let poison = normalize(&envelope("paypal", "application/json", b"{}")).unwrap_err();
        assert_eq!(poison.class, PoisonClass::UnknownKind);
        assert!(!poison.reason.contains("paypal"), "reasons carry no values");
    }

    #[test]
    fn each_event_goes_to_its_topic_with_its_schema_and_the_envelope_ids() {
        let cases = [
            (
                envelope(
                    "twilio",
                    "application/x-www-form-urlencoded",
                    b"CallSid=CA1&CallStatus=ringing",
                ),
                topics::CALLS,
                "switchboard.CallEvent",
            ),
            (
                envelope(
                    "twilio",
                    "application/x-www-form-urlencoded",
                    b"MessageSid=SM1&MessageStatus=sent",
                ),
                topics::MESSAGES,
                "switchboard.MessageEvent",
            ),
            (
                envelope(
                    "stripe",
                    "application/json",
                    br#"{"type":"invoice.paid","data":{"object":{"id":"in_1"}}}"#,
                ),
                topics::BILLING,
                "switchboard.BillingEvent",
            ),
            (
                envelope(
                    "calendly",
                    "application/json",
                    br#"{"event":"invitee.created","payload":{"uri":"https://api.calendly.com/i/1"}}"#,
                ),
                topics::BOOKINGS,
                "switchboard.BookingEvent",
            ),
            (
                RawWebhook {
                    source_name: Some("crm".into()),
                    ..envelope("generic", "text/plain", b"hi")
                },
                topics::GENERIC,
                "switchboard.GenericEvent",
            ),
        ];
        for (raw, topic, schema) in cases {
            let event = normalize(&raw).unwrap();
            assert_eq!(event.topic(), topic);
            assert_eq!(event.schema_def().name, schema);
            assert_eq!(event.key(), raw.phone_id);
            assert_eq!(event.event_id(), raw.event_id);
        }
    }

    #[test]
    fn poison_classes_have_stable_names() {
        let names: Vec<_> = PoisonClass::ALL.into_iter().map(PoisonClass::as_str).collect();
        assert_eq!(names, ["undecodable", "unknown_kind", "missing_field"]);
        let poison = Poison::missing_field("CallSid");
        assert_eq!(poison.to_string(), "missing_field: missing field CallSid");
    }
}
