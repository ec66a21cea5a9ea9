//! Calendly webhook subscriptions: `invitee.created` and `invitee.canceled` (API v2 payloads).
//!
//! Required: `event` (one of the two) and `payload.uri`. Times are RFC 3339; one that does not
//! parse is `None`, not poison.

use chrono::DateTime;
use serde_json::Value;
use switchboard_schemas::RawWebhook;
use switchboard_schemas::domain::BookingEvent;

use super::{DomainEvent, Poison, json_object, required_str, str_at};

const CREATED: &str = "invitee.created";
const CANCELED: &str = "invitee.canceled";

pub(crate) fn normalize(raw: &RawWebhook) -> Result<DomainEvent, Poison> {
    let body = Value::Object(json_object(&raw.body)?);
    let event_type = required_str(&body, "/event", "event")?;
    if event_type != CREATED && event_type != CANCELED {
        return Err(Poison::unknown_kind(
            "Calendly event is neither invitee.created nor invitee.canceled",
        ));
    }
    let string = |pointer: &str| str_at(&body, pointer).map(str::to_owned);
    let time = |pointer: &str| str_at(&body, pointer).and_then(rfc3339_millis);
    Ok(DomainEvent::Booking(BookingEvent {
        event_id: raw.event_id.clone(),
        phone_id: raw.phone_id.clone(),
        invitee_uri: required_str(&body, "/payload/uri", "payload.uri")?,
        invitee_name: string("/payload/name"),
        invitee_email: string("/payload/email"),
        event_start: time("/payload/scheduled_event/start_time"),
        event_end: time("/payload/scheduled_event/end_time"),
        cancel_reason: string("/payload/cancellation/reason"),
        canceled: event_type == CANCELED,
        event_type,
        received_at: raw.received_at,
    }))
}

fn rfc3339_millis(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::PoisonClass;
    use super::super::tests::envelope;
    use super::*;

    const INVITEE: &str =
        "https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2/invitees/AAAAAAAAAAAAAAAA";

    /// Shaped like the `invitee.created` example in Calendly's webhook documentation.
    fn invitee_created() -> Value {
        json!({
            "created_at": "2025-01-14T18:06:02.000000Z",
            "created_by": "https://api.calendly.com/users/AAAAAAAAAAAAAAAA",
            "event": "invitee.created",
            "payload": {
                "cancel_url": "https://calendly.com/cancellations/AAAAAAAAAAAAAAAA",
                "created_at": "2025-01-14T18:06:01.327602Z",
                "email": "dana.whitfield@example.com",
                "event": "https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2",
                "first_name": null,
                "last_name": null,
                "name": "Dana Whitfield",
                "new_invitee": null,
                "old_invitee": null,
                "questions_and_answers": [
                    {"answer": "+1 415-555-0199", "position": 0, "question": "Phone number"}
                ],
                "reschedule_url": "https://calendly.com/reschedulings/AAAAAAAAAAAAAAAA",
                "rescheduled": false,
                "scheduled_event": {
                    "created_at": "2025-01-14T18:06:01.296517Z",
                    "end_time": "2025-01-21T15:30:00.000000Z",
                    "event_type": "https://api.calendly.com/event_types/GBGBDCAADAEDCRZ2",
                    "location": {"type": "physical", "location": "Bright Smile Dental, 500 Market St"},
                    "name": "Cleaning (30 min)",
                    "start_time": "2025-01-21T15:00:00.000000Z",
                    "status": "active",
                    "uri": "https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2"
                },
                "status": "active",
                "text_reminder_number": "+14155550199",
                "timezone": "America/Los_Angeles",
                "tracking": {"utm_campaign": null, "utm_source": "ai-receptionist"},
                "updated_at": "2025-01-14T18:06:01.341657Z",
                "uri": INVITEE
            }
        })
    }

    /// The same invitee canceled, as Calendly sends it.
    fn invitee_canceled() -> Value {
        let mut body = invitee_created();
        body["event"] = json!("invitee.canceled");
        body["payload"]["status"] = json!("canceled");
        body["payload"]["scheduled_event"]["status"] = json!("canceled");
        body["payload"]["cancellation"] = json!({
            "canceled_by": "Dana Whitfield",
            "canceler_type": "invitee",
            "created_at": "2025-01-16T09:12:44.000000Z",
            "reason": "Running late from work, will call back to reschedule"
        });
        body
    }

    #[test]
    fn documented_events_normalize() {
        let created = BookingEvent {
            event_id: "EV-1".into(),
            phone_id: "+14155550100".into(),
            event_type: "invitee.created".into(),
            invitee_uri: INVITEE.into(),
            invitee_name: Some("Dana Whitfield".into()),
            invitee_email: Some("dana.whitfield@example.com".into()),
            event_start: Some(1_737_471_600_000),
            event_end: Some(1_737_473_400_000),
            cancel_reason: None,
            canceled: false,
            received_at: 1_736_877_960_000,
        };
        let mut bad_times = invitee_created();
        bad_times["payload"]["scheduled_event"]["start_time"] = json!("next Tuesday");
        bad_times["payload"]["scheduled_event"]["end_time"] = json!(1_737_473_400);
        let cases = [
            ("invitee.created", invitee_created(), created.clone()),
            (
                "invitee.canceled",
                invitee_canceled(),
                BookingEvent {
                    event_type: "invitee.canceled".into(),
                    cancel_reason: Some("Running late from work, will call back to reschedule".into()),
                    canceled: true,
                    ..created.clone()
                },
            ),
            (
                "unparsable times are absent",
                bad_times,
                BookingEvent {
                    event_start: None,
                    event_end: None,
                    ..created.clone()
                },
            ),
        ];
        for (name, body, expected) in cases {
            let raw = envelope("calendly", "application/json", body.to_string().as_bytes());
            assert_eq!(normalize(&raw), Ok(DomainEvent::Booking(expected)), "{name}");
        }
    }

    #[test]
    fn every_poison_class_is_detected() {
        let mut routing_form = invitee_created();
        routing_form["event"] = json!("routing_form_submission.created");
        let mut no_event = invitee_created();
        no_event.as_object_mut().unwrap().remove("event");
        let mut no_uri = invitee_created();
        no_uri["payload"].as_object_mut().unwrap().remove("uri");
        let cases: Vec<(&str, Vec<u8>, PoisonClass, &str)> = vec![
            ("not JSON", b"<xml/>".to_vec(), PoisonClass::Undecodable, "JSON"),
            (
                "other event",
                routing_form.to_string().into_bytes(),
                PoisonClass::UnknownKind,
                "invitee.created",
            ),
            (
                "no event",
                no_event.to_string().into_bytes(),
                PoisonClass::MissingField,
                "missing field event",
            ),
            (
                "no payload.uri",
                no_uri.to_string().into_bytes(),
                PoisonClass::MissingField,
                "missing field payload.uri",
            ),
        ];
        for (name, body, class, reason) in cases {
            let poison = normalize(&envelope("calendly", "application/json", &body)).unwrap_err();
            assert_eq!(poison.class, class, "{name}");
            assert!(poison.reason.contains(reason), "{name}: {:?}", poison.reason);
            assert!(
                !poison.reason.contains("routing_form"),
                "{name}: reasons carry no values"
            );
        }
    }
}
