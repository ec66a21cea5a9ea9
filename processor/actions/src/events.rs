//! Domain records as the events actions subscribe to: the event type an `on = […]` pattern
//! matches, and the JSON `data` a target receives.
//!
//! | topic | event type |
//! |---|---|
//! | `switchboard.calls` | `call.<CallStatus>` (`call.completed` …), `call.recording.<RecordingStatus>`, `call.transcription.<TranscriptionStatus>` |
//! | `switchboard.messages` | `message.<MessageStatus>` (`message.delivered` …) |
//! | `switchboard.billing` | `billing.<Stripe type>` (`billing.invoice.paid` …) |
//! | `switchboard.bookings` | `booking.created`, `booking.canceled` |
//! | `switchboard.generic` | `generic.<source name>` |

use switchboard_schemas::domain::CallKind;
use switchboard_schemas::domain_event::DecodeError;
use switchboard_schemas::{Codec, DomainEvent, topics};
use tokio::runtime::Handle;

use crate::delivery::OutboundEvent;

/// The domain topics actions can subscribe to, with the event type prefix each one carries.
pub(crate) const SOURCES: [(&str, &str); 5] = [
    (topics::CALLS, "call."),
    (topics::MESSAGES, "message."),
    (topics::BILLING, "billing."),
    (topics::BOOKINGS, "booking."),
    (topics::GENERIC, "generic."),
];

/// The domain topics whose events can match `patterns` (so that an action reads only those).
pub(crate) fn topics_for(patterns: &[String]) -> Vec<&'static str> {
    SOURCES
        .iter()
        .filter(|(_, prefix)| {
            patterns.iter().any(|pattern| {
                let fixed = pattern.trim_end_matches('*');
                // A pattern can match a topic's events when one is a prefix of the other.
                fixed.starts_with(prefix) || prefix.starts_with(fixed)
            })
        })
        .map(|(topic, _)| *topic)
        .collect()
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    // Plain structs of strings and numbers: serialization cannot fail.
    serde_json::to_value(value).unwrap_or_default()
}

/// The event a domain record of `topic` carries (`payload`: its value), or why it carries none
/// (transient when the registry is unavailable, [`Classify`](switchboard_schemas::Classify)).
pub(crate) fn event(
    codec: &Codec,
    runtime: &Handle,
    topic: &str,
    payload: Option<&[u8]>,
) -> Result<OutboundEvent, DecodeError> {
    let decoded = runtime.block_on(DomainEvent::decode(codec, topic, payload))?;
    let event = match decoded {
        DomainEvent::Call(call) => {
            let event_type = match call.call_kind() {
                Some(CallKind::Recording) => format!("call.recording.{}", status(&call.recording_status)),
                Some(CallKind::Transcription) => {
                    format!("call.transcription.{}", status(&call.transcription_status))
                }
                Some(CallKind::Status) | None => format!("call.{}", status(&call.call_status)),
            };
            OutboundEvent {
                event_id: call.event_id.clone(),
                event_type,
                occurred_at_millis: call.occurred_at,
                data: json(&call),
            }
        }
        DomainEvent::Message(message) => OutboundEvent {
            event_id: message.event_id.clone(),
            event_type: format!("message.{}", message.message_status),
            occurred_at_millis: message.received_at,
            data: json(&message),
        },
        DomainEvent::Billing(billing) => OutboundEvent {
            event_id: billing.event_id.clone(),
            event_type: format!("billing.{}", billing.event_type),
            occurred_at_millis: billing.created.unwrap_or(billing.received_at),
            data: json(&billing),
        },
        DomainEvent::Booking(booking) => {
            let event_type = if booking.canceled {
                "booking.canceled"
            } else {
                "booking.created"
            };
            OutboundEvent {
                event_id: booking.event_id.clone(),
                event_type: event_type.to_owned(),
                occurred_at_millis: booking.received_at,
                data: json(&booking),
            }
        }
        DomainEvent::Generic(generic) => OutboundEvent {
            event_id: generic.event_id.clone(),
            event_type: format!("generic.{}", generic.source_name),
            occurred_at_millis: generic.received_at,
            data: json(&generic),
        },
    };
    Ok(event)
}

fn status(value: &Option<String>) -> &str {
    value.as_deref().filter(|s| !s.is_empty()).unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_action_reads_only_the_topics_its_patterns_can_match() {
        assert_eq!(topics_for(&patterns(&["call.completed"])), [topics::CALLS]);
        assert_eq!(
            topics_for(&patterns(&["booking.created", "call.*"])),
            [topics::CALLS, topics::BOOKINGS]
        );
        assert_eq!(topics_for(&patterns(&["*"])).len(), 5);
        assert_eq!(
            topics_for(&patterns(&["b*"])),
            [topics::BILLING, topics::BOOKINGS]
        );
        assert!(topics_for(&patterns(&["nothing.here"])).is_empty());
    }
}
