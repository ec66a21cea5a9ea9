//! The Avro schemas, compiled in from `schemas/*.avsc` and parsed once.

use std::sync::{LazyLock, OnceLock};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{AvroResult, Schema};
use serde::de::DeserializeOwned;

/// One Avro schema: its JSON text (what is registered) and its parsed form (what encodes and
/// decodes).
pub struct SchemaDef {
    /// Full name, e.g. `switchboard.RawWebhook`.
    pub name: &'static str,
    /// The `.avsc` text exactly as shipped.
    pub json: &'static str,
    parsed: LazyLock<Schema>,
    /// The writer of this schema's datums, built (its named types resolved) on first use.
    writer: OnceLock<GenericDatumWriter<'static>>,
    /// The reader of datums written with exactly this schema, built on first use.
    reader: OnceLock<GenericDatumReader<'static>>,
}

impl std::fmt::Debug for SchemaDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaDef")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SchemaDef {
    const fn new(name: &'static str, json: &'static str, parse: fn() -> Schema) -> Self {
        Self {
            name,
            json,
            parsed: LazyLock::new(parse),
            writer: OnceLock::new(),
            reader: OnceLock::new(),
        }
    }

    /// The parsed schema. The `.avsc` files are validated by this crate's tests, so parsing
    /// cannot fail in a released build.
    pub fn schema(&self) -> &Schema {
        &self.parsed
    }

    /// Appends `value` to `out` as an Avro datum of this schema, in one pass: serde straight to
    /// Avro binary, validated against the schema as it is written (no intermediate
    /// `apache_avro::types::Value`, no second resolve).
    pub fn write_datum<T: serde::Serialize>(
        &'static self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> AvroResult<usize> {
        let writer = match self.writer.get() {
            Some(writer) => writer,
            None => {
                let built = GenericDatumWriter::builder(self.schema()).build()?;
                self.writer.get_or_init(|| built)
            }
        };
        writer.write_ser(out, value)
    }

    /// Reads `datum`, an Avro datum written with this very schema, as `T`, in one pass: Avro
    /// binary straight to serde (no intermediate `apache_avro::types::Value`, no resolve). Only
    /// for datums whose writer schema is this one; a datum written with another schema needs
    /// resolving ([`crate::Codec::decode`] decides which).
    pub fn read_datum<T: DeserializeOwned>(&'static self, mut datum: &[u8]) -> AvroResult<T> {
        let reader = match self.reader.get() {
            Some(reader) => reader,
            None => {
                let built = GenericDatumReader::builder(self.schema()).build()?;
                self.reader.get_or_init(|| built)
            }
        };
        reader.read_deser(&mut datum)
    }
}

const RAW_WEBHOOK_JSON: &str = include_str!("../schemas/raw_webhook.avsc");

/// `switchboard.RawWebhook`: one verified webhook exactly as received.
pub static RAW_WEBHOOK: SchemaDef = SchemaDef::new("switchboard.RawWebhook", RAW_WEBHOOK_JSON, || {
    Schema::parse_str(RAW_WEBHOOK_JSON).expect("schemas/raw_webhook.avsc is valid Avro (checked by tests)")
});

const CALL_EVENT_JSON: &str = include_str!("../schemas/call_event.avsc");

/// `switchboard.CallEvent`: one Twilio voice callback (status, recording or transcription), on `switchboard.calls`.
pub static CALL_EVENT: SchemaDef = SchemaDef::new("switchboard.CallEvent", CALL_EVENT_JSON, || {
    Schema::parse_str(CALL_EVENT_JSON).expect("schemas/call_event.avsc is valid Avro (checked by tests)")
});

const MESSAGE_EVENT_JSON: &str = include_str!("../schemas/message_event.avsc");

/// `switchboard.MessageEvent`: one Twilio message status callback, on `switchboard.messages`.
pub static MESSAGE_EVENT: SchemaDef = SchemaDef::new("switchboard.MessageEvent", MESSAGE_EVENT_JSON, || {
    Schema::parse_str(MESSAGE_EVENT_JSON)
        .expect("schemas/message_event.avsc is valid Avro (checked by tests)")
});

const BILLING_EVENT_JSON: &str = include_str!("../schemas/billing_event.avsc");

/// `switchboard.BillingEvent`: one Stripe event, on `switchboard.billing`.
pub static BILLING_EVENT: SchemaDef = SchemaDef::new("switchboard.BillingEvent", BILLING_EVENT_JSON, || {
    Schema::parse_str(BILLING_EVENT_JSON)
        .expect("schemas/billing_event.avsc is valid Avro (checked by tests)")
});

const BOOKING_EVENT_JSON: &str = include_str!("../schemas/booking_event.avsc");

