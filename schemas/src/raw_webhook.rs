//! `switchboard.RawWebhook`: the envelope ingest writes to `switchboard.raw.<source>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::{RAW_WEBHOOK, SchemaDef};

/// One webhook request exactly as a provider sent it, after ingest verified its signature.
///
/// Mirrors `schemas/raw_webhook.avsc` field for field; the round-trip tests keep the two in step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawWebhook {
    /// The provider's id for this event: the dedup key downstream.
    pub event_id: String,
    /// `twilio`, `stripe`, `calendly` or `generic` (see [`crate::Source`]).
    pub source: String,
    /// The phone this event belongs to, and the Kafka record key.
    pub phone_id: String,
    /// When ingest received the request, in milliseconds since the Unix epoch.
    pub received_at: i64,
    /// The public URL the provider called, path and query included.
    pub url: String,
    pub content_type: String,
    /// Request headers, names lower-cased, repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The exact bytes received.
    #[serde(with = "apache_avro::serde::bytes")]
    pub body: Vec<u8>,
    /// The scheme that verified the request, e.g. `twilio-hmac-sha1`.
    pub signature_scheme: String,
    /// For generic sources: the configured source name.
    #[serde(default)]
    pub source_name: Option<String>,
}

impl RawWebhook {
    /// The schema this type is written with.
    pub fn schema_def() -> &'static SchemaDef {
        &RAW_WEBHOOK
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::types::Value;
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::{Schema, from_value};
    use proptest::prelude::*;

    use super::*;

    fn any_raw_webhook() -> impl Strategy<Value = RawWebhook> {
        (
            (
                ".{0,40}",
                "[a-z]{1,10}",
                "\\PC{0,20}",
                any::<i64>(),
                ".{0,80}",
                ".{0,30}",
            ),
            prop::collection::btree_map("[a-z-]{1,20}", ".{0,40}", 0..8),
            prop::collection::vec(any::<u8>(), 0..512),
            ("[a-z0-9-]{1,20}", prop::option::of(".{0,20}")),
        )
            .prop_map(
                |(
                    (event_id, source, phone_id, received_at, url, content_type),
                    headers,
                    body,
                    (signature_scheme, source_name),
                )| RawWebhook {
                    event_id,
                    source,
                    phone_id,
                    received_at,
                    url,
                    content_type,
                    headers,
                    body,
                    signature_scheme,
                    source_name,
                },
            )
    }

    /// The one-pass encoding `Codec::encode` writes.
    fn encode(webhook: &RawWebhook) -> Vec<u8> {
        let mut bytes = Vec::new();
        RAW_WEBHOOK.write_datum(webhook, &mut bytes).unwrap();
        bytes
    }

    fn decode_value(bytes: &[u8], reader: Option<&Schema>) -> Value {
        let datum = GenericDatumReader::builder(RAW_WEBHOOK.schema())
            .maybe_reader_schema(reader)
            .build()
            .unwrap();
        datum.read_value(&mut &bytes[..]).unwrap()
    }

    fn decode(bytes: &[u8], reader: Option<&Schema>) -> RawWebhook {
        from_value(&decode_value(bytes, reader)).unwrap()
    }

    proptest! {
        #[test]
        fn avro_round_trip_is_lossless(webhook in any_raw_webhook()) {
            let bytes = encode(&webhook);
            prop_assert_eq!(&decode(&bytes, None), &webhook);
            prop_assert_eq!(RAW_WEBHOOK.read_datum::<RawWebhook>(&bytes).unwrap(), webhook);
        }

        #[test]
        fn the_one_pass_encoding_equals_the_resolved_value_encoding(webhook in any_raw_webhook()) {
            let resolved = apache_avro::to_value(&webhook).unwrap().resolve(RAW_WEBHOOK.schema()).unwrap();
            let two_pass = GenericDatumWriter::builder(RAW_WEBHOOK.schema())
                .build()
                .unwrap()
                .write_value_to_vec(resolved)
                .unwrap();
            // Same datum; only the order of the header map's entries may differ (the two-pass
            // path goes through a `HashMap`, the one-pass writer keeps the `BTreeMap`'s order).
            let one_pass = encode(&webhook);
            prop_assert_eq!(one_pass.len(), two_pass.len());
            prop_assert_eq!(decode_value(&one_pass, None), decode_value(&two_pass, None));
        }

        #[test]
        fn a_newer_reader_with_an_added_optional_field_reads_old_records(webhook in any_raw_webhook()) {
            let bytes = encode(&webhook);
            prop_assert_eq!(decode(&bytes, Some(&evolved_schema())), webhook);
        }
    }

    /// The shipped schema with one more optional field, as a later release would add it.
    pub(crate) fn evolved_schema() -> Schema {
        let mut json: serde_json::Value = serde_json::from_str(RAW_WEBHOOK.json).unwrap();
        json["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "trace_id", "type": ["null", "string"], "default": null}));
        Schema::parse(&json).unwrap()
    }

    #[test]
    fn the_evolved_reader_fills_the_new_field_with_its_default() {
        let webhook = RawWebhook {
            event_id: "EV1".into(),
            source: "twilio".into(),
            phone_id: "+15550001111".into(),
            received_at: 1_764_000_000_000,
            url: "https://hooks.example.com/webhooks/twilio/calls".into(),
            content_type: "application/x-www-form-urlencoded".into(),
            headers: BTreeMap::from([("x-twilio-signature".into(), "abc=".into())]),
            body: b"CallSid=CA1&CallStatus=completed".to_vec(),
            signature_scheme: "twilio-hmac-sha1".into(),
            source_name: None,
        };
        let bytes = encode(&webhook);
        let value = decode_value(&bytes, Some(&evolved_schema()));
        let Value::Record(fields) = value else {
            panic!("a record")
        };
        let trace_id = fields
            .iter()
            .find(|(name, _)| name == "trace_id")
            .map(|(_, v)| v.clone());
        assert_eq!(trace_id, Some(Value::Union(0, Box::new(Value::Null))));
    }
}
