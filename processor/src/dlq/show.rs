//! `dlq show`: one DLQ record in full — its headers, the `RawWebhook` envelope, the body.
//! Rendering is pure; finding and decoding the record is in [`super::show`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use switchboard_schemas::RawWebhook;

use super::filter::format_time;
use super::record::{DlqHeaders, Position};
use switchboard_schemas::headers;

/// Which records `dlq show` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The record at this DLQ position.
    Position(Position),
    /// Every DLQ record with this `event-id` header (a record redriven and dead-lettered again
    /// appears more than once).
    EventId(String),
}

/// One DLQ record, read and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub position: Position,
    /// The record's timestamp, epoch milliseconds.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// Every header, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// What the headers say about the record.
    pub dlq: DlqHeaders,
    /// The value as stored.
    pub value: Option<Vec<u8>>,
    /// The value decoded as a `RawWebhook`, or why it is not one.
    pub envelope: Result<RawWebhook, String>,
}

/// Bytes as text when they are UTF-8, else as base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Utf8(String),
    Base64(String),
}

impl Text {
    pub fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Text::Utf8(text.to_owned()),
            Err(_) => Text::Base64(STANDARD.encode(bytes)),
        }
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Text::Utf8(text) => f.write_str(text),
            Text::Base64(encoded) => write!(f, "base64:{encoded}"),
        }
    }
}

/// A time in epoch milliseconds, with its RFC 3339 form.
fn millis(value: i64) -> String {
    format!("{value} ({})", format_time(value))
}

/// Indents every line of `text` by `prefix`.
fn indented(f: &mut fmt::Formatter<'_>, prefix: &str, text: &str) -> fmt::Result {
    for line in text.lines() {
        writeln!(f, "{prefix}{line}")?;
    }
    Ok(())
}

impl Shown {
    /// The record as [`Display`](fmt::Display) prints it, but with the body (or the undecodable
    /// value) withheld: for readers without the admin token (bodies carry personal data).
    pub fn without_body(&self) -> WithoutBody<'_> {
        WithoutBody(self)
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, body: bool) -> fmt::Result {
        writeln!(f, "record {}/{}", switchboard_schemas::topics::DLQ, self.position)?;
        if let Some(timestamp) = self.timestamp {
            writeln!(f, "  timestamp: {}", millis(timestamp))?;
        }
        match &self.key {
            Some(key) => writeln!(f, "  key: {}", Text::of(key))?,
            None => writeln!(f, "  key: (none)")?,
        }
        writeln!(f, "headers:")?;
        for (key, value) in &self.headers {
            match value {
                None => writeln!(f, "  {key}: (null)")?,
                Some(value) if key == headers::FAILED_AT => match self.dlq.failed_at {
                    Some(at) => writeln!(f, "  {key}: {}", millis(at))?,
                    None => writeln!(f, "  {key}: {}", Text::of(value))?,
                },
                Some(value) => writeln!(f, "  {key}: {}", Text::of(value))?,
            }
        }
        let value_len = self.value.as_ref().map_or(0, Vec::len);
        match &self.envelope {
            Ok(raw) => {
                writeln!(f, "envelope (RawWebhook):")?;
                writeln!(f, "  event_id: {}", raw.event_id)?;
                writeln!(f, "  source: {}", raw.source)?;
                if let Some(name) = &raw.source_name {
                    writeln!(f, "  source_name: {name}")?;
                }
                writeln!(f, "  phone_id: {}", raw.phone_id)?;
                writeln!(f, "  received_at: {}", millis(raw.received_at))?;
                writeln!(f, "  url: {}", raw.url)?;
                writeln!(f, "  content_type: {}", raw.content_type)?;
                writeln!(f, "  signature_scheme: {}", raw.signature_scheme)?;
                writeln!(f, "  headers:")?;
                for (name, value) in &raw.headers {
                    writeln!(f, "    {name}: {value}")?;
                }
                if !body {
                    return writeln!(f, "body ({} bytes): withheld", raw.body.len());
                }
                match Text::of(&raw.body) {
                    Text::Utf8(body) => {
                        writeln!(f, "body ({} bytes, UTF-8):", raw.body.len())?;
                        indented(f, "  ", &body)?;
                    }
                    Text::Base64(body) => {
                        writeln!(f, "body ({} bytes, base64):", raw.body.len())?;
                        writeln!(f, "  {body}")?;
                    }
                }
            }
            Err(reason) => {
                writeln!(f, "value ({value_len} bytes) is not a RawWebhook: {reason}")?;
                if let Some(value) = self.value.as_ref().filter(|_| body) {
                    writeln!(f, "value (base64):")?;
                    writeln!(f, "  {}", STANDARD.encode(value))?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, true)
    }
}

/// [`Shown::without_body`].
#[derive(Debug)]
pub struct WithoutBody<'a>(&'a Shown);