/// `switchboard.BookingEvent`: one Calendly invitee booking or cancellation, on `switchboard.bookings`.
pub static BOOKING_EVENT: SchemaDef = SchemaDef::new("switchboard.BookingEvent", BOOKING_EVENT_JSON, || {
    Schema::parse_str(BOOKING_EVENT_JSON)
        .expect("schemas/booking_event.avsc is valid Avro (checked by tests)")
});

const GENERIC_EVENT_JSON: &str = include_str!("../schemas/generic_event.avsc");

/// `switchboard.GenericEvent`: one generic-source webhook as text, on `switchboard.generic`.
pub static GENERIC_EVENT: SchemaDef = SchemaDef::new("switchboard.GenericEvent", GENERIC_EVENT_JSON, || {
    Schema::parse_str(GENERIC_EVENT_JSON)
        .expect("schemas/generic_event.avsc is valid Avro (checked by tests)")
});

const CALL_STATE_JSON: &str = include_str!("../schemas/call_state.avsc");

/// `switchboard.CallState`: the folded state of one call, on the compacted `switchboard.call-state`.
pub static CALL_STATE: SchemaDef = SchemaDef::new("switchboard.CallState", CALL_STATE_JSON, || {
    Schema::parse_str(CALL_STATE_JSON).expect("schemas/call_state.avsc is valid Avro (checked by tests)")
});

const ACTION_ATTEMPT_JSON: &str = include_str!("../schemas/action_attempt.avsc");

/// `switchboard.ActionAttempt`: one delivery attempt of an action, on `switchboard.actions.attempts`.
pub static ACTION_ATTEMPT: SchemaDef =
    SchemaDef::new("switchboard.ActionAttempt", ACTION_ATTEMPT_JSON, || {
        Schema::parse_str(ACTION_ATTEMPT_JSON)
            .expect("schemas/action_attempt.avsc is valid Avro (checked by tests)")
    });

/// Every schema this crate ships, in a stable order: what a registry or a test iterates over.
pub fn all() -> [&'static SchemaDef; 8] {
    [
        &RAW_WEBHOOK,
        &CALL_EVENT,
        &MESSAGE_EVENT,
        &BILLING_EVENT,
        &BOOKING_EVENT,
        &GENERIC_EVENT,
        &CALL_STATE,
        &ACTION_ATTEMPT,
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    #[test]
    fn every_shipped_avsc_parses_and_is_compiled_in_under_its_name() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let mut shipped = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "avsc") {
                let text = std::fs::read_to_string(&path).unwrap();
                let parsed = Schema::parse_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                shipped.insert((parsed.name().unwrap().fullname(None), text));
            }
        }
        let compiled: BTreeSet<_> = all()
            .into_iter()
            .map(|def| {
                let Schema::Record(record) = def.schema() else {
                    panic!("{} is a record", def.name);
                };
                assert_eq!(record.name.fullname(None), def.name);
                (def.name.to_owned(), def.json.to_owned())
            })
            .collect();
        assert_eq!(compiled, shipped, "every .avsc is compiled in, and nothing else");
    }

    /// The conventions every schema follows: a doc on each record, every optional field a
    /// `["null", T]` union defaulting to null (so that adding one is backward compatible), and
    /// timestamps as `timestamp-millis`.
    #[test]
    fn shipped_schemas_follow_the_conventions() {
        for def in all() {
            let json: serde_json::Value = serde_json::from_str(def.json).unwrap();
            assert_eq!(json["namespace"], "switchboard", "{}", def.name);
            assert!(json["doc"].is_string(), "{} has a doc", def.name);
            for field in json["fields"].as_array().unwrap() {
                let name = format!("{}.{}", def.name, field["name"].as_str().unwrap());
                if let Some(branches) = field["type"].as_array() {
                    assert_eq!(branches.len(), 2, "{name}: a union is [null, T]");
                    assert_eq!(branches[0], "null", "{name}: null comes first");
                    assert_eq!(
                        field.get("default"),
                        Some(&serde_json::Value::Null),
                        "{name}: defaults to null"
                    );
                }
                if name.ends_with("_at") || name.ends_with("event_start") || name.ends_with("event_end") {
                    assert!(
                        field["type"].to_string().contains("timestamp-millis"),
                        "{name} is a timestamp-millis"
                    );
                }
            }
        }
    }

    #[test]
    fn shipped_schemas_parse_and_carry_their_names() {
        let Schema::Record(record) = RAW_WEBHOOK.schema() else {
            panic!("RawWebhook is a record");
        };
        assert_eq!(record.name.fullname(None), RAW_WEBHOOK.name);
        for required in [
            "event_id",
            "source",
            "phone_id",
            "received_at",
            "url",
            "content_type",
            "headers",
            "body",
            "signature_scheme",
        ] {
            assert!(
                record.lookup.contains_key(required),
                "RawWebhook lacks {required}"
            );
        }
    }
}
