//! The domain events the processor writes, and the folded call state: one Rust type per
//! `schemas/*.avsc` record, mirroring it field for field (the tests keep the two in step).
//!
//! Timestamps are milliseconds since the Unix epoch (`timestamp-millis`), as in
//! [`RawWebhook`](crate::RawWebhook). Optional fields are `Option` with `#[serde(default)]`, so a
//! record written before a field existed still reads.

use serde::{Deserialize, Serialize};

use crate::schema::{
    BILLING_EVENT, BOOKING_EVENT, CALL_EVENT, CALL_STATE, GENERIC_EVENT, MESSAGE_EVENT, SchemaDef,
};

/// Which Twilio voice callback a [`CallEvent`] is, and so which of its field groups defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallKind {
    /// A call status callback (`CallStatus`).
    Status,
    /// A recording status callback (`RecordingSid`).
    Recording,
    /// A transcription callback (`TranscriptionSid`).
    Transcription,
}

impl CallKind {
    /// Every kind, in a stable order.
    pub const ALL: [CallKind; 3] = [CallKind::Status, CallKind::Recording, CallKind::Transcription];

    /// The value of [`CallEvent::kind`]: `status`, `recording` or `transcription`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Status => "status",
            CallKind::Recording => "recording",
            CallKind::Transcription => "transcription",
        }
    }

    /// The kind named `s`, or `None` for a kind this release does not know.
    pub fn parse(s: &str) -> Option<Self> {
        CallKind::ALL.into_iter().find(|kind| kind.as_str() == s)
    }
}

/// One Twilio voice callback for one call: a status change, a recording status or a transcription.
///
/// Optional fields are set whenever the callback carried them; [`kind`](Self::kind) says which
/// group defines the event. Written to [`CALLS`](crate::topics::CALLS), keyed by phone id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEvent {
    /// The raw webhook's event id: the idempotency key downstream.
    pub event_id: String,
    /// The phone this call belongs to; also the record key.
    pub phone_id: String,
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// `status`, `recording` or `transcription` (see [`CallKind`]). A string on the wire so that a
    /// later release may add kinds without breaking readers; read it with [`Self::call_kind`].
    pub kind: String,
    #[serde(default)]
    pub account_sid: Option<String>,
    /// Twilio's `Timestamp` parameter when the callback carries a valid one, else `received_at`.
    pub occurred_at: i64,
    /// When ingest received the callback.
    pub received_at: i64,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// `inbound`, `outbound-api` or `outbound-dial`.
    #[serde(default)]
    pub direction: Option<String>,
    /// `queued`, `initiated`, `ringing`, `in-progress`, `completed`, `busy`, `failed`, `no-answer`
    /// or `canceled`.
    #[serde(default)]
    pub call_status: Option<String>,
    /// `CallDuration`, in seconds.
    #[serde(default)]
    pub call_duration: Option<i32>,
    /// Twilio's `SequenceNumber`: the order of this call's status callbacks, from 0.
    #[serde(default)]
    pub sequence_number: Option<i32>,
    #[serde(default)]
    pub recording_sid: Option<String>,
    #[serde(default)]
    pub recording_url: Option<String>,
    /// `in-progress`, `completed`, `absent` or `failed`.
    #[serde(default)]
    pub recording_status: Option<String>,
    /// `RecordingDuration`, in seconds.
    #[serde(default)]
    pub recording_duration: Option<i32>,
    #[serde(default)]
    pub transcription_sid: Option<String>,
    #[serde(default)]
    pub transcription_text: Option<String>,
    /// `completed` or `failed`.
    #[serde(default)]
    pub transcription_status: Option<String>,
}

impl CallEvent {
    /// The schema this type is written with.
    pub fn schema_def() -> &'static SchemaDef {
        &CALL_EVENT
    }

    /// [`Self::kind`] as a [`CallKind`], or `None` for a kind this release does not know.
    pub fn call_kind(&self) -> Option<CallKind> {
        CallKind::parse(&self.kind)
    }

    /// An event of `kind` for `call_sid`, occurred and received `at`, with no optional field set:
    /// the base that fixtures complete with struct update syntax
    /// (`CallEvent { call_status: Some(…), ..CallEvent::new(…) }`).
    pub fn new(event_id: &str, phone_id: &str, call_sid: &str, kind: CallKind, at: i64) -> Self {
        CallEvent {
            event_id: event_id.to_owned(),
            phone_id: phone_id.to_owned(),
            call_sid: call_sid.to_owned(),
            kind: kind.as_str().to_owned(),
            account_sid: None,
            occurred_at: at,
            received_at: at,
            from: None,
            to: None,
            direction: None,
            call_status: None,
            call_duration: None,
            sequence_number: None,
            recording_sid: None,
            recording_url: None,
            recording_status: None,
            recording_duration: None,
            transcription_sid: None,
            transcription_text: None,
            transcription_status: None,
        }
    }
}