impl fmt::Display for WithoutBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write(f, false)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn shown(envelope: Result<RawWebhook, String>, value: Option<Vec<u8>>) -> Shown {
        let headers: Vec<(String, Option<Vec<u8>>)> = vec![
            ("event-id".into(), Some(b"EV-1".to_vec())),
            ("error-class".into(), Some(b"missing_field".to_vec())),
            ("failed-at".into(), Some(b"1764421200250".to_vec())),
            ("x-null".into(), None),
        ];
        let dlq = DlqHeaders::parse(headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
        Shown {
            position: Position {
                partition: 1,
                offset: 9,
            },
            timestamp: Some(1_764_421_200_251),
            key: Some(b"+15551110001".to_vec()),
            headers,
            dlq,
            value,
            envelope,
        }
    }

    fn raw(body: &[u8]) -> RawWebhook {
        RawWebhook {
            event_id: "EV-1".into(),
            source: "twilio".into(),
            phone_id: "+15551110001".into(),
            received_at: 1_764_421_200_000,
            url: "https://hooks.example.com/webhooks/twilio/calls".into(),
            content_type: "application/x-www-form-urlencoded".into(),
            headers: BTreeMap::from([("x-twilio-signature".into(), "c2lnbmF0dXJl".into())]),
            body: body.to_vec(),
            signature_scheme: "twilio-hmac-sha1".into(),
            source_name: None,
        }
    }

    #[test]
    fn bytes_are_text_when_utf8_else_base64() {
        assert_eq!(Text::of(b"CallSid=CA1"), Text::Utf8("CallSid=CA1".into()));
        assert_eq!(Text::of(&[0xff, 0x00]), Text::Base64("/wA=".into()));
        assert_eq!(Text::of(&[0xff, 0x00]).to_string(), "base64:/wA=");
    }

    #[test]
    fn a_decoded_record_shows_headers_envelope_and_body() {
        let text = shown(Ok(raw(b"AccountSid=AC1&CallStatus=ringing")), Some(vec![0, 1])).to_string();
        for expected in [
            "record switchboard.dlq/1/9",
            "  key: +15551110001",
            "  event-id: EV-1",
            "  failed-at: 1764421200250 (2025-11-29T13:00:00.250Z)",
            "  x-null: (null)",
            "  received_at: 1764421200000 (2025-11-29T13:00:00.000Z)",
            "    x-twilio-signature: c2lnbmF0dXJl",
            "body (33 bytes, UTF-8):\n  AccountSid=AC1&CallStatus=ringing\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }

    #[test]
    fn a_binary_body_is_base64() {
        let text = shown(Ok(raw(&[0xde, 0xad, 0xbe, 0xef])), None).to_string();
        assert!(text.contains("body (4 bytes, base64):\n  3q2+7w==\n"), "{text}");
    }

    #[test]
    fn an_undecodable_value_is_shown_as_base64_with_the_reason() {
        let text = shown(
            Err("not a Confluent-framed record".into()),
            Some(b"junk".to_vec()),
        )
        .to_string();
        assert!(
            text.contains("value (4 bytes) is not a RawWebhook: not a Confluent-framed record"),
            "{text}"
        );
        assert!(text.contains("  anVuaw==\n"), "{text}");
    }

    #[test]
    fn without_the_body_everything_else_is_shown() {
        let full = shown(Ok(raw(b"AccountSid=AC1&CallStatus=ringing")), None);
        let text = full.without_body().to_string();
        assert!(text.contains("error-class: missing_field"), "{text}");
        assert!(text.contains("event_id: EV-1"), "{text}");
        assert!(text.ends_with("body (33 bytes): withheld\n"), "{text}");
        assert!(!text.contains("CallStatus"), "{text}");
        let junk = shown(
            Err("not a Confluent-framed record".into()),
            Some(b"junk".to_vec()),
        );
        let text = junk.without_body().to_string();
        assert!(text.contains("value (4 bytes) is not a RawWebhook"), "{text}");
        assert!(!text.contains("anVuaw=="), "{text}");
    }
}
