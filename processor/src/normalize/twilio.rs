//! Twilio callbacks: voice status, recording status, transcription, and message status.
//!
//! Event Streams records (`application/cloudevents+json`) go to
//! [`twilio_events`](super::twilio_events) instead, which maps them onto the same parameters.
//!
//! The body is `application/x-www-form-urlencoded` (Twilio's default), or a JSON object whose
//! top-level scalars are the parameters when the content type is `application/json` in any case,
//! with any parameters (`switchboard_schemas::media_type`, the parser ingest verified the
//! signature with). The kind is the first of these that matches:
//! `TranscriptionSid` -> transcription, `RecordingSid` -> recording, `MessageSid` -> message,
//! `CallSid` with `CallStatus` -> call status. A blank parameter counts as absent; the first
//! occurrence of a repeated parameter wins. Numbers parse leniently: one that is not an integer
//! is `None`, not poison.

use std::borrow::Cow;

use chrono::DateTime;
use serde_json::Value;
use switchboard_schemas::RawWebhook;
use switchboard_schemas::domain::{CallEvent, CallKind, MessageEvent};
use url::form_urlencoded;

use super::{DomainEvent, Poison, json_object};

pub(crate) fn normalize(raw: &RawWebhook) -> Result<DomainEvent, Poison> {
    from_params(raw, &Params::parse(raw)?)
}

/// The event a callback's parameters describe (see the module docs for the rules).
pub(super) fn from_params(raw: &RawWebhook, params: &Params<'_>) -> Result<DomainEvent, Poison> {
    let kind = if params.has("TranscriptionSid") {
        CallKind::Transcription
    } else if params.has("RecordingSid") {
        CallKind::Recording
    } else if params.has("MessageSid") {
        return message(raw, params).map(DomainEvent::Message);
    } else if params.has("CallSid") && params.has("CallStatus") {
        CallKind::Status
    } else {
        return Err(Poison::unknown_kind(
            "Twilio callback has none of TranscriptionSid, RecordingSid, MessageSid, CallSid with CallStatus",
        ));
    };
    call(raw, params, kind).map(DomainEvent::Call)
}

fn call(raw: &RawWebhook, params: &Params<'_>, kind: CallKind) -> Result<CallEvent, Poison> {
    Ok(CallEvent {
        event_id: raw.event_id.clone(),
        phone_id: raw.phone_id.clone(),
        call_sid: params.required("CallSid")?,
        kind: kind.as_str().to_owned(),
        account_sid: params.string("AccountSid"),
        occurred_at: params
            .get("Timestamp")
            .and_then(rfc2822_millis)
            .unwrap_or(raw.received_at),
        received_at: raw.received_at,
        from: params.string("From"),
        to: params.string("To"),
        direction: params.string("Direction"),
        call_status: params.string("CallStatus"),
        call_duration: params.int("CallDuration"),
        sequence_number: params.int("SequenceNumber"),
        recording_sid: params.string("RecordingSid"),
        recording_url: params.string("RecordingUrl"),
        recording_status: params.string("RecordingStatus"),
        recording_duration: params.int("RecordingDuration"),
        transcription_sid: params.string("TranscriptionSid"),
        transcription_text: params.string("TranscriptionText"),
        transcription_status: params.string("TranscriptionStatus"),
    })
}

fn message(raw: &RawWebhook, params: &Params<'_>) -> Result<MessageEvent, Poison> {
    Ok(MessageEvent {
        event_id: raw.event_id.clone(),
        phone_id: raw.phone_id.clone(),
        message_sid: params.required("MessageSid")?,
        message_status: params
            .string("MessageStatus")
            .or_else(|| params.string("SmsStatus"))
            .ok_or_else(|| Poison::missing_field("MessageStatus"))?,
        error_code: params.string("ErrorCode"),
        from: params.string("From"),
        to: params.string("To"),
        account_sid: params.string("AccountSid"),
        received_at: raw.received_at,
    })
}

/// Twilio's `Timestamp` (RFC 2822, e.g. `Tue, 14 Jan 2025 18:05:59 +0000`) in epoch milliseconds.
fn rfc2822_millis(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A callback's parameters in body order, borrowed from the body where they need no decoding.
#[derive(Debug)]
pub(super) struct Params<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl Params<'static> {
    /// Parameters as a callback would have sent them (Event Streams events carry them).
    pub(super) fn new(params: Vec<(String, String)>) -> Self {
        Self(
            params
                .into_iter()
                .map(|(name, value)| (Cow::Owned(name), Cow::Owned(value)))
                .collect(),
        )
    }
}