/// One Twilio message status callback. Written to [`MESSAGES`](crate::topics::MESSAGES), keyed by
/// phone id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub event_id: String,
    pub phone_id: String,
    /// Twilio's `MessageSid`.
    pub message_sid: String,
    /// `MessageStatus`, else the legacy `SmsStatus`.
    pub message_status: String,
    /// Twilio's `ErrorCode` for undelivered or failed messages, e.g. `30003`.
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub account_sid: Option<String>,
    pub received_at: i64,
}

impl MessageEvent {
    /// The schema this type is written with.
    pub fn schema_def() -> &'static SchemaDef {
        &MESSAGE_EVENT
    }
}

/// One Stripe event, reduced to the object it is about. Written to
/// [`BILLING`](crate::topics::BILLING), keyed by phone id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingEvent {
    pub event_id: String,
    pub phone_id: String,
    /// Stripe's `type`, e.g. `invoice.paid`.
    pub event_type: String,
    /// `data.object.id`.
    pub object_id: String,
    /// The customer id of `data.object.customer`, expanded or not.
    #[serde(default)]
    pub customer: Option<String>,
    /// In the currency's smallest unit: `data.object.amount`, else `amount_paid`, else `amount_due`.
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    /// `data.object.status`.
    #[serde(default)]
    pub status: Option<String>,
    /// Stripe's `created`, converted from seconds to milliseconds.
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub livemode: Option<bool>,
    pub received_at: i64,
}

impl BillingEvent {
    /// The schema this type is written with.
    pub fn schema_def() -> &'static SchemaDef {
        &BILLING_EVENT
    }
}

/// One Calendly invitee booking or cancellation. Written to
/// [`BOOKINGS`](crate::topics::BOOKINGS), keyed by phone id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingEvent {
    pub event_id: String,
    pub phone_id: String,
    /// Calendly's `event`: `invitee.created` or `invitee.canceled`.
    pub event_type: String,
    /// `payload.uri`: the same for an invitee's created and canceled events.
    pub invitee_uri: String,
    #[serde(default)]
    pub invitee_name: Option<String>,
    #[serde(default)]
    pub invitee_email: Option<String>,
    /// `payload.scheduled_event.start_time`.
    #[serde(default)]
    pub event_start: Option<i64>,
    /// `payload.scheduled_event.end_time`.
    #[serde(default)]
    pub event_end: Option<i64>,
    /// `payload.cancellation.reason`.
    #[serde(default)]
    pub cancel_reason: Option<String>,
    /// True for `invitee.canceled`.
    pub canceled: bool,
    pub received_at: i64,
}

impl BookingEvent {
    /// The schema this type is written with.
    pub fn schema_def() -> &'static SchemaDef {
        &BOOKING_EVENT
    }
}

/// One webhook from a configured generic source, passed through as text. Written to
/// [`GENERIC`](crate::topics::GENERIC), keyed by phone id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericEvent {
    pub event_id: String,
    pub phone_id: String,
    /// The configured name of the source.
    pub source_name: String,
    pub content_type: String,
    /// The body exactly as received.
    pub body: String,
    pub received_at: i64,
}

impl GenericEvent {
    /// The schema this type is written with.
    pub fn schema_def() -> &'static SchemaDef {
        &GENERIC_EVENT
    }
}

