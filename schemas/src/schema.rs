//! The Avro schemas, compiled in from `schemas/*.avsc` and parsed once.

use std::sync::LazyLock;

use apache_avro::Schema;

/// One Avro schema: its JSON text (what is registered) and its parsed form (what encodes).
#[derive(Debug)]
pub struct SchemaDef {
    /// Full name, e.g. `switchboard.RawWebhook`.
    pub name: &'static str,
    /// The `.avsc` text exactly as shipped.
    pub json: &'static str,
    parsed: LazyLock<Schema>,
}

impl SchemaDef {
    const fn new(name: &'static str, json: &'static str, parse: fn() -> Schema) -> Self {
        Self {
            name,
            json,
            parsed: LazyLock::new(parse),
        }
    }

    /// The parsed schema. The `.avsc` files are validated by this crate's tests, so parsing
    /// cannot fail in a released build.
    pub fn schema(&self) -> &Schema {
        &self.parsed
    }
}

const RAW_WEBHOOK_JSON: &str = include_str!("../schemas/raw_webhook.avsc");

/// `switchboard.RawWebhook`: one verified webhook exactly as received.
pub static RAW_WEBHOOK: SchemaDef = SchemaDef::new("switchboard.RawWebhook", RAW_WEBHOOK_JSON, || {
    Schema::parse_str(RAW_WEBHOOK_JSON).expect("schemas/raw_webhook.avsc is valid Avro (checked by tests)")
});

#[cfg(test)]
mod tests {
    use super::*;

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