impl<'a> Params<'a> {
    fn parse(raw: &'a RawWebhook) -> Result<Self, Poison> {
        if switchboard_schemas::media_type::is_json(&raw.content_type) {
            let object = json_object(&raw.body)?;
            let scalars = object.into_iter().filter_map(|(name, value)| match value {
                Value::String(s) => Some((Cow::Owned(name), Cow::Owned(s))),
                Value::Number(n) => Some((Cow::Owned(name), Cow::Owned(n.to_string()))),
                Value::Bool(b) => Some((Cow::Owned(name), Cow::Owned(b.to_string()))),
                _ => None,
            });
            return Ok(Self(scalars.collect()));
        }
        std::str::from_utf8(&raw.body).map_err(|_| Poison::undecodable("form body is not UTF-8"))?;
        Ok(Self(form_urlencoded::parse(&raw.body).collect()))
    }

    /// The first non-blank value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == name && !v.trim().is_empty())
            .map(|(_, v)| v.as_ref())
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    fn required(&self, name: &str) -> Result<String, Poison> {
        self.string(name).ok_or_else(|| Poison::missing_field(name))
    }

    fn int(&self, name: &str) -> Option<i32> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::super::PoisonClass;
    use super::super::tests::envelope;
    use super::*;

    const FORM: &str = "application/x-www-form-urlencoded";
    const ACCOUNT: &str = "AC3f9a2c4e6b8d0f1a3c5e7b9d2f4a6c8e";
    const CALL: &str = "CA5b7d9f1a3c5e7b9d2f4a6c8e0a2c4e6b";
    const RECORDING: &str = "RE8d0f2a4c6e8b1d3f5a7c9e2b4d6f8a1c";
    const TRANSCRIPTION: &str = "TR2c4e6a8d0f1b3d5f7a9c2e4b6d8f0a3c";
    const MESSAGE: &str = "SM9e1b3d5f7a2c4e6b8d0f3a5c7e9b2d4f";
    const CALLER: &str = "+14155550199";
    const RECEPTIONIST: &str = "+14155550100";
    /// `Tue, 14 Jan 2025 18:05:59 +0000`.
    const COMPLETED_AT: i64 = 1_736_877_959_000;