/// The current state of one call, folded from its [`CallEvent`]s. Written to the compacted
/// [`CALL_STATE`](crate::topics::CALL_STATE), keyed by call sid.
///
/// Besides what readers want (status, times, recording, transcription) it keeps the tie-break keys
/// of the events it was folded from (`status_at`, `recording_sid`/`recording_status`,
/// `transcription_sid`/`transcription_status`), so that folding the next event needs nothing but
/// the state and the event, and the result does not depend on delivery order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    /// Twilio's `CallSid`; also the record key.
    pub call_sid: String,
    pub phone_id: String,
    /// The winning call status; `unknown` until a status callback arrives.
    pub status: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub direction: Option<String>,
    /// `CallDuration` of the terminal status callback.
    #[serde(default)]
    pub duration_seconds: Option<i32>,
    /// `SequenceNumber` of the status callback that set `status`.
    #[serde(default)]
    pub sequence_number: Option<i32>,
    /// When the call was answered, as far as the callbacks tell.
    #[serde(default)]
    pub started_at: Option<i64>,
    /// When the terminal status callback occurred.
    #[serde(default)]
    pub ended_at: Option<i64>,
    #[serde(default)]
    pub recording_url: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub recording_duration: Option<i32>,
    #[serde(default)]
    pub transcription_text: Option<String>,
    /// The event id of the status callback that set `status` (before any: of the greatest-id
    /// recording or transcription event).
    pub last_event_id: String,
    /// The latest `occurred_at` of any event folded in.
    pub updated_at: i64,
    /// `occurred_at` of the status callback that set `status`; `None` until one arrives.
    #[serde(default)]
    pub status_at: Option<i64>,
    /// The recording `recording_url` belongs to.
    #[serde(default)]
    pub recording_sid: Option<String>,
    #[serde(default)]
    pub recording_status: Option<String>,
    /// The transcription `transcription_text` belongs to.
    #[serde(default)]
    pub transcription_sid: Option<String>,
    #[serde(default)]
    pub transcription_status: Option<String>,
}

impl CallState {
    /// The schema this type is written with.
    pub fn schema_def() -> &'static SchemaDef {
        &CALL_STATE
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;
    use std::fmt::Debug;

    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::{Schema, from_value, to_value};
    use proptest::prelude::*;
    use serde::de::DeserializeOwned;

    use super::*;

    /// Encodes `value` with `def` and reads it back, through both paths the codebase uses: the
    /// datum writer/reader, and `to_value` + `resolve` (what [`crate::Codec`] does). Returns what
    /// the datum reader read; asserts the other path agrees.
    pub(crate) fn round_trip<T>(def: &'static SchemaDef, value: &T) -> T
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug,
    {
        let mut bytes = Vec::new();
        def.write_datum(value, &mut bytes).unwrap();
        let read = GenericDatumReader::builder(def.schema())
            .build()
            .unwrap()
            .read_value(&mut &bytes[..])
            .unwrap();
        let resolved = to_value(value).unwrap().resolve(def.schema()).unwrap();
        assert_eq!(from_value::<T>(&resolved).unwrap(), *value, "to_value + resolve");
        // The one-pass writer (what `Codec::encode` uses) writes exactly the bytes of the
        // two-pass path (serde value, resolved against the schema, then encoded).
        let two_pass = GenericDatumWriter::builder(def.schema())
            .build()
            .unwrap()
            .write_value_to_vec(resolved)
            .unwrap();
        assert_eq!(bytes, two_pass, "one-pass and two-pass encodings differ");
        // The one-pass reader (what `Codec::decode` uses for records of its own schema) reads
        // what the value path reads.
        let by_value: T = from_value(&read).unwrap();
        let one_pass: T = def.read_datum(&bytes).unwrap();
        assert_eq!(one_pass, by_value, "one-pass and value decodings differ");
        one_pass
    }

    /// The field names of `def`, and those of them that are optional.
    fn schema_fields(def: &SchemaDef) -> (BTreeSet<String>, BTreeSet<String>) {
        let Schema::Record(record) = def.schema() else {
            panic!("{} is a record", def.name)
        };
        let all = record.fields.iter().map(|f| f.name.clone()).collect();
        let optional = record
            .fields
            .iter()
            .filter(|f| matches!(f.schema, Schema::Union(_)))
            .map(|f| f.name.clone())
            .collect();
        (all, optional)
    }

    /// The Rust type has exactly the schema's fields, and its `Option`s are exactly the schema's
    /// optional fields: `empty` must have every `Option` set to `None` and nothing else null.
    fn assert_mirrors<T: Serialize>(def: &SchemaDef, empty: &T) {
        let serde_json::Value::Object(json) = serde_json::to_value(empty).unwrap() else {
            panic!("{} serializes as an object", def.name)
        };
        let names: BTreeSet<String> = json.keys().cloned().collect();
        let nulls: BTreeSet<String> = json
            .iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| k.clone())
            .collect();
        let (all, optional) = schema_fields(def);
        assert_eq!(names, all, "{}: Rust fields = schema fields", def.name);
        assert_eq!(nulls, optional, "{}: Rust options = schema unions", def.name);
    }

