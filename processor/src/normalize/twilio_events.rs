//! Twilio Event Streams: one CloudEvent per record (`application/cloudevents+json`), normalized to
//! the same domain events as the callbacks that describe the same thing, so that call state, the
//! sink and actions do not depend on how Twilio is wired.
//!
//! - Voice call status (`com.twilio.voice.status-callback.call.*`, and the deprecated
//!   `com.twilio.voice.webhook.status-callback.call.*`; `Voice.WebhookEvent` schema): the event
//!   carries the status callback's request, whose `data.request.parameters` are the callback's
//!   parameters. They become a [`CallEvent`] exactly as a callback with those parameters would;
//!   `CallSid` falls back to `data.sid` and `CallStatus` to the type's last segment (`initiated`,
//!   `ringing`, `answered` -> `in-progress`, `completed`). `occurred_at` is the parameters'
//!   `Timestamp` (as for callbacks), else `data.timestamp`, else the CloudEvent `time`.
//! - Messages (`com.twilio.messaging.message.*`: queued, sent, delivered, undelivered, failed,
//!   read, …; `Messaging.MessageStatus` schema): `messageSid`, `messageStatus` (lower-cased, as
//!   callbacks spell it; else the type's last segment), `errorCode`, `from`, `to`, `accountSid`
//!   become a [`MessageEvent`]. `com.twilio.messaging.inbound-message.received` is a message
//!   with status `received`.
//! - Every other type: a [`GenericEvent`] named `twilio-events:<type>` with the CloudEvent as its
//!   body, not poison: Twilio adds event types, and a sink subscribed to one should not fill the
//!   DLQ.
//!
//! [`CallEvent`]: switchboard_schemas::domain::CallEvent
//! [`MessageEvent`]: switchboard_schemas::domain::MessageEvent

use chrono::DateTime;
use serde_json::{Map, Value};
use switchboard_schemas::RawWebhook;
use switchboard_schemas::domain::GenericEvent;

use super::twilio::{self, Params};
use super::{DomainEvent, Poison, json_object};

/// Voice call status event types start with one of these.
const CALL_PREFIXES: [&str; 2] = [
    "com.twilio.voice.status-callback.call.",
    "com.twilio.voice.webhook.status-callback.call.",
];
/// Outbound message status event types.
const MESSAGE_PREFIX: &str = "com.twilio.messaging.message.";
/// An inbound message.
const INBOUND_MESSAGE: &str = "com.twilio.messaging.inbound-message.received";
/// The generic source name of an unmapped event type is this + the type.
pub(crate) const GENERIC_PREFIX: &str = "twilio-events:";

pub(crate) fn normalize(raw: &RawWebhook) -> Result<DomainEvent, Poison> {
    let event = json_object(&raw.body)?;
    let event_type = event
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| Poison::missing_field("type"))?;
    let empty = Map::new();
    let data = event.get("data").and_then(Value::as_object).unwrap_or(&empty);

    if let Some(transition) = CALL_PREFIXES.iter().find_map(|p| event_type.strip_prefix(p)) {
        return call(raw, &event, data, transition);
    }
    if let Some(status) = event_type.strip_prefix(MESSAGE_PREFIX) {
        return message(raw, data, status);
    }
    if event_type == INBOUND_MESSAGE {
        return message(raw, data, "received");
    }
    let body = std::str::from_utf8(&raw.body).map_err(|_| Poison::undecodable("body is not UTF-8"))?;
    Ok(DomainEvent::Generic(GenericEvent {
        event_id: raw.event_id.clone(),
        phone_id: raw.phone_id.clone(),
        source_name: format!("{GENERIC_PREFIX}{event_type}"),
        content_type: raw.content_type.clone(),
        body: body.to_owned(),
        received_at: raw.received_at,
    }))
}