    fn recording_url() -> String {
        format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}")
    }

    /// Callback parameters as a test writes them.
    type Pairs<'a> = Vec<(&'a str, &'a str)>;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    }

    /// A voice status callback as Twilio documents it, with `CallStatus` and extras.
    fn status_params<'a>(
        status: &'a str,
        sequence: &'a str,
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut params = vec![
            ("AccountSid", ACCOUNT),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", CALL),
            ("CallStatus", status),
            ("Called", RECEPTIONIST),
            ("Caller", CALLER),
            ("Direction", "inbound"),
            ("From", CALLER),
            ("To", RECEPTIONIST),
            ("SequenceNumber", sequence),
            ("CallbackSource", "call-progress-events"),
        ];
        params.extend_from_slice(extra);
        params
    }

    fn call_event(status: Option<&str>) -> CallEvent {
        let raw = envelope("twilio", FORM, b"");
        CallEvent {
            account_sid: Some(ACCOUNT.into()),
            from: Some(CALLER.into()),
            to: Some(RECEPTIONIST.into()),
            direction: Some("inbound".into()),
            call_status: status.map(str::to_owned),
            ..CallEvent::new(
                &raw.event_id,
                &raw.phone_id,
                CALL,
                CallKind::Status,
                raw.received_at,
            )
        }
    }

    #[test]
    fn every_kind_normalizes_from_its_documented_parameters() {
        let recording_url = recording_url();
        let transcription_url =
            format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Transcriptions/{TRANSCRIPTION}");
        let text = "Hi, this is Dana. I'd like to book a cleaning for Tuesday morning.";
        let cases: Vec<(&str, Pairs<'_>, DomainEvent)> = vec![
            (
                "completed status callback",
                status_params(
                    "completed",
                    "4",
                    &[
                        ("CallDuration", "47"),
                        ("Duration", "1"),
                        ("Timestamp", "Tue, 14 Jan 2025 18:05:59 +0000"),
                        ("SipResponseCode", "200"),
                    ],
                ),
                DomainEvent::Call(CallEvent {
                    occurred_at: COMPLETED_AT,
                    call_duration: Some(47),
                    sequence_number: Some(4),
                    ..call_event(Some("completed"))
                }),
            ),
            (
                "ringing status callback without a Timestamp",
                status_params("ringing", "2", &[]),
                DomainEvent::Call(CallEvent {
                    sequence_number: Some(2),
                    ..call_event(Some("ringing"))
                }),
            ),
            (
                "lenient numbers and an unparsable Timestamp",
                status_params(
                    "in-progress",
                    "three",
                    &[("CallDuration", "n/a"), ("Timestamp", "yesterday")],
                ),
                DomainEvent::Call(call_event(Some("in-progress"))),
            ),
            (
                "recording status callback",
                vec![
                    ("AccountSid", ACCOUNT),
                    ("CallSid", CALL),
                    ("RecordingSid", RECORDING),
                    ("RecordingUrl", &recording_url),
                    ("RecordingStatus", "completed"),
                    ("RecordingDuration", "45"),
                    ("RecordingChannels", "1"),
                    ("RecordingStartTime", "Tue, 14 Jan 2025 18:05:13 +0000"),
                    ("RecordingSource", "RecordVerb"),
                    ("ErrorCode", "0"),
                ],
                DomainEvent::Call(CallEvent {
                    kind: "recording".into(),
                    from: None,
                    to: None,
                    direction: None,
                    recording_sid: Some(RECORDING.into()),
                    recording_url: Some(recording_url.clone()),
                    recording_status: Some("completed".into()),
                    recording_duration: Some(45),
                    ..call_event(None)
                }),
            ),
            (
                "transcription callback",
                vec![
                    ("AccountSid", ACCOUNT),
                    ("ApiVersion", "2010-04-01"),
                    ("CallSid", CALL),
                    ("CallStatus", "completed"),
                    ("Direction", "inbound"),
                    ("From", CALLER),
                    ("To", RECEPTIONIST),
                    ("RecordingSid", RECORDING),
                    ("RecordingUrl", &recording_url),
                    ("TranscriptionSid", TRANSCRIPTION),
                    ("TranscriptionText", text),
                    ("TranscriptionStatus", "completed"),
                    ("TranscriptionType", "fast"),
                    ("TranscriptionUrl", &transcription_url),
                    ("url", "https://hooks.example.com/webhooks/twilio"),
                ],
                DomainEvent::Call(CallEvent {
                    kind: "transcription".into(),
                    recording_sid: Some(RECORDING.into()),
                    recording_url: Some(recording_url.clone()),
                    transcription_sid: Some(TRANSCRIPTION.into()),
                    transcription_text: Some(text.into()),
                    transcription_status: Some("completed".into()),
                    ..call_event(Some("completed"))
                }),
            ),
            (
                "message status callback",
                vec![
                    ("AccountSid", ACCOUNT),
                    ("ApiVersion", "2010-04-01"),
                    ("MessageSid", MESSAGE),
                    ("SmsSid", MESSAGE),
                    ("MessageStatus", "undelivered"),
                    ("SmsStatus", "sent"),
                    ("ErrorCode", "30003"),
                    ("From", RECEPTIONIST),
                    ("To", CALLER),
                ],
                DomainEvent::Message(MessageEvent {
                    event_id: "EV-1".into(),
                    phone_id: RECEPTIONIST.into(),
                    message_sid: MESSAGE.into(),
                    message_status: "undelivered".into(),
                    error_code: Some("30003".into()),
                    from: Some(RECEPTIONIST.into()),
                    to: Some(CALLER.into()),
                    account_sid: Some(ACCOUNT.into()),
                    received_at: 1_736_877_960_000,
                }),
            ),
            (
                "legacy message callback with SmsStatus only",
                vec![
                    ("SmsSid", MESSAGE),
                    ("MessageSid", MESSAGE),
                    ("SmsStatus", "delivered"),
                    ("ErrorCode", ""),
                ],
                DomainEvent::Message(MessageEvent {
                    event_id: "EV-1".into(),
                    phone_id: RECEPTIONIST.into(),
                    message_sid: MESSAGE.into(),
                    message_status: "delivered".into(),
                    error_code: None,
                    from: None,
                    to: None,
                    account_sid: None,
                    received_at: 1_736_877_960_000,
                }),
            ),
        ];
        for (name, params, expected) in cases {
            let raw = envelope("twilio", FORM, &form(&params));
            assert_eq!(normalize(&raw), Ok(expected), "{name}");
        }
    }

    #[test]
    fn json_bodies_use_their_top_level_scalars() {
        let body = serde_json::json!({
            "AccountSid": ACCOUNT,
            "CallSid": CALL,
            "CallStatus": "ringing",
            "SequenceNumber": 2,
            "From": CALLER,
            "To": RECEPTIONIST,
            "Direction": "inbound",
            "Timestamp": "Tue, 14 Jan 2025 18:05:59 +0000",
            "Nested": {"CallDuration": "5"}
        });
        let raw = envelope(
            "twilio",
            "application/json; charset=utf-8",
            body.to_string().as_bytes(),
        );
        let expected = CallEvent {
            sequence_number: Some(2),
            occurred_at: COMPLETED_AT,
            ..call_event(Some("ringing"))
        };
        assert_eq!(normalize(&raw), Ok(DomainEvent::Call(expected.clone())));

        // Media types are case-insensitive: ingest verified this body as JSON, so it is JSON here.
        let shouted = envelope("twilio", "Application/JSON", body.to_string().as_bytes());
        assert_eq!(normalize(&shouted), Ok(DomainEvent::Call(expected)));
    }

    #[test]
    fn the_first_non_blank_occurrence_of_a_parameter_wins() {
        let params = [
            ("CallSid", ""),
            ("CallSid", CALL),
            ("CallStatus", "queued"),
            ("CallStatus", "ringing"),
        ];
        let Ok(DomainEvent::Call(event)) = normalize(&envelope("twilio", FORM, &form(&params))) else {
            panic!("a call event")
        };
        assert_eq!(
            (event.call_sid.as_str(), event.call_status.as_deref()),
            (CALL, Some("queued"))
        );
    }

    #[test]
    fn every_poison_class_is_detected_and_reasons_name_fields_only() {
        let recording_url = recording_url();
        let cases: Vec<(&str, &str, Vec<u8>, PoisonClass, &str)> = vec![
            (
                "non-UTF-8 form",
                FORM,
                b"CallSid=CA1&CallStatus=\xff\xfe".to_vec(),
                PoisonClass::Undecodable,
                "UTF-8",
            ),
            (
                "invalid JSON",
                "application/json",
                b"{\"CallSid\":".to_vec(),
                PoisonClass::Undecodable,
                "JSON",
            ),
            (
                "JSON array",
                "application/json",
                b"[1,2]".to_vec(),
                PoisonClass::Undecodable,
                "object",
            ),
            (
                "no known sid",
                FORM,
                form(&[("AccountSid", ACCOUNT), ("ApiVersion", "2010-04-01")]),
                PoisonClass::UnknownKind,
                "CallStatus",
            ),
            (
                "CallSid without CallStatus",
                FORM,
                form(&[("CallSid", CALL), ("Digits", "1234")]),
                PoisonClass::UnknownKind,
                "CallStatus",
            ),
            (
                "empty form",
                FORM,
                Vec::new(),
                PoisonClass::UnknownKind,
                "CallSid",
            ),
            (
                "recording without CallSid",
                FORM,
                form(&[
                    ("AccountSid", ACCOUNT),
                    ("RecordingSid", RECORDING),
                    ("RecordingUrl", &recording_url),
                    ("RecordingStatus", "completed"),
                ]),
                PoisonClass::MissingField,
                "missing field CallSid",
            ),
            (
                "transcription with a blank CallSid",
                FORM,
                form(&[
                    ("CallSid", " "),
                    ("TranscriptionSid", TRANSCRIPTION),
                    ("TranscriptionText", "secret"),
                ]),
                PoisonClass::MissingField,
                "missing field CallSid",
            ),
            (
                "message without a status",
                FORM,
                form(&[
                    ("MessageSid", MESSAGE),
                    ("From", CALLER),
                    ("Body", "my card is 4242"),
                ]),
                PoisonClass::MissingField,
                "missing field MessageStatus",
            ),
        ];
        for (name, content_type, body, class, names) in cases {
            let poison = normalize(&envelope("twilio", content_type, &body)).unwrap_err();
            assert_eq!(poison.class, class, "{name}");
            assert!(poison.reason.contains(names), "{name}: {:?}", poison.reason);
            for value in [
                ACCOUNT,
                CALL,
                RECORDING,
                TRANSCRIPTION,
                MESSAGE,
                CALLER,
                "secret",
                "4242",
            ] {
                assert!(!poison.reason.contains(value), "{name}: reason leaks a value");
            }
        }
    }
}