    fn text() -> impl Strategy<Value = String> {
        "\\PC{0,24}"
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        prop::option::of(text())
    }

    fn any_call_event() -> impl Strategy<Value = CallEvent> {
        (
            (
                text(),
                text(),
                text(),
                text(),
                opt_text(),
                any::<i64>(),
                any::<i64>(),
            ),
            (opt_text(), opt_text(), opt_text(), opt_text()),
            (any::<Option<i32>>(), any::<Option<i32>>()),
            (opt_text(), opt_text(), opt_text(), any::<Option<i32>>()),
            (opt_text(), opt_text(), opt_text()),
        )
            .prop_map(
                |(
                    (event_id, phone_id, call_sid, kind, account_sid, occurred_at, received_at),
                    (from, to, direction, call_status),
                    (call_duration, sequence_number),
                    (recording_sid, recording_url, recording_status, recording_duration),
                    (transcription_sid, transcription_text, transcription_status),
                )| CallEvent {
                    event_id,
                    phone_id,
                    call_sid,
                    kind,
                    account_sid,
                    occurred_at,
                    received_at,
                    from,
                    to,
                    direction,
                    call_status,
                    call_duration,
                    sequence_number,
                    recording_sid,
                    recording_url,
                    recording_status,
                    recording_duration,
                    transcription_sid,
                    transcription_text,
                    transcription_status,
                },
            )
    }

    fn any_message_event() -> impl Strategy<Value = MessageEvent> {
        (
            (text(), text(), text(), text()),
            (opt_text(), opt_text(), opt_text(), opt_text()),
            any::<i64>(),
        )
            .prop_map(
                |(
                    (event_id, phone_id, message_sid, message_status),
                    (error_code, from, to, account_sid),
                    received_at,
                )| MessageEvent {
                    event_id,
                    phone_id,
                    message_sid,
                    message_status,
                    error_code,
                    from,
                    to,
                    account_sid,
                    received_at,
                },
            )
    }

    fn any_billing_event() -> impl Strategy<Value = BillingEvent> {
        (
            (text(), text(), text(), text()),
            (opt_text(), any::<Option<i64>>(), opt_text(), opt_text()),
            (any::<Option<i64>>(), any::<Option<bool>>(), any::<i64>()),
        )
            .prop_map(
                |(
                    (event_id, phone_id, event_type, object_id),
                    (customer, amount, currency, status),
                    (created, livemode, received_at),
                )| BillingEvent {
                    event_id,
                    phone_id,
                    event_type,
                    object_id,
                    customer,
                    amount,
                    currency,
                    status,
                    created,
                    livemode,
                    received_at,
                },
            )
    }

    fn any_booking_event() -> impl Strategy<Value = BookingEvent> {
        (
            (text(), text(), text(), text()),
            (opt_text(), opt_text(), any::<Option<i64>>(), any::<Option<i64>>()),
            (opt_text(), any::<bool>(), any::<i64>()),
        )
            .prop_map(
                |(
                    (event_id, phone_id, event_type, invitee_uri),
                    (invitee_name, invitee_email, event_start, event_end),
                    (cancel_reason, canceled, received_at),
                )| BookingEvent {
                    event_id,
                    phone_id,
                    event_type,
                    invitee_uri,
                    invitee_name,
                    invitee_email,
                    event_start,
                    event_end,
                    cancel_reason,
                    canceled,
                    received_at,
                },
            )
    }

    fn any_generic_event() -> impl Strategy<Value = GenericEvent> {
        (text(), text(), text(), text(), "\\PC{0,200}", any::<i64>()).prop_map(
            |(event_id, phone_id, source_name, content_type, body, received_at)| GenericEvent {
                event_id,
                phone_id,
                source_name,
                content_type,
                body,
                received_at,
            },
        )
    }