fn call(
    raw: &RawWebhook,
    event: &Map<String, Value>,
    data: &Map<String, Value>,
    transition: &str,
) -> Result<DomainEvent, Poison> {
    let mut params = match data.get("request").and_then(|r| r.get("parameters")) {
        Some(Value::Object(parameters)) => scalars(parameters.iter().map(|(n, v)| (n.as_str(), v))),
        _ => Vec::new(),
    };
    let mut fill = |name: &str, value: Option<&str>| {
        let present = params.iter().any(|(n, v)| n == name && !v.trim().is_empty());
        if let (false, Some(value)) = (present, value.filter(|v| !v.trim().is_empty())) {
            params.push((name.to_owned(), value.to_owned()));
        }
    };
    fill("CallSid", data.get("sid").and_then(Value::as_str));
    let status = match transition {
        "answered" => "in-progress",
        other => other,
    };
    fill("CallStatus", Some(status));
    let params = Params::new(params);
    if params.get("CallSid").is_none() {
        return Err(Poison::missing_field("data.sid"));
    }
    let timestamped = params
        .get("Timestamp")
        .is_some_and(|t| DateTime::parse_from_rfc2822(t.trim()).is_ok());
    let mut domain = twilio::from_params(raw, &params)?;
    if let DomainEvent::Call(call) = &mut domain
        && !timestamped
    {
        let at = [data.get("timestamp"), event.get("time")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find_map(|t| DateTime::parse_from_rfc3339(t.trim()).ok());
        if let Some(at) = at {
            call.occurred_at = at.timestamp_millis();
        }
    }
    Ok(domain)
}

fn message(raw: &RawWebhook, data: &Map<String, Value>, status: &str) -> Result<DomainEvent, Poison> {
    let field = |name: &str| {
        data.get(name).and_then(|value| match value {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let status = field("messageStatus").unwrap_or_else(|| status.to_owned());
    let mut params = vec![("MessageStatus".to_owned(), status.to_ascii_lowercase())];
    let names = [
        ("messageSid", "MessageSid"),
        ("errorCode", "ErrorCode"),
        ("from", "From"),
        ("to", "To"),
        ("accountSid", "AccountSid"),
    ];
    for (field_name, name) in names {
        if let Some(value) = field(field_name) {
            params.push((name.to_owned(), value));
        }
    }
    if field("messageSid").is_none() {
        return Err(Poison::missing_field("data.messageSid"));
    }
    twilio::from_params(raw, &Params::new(params))
}

fn scalars<'a>(fields: impl Iterator<Item = (&'a str, &'a Value)>) -> Vec<(String, String)> {
    fields
        .filter_map(|(name, value)| match value {
            Value::String(s) => Some((name.to_owned(), s.clone())),
            Value::Number(n) => Some((name.to_owned(), n.to_string())),
            Value::Bool(b) => Some((name.to_owned(), b.to_string())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use switchboard_schemas::domain::{CallEvent, CallKind, MessageEvent};

    use super::super::PoisonClass;
    use super::super::tests::envelope;
    use super::*;

    const CLOUDEVENTS: &str = "application/cloudevents+json";
    const FORM: &str = "application/x-www-form-urlencoded";
    const CALL: &str = "CA5b7d9f1a3c5e7b9d2f4a6c8e0a2c4e6b";
    const ACCOUNT: &str = "AC3f9a2c4e6b8d0f1a3c5e7b9d2f4a6c8e";

    fn cloud_event(event_type: &str, data: Value) -> RawWebhook {
        let event = serde_json::json!({
            "specversion": "1.0",
            "type": event_type,
            "source": "/2010-04-01/Accounts/AC3f/Calls/CA5b.json",
            "id": "EZ0001",
            "dataschema": "https://events-schemas.twilio.com/Voice.WebhookEvent/2",
            "datacontenttype": "application/json",
            "time": "2025-01-14T18:05:59.500Z",
            "data": data,
        });
        envelope("twilio", CLOUDEVENTS, event.to_string().as_bytes())
    }

    /// The parameters of a status callback, as Twilio posts them and as Event Streams embeds them.
    fn parameters(status: &str, sequence: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AccountSid", ACCOUNT.into()),
            ("CallSid", CALL.into()),
            ("CallStatus", status.into()),
            ("Direction", "inbound".into()),
            ("From", "+14155550199".into()),
            ("To", "+14155550100".into()),
            ("SequenceNumber", sequence.into()),
            ("Timestamp", "Tue, 14 Jan 2025 18:05:59 +0000".into()),
            ("CallDuration", "42".into()),
        ]
    }

    fn voice_data(params: &[(&str, String)]) -> Value {
        let parameters: Map<String, Value> = params
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "sid": CALL,
            "timestamp": "2025-01-14T18:05:59.800Z",
            "eventSid": "VW0001",
            "request": {"method": "POST", "url": "https://hooks.example.com/webhooks/twilio/calls", "parameters": parameters},
            "response": {"responseCode": 200},
        })
    }

    fn as_callback(params: &[(&str, String)]) -> RawWebhook {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(n, v)| (*n, v.as_str())))
            .finish();
        envelope("twilio", FORM, body.as_bytes())
    }

    #[test]
    fn call_status_events_normalize_like_the_callback_they_carry() {
        let cases = [
            ("initiated", "initiated"),
            ("ringing", "ringing"),
            ("answered", "in-progress"),
            ("completed", "completed"),
            ("completed", "no-answer"),
            ("completed", "busy"),
        ];
        for (suffix, status) in cases {
            let params = parameters(status, "3");
            for prefix in CALL_PREFIXES {
                let raw = cloud_event(&format!("{prefix}{suffix}"), voice_data(&params));
                assert_eq!(
                    normalize(&raw),
                    twilio::normalize(&as_callback(&params)),
                    "{prefix}{suffix} {status}"
                );
            }
        }
    }

    #[test]
    fn missing_call_parameters_come_from_the_event() {
        // Twilio's documented example: the parameters may be empty.
        let raw = cloud_event("com.twilio.voice.status-callback.call.answered", voice_data(&[]));
        let DomainEvent::Call(call) = normalize(&raw).unwrap() else {
            panic!("not a call event");
        };
        let expected = CallEvent {
            // data.timestamp, 2025-01-14T18:05:59.800Z.
            occurred_at: 1_736_877_959_800,
            call_status: Some("in-progress".into()),
            ..CallEvent::new(
                &raw.event_id,
                &raw.phone_id,
                CALL,
                CallKind::Status,
                raw.received_at,
            )
        };
        assert_eq!(call, expected);

        // Without data.timestamp: the CloudEvent time.
        let mut data = voice_data(&[]);
        data.as_object_mut().unwrap().remove("timestamp");
        let raw = cloud_event("com.twilio.voice.status-callback.call.ringing", data);
        let DomainEvent::Call(call) = normalize(&raw).unwrap() else {
            panic!("not a call event");
        };
        assert_eq!(call.occurred_at, 1_736_877_959_500);
        assert_eq!(call.call_status.as_deref(), Some("ringing"));
    }

    #[test]
    fn message_status_events_normalize_like_message_callbacks() {
        let statuses = ["queued", "sent", "delivered", "undelivered", "failed", "read"];
        for status in statuses {
            let mut data = serde_json::json!({
                "messageSid": "SM9e1b",
                "accountSid": ACCOUNT,
                "from": "+14155550100",
                "to": "+14155550199",
                "messageStatus": status.to_ascii_uppercase(),
                "timestamp": "2025-01-14T18:06:00.000Z",
                "eventName": format!("{MESSAGE_PREFIX}{status}"),
                "apiVersion": "2010-04-01",
            });
            if status == "undelivered" {
                data["errorCode"] = 30003.into();
            }
            let raw = cloud_event(&format!("{MESSAGE_PREFIX}{status}"), data);
            let mut callback = vec![
                ("MessageSid", "SM9e1b".to_owned()),
                ("MessageStatus", status.to_owned()),
                ("From", "+14155550100".to_owned()),
                ("To", "+14155550199".to_owned()),
                ("AccountSid", ACCOUNT.to_owned()),
            ];
            if status == "undelivered" {
                callback.push(("ErrorCode", "30003".to_owned()));
            }
            assert_eq!(
                normalize(&raw),
                twilio::normalize(&as_callback(&callback)),
                "{status}"
            );
        }

        let raw = cloud_event(
            INBOUND_MESSAGE,
            serde_json::json!({"messageSid": "SM1", "from": "+1", "to": "+2"}),
        );
        let DomainEvent::Message(message) = normalize(&raw).unwrap() else {
            panic!("not a message event");
        };
        assert_eq!(
            message,
            MessageEvent {
                event_id: raw.event_id.clone(),
                phone_id: raw.phone_id.clone(),
                message_sid: "SM1".into(),
                message_status: "received".into(),
                error_code: None,
                from: Some("+1".into()),
                to: Some("+2".into()),
                account_sid: None,
                received_at: raw.received_at,
            }
        );
    }

    #[test]
    fn other_event_types_are_generic_events_named_by_type() {
        for event_type in [
            "com.twilio.voice.status-callback.amd.detected",
            "com.twilio.conversations.message.added",
            "com.twilio.eventstreams.test-event",
        ] {
            let raw = cloud_event(event_type, serde_json::json!({"test_id": "x"}));
            let DomainEvent::Generic(event) = normalize(&raw).unwrap() else {
                panic!("{event_type}: not generic");
            };
            assert_eq!(event.source_name, format!("twilio-events:{event_type}"));
            assert_eq!(event.body.as_bytes(), raw.body.as_slice());
            assert_eq!(event.content_type, CLOUDEVENTS);
            assert_eq!(event.event_id, raw.event_id);
        }
    }

    #[test]
    fn broken_events_are_poison_naming_fields_only() {
        let cases: [(RawWebhook, PoisonClass); 5] = [
            (envelope("twilio", CLOUDEVENTS, b"[1]"), PoisonClass::Undecodable),
            (
                envelope("twilio", CLOUDEVENTS, b"{\"id\":\"EZ1\"}"),
                PoisonClass::MissingField,
            ),
            (
                cloud_event(&format!("{MESSAGE_PREFIX}sent"), serde_json::json!({"to": "+1"})),
                PoisonClass::MissingField,
            ),
            (
                // A call event with neither parameters nor data.sid.
                cloud_event(&format!("{}completed", CALL_PREFIXES[0]), serde_json::json!({})),
                PoisonClass::MissingField,
            ),
            (
                envelope("twilio", "Application/CloudEvents+JSON; charset=utf-8", b"nope"),
                PoisonClass::Undecodable,
            ),
        ];
        for (raw, class) in cases {
            let poison = normalize(&raw).unwrap_err();
            assert_eq!(poison.class, class, "{poison}");
        }
    }
}
