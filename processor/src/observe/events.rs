//! Metadata of recent raw webhooks, as the debug endpoint and the dashboard show them: decoded
//! from the `RawWebhook` envelope, never the body unless asked for.

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;
use switchboard_schemas::{Codec, RawWebhook};

use super::read::Record;
use switchboard_schemas::headers;

/// One raw webhook's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct EventMeta {
    /// Record time, RFC 3339 UTC with milliseconds.
    pub(crate) time: String,
    pub(crate) source: String,
    pub(crate) event_id: Option<String>,
    /// The record key.
    pub(crate) phone_id: Option<String>,
    /// Path of the URL the provider called (the query is left out).
    pub(crate) url_path: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) signature_scheme: Option<String>,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Whether the value is a `RawWebhook` this processor could decode; when not, only the
    /// record's key and headers are shown.
    pub(crate) decoded: bool,
    /// The body, when asked for and UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<String>,
    /// The body in base64, when asked for and not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) body_base64: Option<String>,
}

/// RFC 3339 UTC with milliseconds.
pub(crate) fn rfc3339(millis: i64) -> String {
    DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The path of `url` (without query or fragment); `None` when it is not a URL.
pub(crate) fn url_path(url: &str) -> Option<String> {
    url::Url::parse(url).ok().map(|u| u.path().to_owned())
}

impl EventMeta {
    /// The metadata of `record`, whose value decoded as `raw` (or did not).
    pub(crate) fn new(record: &Record, raw: Option<&RawWebhook>, include_body: bool) -> Self {
        let from_topic = record
            .topic
            .rsplit_once('.')
            .map_or(record.topic.as_str(), |(_, source)| source);
        let source = raw
            .map(|r| r.source.clone())
            .or_else(|| record.header(headers::SOURCE).map(str::to_owned))
            .unwrap_or_else(|| from_topic.to_owned());
        let (body, body_base64) = match raw {
            Some(raw) if include_body => match std::str::from_utf8(&raw.body) {
                Ok(text) => (Some(text.to_owned()), None),
                Err(_) => (
                    None,
                    Some(base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        &raw.body,
                    )),
                ),
            },
            _ => (None, None),
        };
        Self {
            time: rfc3339(
                record
                    .timestamp
                    .or(raw.map(|r| r.received_at))
                    .unwrap_or_default(),
            ),
            source,
            event_id: raw
                .map(|r| r.event_id.clone())
                .or_else(|| record.header(headers::EVENT_ID).map(str::to_owned)),
            phone_id: record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            url_path: raw.and_then(|r| url_path(&r.url)),
            content_type: raw.map(|r| r.content_type.clone()),
            signature_scheme: raw.map(|r| r.signature_scheme.clone()),
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            decoded: raw.is_some(),
            body,
            body_base64,
        }
    }
}

/// The newest `limit` of `records` (by record time, then position), newest first.
pub(crate) fn newest(mut records: Vec<Record>, limit: usize) -> Vec<Record> {
    records.sort_by(|a, b| {
        (a.timestamp, &a.topic, a.partition, a.offset).cmp(&(b.timestamp, &b.topic, b.partition, b.offset))
    });
    records.into_iter().rev().take(limit).collect()
}

/// Decodes `records` (raw topics) into their metadata, in order.
pub(crate) async fn describe(codec: &Codec, records: &[Record], include_body: bool) -> Vec<EventMeta> {
    let mut described = Vec::with_capacity(records.len());
    for record in records {
        let raw = match record.payload.as_deref() {
            Some(payload) => codec
                .decode::<RawWebhook>(RawWebhook::schema_def(), payload)
                .await
                .ok(),
            None => None,
        };
        described.push(EventMeta::new(record, raw.as_ref(), include_body));
    }
    described
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn record(offset: i64, timestamp: i64) -> Record {
        Record {
            topic: "switchboard.raw.twilio".into(),
            partition: 0,
            offset,
            timestamp: Some(timestamp),
            key: Some(b"+15550001".to_vec()),
            payload: None,
            headers: vec![
                ("event-id".into(), format!("EV{offset}")),
                ("source".into(), "twilio".into()),
            ],
        }
    }

    #[test]
    fn metadata_without_body_unless_asked() {
        let raw = RawWebhook {
            event_id: "EV1".into(),
            source: "twilio".into(),
            phone_id: "+15550001".into(),
            received_at: 1_700_000_000_000,
            url: "https://hooks.example.com/webhooks/twilio/calls?phone_id=secret".into(),
            content_type: "application/x-www-form-urlencoded".into(),
            headers: BTreeMap::new(),
            body: b"CallSid=CA1".to_vec(),
            signature_scheme: "twilio-hmac-sha1".into(),
            source_name: None,
        };
        let meta = EventMeta::new(&record(7, 1_700_000_000_123), Some(&raw), false);
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "time": "2023-11-14T22:13:20.123Z",
                "source": "twilio",
                "event_id": "EV1",
                "phone_id": "+15550001",
                "url_path": "/webhooks/twilio/calls",
                "content_type": "application/x-www-form-urlencoded",
                "signature_scheme": "twilio-hmac-sha1",
                "topic": "switchboard.raw.twilio",
                "partition": 0,
                "offset": 7,
                "decoded": true,
            })
        );
        let with_body = EventMeta::new(&record(7, 1), Some(&raw), true);
        assert_eq!(with_body.body.as_deref(), Some("CallSid=CA1"));
        let binary = RawWebhook {
            body: vec![0xff, 0x00],
            ..raw
        };
        assert_eq!(
            EventMeta::new(&record(7, 1), Some(&binary), true)
                .body_base64
                .as_deref(),
            Some("/wA=")
        );
    }

    #[test]
    fn undecodable_records_show_key_and_headers() {
        let meta = EventMeta::new(&record(3, 0), None, true);
        assert!(!meta.decoded);
        assert_eq!(meta.event_id.as_deref(), Some("EV3"));
        assert_eq!(meta.source, "twilio");
        assert_eq!(meta.url_path, None);
        assert_eq!(meta.body, None);
    }

    #[test]
    fn newest_first_by_time() {
        let records = vec![record(1, 10), record(2, 30), record(3, 20), record(4, 30)];
        let offsets: Vec<i64> = newest(records, 3).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![4, 2, 3]);
    }
}