    fn any_call_state() -> impl Strategy<Value = CallState> {
        (
            (text(), text(), text(), opt_text(), opt_text(), opt_text()),
            (
                any::<Option<i32>>(),
                any::<Option<i32>>(),
                any::<Option<i64>>(),
                any::<Option<i64>>(),
            ),
            (opt_text(), any::<Option<i32>>(), opt_text(), text(), any::<i64>()),
            (
                any::<Option<i64>>(),
                opt_text(),
                opt_text(),
                opt_text(),
                opt_text(),
            ),
        )
            .prop_map(
                |(
                    (call_sid, phone_id, status, from, to, direction),
                    (duration_seconds, sequence_number, started_at, ended_at),
                    (recording_url, recording_duration, transcription_text, last_event_id, updated_at),
                    (status_at, recording_sid, recording_status, transcription_sid, transcription_status),
                )| CallState {
                    call_sid,
                    phone_id,
                    status,
                    from,
                    to,
                    direction,
                    duration_seconds,
                    sequence_number,
                    started_at,
                    ended_at,
                    recording_url,
                    recording_duration,
                    transcription_text,
                    last_event_id,
                    updated_at,
                    status_at,
                    recording_sid,
                    recording_status,
                    transcription_sid,
                    transcription_status,
                },
            )
    }

    proptest! {
        #[test]
        fn call_event_round_trips(event in any_call_event()) {
            prop_assert_eq!(round_trip(CallEvent::schema_def(), &event), event);
        }

        #[test]
        fn message_event_round_trips(event in any_message_event()) {
            prop_assert_eq!(round_trip(MessageEvent::schema_def(), &event), event);
        }

        #[test]
        fn billing_event_round_trips(event in any_billing_event()) {
            prop_assert_eq!(round_trip(BillingEvent::schema_def(), &event), event);
        }

        #[test]
        fn booking_event_round_trips(event in any_booking_event()) {
            prop_assert_eq!(round_trip(BookingEvent::schema_def(), &event), event);
        }

        #[test]
        fn generic_event_round_trips(event in any_generic_event()) {
            prop_assert_eq!(round_trip(GenericEvent::schema_def(), &event), event);
        }

        #[test]
        fn call_state_round_trips(state in any_call_state()) {
            prop_assert_eq!(round_trip(CallState::schema_def(), &state), state);
        }
    }

    #[test]
    fn rust_types_mirror_their_schemas() {
        assert_mirrors(
            CallEvent::schema_def(),
            &CallEvent {
                event_id: String::new(),
                phone_id: String::new(),
                call_sid: String::new(),
                kind: String::new(),
                account_sid: None,
                occurred_at: 0,
                received_at: 0,
                from: None,
                to: None,
                direction: None,
                call_status: None,
                call_duration: None,
                sequence_number: None,
                recording_sid: None,
                recording_url: None,
                recording_status: None,
                recording_duration: None,
                transcription_sid: None,
                transcription_text: None,
                transcription_status: None,
            },
        );
        assert_mirrors(
            MessageEvent::schema_def(),
            &MessageEvent {
                event_id: String::new(),
                phone_id: String::new(),
                message_sid: String::new(),
                message_status: String::new(),
                error_code: None,
                from: None,
                to: None,
                account_sid: None,
                received_at: 0,
            },
        );
        assert_mirrors(
            BillingEvent::schema_def(),
            &BillingEvent {
                event_id: String::new(),
                phone_id: String::new(),
                event_type: String::new(),
                object_id: String::new(),
                customer: None,
                amount: None,
                currency: None,
                status: None,
                created: None,
                livemode: None,
                received_at: 0,
            },
        );
        assert_mirrors(
            BookingEvent::schema_def(),
            &BookingEvent {
                event_id: String::new(),
                phone_id: String::new(),
                event_type: String::new(),
                invitee_uri: String::new(),
                invitee_name: None,
                invitee_email: None,
                event_start: None,
                event_end: None,
                cancel_reason: None,
                canceled: false,
                received_at: 0,
            },
        );
        assert_mirrors(
            GenericEvent::schema_def(),
            &GenericEvent {
                event_id: String::new(),
                phone_id: String::new(),
                source_name: String::new(),
                content_type: String::new(),
                body: String::new(),
                received_at: 0,
            },
        );
        assert_mirrors(
            CallState::schema_def(),
            &CallState {
                call_sid: String::new(),
                phone_id: String::new(),
                status: String::new(),
                from: None,
                to: None,
                direction: None,
                duration_seconds: None,
                sequence_number: None,
                started_at: None,
                ended_at: None,
                recording_url: None,
                recording_duration: None,
                transcription_text: None,
                last_event_id: String::new(),
                updated_at: 0,
                status_at: None,
                recording_sid: None,
                recording_status: None,
                transcription_sid: None,
                transcription_status: None,
            },
        );
    }

    #[test]
    fn call_kinds_round_trip_through_their_names() {
        for kind in CallKind::ALL {
            assert_eq!(CallKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(CallKind::parse("conference"), None);
    }
}
